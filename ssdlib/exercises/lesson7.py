"""Lesson 7's exercises: their solutions and hints (see :mod:`ssdlib.exercises`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from ..priors import PriorConfig, with_scales
from ..speed import count_macs
from . import solution

COCO_S_MIN = 0.15  # the smallest scale of the paper's COCO model (§3.4), exercise 5's variant


@solution(
    "07.ratios_23_boxes",
    hint="count per cell first: the two squares, then two boxes for each aspect ratio a (a and "
    "1/a). Then count the cells: a map of side f has f × f of them, and every map counts.",
)
def ratios_23_boxes(base: PriorConfig) -> int:
    both = dataclasses.replace(base, aspect_ratios=((2, 3),) * len(base.feature_maps))
    return both.num_priors


@solution(
    "07.head_macs",
    hint="one output value of a 3 × 3 convolution costs (input channels) × 9 multiply-adds. "
    "Count the values both heads output at one cell (every default box there needs its offsets "
    "and its class scores), then the cells of every map.",
)
def head_macs(net: torch.nn.Module) -> int:
    return count_macs(net, net.cfg.image_size)["head"]


@solution(
    "07.smallest_side",
    hint="for a square object of side a centred in a square box of side b, IoU = a² / b²; "
    "set it to 0.5 and solve for a, with b the variant's smallest scale.",
)
def smallest_side(cfg: PriorConfig) -> float:
    return cfg.scales[0] / math.sqrt(2)


@solution(
    "07.recall_under_01",
    hint="pool the objects, not the bins: the recall of two bins together is the objects found "
    "in both over the objects in both, so each bin's recall counts by its number of objects.",
    rtol=0.01,
)
def recall_under_01(recall_by_size: dict[str, Any], limit: float = 0.1) -> float:
    edges = recall_by_size["bin_edges"]
    found = total = 0.0
    for k, (n, r) in enumerate(
        zip(recall_by_size["num_objects"], recall_by_size["recall"], strict=True)
    ):
        if edges[k + 1] <= limit + 1e-9 and n:
            found += n * r
            total += n
    return found / total


@solution(
    "07.min_size_px",
    hint="a scale is a fraction of the image side; min_sizes states it in pixels of the "
    "network's input.",
)
def min_size_px(base: PriorConfig) -> float:
    return float(with_scales(base, COCO_S_MIN).min_sizes[0])
