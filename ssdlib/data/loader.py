"""Batches: :func:`collate` turns a list of samples into one batch, for a DataLoader.

Images of one batch share a size (the transforms resize them), so they stack into ``(B, 3, H,
W)``; the number of objects differs per image, so targets stay a list of dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def collate(batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, list[dict]]:
    """Stack a list of ``(image (3, H, W), target)`` into ``(images (B, 3, H, W), targets)``.

    Raises ``ValueError`` naming the sizes when the images differ in size (resize them first,
    e.g. with :func:`~ssdlib.data.eval_transform`) or the batch is empty.
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    images, targets = zip(*batch, strict=True)
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) > 1:
        raise ValueError(
            f"images in a batch must share a size, got {sorted(sizes)}; resize them with a "
            "transform such as ssdlib.data.eval_transform(300)"
        )
    return torch.stack(images), list(targets)
