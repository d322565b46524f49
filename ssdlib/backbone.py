"""The backbone of SSD (SSD §2.1 "Model", Fig. 2; §3 "Base network"; §3.1): the layers that
turn an image into the source maps the heads predict from.

1. **Base network**: VGG16 up to fc7, "truncated before any classification layers". As §3 says,
   fc6 and fc7 become convolutions, pool5 changes "from 2×2-s2 to 3×3-s1", and fc6 uses the
   "à trous" (dilated) convolution to keep its field of view. conv4_3's features are
   L2-normalised per location and rescaled by a learned per-channel scale (§3.1).
2. **Extra feature layers** "to the end of the truncated base network. These layers decrease in
   size progressively and allow predictions of detections at multiple scales": each is a 1×1
   convolution that reduces the channels, then a 3×3 one that shrinks the map.

:mod:`ssdlib.model` adds the convolutional predictors and puts the network together. Shape
comments use SSD300.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .priors import PriorConfig

# -- 1. Base network -----------------------------------------------------------------------------
# VGG16 (configuration "D" of Simonyan & Zisserman): output channels of conv1_1 … conv5_3
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC_CHANNELS = 1024  # fc6 and fc7 keep every 4th of VGG16's 4096 units (§3: "subsample")
FC6_DILATION = 6  # the released SSD300/512: a 3×3 kernel with holes spans 13×13 of pool5
L2NORM_SCALE_INIT = 20.0  # §3.1: conv4_3's features have a larger scale than the other layers';
# "we use the L2 normalization technique ... to scale the feature norm at each location ... to 20"
L2NORM_EPS = 1e-12  # F.normalize's default, as torchvision's SSD: only guards an all-zero location
CHANNEL_MULTIPLE = 8  # slim widths round channel counts to multiples of 8 (vectorised conv kernels)


def scale_channels(channels: int, width: float) -> int:
    """``channels · width`` rounded to a multiple of 8, at least 8 (``width = 1`` keeps it)."""
    return max(CHANNEL_MULTIPLE, CHANNEL_MULTIPLE * round(channels * width / CHANNEL_MULTIPLE))


def _conv_unit(
    name: str, in_ch: int, out_ch: int, batch_norm: bool, **conv_kwargs: Any
) -> list[tuple[str, nn.Module]]:
    """``conv4_3`` -> ``[("conv4_3", Conv2d), ("bn4_3", BatchNorm2d)?, ("relu4_3", ReLU)]``."""
    suffix = re.sub(r"^[a-z]+", "", name)  # "conv4_3" -> "4_3", "fc6" -> "6"
    layers: list[tuple[str, nn.Module]] = [(name, nn.Conv2d(in_ch, out_ch, **conv_kwargs))]
    if batch_norm:
        layers.append((f"bn{suffix}", nn.BatchNorm2d(out_ch)))
    layers.append((f"relu{suffix}", nn.ReLU(inplace=True)))
    return layers


def _vgg_stage(
    stage: int, in_ch: int, width: float, batch_norm: bool
) -> list[tuple[str, nn.Module]]:
    """The 3×3, pad-1 convolutions of one VGG16 stage: conv{stage}_1, conv{stage}_2, …"""
    layers = []
    for i, out_ch in enumerate(VGG16_STAGES[stage - 1], start=1):
        out_ch = scale_channels(out_ch, width)
        layers += _conv_unit(
            f"conv{stage}_{i}", in_ch, out_ch, batch_norm, kernel_size=3, padding=1
        )
        in_ch = out_ch
    return layers


class L2Norm(nn.Module):
    """Each location's channel vector scaled to unit length, then by a learned per-channel scale.

    ``(B, C, H, W) -> (B, C, H, W)``. Computed in float32 (also under autocast), returned in the
    input's dtype.
    """

    def __init__(self, channels: int, scale: float = L2NORM_SCALE_INIT, eps: float = L2NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        unit = F.normalize(x.float(), dim=1, eps=self.eps)  # ||x[b, :, i, j]|| = 1
        return (self.weight.float().view(1, -1, 1, 1) * unit).to(x.dtype)


# -- 2. Extra feature layers ---------------------------------------------------------------------
FIRST_EXTRA_CHANNELS = (256, 512)  # conv8_1 reduces fc7's 1024 channels to 256; conv8_2 gives 512
LATER_EXTRA_CHANNELS = (128, 256)  # every later extra layer: 1×1 to 128, then 3×3 to 256


@dataclass(frozen=True)
class ExtraLayer:
    """One extra feature layer: ``{name}_1`` (1×1, reduce) then ``{name}_2`` (k×k, shrink)."""

    name: str  # "conv8": its convolutions are conv8_1 and conv8_2
    mid: int  # channels after the 1×1 reduction, before width scaling
    out: int  # channels of the source map it produces, before width scaling
    kernel: int  # side of conv{n}_2's kernel
    stride: int
    padding: int


# The released networks' exact extras, keyed by (image size, source map sides).
PAPER_EXTRAS: dict[tuple[int, tuple[int, ...]], tuple[ExtraLayer, ...]] = {
    # SSD300 (Fig. 2): 19 -> 10 -> 5 (3×3 stride 2, pad 1), then 5 -> 3 -> 1 (3×3, no padding)
    (300, (38, 19, 10, 5, 3, 1)): (
        ExtraLayer("conv8", 256, 512, kernel=3, stride=2, padding=1),  # (B, 512, 10, 10)
        ExtraLayer("conv9", 128, 256, kernel=3, stride=2, padding=1),  # (B, 256, 5, 5)
        ExtraLayer("conv10", 128, 256, kernel=3, stride=1, padding=0),  # (B, 256, 3, 3)
        ExtraLayer("conv11", 128, 256, kernel=3, stride=1, padding=0),  # (B, 256, 1, 1)
    ),
    # SSD512: four halvings 32 -> 16 -> 8 -> 4 -> 2, then a 4×4 kernel with pad 1: 2 -> 1
    (512, (64, 32, 16, 8, 4, 2, 1)): (
        ExtraLayer("conv8", 256, 512, kernel=3, stride=2, padding=1),  # (B, 512, 16, 16)
        ExtraLayer("conv9", 128, 256, kernel=3, stride=2, padding=1),  # (B, 256, 8, 8)
        ExtraLayer("conv10", 128, 256, kernel=3, stride=2, padding=1),  # (B, 256, 4, 4)
        ExtraLayer("conv11", 128, 256, kernel=3, stride=2, padding=1),  # (B, 256, 2, 2)
        ExtraLayer("conv12", 128, 256, kernel=4, stride=1, padding=1),  # (B, 256, 1, 1)
    ),
}


def plan_extras(cfg: PriorConfig) -> tuple[ExtraLayer, ...]:
    """The extra layers that turn fc7's map into the rest of ``cfg.feature_maps``.

    The paper's configurations get the released layers (:data:`PAPER_EXTRAS`). Otherwise each
    step from side ``s`` to the next side ``t`` is a 3×3 stride-2 pad-1 convolution when
    ``t = ceil(s / 2)``, else a 3×3 convolution without padding when ``t = s - 2``.
    """
    return _plan_extras_for_sides(cfg.image_size, tuple(cfg.feature_maps), cfg.name)


def _plan_extras_for_sides(
    image_size: int, sizes: tuple[int, ...], name: str
) -> tuple[ExtraLayer, ...]:
    """:func:`plan_extras` for the chain of map sides ``sizes`` (conv4_3, fc7, extras…)."""
    if (image_size, sizes) in PAPER_EXTRAS:
        return PAPER_EXTRAS[(image_size, sizes)]
    if len(sizes) < 2:
        raise ValueError(
            f"{name}: SSD's first two source maps are conv4_3 and fc7, so the config needs "
            f"at least 2 feature maps, got {list(sizes)}"
        )
    layers = []
    for k, (s, t) in enumerate(itertools.pairwise(sizes[1:])):
        mid, out = FIRST_EXTRA_CHANNELS if k == 0 else LATER_EXTRA_CHANNELS
        if t == math.ceil(s / 2):
            kernel, stride, padding = 3, 2, 1
        elif t == s - 2:
            kernel, stride, padding = 3, 1, 0
        else:
            raise ValueError(
                f"{name}: no extra layer takes feature map {k + 1} ({s}×{s}) to feature map "
                f"{k + 2} ({t}×{t}): a 3×3 stride-2 conv gives {math.ceil(s / 2)}×"
                f"{math.ceil(s / 2)}, a 3×3 conv without padding {s - 2}×{s - 2}"
            )
        layers.append(ExtraLayer(f"conv{8 + k}", mid, out, kernel, stride, padding))
    return tuple(layers)


def _extra_layer(layer: ExtraLayer, in_ch: int, width: float, batch_norm: bool) -> nn.Sequential:
    """``conv8_1`` (1×1, reduce the channels) then ``conv8_2`` (shrink the map), with ReLUs."""
    mid, out = scale_channels(layer.mid, width), scale_channels(layer.out, width)
    return nn.Sequential(
        OrderedDict(
            [
                *_conv_unit(f"{layer.name}_1", in_ch, mid, batch_norm, kernel_size=1),
                *_conv_unit(
                    f"{layer.name}_2",
                    mid,
                    out,
                    batch_norm,
                    kernel_size=layer.kernel,
                    stride=layer.stride,
                    padding=layer.padding,
                ),
            ]
        )
    )


class SSDBackbone(nn.Module):
    """VGG16 base + L2Norm + extra layers: ``(B, 3, S, S)`` normalised images -> source maps.

    Submodules (names follow the paper and the released Caffe model):
    ``to_conv4_3`` (conv1_1 … conv4_3), ``l2norm``, ``to_fc7`` (pool4, conv5_1 … conv5_3, pool5,
    fc6, fc7) and ``extras`` (one ``nn.Sequential`` per extra layer: conv8_1, conv8_2, …).
    """

    def __init__(self, extras: Sequence[ExtraLayer], width: float = 1.0, batch_norm: bool = False):
        super().__init__()
        # output channels of the last conv of each stage, and of fc6/fc7
        c1, c2, c3, c4, c5 = (scale_channels(stage[-1], width) for stage in VGG16_STAGES)
        fc = scale_channels(FC_CHANNELS, width)

        # (B, 3, 300, 300) -> (B, 512, 38, 38)
        self.to_conv4_3 = nn.Sequential(
            OrderedDict(
                [
                    *_vgg_stage(1, 3, width, batch_norm),  # (B, 64, 300, 300)
                    ("pool1", nn.MaxPool2d(2, 2)),  # 150
                    *_vgg_stage(2, c1, width, batch_norm),  # (B, 128, 150, 150)
                    ("pool2", nn.MaxPool2d(2, 2)),  # 75
                    *_vgg_stage(3, c2, width, batch_norm),  # (B, 256, 75, 75)
                    ("pool3", nn.MaxPool2d(2, 2, ceil_mode=True)),  # 38, not 37: ceil(75 / 2)
                    *_vgg_stage(4, c3, width, batch_norm),  # (B, 512, 38, 38)
                ]
            )
        )
        self.l2norm = L2Norm(c4)
        # (B, 512, 38, 38) -> (B, 1024, 19, 19)
        self.to_fc7 = nn.Sequential(
            OrderedDict(
                [
                    ("pool4", nn.MaxPool2d(2, 2)),  # 19
                    *_vgg_stage(5, c4, width, batch_norm),  # (B, 512, 19, 19)
                    ("pool5", nn.MaxPool2d(3, stride=1, padding=1)),  # "3×3-s1": stays 19
                    *_conv_unit(
                        "fc6",
                        c5,
                        fc,
                        batch_norm,
                        kernel_size=3,
                        padding=FC6_DILATION,
                        dilation=FC6_DILATION,
                    ),  # (B, 1024, 19, 19)
                    *_conv_unit("fc7", fc, fc, batch_norm, kernel_size=1),  # (B, 1024, 19, 19)
                ]
            )
        )
        # (B, 1024, 19, 19) -> conv8_2 (B, 512, 10, 10) -> … -> conv11_2 (B, 256, 1, 1)
        self.extras = nn.ModuleList()
        self.out_channels = [c4, fc]
        in_ch = fc
        for layer in extras:
            self.extras.append(_extra_layer(layer, in_ch, width, batch_norm))
            in_ch = scale_channels(layer.out, width)
            self.out_channels.append(in_ch)
        self.source_names = ["conv4_3", "fc7"] + [f"{layer.name}_2" for layer in extras]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, 3, S, S)`` normalised images -> the source maps, largest first."""
        x = self.to_conv4_3(x)  # (B, 512, 38, 38)
        sources = [self.l2norm(x)]
        x = self.to_fc7(x)  # (B, 1024, 19, 19)
        sources.append(x)
        for extra in self.extras:
            x = extra(x)  # (B, 512, 10, 10), (B, 256, 5, 5), (B, 256, 3, 3), (B, 256, 1, 1)
            sources.append(x)
        return sources


