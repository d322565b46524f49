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

Randomness comes from torch's global RNG, so ``torch.manual_seed`` repeats a run and each
DataLoader worker (seeded by the loader) draws its own augmentations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    small tensor operations each, which made this step half the pipeline's time on a CPU; here
    the trials are one batch (4x faster). An image without objects is left uncropped at once
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
        out = {k: v.as_subclass(Tensor) if isinstance(v, Tensor) else v for k, v in out.items()}
        kept = out.pop("_box_index")  # (G',) which input box each output box came from
        if isinstance(out.get("area"), Tensor):
            before = box_area(target["boxes"][kept].float())
            out["area"] = out["area"] * box_area(out["boxes"].float()) / before.clamp(min=1e-12)
        # resampling can overshoot [0, 1] by a rounding error; the sample format promises [0, 1]
        return out_image.as_subclass(Tensor).clamp_(0.0, 1.0), out

    def __repr__(self) -> str:
        return f"DetectionTransform({self.pipeline})"


def train_transform(size: int = 300, fill: Sequence[float] = IMAGENET_MEAN) -> DetectionTransform:
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

    Returns:
        a callable ``(image (3, H, W), target) -> (image (3, size, size), target)``.
    """
    return DetectionTransform(
        v2.Compose(
            [
                v2.RandomPhotometricDistort(),
                v2.RandomZoomOut(
                    fill={tv_tensors.Image: list(fill), "others": 0},
                    side_range=(1.0, ZOOM_OUT_MAX),
                    p=ZOOM_OUT_P,
                ),
                RandomIoUCrop(),
                v2.RandomHorizontalFlip(p=FLIP_P),
                v2.Resize((size, size), antialias=True),
                v2.ClampBoundingBoxes(),
                v2.SanitizeBoundingBoxes(min_size=MIN_BOX_SIDE, labels_getter=_per_box_entries),
            ]
        )
    )


def eval_transform(size: int = 300) -> DetectionTransform:
    """Resize to ``size`` x ``size`` (boxes scaled with it); no randomness.

    IoU does not change when both boxes are stretched by the same factors, so evaluating
    on the resized boxes gives the same matches as on the original image.
    """
    return DetectionTransform(v2.Compose([v2.Resize((size, size), antialias=True)]))


def augmented_views(
    image: Tensor,
    target: dict[str, Any],
    n: int = 8,
    transform: Callable[[Tensor, dict], tuple[Tensor, dict]] | None = None,
    seed: int = 0,
) -> list[tuple[Tensor, dict[str, Any]]]:
    """``n`` augmented versions of one sample, for the augmentation viewer.

    Draws from its own seeded stream (``torch.random.fork_rng``), so the same ``seed`` gives the
    same views and the caller's global RNG is left as it was.

    Args:
        image: float32 ``(3, H, W)`` in [0, 1].
        target: ``{"boxes": (G, 4) xyxy pixels, "labels": (G,), ...}``.
        n: how many views.
        transform: default :func:`train_transform` with ``size`` = the image's longer side.
        seed: seed of the views' random stream.

    Returns:
        a list of ``n`` ``(image, target)`` pairs.
    """
    check_sample(image, target, where="augmented_views input")
    if transform is None:
        transform = train_transform(size=max(image.shape[-2:]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [transform(image, target) for _ in range(n)]
