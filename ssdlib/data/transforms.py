"""SSD's data augmentation (SSD §2.2, "Data augmentation"; §3.6 for zoom out).

"To make the model more robust to various input object sizes and shapes, each training image is
randomly sampled by one of the following options: use the entire original input image; sample a
patch so that the minimum jaccard overlap with the objects is 0.1, 0.3, 0.5, 0.7, or 0.9;
randomly sample a patch. [...] We keep the overlapped part of the ground truth box if the center
of it is in the sampled patch. After the aforementioned sampling step, each sampled patch is
resized to fixed size and is horizontally flipped with probability of 0.5, in addition to
applying some photo-metric distortions." And §3.6: "we randomly place an image on a canvas of
16x of the original image size filled with mean values before we do any random crop".

The pieces are torchvision's ``transforms.v2`` (they follow the released Caffe configuration, as
torchvision's own SSD recipe does); this module puts them in the paper's order and adapts them
to the common sample format: ``(image float32 (3, H, W) in [0, 1], {"boxes": (G, 4) xyxy
pixels, "labels": (G,), ...})``. Images are NOT normalised here: the model carries mean/std.

Randomness comes from torch's global RNG, so ``torch.manual_seed`` repeats a run; training seeds
each sample's draw (:class:`ssdlib.data.order.SeededSamples`), in whichever worker it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..boxes import box_area, box_iou
from ..utils import IMAGENET_MEAN
from .common import check_sample

ZOOM_OUT_MAX = 4.0  # "a canvas of 16x of the original image size": 4x the side (SSD §3.6)
ZOOM_OUT_P = 0.5  # zoom out half the time, as the released configuration's expand_param
FLIP_P = 0.5  # "horizontally flipped with probability of 0.5"
MIN_BOX_SIDE = 1.0  # boxes thinner than one pixel after augmentation are dropped
PER_BOX_KEYS = ("labels", "difficult", "area", "iscrowd", "_box_index")  # target entries with
# one row per box, dropped together with their box


class RandomIoUCrop(v2.RandomIoUCrop):
    """torchvision's ``RandomIoUCrop`` with its trials drawn all at once; same distribution.

    Per draw: pick a minimum IoU from ``options`` (1.0 = keep the whole image); then, of up to
    ``trials`` random crops (sides ``min_scale..max_scale`` of the image, aspect in range),
    take the first that contains some box centre and has IoU >= the minimum with one of those
    boxes; if none does, pick an option again. torchvision tries the crops one by one, a few
    small tensor operations each; here the trials are one batched computation (the loader's
    benchmark rows time the pipeline). An image without objects is left uncropped at once
    (torchvision retries until it draws the "keep" option, with the same result).
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        boxes = next(x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes))
        if boxes.shape[0] == 0:
            return {}
        orig_h, orig_w = boxes.canvas_size
        xyxy = v2.functional.convert_bounding_box_format(
            boxes.as_subclass(Tensor), boxes.format, tv_tensors.BoundingBoxFormat.XYXY
        ).float()  # (G, 4)
        cx, cy = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2  # (G,)
        while True:
            min_iou = self.options[int(torch.randint(len(self.options), (1,)))]
            if min_iou >= 1.0:
                return {}
            scale = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(self.trials, 2)
            new_w, new_h = (orig_w * scale[:, 0]).long(), (orig_h * scale[:, 1]).long()  # (T,)
            aspect = new_w / new_h.clamp(min=1)
            ok = (self.min_aspect_ratio <= aspect) & (aspect <= self.max_aspect_ratio)
            ok &= (new_w > 0) & (new_h > 0)
            pos = torch.rand(self.trials, 2)
            left, top = ((orig_w - new_w) * pos[:, 0]).long(), ((orig_h - new_h) * pos[:, 1]).long()
            right, bottom = left + new_w, top + new_h
            within = (  # (T, G): box centre strictly inside the crop
                (left[:, None] < cx)
                & (cx < right[:, None])
                & (top[:, None] < cy)
                & (cy < bottom[:, None])
            )
            crops = torch.stack([left, top, right, bottom], dim=1).float()  # (T, 4)
            iou = box_iou(crops, xyxy).masked_fill(~within, -1.0)  # (T, G)
            ok &= within.any(dim=1) & (iou.max(dim=1).values >= min_iou)
            if ok.any():
                t = int(ok.nonzero()[0])
                return {
                    "top": int(top[t]),
                    "left": int(left[t]),
                    "height": int(new_h[t]),
                    "width": int(new_w[t]),
                    "is_within_crop_area": within[t],
                }