def source_sizes(cfg: PriorConfig, extras: Sequence[ExtraLayer], width: float) -> list[int]:
    """The side of every source map, from a dry run on the meta device (shapes only, no data)."""
    with torch.device("meta"):
        backbone = SSDBackbone(extras, width)
        images = torch.empty(1, 3, cfg.image_size, cfg.image_size)
    try:
        maps = backbone(images)
    except RuntimeError as err:
        raise ValueError(
            f"{cfg.name}: a {cfg.image_size}×{cfg.image_size} input is too small for the network "
            f"({err})"
        ) from err
    return [m.shape[-1] for m in maps]


def extras_for_sources(
    cfg: PriorConfig, sources: tuple[int, ...], width: float
) -> tuple[ExtraLayer, ...]:
    """The extra layers up to the deepest map in ``sources``, planned from the sides the config
    gives the maps it uses. An extra map between two used ones must be used too: nothing else
    says how large it should be."""
    top = max(sources)
    if top <= 1:  # conv4_3 and fc7 come with the base network
        return ()
    sides = {s: cfg.feature_maps[k] for k, s in reversed(list(enumerate(sources)))}
    missing = [i for i in range(2, top) if i not in sides]
    if missing:
        raise ValueError(
            f"{cfg.name}: sources {sources} skip backbone map(s) {missing} on the way to map "
            f"{top}; give each extra layer below the deepest one some default boxes"
        )
    base = source_sizes(cfg, (), width)  # [conv4_3, fc7] sides from the base network alone
    chain = (*base, *(sides[i] for i in range(2, top + 1)))
    return _plan_extras_for_sides(cfg.image_size, chain, cfg.name)


