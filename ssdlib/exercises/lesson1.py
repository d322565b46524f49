"""Lesson 1's exercises: their solutions and hints (see :mod:`ssdlib.exercises`)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from ..backbone import receptive_fields
from ..model import SSD, SSDHead
from ..priors import PriorConfig, prior_index
from . import solution


@solution(
    "01.conv4_3_side_512",
    hint="Halve the side once per 2×2 pool; only a pool that meets an odd side has to round, "
    "and SSD's pool3 rounds up (ceil_mode).",
)
def conv4_3_side(cfg: PriorConfig) -> int:
    return cfg.feature_maps[0]


def _receptive_field_after(model: SSD, last: str) -> float:
    """Receptive field (pixels) of the base network's layer ``last`` (conv5_3, fc7, ...)."""
    names = list(model.backbone.to_fc7._modules)
    upto = model.backbone.to_fc7[: names.index(last) + 1]
    return receptive_fields([model.backbone.to_conv4_3, upto])[-1][0]


@solution(
    "01.rf_conv5_3",
    hint="Continue from conv4_3's row of the table (its receptive field and its stride 8): a "
    "k×k layer adds (k − 1) × the stride so far, and a pool doubles the stride only after "
    "adding its own share.",
)
def rf_conv5_3(model: SSD) -> float:
    return _receptive_field_after(model, "conv5_3")


@solution(
    "01.rf_fc7_plain",
    hint="Only fc6's term changes: its 3×3 kernel adds 2 × dilation × the stride of its input "
    "map, and a plain convolution has dilation 1. Start from fc7's row of the table.",
)
def rf_fc7_plain(model: SSD) -> float:
    plain = copy.deepcopy(model)
    plain.backbone.to_fc7.fc6.dilation = (1, 1)
    return _receptive_field_after(plain, "fc7")


@solution(
    "01.outputs",
    hint="Each default box gets 4 offsets and one score per class, background included.",
)
def outputs(loc: Tensor, conf: Tensor) -> int:
    return loc.numel() + conf.numel()


@solution(
    "01.ssd512_row",
    hint="Count the rows of the maps before it (cells × boxes per cell), then the cells "
    "before this one on its own map, row by row, times its boxes per cell, then the box.",
)
def ssd512_row(cfg: PriorConfig, layer: int, row: int, col: int, box: int) -> int:
    return prior_index(cfg, layer, row, col).start + box


@solution(
    "01.flat_conf",
    hint="A reshape straight from (B, A·C, H, W) mixes cells and boxes: the channels have to "
    "come last before H, W and A are merged into one axis.",
)
def flat_conf(head: SSDHead, sources: list[Tensor], layer: int) -> Tensor:
    """The rows of the heads' ``conf`` that come from source map ``layer``."""
    with torch.no_grad():
        _, conf = head(sources)  # (B, P, K): every map's scores, flattened and concatenated
    boxes_per_cell = [loc.out_channels // 4 for loc in head.loc]  # A per map
    rows = [s.shape[-2] * s.shape[-1] * a for s, a in zip(sources, boxes_per_cell, strict=True)]
    start = sum(rows[:layer])
    return conf[:, start : start + rows[layer]]