def _to_plain(
    image: tv_tensors.Image, out: dict[str, Any], target: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    """A transformed ``tv_tensors`` sample back in the common format (plain tensors)."""
    out = {k: v.as_subclass(Tensor) if isinstance(v, Tensor) else v for k, v in out.items()}
    kept = out.pop("_box_index")  # (G',) which input box each output box came from
    if isinstance(out.get("area"), Tensor):
        before = box_area(target["boxes"][kept].float())
        out["area"] = out["area"] * box_area(out["boxes"].float()) / before.clamp(min=1e-12)
    # resampling can overshoot [0, 1] by a rounding error; the sample format promises [0, 1]
    return image.as_subclass(Tensor).clamp(0.0, 1.0), out


def _per_box_entries(sample: tuple[Any, dict[str, Any]]) -> tuple[Tensor, ...]:
    """What ``SanitizeBoundingBoxes`` filters along with the boxes: the PER_BOX_KEYS present."""
    target = sample[1]
    return tuple(target[k] for k in PER_BOX_KEYS if isinstance(target.get(k), Tensor))


class DetectionTransform:
    """A ``transforms.v2`` pipeline as a callable ``(image, target) -> (image, target)``.

    Wraps the image as ``tv_tensors.Image`` and the boxes as ``tv_tensors.BoundingBoxes`` (xyxy,
    pixels) so that v2 moves them together, then unwraps to plain tensors. Other target entries
    pass through; those in ``PER_BOX_KEYS`` lose the rows of dropped boxes, and ``area`` (COCO's
    object area, which decides small/medium/large) is scaled with its box's area.
    """

    def __init__(self, pipeline: v2.Transform) -> None:
        self.pipeline = pipeline

    def __call__(self, image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        check_sample(image, target, where="transform input")
        boxes = tv_tensors.BoundingBoxes(
            target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:])
        )
        sample = {**target, "boxes": boxes, "_box_index": torch.arange(len(boxes))}
        out_image, out = self.pipeline(tv_tensors.Image(image), sample)
        return _to_plain(out_image, out, target)

    def __repr__(self) -> str:
        return f"DetectionTransform({self.pipeline})"


def train_transform(
    size: int = 300,
    fill: Sequence[float] = IMAGENET_MEAN,
    zoom_out: bool = True,
    crop: bool = True,
) -> DetectionTransform:
    """SSD's training augmentation, ending in a ``size`` x ``size`` image.

    1. photometric distortion (brightness, contrast, saturation, hue, channel order; each p=0.5);
    2. zoom out: with p=0.5, place the image on a canvas up to 4x its side, filled with ``fill``
       (the mean colour, so that the normalised canvas is zero);
    3. IoU-constrained random crop: min IoU with some object from {0, .1, .3, .5, .7, .9} or
       no crop; crop sides 0.3-1 of the image, aspect 1/2-2; boxes whose centre falls outside
       are dropped, the rest are cut to the crop;
    4. horizontal flip with p=0.5;
    5. resize to ``size`` x ``size``; boxes clamped to the image, and those under 1 px dropped.

    Args:
        size: side of the output image, pixels.
        fill: RGB in [0, 1] for the zoom-out canvas; default the ImageNet mean the model uses.
        zoom_out: False leaves step 2 out (SSD before §3.6, for measuring what it adds).
        crop: False leaves step 3 out. With ``zoom_out=False`` too, only colour, flip and resize
            remain: enough for procedurally drawn data, where every training image is new anyway.

    Returns:
        a callable ``(image (3, H, W), target) -> (image (3, size, size), target)``.
    """
    zoom = v2.RandomZoomOut(
        fill={tv_tensors.Image: list(fill), "others": 0},
        side_range=(1.0, ZOOM_OUT_MAX),
        p=ZOOM_OUT_P,
    )
    return DetectionTransform(
        v2.Compose(
            [
                v2.RandomPhotometricDistort(),
                *([zoom] if zoom_out else []),
                *([RandomIoUCrop()] if crop else []),
                v2.RandomHorizontalFlip(p=FLIP_P),
                v2.Resize((size, size), antialias=True),
                v2.ClampBoundingBoxes(),
                v2.SanitizeBoundingBoxes(min_size=MIN_BOX_SIDE, labels_getter=_per_box_entries),
            ]
        )
    )


