"""Figures of lesson 1, multi-scale feature maps (SSD §2.1, "Multi-scale feature maps for
detection"; Fig. 2): the source maps laid over the photo, the receptive field and default box of
one cell per layer, and which layer each object's size belongs to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ..backbone import LayerGeometry
from .common import GT_COLOR, _panels, draw_boxes, show_image

FLAT_RTOL = 1e-5  # a map whose values differ by less than this (relative) is drawn flat: the
# differences are float32 rounding, which min-max scaling would blow up into a fake pattern


def plot_feature_map(
    image: Tensor | np.ndarray,
    fmap: Tensor,
    ax: Axes | None = None,
    title: str | None = None,
    alpha: float = 0.6,
    cmap: str = "magma",
) -> Axes:
    """One channel (or a channel summary) of a feature map, stretched over the photo.

    Args:
        fmap: ``(H', W')`` activations; each cell is drawn as a square over the image region it
            comes from. Values are min-max scaled to [0, 1] for display (only the pattern shows,
            not the magnitude); a map that is constant up to rounding is drawn as zeros.
    """
    fmap = torch.as_tensor(fmap).detach().cpu().float()
    if fmap.dim() != 2:
        raise ValueError(f"expected a feature map of shape (H, W), got {tuple(fmap.shape)}")
    ax = show_image(image, ax=ax, title=title)
    lo, hi = float(fmap.min()), float(fmap.max())
    flat = hi - lo <= FLAT_RTOL * max(abs(lo), abs(hi))  # only rounding noise: no pattern
    scaled = torch.zeros_like(fmap) if flat else (fmap - lo) / (hi - lo)
    ax.imshow(
        scaled.numpy(),
        extent=(0, 1, 1, 0),
        cmap=cmap,
        alpha=alpha,
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_aspect(ax.get_aspect())
    return ax


SUMMARIES = {  # ways to turn a (C, H, W) map into one (H, W) picture without picking a channel
    "mean": lambda fmap: fmap.mean(dim=0),  # average response (ReLU maps are >= 0)
    "max": lambda fmap: fmap.amax(dim=0),  # the strongest channel at each cell
    "norm": lambda fmap: fmap.norm(dim=0),  # L2 norm; constant on an L2-normalised map
}


def plot_source_maps(
    image: Tensor | np.ndarray,
    fmaps: Sequence[Tensor],
    names: Sequence[str] | None = None,
    ncols: int = 3,
    summary: str = "mean",
) -> Figure:
    """Every source map of one image, each summarised over its channels and laid over the photo.

    Args:
        fmaps: one ``(C, H', W')`` map per layer (a batch dim of 1 is dropped).
        names: the layers' names, for the titles.
        summary: "mean" (default), "max" or "norm" over the channels. SSD's conv4_3 map is
            L2-normalised per cell (§3.1), so its "norm" is the same everywhere.
    """
    if summary not in SUMMARIES:
        raise ValueError(f"summary must be one of {list(SUMMARIES)}, got {summary!r}")
    names = names or [f"map {k}" for k in range(len(fmaps))]
    if len(names) != len(fmaps):
        raise ValueError(f"got {len(names)} names for {len(fmaps)} feature maps")
    fig, axes = _panels(len(fmaps), ncols)
    for ax, fmap, name in zip(axes, fmaps, names, strict=True):
        fmap = torch.as_tensor(fmap).detach().cpu().float()
        if fmap.dim() == 4 and fmap.shape[0] == 1:
            fmap = fmap[0]
        if fmap.dim() != 3:
            raise ValueError(f"{name}: expected a map of shape (C, H, W), got {tuple(fmap.shape)}")
        c, h, w = fmap.shape
        plot_feature_map(image, SUMMARIES[summary](fmap), ax=ax, title=f"{name}: {c}×{h}×{w}")
    return fig


def plot_receptive_fields(
    image: Tensor | np.ndarray,
    table: Sequence[LayerGeometry],
    centre: tuple[float, float] = (0.5, 0.5),
    ncols: int = 3,
) -> Figure:
    """For each source map, three squares around one point of the image: one cell of the default
    box grid (the config's step: on conv10_2 and conv11_2 wider than the network's stride), the
    default box of scale ``s_k``, and the theoretical receptive field (the input pixels that can
    reach one cell; drawn clipped by the image border, its side is in the title).

    Args:
        table: from :func:`ssdlib.backbone.layer_geometry`; sizes in pixels of the network input.
        centre: ``(x, y)`` normalised point the squares are centred on.
    """
    fig, axes = _panels(len(table), ncols)
    cx, cy = centre
    for ax, row in zip(axes, table, strict=True):
        title = f"{row.name} ({row.size}×{row.size}): RF {row.receptive_field:.0f} px"
        show_image(image, ax=ax, title=title)
        for side, color, style, label in (
            (row.receptive_field, "white", ":", "receptive field"),
            (row.box_scale, GT_COLOR, "-", "default box $s_k$"),
            (row.prior_step, "#ffb000", "-", "one cell (box step)"),
        ):
            half = side / row.image_size / 2
            draw_boxes(
                ax,
                [[cx - half, cy - half, cx + half, cy + half]],
                color=color,
                linestyle=style,
                linewidth=1.8,
            )
            ax.plot([], [], color=color, linestyle=style, label=label)
    axes[0].legend(loc="lower left", fontsize=7, framealpha=0.8)
    return fig


LABEL_GAP = 1.25  # labels of one column stay this many text heights apart, so none overlaps


def _spread(values: Sequence[float], gap: float) -> list[float]:
    """Positions closest to the sorted ``values`` that are at least ``gap`` apart: labels that
    would collide are merged into a group, centred on the group's values."""
    groups: list[list[float]] = []
    for v in values:
        groups.append([v])
        while len(groups) > 1:
            a, b = groups[-2], groups[-1]
            top_a = sum(a) / len(a) + (len(a) - 1) / 2 * gap
            bottom_b = sum(b) / len(b) - (len(b) - 1) / 2 * gap
            if bottom_b - top_a >= gap:
                break
            groups[-2:] = [a + b]
    return [sum(g) / len(g) + (i - (len(g) - 1) / 2) * gap for g in groups for i in range(len(g))]


