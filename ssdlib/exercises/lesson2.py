"""Lesson 2's exercises: their solutions and hints (see :mod:`ssdlib.exercises`)."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from ..boxes import box_iou, cxcywh_to_xyxy
from ..priors import (
    PriorConfig,
    cell_box_sizes,
    default_box_coverage,
    default_boxes,
    layer_of_prior,
    linear_scales,
    prior_index,
)
from . import solution


@solution(
    "02.ssd512",
    hint="Each map brings (its side)² cells × its boxes per cell; add up all seven maps.",
)
def ssd512(cfg: PriorConfig) -> int:
    return cfg.num_priors


@solution("02.s3", hint="k starts at 1, so s_3 is two steps above s_min.")
def s3(s_min: float, s_max: float, m: int) -> float:
    return linear_scales(s_min, s_max, m)[2]


@solution(
    "02.conv8_2_extra_px",
    hint="The extra square's side is the geometric mean of the layer's min_size and "
    "max_size (both in pixels); conv8_2 is layer 2, counting from 0.",
)
def conv8_2_extra_px(cfg: PriorConfig) -> float:
    return float(cell_box_sizes(cfg, 2)[1, 0] * cfg.image_size)


@solution(
    "02.coco_limit_px",
    hint="For a square of side a centred in a square of side b > a, IoU = a² / b².",
)
def coco_limit_px(cfg: PriorConfig) -> float:
    return cfg.min_sizes[0] / math.sqrt(2)


@solution(
    "02.squares_only",
    hint="Without aspect ratios a cell keeps only its two squares; the maps and their cells "
    "stay as they are.",
)
def squares_only(cfg: PriorConfig) -> int:
    return dataclasses.replace(cfg, aspect_ratios=((),) * len(cfg.feature_maps)).num_priors


@solution(
    "02.boxes_at_05",
    hint="Not only the cell's own boxes count: a box of a neighbouring cell sits one step "
    "(8 px) off the square's centre and may still overlap it by half. Work out each box "
    "shape's IoU at offsets of 0 and 8 px (and 8 px both ways).",
)
def boxes_at_05(cfg: PriorConfig, layer: int, row: int, col: int, side_px: float) -> int:
    """Default boxes of ``layer`` at IoU >= 0.5 with a square centred on cell (row, col)."""
    priors = default_boxes(cfg)  # (P, 4) cxcywh
    cx, cy = priors[prior_index(cfg, layer, row, col).start, :2].tolist()
    side = side_px / cfg.image_size
    square = cxcywh_to_xyxy(torch.tensor([[cx, cy, side, side]], dtype=priors.dtype))
    mine = cxcywh_to_xyxy(priors[layer_of_prior(cfg) == layer])
    return int((box_iou(square, mine) >= 0.5).sum())


@solution(
    "02.coverage_by_layer",
    hint="For layer k keep only the columns of the IoU matrix whose default box lies on that "
    "layer (layer_of_prior), then take each object's best and the share that reaches 0.5.",
)
def coverage_by_layer(objects: Tensor, cfg: PriorConfig) -> Tensor:
    """``(m,)``: per layer, the share of objects whose best default box *of that layer*
    reaches IoU 0.5."""
    priors, layer = default_boxes(cfg), layer_of_prior(cfg)
    return torch.tensor(
        [
            default_box_coverage(objects, priors[layer == k]).coverage
            for k in range(len(cfg.feature_maps))
        ]
    )
