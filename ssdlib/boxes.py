"""Boxes: conventions, IoU, and the SSD box encoding (SSD §2.1, "Matching strategy" and eq. 2).

Two conventions appear in SSD and every function here states which one it takes:

* ``xyxy``   = (x1, y1, x2, y2), the corners; used for IoU, NMS, drawing and datasets.
* ``cxcywh`` = (cx, cy, w, h), centre and size; used for default boxes and the regression targets.

Coordinates are normalised to [0, 1] of the image unless a docstring says "pixels".
The functions broadcast over leading dimensions, so ``(B, P, 4)`` works as well as ``(P, 4)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

VARIANCES = (0.1, 0.2)  # encoding scale from the original release; torchvision's BoxCoder
# weights (10, 10, 5, 5) are 1 / variance, so both give the same targets.
MAX_LOG_SCALE = math.log(1000.0 / 16)  # torchvision's bbox_xform_clip: an untrained network can
# predict any Δw, and exp() of a large one is inf; clamping keeps decoded boxes finite.


def _check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"expected {name} of shape (..., 4), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"expected floating-point {name}, got dtype {boxes.dtype}")


def _check_box_pairs(boxes1: Tensor, boxes2: Tensor) -> None:
    """box_iou's arguments (both tiers'): two sets of boxes with the same leading dims."""
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.dim() != boxes2.dim() or boxes1.shape[:-2] != boxes2.shape[:-2]:
        raise ValueError(
            f"boxes1 and boxes2 need the same leading dims, got {tuple(boxes1.shape)} "
            f"and {tuple(boxes2.shape)}"
        )


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2), any leading shape ``(..., 4)``."""
    _check_boxes(boxes)
    centre, half = boxes[..., :2], boxes[..., 2:] / 2
    return torch.cat([centre - half, centre + half], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h), any leading shape ``(..., 4)``."""
    _check_boxes(boxes)
    top_left, bottom_right = boxes[..., :2], boxes[..., 2:]
    return torch.cat([(top_left + bottom_right) / 2, bottom_right - top_left], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``xyxy`` boxes ``(..., 4) -> (...)``; a box with x2 < x1 or y2 < y1 has area 0."""
    _check_boxes(boxes)
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Jaccard overlap (intersection over union) of every pair of boxes.

    Args:
        boxes1: ``(N, 4)`` xyxy, or batched ``(B, N, 4)``.
        boxes2: ``(M, 4)`` xyxy, or batched ``(B, M, 4)`` (same leading dims as ``boxes1``).

    Returns:
        ``(N, M)`` (or ``(B, N, M)``) IoU in [0, 1]. Equal to ``torchvision.ops.box_iou`` except
        where both boxes have zero area and do not overlap: torchvision returns 0/0 = nan there,
        this returns 0. A nan coordinate gives nan, as in torchvision; matching rejects
        non-finite ground truth and postprocess non-finite predictions before they get here.
    """
    _check_box_pairs(boxes1, boxes2)
    area1 = box_area(boxes1)[..., :, None]  # (..., N, 1)
    area2 = box_area(boxes2)[..., None, :]  # (..., 1, M)
    top_left = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # (..., N, M, 2)
    bottom_right = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)  # the overlap's width and height, 0 if none
    inter = wh[..., 0] * wh[..., 1]  # (..., N, M)
    union = area1 + area2 - inter
    # union is 0 only for two boxes of zero area, and then inter is 0 too: 0 / tiny = 0
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def encode(
    matched_xyxy: Tensor, priors_cxcywh: Tensor, variances: tuple[float, float] = VARIANCES
) -> Tensor:
    """Offsets that move each default box onto its matched ground truth (SSD eq. 2).

    ``Δcx = (g_cx - d_cx) / (d_w · v0)``, ``Δcy = (g_cy - d_cy) / (d_h · v0)``,
    ``Δw = log(g_w / d_w) / v1``, ``Δh = log(g_h / d_h) / v1``. Dividing by the default box's size
    makes the targets scale-free; the variances ``v`` bring them to roughly unit spread.

    Args:
        matched_xyxy: ``(..., P, 4)`` xyxy ground truth matched to each default box.
        priors_cxcywh: ``(P, 4)`` cxcywh default boxes, broadcast over the leading dims.
        variances: ``(v0, v1)``; v0 scales the centre, v1 the size.

    Returns:
        ``(..., P, 4)`` offsets (Δcx, Δcy, Δw, Δh).
    """
    _check_boxes(matched_xyxy, "matched_xyxy")
    _check_boxes(priors_cxcywh, "priors_cxcywh")
    v_centre, v_size = variances
    g = xyxy_to_cxcywh(matched_xyxy)
    d = priors_cxcywh
    delta_centre = (g[..., :2] - d[..., :2]) / (d[..., 2:] * v_centre)
    delta_size = torch.log(g[..., 2:] / d[..., 2:]) / v_size
    return torch.cat([delta_centre, delta_size], dim=-1)


def decode(
    offsets: Tensor, priors_cxcywh: Tensor, variances: tuple[float, float] = VARIANCES
) -> Tensor:
    """Invert :func:`encode`: offsets ``(..., P, 4)`` and default boxes ``(P, 4)`` -> xyxy.

    Size offsets are clamped at ``MAX_LOG_SCALE / v1`` before ``exp`` so that the wild
    predictions of an untrained network still give finite boxes.
    """
    _check_boxes(offsets, "offsets")
    _check_boxes(priors_cxcywh, "priors_cxcywh")
    v_centre, v_size = variances
    d = priors_cxcywh
    centre = d[..., :2] + offsets[..., :2] * v_centre * d[..., 2:]
    size = d[..., 2:] * torch.exp((offsets[..., 2:] * v_size).clamp(max=MAX_LOG_SCALE))
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def clip_boxes(boxes: Tensor, width: float = 1.0, height: float = 1.0) -> Tensor:
    """Clamp xyxy boxes to the image ``[0, width] × [0, height]`` (1 × 1 when normalised)."""
    _check_boxes(boxes)
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def _check_image_size(width: float, height: float) -> None:
    if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
        raise ValueError(
            f"expected a positive, finite image width and height, got {width}x{height}"
        )


def pixels_to_unit(boxes: Tensor, width: float, height: float) -> Tensor:
    """Boxes in pixels of a ``width`` × ``height`` image -> normalised to [0, 1] of it.

    x coordinates are divided by ``width``, y by ``height``. Both conventions alternate x and y,
    so this serves xyxy (x1, y1, x2, y2) and cxcywh (cx, cy, w, h) alike.

    Args:
        boxes: ``(..., 4)`` floating-point boxes in pixels.
        width, height: the image size in pixels (``h, w = image.shape[-2:]``).

    Returns:
        ``(..., 4)`` boxes in the same convention, normalised; same dtype and device.
    """
    _check_boxes(boxes)
    _check_image_size(width, height)
    return boxes / boxes.new_tensor([width, height, width, height])


def unit_to_pixels(boxes: Tensor, width: float, height: float) -> Tensor:
    """Invert :func:`pixels_to_unit`: normalised boxes -> pixels of a ``width`` × ``height``
    image (x times ``width``, y times ``height``).

    Args:
        boxes: ``(..., 4)`` floating-point boxes, xyxy or cxcywh, normalised to [0, 1].
        width, height: the image size in pixels.

    Returns:
        ``(..., 4)`` boxes in the same convention, in pixels; same dtype and device.
    """
    _check_boxes(boxes)
    _check_image_size(width, height)
    return boxes * boxes.new_tensor([width, height, width, height])


def _as_boxes(boxes: Tensor | Sequence, name: str = "boxes") -> Tensor:
    """Boxes as a float32 CPU tensor of shape ``(N, 4)``: one box ``(4,)`` becomes ``(1, 4)``, no
    boxes ``(0, 4)``; any other shape is an error that names ``name``. The convention is the
    caller's (the figures and their helpers pass xyxy normalised)."""
    t = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu()
    if t.numel() == 0:
        return t.reshape(0, 4)
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.shape[1] != 4:
        raise ValueError(f"expected {name} of shape (N, 4) xyxy, got {tuple(t.shape)}")
    return t