def plot_object_sizes(
    sizes: Tensor,
    layer: Tensor,
    scales: Sequence[float],
    names: Sequence[str],
    layer_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    fontsize: float = 7,
) -> Axes:
    """Each object's size in the column of the layer it is assigned to, beside the layers'
    scales ``s_k``, on a log axis; the objects' names are spread so that no two overlap (a thin
    line leads from a moved name to its point).

    Args:
        sizes: ``(N,)`` object sizes √(w·h), fractions of the image side.
        layer: ``(N,)`` the layer (column) of each object.
        scales: ``s_k`` per layer, fractions of the image side.
        names: one name per object.
        layer_names: the columns' names (default ``layer 0`` …).
    """
    sizes = torch.as_tensor(sizes, dtype=torch.float64).cpu()
    layer = torch.as_tensor(layer).cpu()
    if sizes.dim() != 1 or layer.shape != sizes.shape or len(names) != len(sizes):
        raise ValueError(
            f"expected sizes (N,), layer (N,) and N names, got {tuple(sizes.shape)}, "
            f"{tuple(layer.shape)} and {len(names)}"
        )
    m = len(scales)
    layer_names = list(layer_names) if layer_names is not None else [f"layer {k}" for k in range(m)]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    ax.scatter(range(m), scales, marker="s", s=70, c="crimson", label="scale $s_k$", zorder=3)
    ax.scatter(layer, sizes, marker="o", s=30, c="0.3", label="objects (√(w·h))", zorder=3)
    ax.set_xticks(range(m), layer_names, fontsize=8)
    ax.set_xlim(-0.5, m - 0.2)  # room for the last column's names
    ax.set_yscale("log")
    lo = min(float(sizes.min()), min(scales)) / 1.25
    hi = max(float(sizes.max()), max(scales)) * 1.25
    ax.set_ylim(lo, hi)
    ax.set_ylabel("size, fraction of the image")
    ax.legend(fontsize=8, loc="upper left")
    ax.figure.draw_without_rendering()  # settle the layout: the axes' height in pixels is final
    height_px = ax.get_window_extent().height
    decades_per_px = math.log10(hi / lo) / height_px
    gap = LABEL_GAP * fontsize * ax.figure.dpi / 72 * decades_per_px  # one text line, in log10
    for k in range(m):
        mine = (layer == k).nonzero().flatten()
        mine = mine[sizes[mine].argsort()].tolist()
        wanted = [math.log10(float(sizes[i])) for i in mine]
        for i, y, y_label in zip(mine, wanted, _spread(wanted, gap), strict=True):
            moved = abs(y_label - y) > gap / 4
            ax.annotate(
                names[i],
                (k, 10**y),
                xytext=(k + 0.12, 10**y_label),
                textcoords="data",
                fontsize=fontsize,
                va="center",
                arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if moved else None,
            )
    return ax
