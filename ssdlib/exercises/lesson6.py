"""Lesson 6's exercises: their solutions and hints (see :mod:`ssdlib.exercises`)."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..data.transforms import augmentation_stages, train_transform
from . import solution


def kept_by_crop(boxes: Tensor, crop: tuple[int, int, int, int]) -> Tensor:
    """The IoU crop's rule for the boxes: which ones it keeps.

    Args:
        boxes: ``(G, 4)`` xyxy pixels.
        crop: ``(left, top, width, height)`` in pixels.

    Returns:
        ``(G,)`` bool: the box's centre lies strictly inside the crop (as
        ``ssdlib.data.transforms.RandomIoUCrop`` and torchvision test it); how much of the box
        the crop covers does not count.
    """
    left, top, width, height = crop
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2  # (G,)
    return (left < cx) & (cx < left + width) & (top < cy) & (cy < top + height)


@solution(
    "06.kept",
    hint="the crop does not ask how much of a box it covers: it looks at one point of each box. "
    "Find that point for every box and see whether it lies inside the window.",
)
def kept(boxes: Tensor, crop: tuple[int, int, int, int]) -> int:
    return int(kept_by_crop(boxes, crop).sum())


@solution(
    "06.flipped",
    hint="a mirror keeps y and reverses x: a point at distance x from the left edge ends at "
    "distance x from the right edge. And a box's left side becomes its right side, so x1 and "
    "x2 swap roles.",
)
def flipped(boxes: Tensor, width: int) -> Tensor:
    height = int(boxes[:, 1::2].max().ceil()) + 1 if len(boxes) else 1  # y is not used
    canvas = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
    return v2.functional.horizontal_flip(canvas).as_subclass(Tensor)


@solution(
    "06.shrink",
    hint="the object's new relative size is 0.2 / r for the canvas factor r, drawn uniformly. "
    "Find the values of r that bring it under 0.1, then what share of r's range they cover.",
)
def shrink(zoom_out_max: float) -> float:
    size, limit = 0.2, 0.1  # the object's size, and the size it must fall under
    smallest_r = size / limit  # 0.2 / r < 0.1 exactly when r > 2
    return max(0.0, (zoom_out_max - smallest_r) / (zoom_out_max - 1))


@solution(
    "06.whole_image",
    hint="augmentation_stages returns the stages in order (original, photometric, zoom out, "
    "crop, flip, resize); count the draws whose crop stage did not apply.",
)
def whole_image(image: Tensor, target: dict[str, Any], transform: Any, draws: int = 50) -> int:
    return sum(
        not augmentation_stages(image, target, transform, seed=s)[3].applied for s in range(draws)
    )


@solution(
    "06.seed",
    hint="the line under the explorer's sliders lists the steps that fired; step through the "
    "seeds from 0 and stop at the first draw that mirrors the image without zooming out.",
)
def first_seed_flipped_not_zoomed(image: Tensor, target: dict[str, Any], size: int) -> int:
    for seed in range(1000):
        stages = augmentation_stages(image, target, train_transform(size), seed=seed)
        done = {s.name: s.applied for s in stages}
        if done["flip"] and not done["zoom out"]:
            return seed
    raise ValueError("no seed under 1000 flips without zooming out")


__all__ = ["kept_by_crop"]