# -- 3. Receptive fields ---------------------------------------------------------------------------
# What one cell of a source map can see of the input, beside the default boxes put on it (the
# figure of lesson 1 is ssdlib.viz.feature_maps.plot_receptive_fields).


@dataclass
class LayerGeometry:
    """Where one source map sits in the network, in pixels of the input image."""

    name: str  # the layer's name in the paper (conv4_3, fc7, conv8_2, ...)
    size: int  # side of the map: 38 means 38×38 cells
    stride: float  # input pixels between neighbouring cells of the map, through the network
    prior_step: float  # pixels between the centres of its default boxes (the config's step)
    receptive_field: float  # side of the input window that can affect one cell
    box_scale: float  # side of the layer's small square default box (s_k · image), pixels
    image_size: int  # side of the network input, pixels


def receptive_fields(stages: Sequence[nn.Module]) -> list[tuple[float, float]]:
    """Theoretical receptive field and stride after each stage of a plain conv/pool network.

    Walks each stage's ``Conv2d`` and ``MaxPool2d``/``AvgPool2d`` modules in registration order
    (the order an ``nn.Sequential`` runs them) and applies, per layer with kernel ``k``, stride
    ``s`` and dilation ``d``: ``rf += d·(k - 1) · jump``, then ``jump *= s``. ``jump`` is the
    stride so far: how many input pixels one step on the current map covers. Padding shifts
    the window but does not change its size; ReLU, BatchNorm and L2Norm do not change either.

    Args:
        stages: modules run one after another, e.g. ``[to_conv4_3, to_fc7, *extras]``.

    Returns:
        One ``(receptive_field, stride)`` in input pixels per stage, after that stage.
    """
    rf, jump = 1.0, 1.0
    out = []
    for stage in stages:
        for m in stage.modules():
            if not isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
                continue
            k, s = _pair(m.kernel_size), _pair(m.stride)
            d = _pair(getattr(m, "dilation", 1))
            if k[0] != k[1] or s[0] != s[1] or d[0] != d[1]:
                raise ValueError(f"{m}: only square kernels, strides and dilations are handled")
            rf += d[0] * (k[0] - 1) * jump
            jump *= s[0]
        out.append((rf, jump))
    return out


def layer_geometry(
    stages: Sequence[nn.Module], names: Sequence[str], cfg: PriorConfig
) -> list[LayerGeometry]:
    """:func:`receptive_fields` of each source map, beside the default boxes ``cfg`` gives it.

    Args:
        stages: one module per source map, run in order; stage ``k`` ends at source map ``k``.
        names: the source maps' names.
        cfg: the default-box configuration of the same network.
    """
    m = len(cfg.feature_maps)
    if not len(stages) == len(names) == m:
        raise ValueError(f"got {len(stages)} stages and {len(names)} names for {m} source maps")
    rows = []
    for k, (rf, stride) in enumerate(receptive_fields(stages)):
        f = cfg.feature_maps[k]
        step = cfg.step(k)
        rows.append(LayerGeometry(names[k], f, stride, step, rf, cfg.min_sizes[k], cfg.image_size))
    return rows


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))