AUGMENTATIONS = ("ssd", "no-zoom-out", "light", "none")  # the names training runs choose from


def augmentation(name: str, size: int) -> DetectionTransform:
    """A named training augmentation ending in ``size`` x ``size`` images.

    * ``"ssd"``: the paper's, :func:`train_transform` (colour, zoom out, crop, flip);
    * ``"no-zoom-out"``: without the zoom out (SSD before §3.6);
    * ``"light"``: colour and flip only. On procedurally drawn data, where every image is new
      and objects already come in every size and place, the crops mostly shrink the objects
      a small input can see, and the cpu-tiny preset learned faster without them (README,
      "The CPU preset");
    * ``"none"``: resize only (:func:`eval_transform`).
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose from {list(AUGMENTATIONS)}")
    if name == "none":
        return eval_transform(size)
    return train_transform(size, zoom_out=name == "ssd", crop=name != "light")


def eval_transform(size: int = 300) -> DetectionTransform:
    """Resize to ``size`` x ``size`` (boxes scaled with it); no randomness.

    IoU does not change when both boxes are stretched by the same factors, so evaluating
    on the resized boxes gives the same matches as on the original image.
    """
    return DetectionTransform(v2.Compose([v2.Resize((size, size), antialias=True)]))


# -- Every stage of one draw, for the augmentation lesson ------------------------------------------

STAGE_NAMES = {
    v2.RandomPhotometricDistort: "photometric distortion",
    v2.RandomZoomOut: "zoom out",
    RandomIoUCrop: "IoU crop",
    v2.RandomHorizontalFlip: "flip",
    v2.Resize: "resize",
}  # the pipeline's steps by type; ClampBoundingBoxes and SanitizeBoundingBoxes finish "resize"
FINISHING_STEPS = (v2.ClampBoundingBoxes, v2.SanitizeBoundingBoxes)
PHOTOMETRIC_PARTS = {  # RandomPhotometricDistort's draws: each part fires with p = 0.5
    "brightness_factor": "brightness ×{:.2f}",
    "contrast_factor": "contrast ×{:.2f}",
    "saturation_factor": "saturation ×{:.2f}",
    "hue_factor": "hue {:+.2f}",
    "channel_permutation": "channels {}",
}


@dataclass
class AugmentStage:
    """The sample after one step of the augmentation pipeline."""

    name: str  # "original", "photometric distortion", "zoom out", "IoU crop", "flip", "resize"
    image: Tensor  # (3, H, W) in [0, 1]
    target: dict[str, Any]  # "boxes" (G, 4) xyxy pixels of this stage's image, "labels", ...
    applied: bool  # False where the random step left the sample as it was
    note: str  # what the draw did, e.g. "canvas 2.4× the image side"
    object_ids: Tensor  # (G,) long: which box of the original sample each box is
    params: dict[str, Any] = field(default_factory=dict, repr=False)  # the step's random draw

    def __repr__(self) -> str:
        h, w = self.image.shape[-2:]
        done = self.note if self.applied or self.name == "original" else f"skipped: {self.note}"
        return f"AugmentStage({self.name!r}: {w}×{h} px, {len(self.target['boxes'])} boxes; {done})"


def _describe(
    step: v2.Transform, params: dict[str, Any] | None, before: Tensor
) -> tuple[bool, str]:
    """Whether a step changed the sample, and a few words on how."""
    if params is None:  # a step with probability p that did not fire
        return False, "not drawn this time"
    if isinstance(step, v2.RandomPhotometricDistort):
        parts = [
            text.format(v.tolist() if isinstance(v, Tensor) else v)
            for key, text in PHOTOMETRIC_PARTS.items()
            if (v := params.get(key)) is not None
        ]
        return bool(parts), ", ".join(parts) if parts else "no distortion drawn"
    if isinstance(step, v2.RandomZoomOut):
        left, _, right, _ = params["padding"]
        return True, f"canvas {(before.shape[-1] + left + right) / before.shape[-1]:.1f}× the side"
    if isinstance(step, RandomIoUCrop):
        if not params:
            return False, "the whole image kept"
        h, w = before.shape[-2:]
        share = params["height"] * params["width"] / (h * w)
        return True, f"crop of {share:.0%} of the area"
    if isinstance(step, v2.RandomHorizontalFlip):
        return True, "mirrored left to right"
    if isinstance(step, v2.Resize):
        return True, "to {}×{} px".format(*step.size[::-1])
    return True, ""


def _shown(image: Tensor, target: dict[str, Any], ids: Tensor) -> tuple[dict[str, Any], Tensor]:
    """The boxes as the pipeline finally keeps them: cut to the image, and without those the IoU
    crop marked for removal (it zeroes them; SanitizeBoundingBoxes drops them at the end)."""
    h, w = image.shape[-2:]
    boxes = target["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # (G,)
    out = {**target, "boxes": boxes[keep]}
    for key in PER_BOX_KEYS:
        if isinstance(out.get(key), Tensor) and len(out[key]) == len(keep):
            out[key] = out[key][keep]
    return out, ids[keep]


def _run_recording_draws(step: v2.Transform, sample: Any) -> tuple[Any, list[dict[str, Any]]]:
    """``step(*sample)``, and the parameters it drew (``make_params``' results, in order)."""
    drawn: list[dict[str, Any]] = []
    make_params = step.make_params

    def record(flat_inputs: list[Any]) -> dict[str, Any]:
        drawn.append(make_params(flat_inputs))
        return drawn[-1]

    step.make_params = record  # see what the step draws; the class's method is untouched
    try:
        return step(*sample), drawn
    finally:
        del step.make_params


def augmentation_stages(
    image: Tensor,
    target: dict[str, Any],
    transform: DetectionTransform | None = None,
    seed: int = 0,
) -> list[AugmentStage]:
    """One random draw of the augmentation, returned after every step of the pipeline.

    The steps run exactly as ``transform`` runs them, from a stream seeded with ``seed``, so the
    last stage equals ``transform(image, target)`` under ``torch.manual_seed(seed)``; the
    caller's global RNG is left as it was. Each stage's boxes are drawn in that stage's own
    image; boxes cut to the image and those the crop removes are shown as the pipeline will
    finally keep them.

    Args:
        image: float32 ``(3, H, W)`` in [0, 1].
        target: ``{"boxes": (G, 4) xyxy pixels, "labels": (G,), ...}``.
        transform: a :class:`DetectionTransform` (default :func:`train_transform` with ``size``
            = the image's longer side).
        seed: seed of the draw.

    Returns:
        ``[original, photometric distortion, zoom out, IoU crop, flip, resize]`` as
        :class:`AugmentStage` (one per step of the pipeline; the box clean-up joins "resize").
    """
    check_sample(image, target, where="augmentation_stages input")
    if transform is None:
        transform = train_transform(size=max(image.shape[-2:]))
    pipeline = getattr(transform, "pipeline", None)
    if not isinstance(pipeline, v2.Transform):
        raise ValueError(
            f"augmentation_stages needs a DetectionTransform (with a v2 .pipeline), got "
            f"{type(transform).__name__}"
        )
    steps = list(pipeline.transforms) if isinstance(pipeline, v2.Compose) else [pipeline]
    h, w = image.shape[-2:]
    shown, ids = _shown(image, target, torch.arange(len(target["boxes"])))
    stages = [AugmentStage("original", image, shown, False, f"{w}×{h} px", ids)]
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
    sample: Any = (
        tv_tensors.Image(image),
        {**target, "boxes": boxes, "_box_index": torch.arange(len(boxes))},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in steps:
            before = sample[0]
            sample, drawn = _run_recording_draws(step, sample)
            ids = sample[1]["_box_index"].as_subclass(Tensor)  # (G',) original box of each box
            plain_image, plain_target = _to_plain(sample[0], dict(sample[1]), target)
            shown, ids = _shown(plain_image, plain_target, ids)
            if isinstance(step, FINISHING_STEPS) and len(stages) > 1:
                last = stages[-1]
                last.image, last.target, last.object_ids = plain_image, shown, ids
                continue
            applied, note = _describe(step, drawn[0] if drawn else None, before)
            name = STAGE_NAMES.get(type(step), type(step).__name__)
            stages.append(
                AugmentStage(
                    name, plain_image, shown, applied, note, ids, drawn[0] if drawn else {}
                )
            )
    return stages
