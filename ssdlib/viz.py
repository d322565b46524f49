"""Figures for the notebooks, in the order of the paper: feature maps (SSD §2.1), default boxes
and matching (§2.2), the box encoding (eq. 2), non-maximum suppression (§3).

Every plotting function is pure: it takes data (tensors, a :class:`~ssdlib.priors.PriorConfig`)
and an optional matplotlib ``Axes``, draws, and returns the figure or the axes. Nothing here
keeps state; the widgets in :mod:`ssdlib.widgets` are thin shells around these functions.

One convention throughout: images are shown on the unit square, so every box is **xyxy
normalised to [0, 1]** of the image, the same numbers ``ssdlib`` computes with. Images are
``(3, H, W)`` tensors in [0, 1] (what the datasets return) or ``(H, W, 3)`` arrays.

The last section, *Analysis*, holds the small computations that only the figures need:
coverage of ground truth by default boxes, k-means of box shapes with an IoU distance,
receptive fields, and synthetic detections for the NMS lesson.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle
from torch import Tensor, nn

from .boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from .matching import IOU_THRESHOLD
from .nms import NMSStep
from .priors import PriorConfig, default_boxes, layer_of_prior, prior_index
from .utils import TAB10

PALETTE = tuple(to_rgb(c) for c in TAB10)  # one colour per object or layer, cycling after ten;
# RGB tuples, which draw_boxes tells apart from a list of colours
GT_COLOR = "#00e5ff"  # ground truth: a cyan that stands out on photos and on the tab10 colours
PANEL_INCHES = 3.2  # side of one image panel; six of them fit a notebook's width in two rows
GRID_ALPHA = 0.35  # cell grid lines: visible, but quieter than the boxes drawn over them
FLAT_RTOL = 1e-5  # a map whose values differ by less than this (relative) is drawn flat: the
# differences are float32 rounding, which min-max scaling would blow up into a fake pattern
MAX_GRID_LINES = 40  # finer grids than this only darken the photo; draw every other line


def _color(i: int) -> tuple[float, float, float]:
    return PALETTE[i % len(PALETTE)]


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (4.5, 4.5)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _panels(n: int, ncols: int | None = None, size: float = PANEL_INCHES) -> tuple[Figure, list]:
    """A figure with ``n`` image panels in a grid; the unused ones are hidden."""
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows), layout="constrained", squeeze=False
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _as_boxes(boxes: Tensor | Sequence, name: str = "boxes") -> Tensor:
    t = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu()
    if t.numel() == 0:
        return t.reshape(0, 4)
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.shape[1] != 4:
        raise ValueError(f"expected {name} of shape (N, 4) xyxy, got {tuple(t.shape)}")
    return t


def image_to_numpy(image: Tensor | np.ndarray) -> np.ndarray:
    """A ``(3, H, W)`` tensor in [0, 1] or an ``(H, W, 3)`` array -> ``(H, W, 3)`` float array."""
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"expected an image tensor of shape (3, H, W), got {tuple(image.shape)}"
            )
        array = image.detach().cpu().float().permute(1, 2, 0).numpy()
    else:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an image array of shape (H, W, 3), got {array.shape}")
        if array.dtype == np.uint8:
            array = array / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def show_image(
    image: Tensor | np.ndarray, ax: Axes | None = None, title: str | None = None
) -> Axes:
    """Show an image on the unit square, so that normalised xyxy boxes draw in place.

    The axes keep the photo's own proportions (a 300×451 photo stays wide) while the data
    coordinates run over [0, 1] on both sides, y pointing down as in image coordinates.
    """
    array = image_to_numpy(image)
    ax = _new_axes(ax)
    h, w = array.shape[:2]
    ax.imshow(array, extent=(0, 1, 1, 0), interpolation="antialiased")
    ax.set_aspect(h / w)
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def draw_boxes(
    ax: Axes,
    boxes: Tensor | Sequence,
    color: str | Sequence | None = None,
    labels: Sequence[str] | None = None,
    linewidth: float = 1.5,
    linestyle: str = "-",
    alpha: float = 1.0,
) -> list[Rectangle]:
    """Draw boxes on ``ax``.

    Args:
        ax: axes set up by :func:`show_image` (or any axes in the same units as the boxes).
        boxes: ``(N, 4)`` xyxy, normalised.
        color: one colour for all, or one per box; None gives each box its own palette colour.
        labels: optional text per box, written at its top-left corner.

    Returns:
        The ``N`` rectangles added (tests and widgets read their geometry back).
    """
    boxes = _as_boxes(boxes)
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"got {len(labels)} labels for {len(boxes)} boxes")
    patches = []
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if color is None:
            c = _color(i)
        elif isinstance(color, str) or (len(color) in (3, 4) and np.isscalar(color[0])):
            c = color
        else:
            c = color[i]
        rect = Rectangle(
            (x1, y1),
            x2 - x1,
            y2 - y1,
            fill=False,
            edgecolor=c,
            linewidth=linewidth,
            linestyle=linestyle,
            alpha=alpha,
        )
        ax.add_patch(rect)
        patches.append(rect)
        if labels is not None and labels[i]:
            ax.text(
                x1,
                y1,
                labels[i],
                color="white",
                fontsize=8,
                va="bottom",
                ha="left",
                bbox={"facecolor": c, "alpha": 0.8, "pad": 1, "linewidth": 0},
            )
    return patches


def draw_grid(ax: Axes, cfg: PriorConfig, layer: int, color: str = "white") -> None:
    """The cell grid of one source map: lines every ``step`` pixels of the network input."""
    f = cfg.feature_maps[layer]
    step = cfg.step(layer) / cfg.image_size
    every = 2 if f > MAX_GRID_LINES else 1
    for i in range(0, f + 1, every):
        ax.axhline(min(i * step, 1.0), color=color, linewidth=0.5, alpha=GRID_ALPHA)
        ax.axvline(min(i * step, 1.0), color=color, linewidth=0.5, alpha=GRID_ALPHA)


# -- §2.1 Multi-scale feature maps -----------------------------------------------------------------


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
        table: from :func:`layer_geometry`; sizes in pixels of the network input.
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


# -- §2.2 Default boxes ----------------------------------------------------------------------------


def box_shape_labels(cfg: PriorConfig, layer: int) -> list[str]:
    """A label per default box of one cell of ``layer``, in the cell's order (as
    :func:`ssdlib.priors.cell_box_sizes`): ``"1:1 s_k"``, ``"1:1 extra"`` (the square of scale
    √(s_k s_k+1)), then ``"2:1"``, ``"1:2"``, … (width:height) for each aspect ratio."""
    labels = ["1:1 $s_k$", "1:1 extra"]
    for a in cfg.aspect_ratios[layer]:
        labels += [f"{a:g}:1", f"1:{a:g}"]
    return labels


def plot_cell_boxes(
    image: Tensor | np.ndarray,
    cfg: PriorConfig,
    layer: int,
    row: int,
    col: int,
    ax: Axes | None = None,
    gt_boxes: Tensor | None = None,
    grid: bool = True,
    title: str | None = None,
    legend: bool = True,
) -> Axes:
    """The default boxes of one cell of one layer, over the photo and the layer's grid.

    Args:
        cfg: the default-box configuration.
        layer, row, col: which cell (row-major, as :func:`ssdlib.priors.prior_index`); the
            default title names it "cell (row, col)".
        gt_boxes: optional ``(G, 4)`` xyxy normalised ground truth, drawn in cyan.
        legend: name each box's shape (:func:`box_shape_labels`) and the cyan objects, in a
            legend under the image.
    """
    boxes = cxcywh_to_xyxy(default_boxes(cfg)[prior_index(cfg, layer, row, col)])  # (A, 4)
    f = cfg.feature_maps[layer]
    ax = show_image(image, ax=ax, title=title or f"layer {layer}: {f}×{f}, cell ({row}, {col})")
    if grid:
        draw_grid(ax, cfg, layer)
    if gt_boxes is not None:
        draw_boxes(ax, gt_boxes, color=GT_COLOR, linewidth=2.0)
    draw_boxes(ax, boxes, linewidth=1.8)
    centre = xyxy_to_cxcywh(boxes[:1])[0, :2].tolist()
    ax.plot(*centre, marker="o", markersize=3, color="white")
    if legend:
        for i, label in enumerate(box_shape_labels(cfg, layer)):
            ax.plot([], [], color=_color(i), linewidth=1.8, label=label)
        if gt_boxes is not None and len(gt_boxes):
            ax.plot([], [], color=GT_COLOR, linewidth=2.0, label="objects")
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=4,
            fontsize=7,
            frameon=False,
            title="w:h of the default boxes",
            title_fontsize=7,
        )
    # Boxes of the top and bottom layers reach outside the image: show all of them.
    lo = min(0.0, float(boxes.min()))
    hi = max(1.0, float(boxes.max()))
    ax.set_xlim(lo, hi)
    ax.set_ylim(hi, lo)
    return ax


def plot_scales(
    configs: Sequence[PriorConfig], ax: Axes | None = None, names: Sequence[str] | None = None
) -> Axes:
    """Scale ``s_k`` (side of the small square, fraction of the image) per layer, per config."""
    ax = _new_axes(ax, figsize=(5, 3.2))
    for i, cfg in enumerate(configs):
        s = cfg.scales[:-1]
        label = names[i] if names else cfg.name
        ax.plot(range(1, len(s) + 1), s, marker="o", color=_color(i), label=label)
    ax.set_xlabel("layer k")
    ax.set_ylabel("scale $s_k$ (fraction of image side)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_coverage(
    report: CoverageReport,
    ax: Axes | None = None,
    scales: Sequence[float] | None = None,
    label: str | None = None,
    color: str | tuple | None = None,
) -> Axes:
    """Share of objects whose best default box has IoU >= the threshold, by object size.

    Args:
        report: from :func:`default_box_coverage`.
        scales: optional ``s_k`` per layer, marked on the size axis (where a layer's boxes sit).
    """
    ax = _new_axes(ax, figsize=(5, 3.2))
    edges = report.bin_edges
    centres = (edges[:-1] + edges[1:]) / 2
    widths = edges[1:] - edges[:-1]
    ax.bar(
        centres,
        report.coverage_per_bin.nan_to_num(0).numpy(),
        width=widths * 0.9,
        color=color or _color(0),
        alpha=0.75,
        label=label,
    )
    for x, n in zip(centres.tolist(), report.count_per_bin.tolist(), strict=True):
        if n:  # how many objects each bar stands for, at its foot
            ax.text(x, 0.02, str(n), ha="center", va="bottom", fontsize=7, color="0.25")
    for k, s in enumerate(scales or []):
        ax.axvline(s, color="0.3", linestyle=":", linewidth=1)
        ax.text(s, 1.1, f"$s_{k + 1}$", ha="center", va="center", fontsize=8)
    ax.set_xlim(0, float(edges[-1]))
    ax.set_ylim(0, 1.17)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("object size √(w·h), fraction of image side")
    ax.set_ylabel(f"share with a box at IoU ≥ {report.threshold:g}")
    ax.set_title(
        f"coverage {report.coverage:.0%} of {report.num_objects} objects (count at each foot)",
        fontsize=9,
    )
    return ax


def plot_default_box_explorer(
    image: Tensor | np.ndarray,
    cfg: PriorConfig,
    layer: int,
    point: tuple[float, float],
    gt_boxes: Tensor | None = None,
    objects: Tensor | None = None,
    threshold: float = IOU_THRESHOLD,
    report: CoverageReport | None = None,
) -> tuple[Figure, CoverageReport]:
    """The default-box explorer's figure: the boxes of the cell under ``point`` on ``layer``
    (left) and the coverage of ``objects`` by all of ``cfg``'s boxes, by size (right).

    Args:
        point: ``(x, y)`` normalised; the cell of ``layer`` that contains it is drawn.
        gt_boxes: ``(G, 4)`` xyxy normalised ground truth of ``image``.
        objects: ``(N, 4)`` xyxy normalised boxes to measure coverage on (default: ``gt_boxes``).
        report: ``default_box_coverage(objects, cfg, threshold)`` if already computed (it
            depends on the config only, not on the layer or the point): it is drawn as given.

    Returns:
        The figure and the :class:`CoverageReport` it shows.
    """
    objects = objects if objects is not None else gt_boxes
    if report is None:
        if objects is None:
            raise ValueError("need objects (or gt_boxes) to measure the coverage on")
        report = default_box_coverage(objects, cfg, threshold=threshold)
    row, col = point_to_cell(cfg, layer, *point)
    fig, (ax_img, ax_cov) = plt.subplots(
        1, 2, figsize=(9.5, 4.2), layout="constrained", width_ratios=(1, 1.15)
    )
    plot_cell_boxes(image, cfg, layer, row, col, ax=ax_img, gt_boxes=gt_boxes)
    plot_coverage(report, ax=ax_cov, scales=cfg.scales[:-1])
    return fig, report


def plot_box_shape_clusters(
    gt_wh: Tensor,
    centroids: Tensor,
    default_wh: Tensor | None = None,
    assignment: Tensor | None = None,
    ax: Axes | None = None,
    log: bool = True,
) -> Axes:
    """Ground-truth box shapes ``(w, h)`` with k-means centroids and the hand-picked defaults.

    Args:
        gt_wh: ``(N, 2)`` widths and heights, fractions of the image.
        centroids: ``(k, 2)`` cluster centres (from :func:`kmeans_box_shapes`).
        default_wh: optional ``(A, 2)`` default box shapes to compare with.
        assignment: optional ``(N,)`` cluster of each box, for colouring.
        log: logarithmic axes, so that small boxes do not pile up in a corner.
    """
    ax = _new_axes(ax, figsize=(5, 4.6))
    gt_wh = torch.as_tensor(gt_wh).detach().cpu()
    colors = [_color(int(a)) for a in assignment] if assignment is not None else "0.5"
    ax.scatter(gt_wh[:, 0], gt_wh[:, 1], s=10, c=colors, alpha=0.6, linewidths=0)
    ax.scatter(
        centroids[:, 0],
        centroids[:, 1],
        s=110,
        marker="*",
        c="black",
        label=f"k-means centroids (k={len(centroids)})",
    )
    if default_wh is not None:
        ax.scatter(
            default_wh[:, 0],
            default_wh[:, 1],
            s=45,
            marker="s",
            facecolors="none",
            edgecolors="crimson",
            linewidths=1.5,
            label=f"default box shapes ({len(default_wh)})",
        )
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        low = float(min(gt_wh.min(), centroids.min())) * 0.8
        ax.set_xlim(low, 1.05)
        ax.set_ylim(low, 1.05)
    else:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("width (fraction of image)")
    ax.set_ylabel("height (fraction of image)")
    ax.legend(fontsize=8, loc="upper left")
    return ax


# -- §2.2 Matching strategy ------------------------------------------------------------------------


def plot_iou_maps(
    iou: Tensor, cfg: PriorConfig, names: Sequence[str] | None = None, ncols: int = 6
) -> Figure:
    """One object's IoU with every default box, as one heat map per layer.

    Each cell shows the best IoU among its ``A`` boxes; the maps say on which layer, and where,
    the object has default boxes that overlap it well.

    Args:
        iou: ``(P,)`` IoU of one ground-truth box with each of ``cfg``'s default boxes.
    """
    iou = torch.as_tensor(iou).detach().cpu()
    if iou.shape != (cfg.num_priors,):
        raise ValueError(f"expected iou of shape ({cfg.num_priors},), got {tuple(iou.shape)}")
    m = len(cfg.feature_maps)
    fig, axes = _panels(m, ncols=min(ncols, m), size=2.2)
    for k, (ax, chunk) in enumerate(zip(axes, iou.split(cfg.boxes_per_map), strict=True)):
        f, a = cfg.feature_maps[k], cfg.boxes_per_cell[k]
        best = chunk.reshape(f, f, a).max(dim=2).values  # (f, f)
        im = ax.imshow(best.numpy(), vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
        name = names[k] if names else f"layer {k}"
        ax.set_title(f"{name} {f}×{f}\nbest {float(best.max()):.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.7, label="IoU")
    return fig


def plot_iou_matrix(
    iou: Tensor,
    ax: Axes | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    threshold: float = IOU_THRESHOLD,
) -> Axes:
    """A small IoU matrix with its values written in; cells at or above ``threshold`` in bold.

    Args:
        iou: ``(G, n)``: G ground-truth boxes against a handful ``n`` of default boxes.
    """
    iou = torch.as_tensor(iou).detach().cpu()
    if iou.dim() != 2:
        raise ValueError(f"expected an IoU matrix of shape (G, n), got {tuple(iou.shape)}")
    g, n = iou.shape
    ax = _new_axes(ax, figsize=(0.55 * n + 1.5, 0.5 * g + 1.2))
    ax.imshow(iou.numpy(), vmin=0, vmax=1, cmap="Blues", aspect="auto")
    for i in range(g):
        for j in range(n):
            v = float(iou[i, j])
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > 0.6 else "black",
                fontweight="bold" if v >= threshold else "normal",
            )
    ax.set_yticks(range(g), row_labels or [f"object {i}" for i in range(g)], fontsize=8)
    ax.set_xticks(range(n), col_labels or [str(j) for j in range(n)], fontsize=7, rotation=90)
    ax.set_xlabel("default box")
    return ax


def plot_matches(
    image: Tensor | np.ndarray,
    priors: Tensor,
    matched_gt: Tensor,
    cfg: PriorConfig,
    gt_boxes: Tensor | None = None,
    forced: Tensor | None = None,
    names: Sequence[str] | None = None,
    ncols: int = 3,
) -> Figure:
    """The positives of one image, one panel per layer, coloured by the object they match.

    Args:
        priors: ``(P, 4)`` cxcywh default boxes of ``cfg``.
        matched_gt: ``(P,)`` long, the matched object of each default box, -1 for background.
        gt_boxes: ``(G, 4)`` xyxy normalised, drawn in cyan.
        forced: ``(P,)`` bool, positives that only the forced best match made (drawn dashed).
    """
    matched_gt = torch.as_tensor(matched_gt).cpu()
    if matched_gt.shape != priors.shape[:1]:
        raise ValueError(
            f"expected matched_gt of shape ({priors.shape[0]},), got {tuple(matched_gt.shape)}"
        )
    layer = layer_of_prior(cfg)
    boxes = cxcywh_to_xyxy(priors.detach().cpu().float())
    forced = torch.zeros_like(matched_gt, dtype=torch.bool) if forced is None else forced.cpu()
    m = len(cfg.feature_maps)
    fig, axes = _panels(m, ncols)
    for k, ax in enumerate(axes):
        f = cfg.feature_maps[k]
        pos = ((layer == k) & (matched_gt >= 0)).nonzero().flatten()
        name = names[k] if names else f"layer {k}"
        show_image(image, ax=ax, title=f"{name} ({f}×{f}): {len(pos)} positives")
        if gt_boxes is not None:
            draw_boxes(ax, gt_boxes, color=GT_COLOR, linewidth=2.0)
        for p in pos.tolist():
            draw_boxes(
                ax,
                boxes[p],
                color=_color(int(matched_gt[p]) + 1),
                linewidth=1.2,
                linestyle="--" if forced[p] else "-",
            )
    return fig


def plot_positives(
    image: Tensor | np.ndarray,
    priors: Tensor,
    matched_gt: Tensor,
    cfg: PriorConfig,
    gt_boxes: Tensor | None = None,
    forced: Tensor | None = None,
    obj: int | None = None,
    ax: Axes | None = None,
    names: Sequence[str] | None = None,
) -> Axes:
    """The positives of one object (or of all, ``obj=None``) in one panel, coloured by layer.

    Args:
        priors: ``(P, 4)`` cxcywh default boxes of ``cfg``.
        matched_gt: ``(P,)`` long, the matched object of each default box, -1 for background.
        gt_boxes: ``(G, 4)`` xyxy normalised, drawn in cyan (the chosen object thicker).
        forced: ``(P,)`` bool, positives that only the forced best match made (drawn dashed).
        obj: which object's positives to draw; None draws all.
        names: the layers' names, for the legend.
    """
    matched_gt = torch.as_tensor(matched_gt).cpu()
    if matched_gt.shape != priors.shape[:1]:
        raise ValueError(
            f"expected matched_gt of shape ({priors.shape[0]},), got {tuple(matched_gt.shape)}"
        )
    forced = torch.zeros_like(matched_gt, dtype=torch.bool) if forced is None else forced.cpu()
    layer = layer_of_prior(cfg)
    pos = (matched_gt >= 0) if obj is None else (matched_gt == obj)
    boxes = cxcywh_to_xyxy(priors.detach().cpu().float())
    ax = show_image(image, ax=ax)
    if gt_boxes is not None:
        widths = [3.0 if obj is None or i == obj else 1.0 for i in range(len(gt_boxes))]
        for box, lw in zip(_as_boxes(gt_boxes), widths, strict=True):
            draw_boxes(ax, box, color=GT_COLOR, linewidth=lw)
    for k in range(len(cfg.feature_maps)):
        idx = (pos & (layer == k)).nonzero().flatten().tolist()
        for p in idx:
            draw_boxes(
                ax, boxes[p], color=_color(k), linewidth=1.2, linestyle="--" if forced[p] else "-"
            )
        f = cfg.feature_maps[k]
        name = names[k] if names else f"layer {k}"
        ax.plot([], [], color=_color(k), label=f"{name} ({f}×{f}): {len(idx)}")
    ax.legend(loc="lower left", fontsize=7, framealpha=0.8, title="positives", title_fontsize=7)
    return ax


def plot_forced_boxes(
    gt_boxes: Tensor,
    priors: Tensor,
    assignments: dict[str, Sequence[int]],
    cfg: PriorConfig | None = None,
    layer: int = 0,
    names: Sequence[str] | None = None,
    margin: float = 0.5,
) -> Figure:
    """One panel per matching rule: the objects (dashed) and the default box each one is given
    (solid, in the object's colour), zoomed onto them; an object given no box says so in the
    legend.

    Args:
        gt_boxes: ``(G, 4)`` xyxy normalised objects.
        priors: ``(P, 4)`` cxcywh default boxes.
        assignments: rule name -> one default-box index per object (-1: none).
        cfg, layer: draw that layer's cell grid (light grey) behind the boxes.
        names: a name per object (default ``object 0`` …).
        margin: space around the drawn boxes, as a fraction of their extent.
    """
    gt_boxes = _as_boxes(gt_boxes, "gt_boxes")
    names = list(names) if names is not None else [f"object {g}" for g in range(len(gt_boxes))]
    for rule, boxes in assignments.items():
        if len(boxes) != len(gt_boxes):
            raise ValueError(f"{rule}: got {len(boxes)} boxes for {len(gt_boxes)} objects")
    drawn = cxcywh_to_xyxy(priors.float().cpu())
    used = [int(p) for boxes in assignments.values() for p in boxes if int(p) >= 0]
    extent = torch.cat([gt_boxes.float().cpu(), drawn[used]])
    lo, hi = extent[:, :2].min(dim=0).values, extent[:, 2:].max(dim=0).values
    pad = (hi - lo) * margin
    aspect = float((hi - lo)[1] + 2 * pad[1]) / float((hi - lo)[0] + 2 * pad[0])
    width = 3.8  # inches per panel; the height follows the zoomed region, plus title and legend
    fig, axes = plt.subplots(
        1,
        len(assignments),
        figsize=(width * len(assignments), width * min(aspect, 1.5) + 0.3 + 0.2 * len(names)),
        layout="constrained",
    )
    axes = np.atleast_1d(axes)
    for ax, (rule, boxes) in zip(axes, assignments.items(), strict=True):
        ax.set_facecolor("white")
        if cfg is not None:
            draw_grid(ax, cfg, layer, color="0.6")
        for g, p in enumerate(int(b) for b in boxes):
            draw_boxes(ax, gt_boxes[g : g + 1], color=_color(g), linestyle="--", linewidth=1.5)
            if p >= 0:
                draw_boxes(ax, drawn[p : p + 1], color=_color(g), linewidth=2.2, alpha=0.8)
            given = f"default box {p}" if p >= 0 else "no default box"
            ax.plot([], [], color=_color(g), label=f"{names[g]}: {given}")
        ax.set_xlim(float(lo[0] - pad[0]), float(hi[0] + pad[0]))
        ax.set_ylim(float(hi[1] + pad[1]), float(lo[1] - pad[1]))
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(rule, fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False)
    return fig


def plot_iou_histogram(
    iou: Tensor,
    threshold: float = IOU_THRESHOLD,
    ax: Axes | None = None,
    floor: float = 0.05,
    taken: Tensor | None = None,
    log: bool = True,
) -> Axes:
    """Histogram of one object's IoU with every default box, with the matching threshold.

    Args:
        iou: ``(P,)`` IoU of one ground-truth box with each default box.
        floor: boxes below this IoU (almost all of them) are left out and only counted.
        taken: optional ``(P,)`` bool, True for the default boxes matched to another object;
            those at or above the threshold are drawn apart (orange), so that the green bars
            are exactly the object's threshold positives.
        log: a log count axis, so that the few boxes near the threshold stay visible beside
            the hundreds of barely overlapping ones.
    """
    iou = torch.as_tensor(iou).detach().cpu().float()
    taken = torch.zeros_like(iou, dtype=torch.bool) if taken is None else taken.cpu().bool()
    if taken.shape != iou.shape:
        raise ValueError(f"taken must have the shape of iou {tuple(iou.shape)}, got {taken.shape}")
    ax = _new_axes(ax, figsize=(5, 3.2))
    bins, span = 40, (floor, 1.0)
    above = iou >= threshold
    below = (iou >= floor) & ~above
    ax.hist(iou[below].numpy(), bins=bins, range=span, color="0.55", label="below the threshold")
    parts = [iou[above & ~taken].numpy()]
    colors, labels = [_color(2)], [f"at or above it: {int((above & ~taken).sum())}"]
    if bool((above & taken).any()):
        labels = [f"at or above it, its own: {int((above & ~taken).sum())}"]
        parts.append(iou[above & taken].numpy())
        colors.append(_color(1))
        labels.append(f"at or above it, another object's: {int((above & taken).sum())}")
    ax.hist(parts, bins=bins, range=span, color=colors, label=labels, stacked=True)
    ax.axvline(threshold, color="crimson", linestyle="--")
    n_above = int(above.sum())
    ax.set_title(
        f"{n_above} of {len(iou)} default boxes at IoU ≥ {threshold:.2f}\n"
        f"(best {float(iou.max()):.2f}; {int((iou < floor).sum())} below {floor:g} not shown)",
        fontsize=8,
    )
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7)  # a bar of one box still shows
    ax.set_xlabel("IoU with the object")
    ax.set_ylabel("default boxes" + (" (log scale)" if log else ""))
    ax.legend(fontsize=7, loc="upper right")
    return ax


def plot_encoding(
    image: Tensor | np.ndarray,
    gt_box: Tensor,
    prior: Tensor,
    offsets: Tensor,
    ax: Axes | None = None,
) -> Axes:
    """One default box, its matched ground truth, and the four numbers that move one onto the
    other (SSD eq. 2).

    Args:
        gt_box: ``(4,)`` xyxy normalised.
        prior: ``(4,)`` cxcywh.
        offsets: ``(4,)`` (Δcx, Δcy, Δw, Δh), as :func:`ssdlib.boxes.encode` returns.
    """
    ax = show_image(image, ax=ax)
    prior_xyxy = cxcywh_to_xyxy(torch.as_tensor(prior).float()[None])
    draw_boxes(ax, prior_xyxy, color="#ffb000", linestyle="--", linewidth=2, labels=["default"])
    draw_boxes(ax, gt_box, color=GT_COLOR, linewidth=2, labels=["ground truth"])
    d = torch.as_tensor(prior).float().tolist()
    g = xyxy_to_cxcywh(_as_boxes(gt_box))[0].tolist()
    ax.add_patch(FancyArrowPatch(d[:2], g[:2], arrowstyle="-|>", mutation_scale=12, color="white"))
    dx, dy, dw, dh = torch.as_tensor(offsets).tolist()
    ax.set_title(f"Δcx={dx:.2f}  Δcy={dy:.2f}  Δw={dw:.2f}  Δh={dh:.2f}", fontsize=9)
    return ax


OFFSET_NAMES = ("Δcx", "Δcy", "Δw", "Δh")  # the four regression targets, in encode's order


def plot_offset_histograms(offsets: dict[str, Tensor], bins: int = 40) -> Figure:
    """Histograms of regression targets, one panel per coordinate, one series per entry.

    Args:
        offsets: name -> ``(N, 4)`` offsets (Δcx, Δcy, Δw, Δh) of N positives, e.g. the same
            positives encoded with and without the variances.
        bins: histogram bins per panel (shared by the series).
    """
    series = {}
    for name, values in offsets.items():
        values = torch.as_tensor(values).detach().cpu().float()
        if values.dim() != 2 or values.shape[1] != 4:
            raise ValueError(f"{name}: expected offsets of shape (N, 4), got {tuple(values.shape)}")
        series[name] = values
    fig, axes = plt.subplots(1, 4, figsize=(12, 2.8), layout="constrained")
    for k, ax in enumerate(axes):
        pooled = torch.cat([v[:, k] for v in series.values()]).numpy()
        edges = np.histogram_bin_edges(pooled, bins=bins)  # shared, so the heights compare
        for i, (name, values) in enumerate(series.items()):
            v = values[:, k]
            label = f"{name} (std {float(v.std()):.2f})"
            ax.hist(v.numpy(), bins=edges, alpha=0.55, color=_color(i), label=label)
    for k, ax in enumerate(axes):
        ax.set_title(OFFSET_NAMES[k], fontsize=10)
        ax.legend(fontsize=7)
        ax.set_yticks([])
    return fig


# -- §2.2 Training objective: hard negative mining -------------------------------------------------

POSITIVE_COLOR = "#ff33cc"  # matched default boxes: magenta, unlike the negatives (red to yellow),
# the ground truth (cyan) and most of what the shapes are painted with
NEGATIVE_CMAP = "autumn_r"  # mined negatives by loss: yellow for the least, red for the most
HARDEST_SHOWN = 20  # mined negatives a static figure draws: more hide the image and each other
NEGATIVE_ALPHA = 0.75  # the mined negatives are translucent, so that boxes behind them show
MUTED_LEVEL, MUTED_CONTRAST = 0.3, 0.4  # the image under the boxes: dark grey, flat


@dataclass
class MiningReport:
    """The numbers behind one image's hard negative mining (what the figures draw)."""

    positives: int  # matched default boxes
    negatives: int  # all the others: background
    mined: int  # negatives that enter the confidence loss
    negative_loss: float  # Σ -log p_0 over all negatives
    mined_loss: float  # Σ -log p_0 over the mined ones

    @property
    def mined_share(self) -> float:
        """Share of all negatives' confidence loss that the mined ones carry."""
        return self.mined_loss / self.negative_loss if self.negative_loss > 0 else float("nan")


def mining_report(bg_loss: Tensor, labels: Tensor, chosen: Tensor) -> MiningReport:
    """Count positives, negatives and mined negatives of one image, and their loss.

    Args:
        bg_loss: ``(P,)`` each default box's loss as a negative, ``-log p_0``
            (:func:`ssdlib.loss.background_loss`).
        labels: ``(P,)`` long, 0 = background.
        chosen: ``(P,)`` bool, from :func:`ssdlib.loss.hard_negative_mining`.
    """
    bg_loss, labels, chosen = (torch.as_tensor(t).detach().cpu() for t in (bg_loss, labels, chosen))
    if not bg_loss.shape == labels.shape == chosen.shape or bg_loss.dim() != 1:
        raise ValueError(
            f"expected bg_loss, labels and chosen of one shape (P,), got {tuple(bg_loss.shape)}, "
            f"{tuple(labels.shape)}, {tuple(chosen.shape)}"
        )
    negative = labels == 0
    mined = negative & chosen
    return MiningReport(
        positives=int((~negative).sum()),
        negatives=int(negative.sum()),
        mined=int(mined.sum()),
        negative_loss=float(bg_loss[negative].double().sum()),
        mined_loss=float(bg_loss[mined].double().sum()),
    )


def _muted(image: Tensor | np.ndarray, contrast: float = MUTED_CONTRAST) -> np.ndarray:
    """The image in grey with its contrast lowered, so that coloured boxes drawn on it stand out."""
    array = image_to_numpy(image)
    grey = array @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (H, W) luma
    grey = MUTED_LEVEL + contrast * (grey - grey.mean())
    return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)


def plot_hard_negatives(
    image: Tensor | np.ndarray,
    priors: Tensor,
    labels: Tensor,
    chosen: Tensor,
    bg_loss: Tensor,
    gt_boxes: Tensor | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    top: int | None = None,
    colorbar: bool = True,
) -> Axes:
    """The default boxes that enter the confidence loss of one image.

    On the image in muted grey: the positives in magenta, the ``top`` hardest mined negatives
    coloured by their loss ``-log p_0`` (a colour bar gives the scale), the ground truth in cyan.
    The legend counts every mined negative, drawn or not; the other negatives are easy and never
    enter the loss.

    Args:
        priors: ``(P, 4)`` cxcywh.
        labels: ``(P,)`` long, 0 = background.
        chosen: ``(P,)`` bool, positives and mined negatives.
        bg_loss: ``(P,)`` ``-log p_0`` of each box (the colours of the negatives).
        gt_boxes: ``(G, 4)`` xyxy normalised.
        top: how many of the mined negatives to draw, hardest first; None draws them all (the
            explorer, whose slider grows the set). A static figure passes
            :data:`HARDEST_SHOWN`: more boxes would hide the image and one another.
        colorbar: add a colour bar for the negatives' loss beside ``ax``.
    """
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0 or None, got {top}")
    from matplotlib.colors import LogNorm, Normalize

    report = mining_report(bg_loss, labels, chosen)
    boxes = cxcywh_to_xyxy(priors.detach().cpu().float())
    labels, chosen, bg_loss = labels.cpu(), chosen.cpu(), bg_loss.detach().cpu().float()
    ax = show_image(_muted(image), ax=ax)
    mined = (chosen & (labels == 0)).nonzero().flatten()
    mined = mined[bg_loss[mined].argsort(descending=True, stable=True)][:top]  # hardest first
    draw_boxes(ax, boxes[labels > 0], color=POSITIVE_COLOR, linewidth=1.0, alpha=0.7)
    cmap = plt.get_cmap(NEGATIVE_CMAP)
    if len(mined):
        loss = bg_loss[mined]
        lo, hi = float(loss.min()), float(loss.max())
        hi = max(hi, lo * 1.01 + 1e-6)  # one box, or equal losses: still a scale to draw
        # A log scale where the losses span more than a decade (a trained network's do).
        norm = LogNorm(lo, hi) if 0 < lo < hi / 10 else Normalize(lo, hi)
        for rank, p in reversed(list(enumerate(mined.tolist()))):  # the hardest drawn last, on top
            hardness = 1.0 - rank / max(len(mined) - 1, 1)  # 1 for the hardest
            draw_boxes(
                ax,
                boxes[p],
                color=cmap(norm(float(bg_loss[p]))),
                linewidth=1.0 + 1.5 * hardness,
                alpha=NEGATIVE_ALPHA,
            )
        if colorbar:
            bar = ax.figure.colorbar(
                plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.8, pad=0.02
            )
            bar.set_label("−log p₀ of a mined negative", fontsize=8)
            bar.ax.tick_params(which="both", labelsize=7)
            # Plain numbers (0.2, not 2×10⁻¹); of the minor ticks only 2, 3 and 5 (×10ⁿ) get one.
            bar.ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.3g}"))
            bar.ax.yaxis.set_minor_formatter(
                plt.FuncFormatter(lambda v, _: f"{v:.3g}" if f"{v:.0e}"[0] in "235" else "")
            )
    if gt_boxes is not None:
        draw_boxes(ax, gt_boxes, color=GT_COLOR, linewidth=2.0)
    drawn = f" ({len(mined)} hardest drawn)" if len(mined) < report.mined else ""
    ax.plot([], [], color=POSITIVE_COLOR, label=f"positives: {report.positives}")
    ax.plot([], [], color=cmap(1.0), label=f"mined negatives: {report.mined}{drawn}")
    ax.plot([], [], color="none", label=f"left out: {report.negatives - report.mined}")
    ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_negative_losses(
    bg_loss: Tensor,
    labels: Tensor,
    chosen: Tensor,
    ax: Axes | None = None,
    label: str | None = None,
    color: str | tuple | None = None,
) -> Axes:
    """Every negative's confidence loss, hardest first, with the mining cut.

    The curve is ``-log p_0`` of the negatives sorted in decreasing order (log scale); the part
    left of the dot is what hard negative mining keeps. Call it again on the same axes to
    compare two models.

    Args:
        bg_loss, labels, chosen: ``(P,)`` each, as for :func:`plot_hard_negatives`.
        label: the series' name in the legend (the share of the loss it keeps is added).
    """
    report = mining_report(bg_loss, labels, chosen)
    bg_loss, labels = torch.as_tensor(bg_loss).detach().cpu().float(), labels.cpu()
    ranked = bg_loss[labels == 0].sort(descending=True).values.clamp(min=1e-8).numpy()
    ax = _new_axes(ax, figsize=(5.5, 3.4))
    rank = np.arange(1, len(ranked) + 1)
    text = f"{label}: " if label else ""
    text += f"the {report.mined} mined carry {report.mined_share:.0%} of the negatives' loss"
    (line,) = ax.plot(rank, ranked, color=color, label=text)
    if report.mined:
        ax.fill_between(
            rank[: report.mined], ranked[: report.mined], alpha=0.25, color=line.get_color()
        )
        ax.plot(report.mined, ranked[report.mined - 1], "o", color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("negatives, hardest first")
    ax.set_ylabel("confidence loss −log p₀")
    ax.legend(fontsize=7)
    return ax


def cumulative_loss_share(bg_loss: Tensor, labels: Tensor, weight: Tensor) -> Tensor:
    """How a weighted confidence loss spreads over the negatives: the share of it that the ``n``
    hardest negatives carry, for every ``n``.

    The negatives of all the images given are ranked by ``-log p_0``, hardest first; each
    contributes ``weight × (-log p_0)``: a weight of 1 is plain cross-entropy, the mining mask
    (1 for a mined negative, 0 otherwise) is hard negative mining, ``(1 - p_0)^γ`` is focal loss.

    Args:
        bg_loss: ``(B, P)`` or ``(P,)``, ``-log p_0`` of each box.
        labels: same shape, long, 0 = background.
        weight: same shape, each box's weight (>= 0).

    Returns:
        ``(N,)`` float64 over the ``N`` negatives, non-decreasing, ending at 1 (all nan when the
        weighted loss is 0).
    """
    bg_loss, labels, weight = (torch.as_tensor(t).detach().cpu() for t in (bg_loss, labels, weight))
    if not bg_loss.shape == labels.shape == weight.shape:
        raise ValueError(
            f"expected bg_loss, labels and weight of one shape, got {tuple(bg_loss.shape)}, "
            f"{tuple(labels.shape)}, {tuple(weight.shape)}"
        )
    if bool((weight < 0).any()):
        raise ValueError(f"weights must be >= 0, got a minimum of {float(weight.min())}")
    negative = labels == 0
    loss = bg_loss[negative].double()  # (N,)
    order = loss.argsort(descending=True, stable=True)
    weighted = (weight[negative].double() * loss)[order]
    total = weighted.sum()
    return weighted.cumsum(0) / total if total > 0 else torch.full_like(weighted, math.nan)


def plot_negative_weighting(
    bg_loss: Tensor,
    labels: Tensor,
    weights: dict[str, Tensor],
    ax: Axes | None = None,
    title: str | None = None,
    legend: str | None = "upper left",
) -> Axes:
    """Which negatives a confidence loss listens to: one curve per weighting, the share of its
    loss carried by the ``n`` hardest negatives (:func:`cumulative_loss_share`), against ``n``.

    A curve that reaches 1 early gives the loss to a few hard negatives; the diagonal-like curve
    of plain cross-entropy spreads it over all of them.

    Args:
        bg_loss, labels: ``(B, P)`` or ``(P,)``, as for :func:`cumulative_loss_share`.
        weights: the legend's name -> each box's weight, same shape.
        legend: where the legend goes (a matplotlib ``loc``); None: no legend.
    """
    ax = _new_axes(ax, figsize=(5.5, 3.4))
    for i, (name, weight) in enumerate(weights.items()):
        share = cumulative_loss_share(bg_loss, labels, weight).numpy()
        rank = np.arange(1, len(share) + 1)
        ax.plot(rank, share, color=_color(i), lw=2, label=name)
    ax.axhline(1.0, color="0.75", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("negatives, hardest first (by −log p₀)")
    ax.set_ylabel("share of the negatives' loss")
    if legend is not None:
        ax.legend(fontsize=7, loc=legend)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


# -- §3 Non-maximum suppression --------------------------------------------------------------------

LABEL_TOP_ROOM = 0.06  # a box whose top is this close to the image's top edge (as a fraction of
# its height) gets its label inside the box, where the panel's title cannot cover it
LABEL_RIGHT_ROOM = 0.15  # a box starting this close to the right edge gets a right-aligned label


def _label_box(ax: Axes, box: Tensor, text: str, color: str | tuple) -> None:
    """Write ``text`` on a coloured tag at the box's top corner, kept inside the image."""
    x1, y1, x2, _ = (float(v) for v in box)
    at_right = x1 > 1 - LABEL_RIGHT_ROOM
    ax.text(
        x2 if at_right else x1,
        y1,
        text,
        color="white",
        fontsize=8,
        va="top" if y1 < LABEL_TOP_ROOM else "bottom",  # y points down: "top" is inside the box
        ha="right" if at_right else "left",
        bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "linewidth": 0},
    )


def nms_state(num_boxes: int, steps: Sequence[NMSStep], upto: int) -> Tensor:
    """Status of every box after the first ``upto`` NMS steps.

    Returns:
        ``(N,)`` long: 0 pending, 1 kept, 2 suppressed.
    """
    if not 0 <= upto <= len(steps):
        raise ValueError(f"upto must be in [0, {len(steps)}], got {upto}")
    state = torch.zeros(num_boxes, dtype=torch.long)
    for step in steps[:upto]:
        state[step.kept] = 1
        state[step.suppressed] = 2
    return state


def plot_nms_step(
    image: Tensor | np.ndarray,
    boxes: Tensor,
    scores: Tensor,
    steps: Sequence[NMSStep],
    step: int,
    ax: Axes | None = None,
) -> Axes:
    """Greedy NMS after ``step`` iterations (0 = before the first).

    Kept boxes are green with their score, the box kept in this iteration is thick, the boxes
    it suppresses are red and dashed; earlier suppressed boxes fade; the rest, still to be
    decided, are thin and white.

    Args:
        boxes: ``(N, 4)`` xyxy normalised, for one class.
        scores: ``(N,)``.
        steps: from :func:`ssdlib.nms.nms_steps`.
    """
    boxes = _as_boxes(boxes)
    state = nms_state(len(boxes), steps, step)
    current = steps[step - 1] if step > 0 else None
    ax = show_image(image, ax=ax)
    for i, (box, s) in enumerate(zip(boxes, torch.as_tensor(scores).tolist(), strict=True)):
        if current is not None and i in current.suppressed:
            draw_boxes(ax, box, color="red", linestyle="--", linewidth=1.6)
        elif current is not None and i == current.kept:
            draw_boxes(ax, box, color="#00d000", linewidth=3.0)
            _label_box(ax, box, f"{s:.2f}", "#00d000")
        elif state[i] == 1:
            draw_boxes(ax, box, color="#00d000", linewidth=1.8)
            _label_box(ax, box, f"{s:.2f}", "#00d000")
        elif state[i] == 2:
            draw_boxes(ax, box, color="0.6", linestyle=":", linewidth=0.8, alpha=0.6)
        else:
            draw_boxes(ax, box, color="white", linewidth=0.8, alpha=0.8)
    kept, gone = int((state == 1).sum()), int((state == 2).sum())
    title = f"step {step}/{len(steps)}: {kept} kept, {gone} suppressed, "
    title += f"{len(boxes) - kept - gone} pending"
    if current is not None:
        title += f"\nkeep box {current.kept}, remove {len(current.suppressed)}"
    ax.set_title(title, fontsize=9)
    return ax


def plot_detections(
    image: Tensor | np.ndarray,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    class_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Detections over the photo, coloured by class and labelled "name score".

    Args:
        boxes: ``(D, 4)`` xyxy normalised.
        scores: ``(D,)``.
        labels: ``(D,)`` long classes, 1..K-1 (0 is background and never a detection).
        class_names: optional names indexed by class (index 0 = background).
    """
    boxes = _as_boxes(boxes)
    scores, labels = torch.as_tensor(scores).tolist(), torch.as_tensor(labels).tolist()
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"got {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    ax = show_image(image, ax=ax, title=title)
    for box, s, c in zip(boxes, scores, labels, strict=True):
        name = class_names[c] if class_names else str(c)
        draw_boxes(ax, box, color=_color(c))
        _label_box(ax, box, f"{name} {s:.2f}", _color(c))
    return ax


def plot_candidates(
    image: Tensor | np.ndarray,
    boxes: Tensor,
    labels: Tensor,
    class_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Raw (box, class) candidates before NMS, coloured by class as :func:`plot_detections`
    colours them, with a legend that names each class and counts its boxes.

    Args:
        boxes: ``(N, 4)`` xyxy normalised.
        labels: ``(N,)`` long classes, 1..K-1.
        class_names: optional names indexed by class (index 0 = background).
    """
    boxes = _as_boxes(boxes)
    labels = torch.as_tensor(labels).detach().cpu()
    if labels.shape != (len(boxes),):
        raise ValueError(f"got {len(boxes)} boxes and labels of shape {tuple(labels.shape)}")
    ax = show_image(image, ax=ax, title=title)
    draw_boxes(ax, boxes, color=[_color(c) for c in labels.tolist()], linewidth=0.8)
    for c in labels.unique().tolist():
        name = class_names[c] if class_names else str(c)
        ax.plot([], [], color=_color(c), lw=2, label=f"{name}: {int((labels == c).sum())}")
    if len(labels):
        ax.legend(fontsize=7, loc="lower left", framealpha=0.8, title="class: boxes")
        ax.get_legend().get_title().set_fontsize(7)
    return ax


# -- Analysis: small computations behind the figures -----------------------------------------------

SIZE_BIN_EDGES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)  # object size √(w·h) as a
# fraction of the image: finer at the small end, where default boxes leave the largest gaps.


@dataclass
class CoverageReport:
    """How well a set of default boxes covers a set of ground-truth boxes."""

    threshold: float  # IoU from which a default box counts as a match (0.5 in the paper)
    best_iou: Tensor  # (N,) each object's best IoU with any default box
    num_matches: Tensor  # (N,) long: default boxes with IoU >= threshold, per object
    sizes: Tensor  # (N,) object size √(w·h), fraction of the image side
    bin_edges: Tensor  # (S+1,) size bins
    count_per_bin: Tensor  # (S,) long: objects per size bin
    coverage_per_bin: Tensor  # (S,) share of a bin's objects with best IoU >= threshold (nan: none)

    @property
    def num_objects(self) -> int:
        return len(self.best_iou)

    @property
    def coverage(self) -> float:
        """Share of all objects whose best default box reaches the threshold."""
        return float((self.best_iou >= self.threshold).float().mean()) if self.num_objects else 0.0

    def __repr__(self) -> str:
        return (
            f"CoverageReport(objects={self.num_objects}, threshold={self.threshold:g}, "
            f"coverage={self.coverage:.1%}, matches={int(self.num_matches.sum())})"
        )


def default_box_coverage(
    objects: Tensor,
    cfg_or_priors: PriorConfig | Tensor,
    threshold: float = IOU_THRESHOLD,
    bin_edges: Sequence[float] = SIZE_BIN_EDGES,
) -> CoverageReport:
    """For each object, its best IoU with any default box and how many boxes reach ``threshold``.

    An object whose best IoU stays below the threshold still gets one positive in training (the
    forced best match), but a poorly fitting one; coverage measures how often that happens.

    Args:
        objects: ``(N, 4)`` xyxy normalised ground truth (pooled over any number of images: the
            default boxes are the same for every image).
        cfg_or_priors: a :class:`PriorConfig`, or ``(P, 4)`` cxcywh default boxes.
        threshold: IoU that counts as covered.
        bin_edges: object-size bins for the per-size summary.
    """
    objects = _as_boxes(objects, "objects")
    priors = (
        default_boxes(cfg_or_priors) if isinstance(cfg_or_priors, PriorConfig) else cfg_or_priors
    )
    iou = box_iou(objects, cxcywh_to_xyxy(priors.float().cpu()))  # (N, P)
    best = iou.max(dim=1).values if len(objects) else torch.zeros(0)
    num = (iou >= threshold).sum(dim=1)
    wh = (objects[:, 2:] - objects[:, :2]).clamp(min=0)
    sizes = (wh[:, 0] * wh[:, 1]).sqrt()
    edges = torch.tensor(bin_edges, dtype=torch.float32)
    which = torch.bucketize(sizes.clamp(max=float(edges[-1])), edges[1:-1], right=True)  # (N,)
    s = len(edges) - 1
    counts = torch.bincount(which, minlength=s)
    hits = torch.bincount(which, weights=(best >= threshold).float(), minlength=s)
    per_bin = torch.where(counts > 0, hits / counts.clamp(min=1), torch.full((s,), math.nan))
    return CoverageReport(threshold, best, num, sizes, edges, counts, per_bin)


def point_to_cell(cfg: PriorConfig, layer: int, x: float, y: float) -> tuple[int, int]:
    """``(row, col)`` of the cell of ``layer`` whose area contains the normalised point (x, y)."""
    if not 0 <= layer < len(cfg.feature_maps):
        raise ValueError(f"layer must be in [0, {len(cfg.feature_maps)}), got {layer}")
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"point ({x}, {y}) is outside the unit square")
    f = cfg.feature_maps[layer]
    step = cfg.step(layer) / cfg.image_size
    return min(int(y / step), f - 1), min(int(x / step), f - 1)


def shape_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of box shapes placed on a common centre: ``(N, 2)`` × ``(M, 2)`` -> ``(N, M)``.

    The distance k-means needs for box shapes: it compares sizes and aspect ratios, not
    positions, and unlike a Euclidean distance on (w, h) it does not favour large boxes.
    """
    if wh1.shape[-1:] != (2,) or wh2.shape[-1:] != (2,):
        raise ValueError(
            f"expected shapes (N, 2) and (M, 2), got {tuple(wh1.shape)}, {tuple(wh2.shape)}"
        )
    inter = torch.minimum(wh1[:, None, :], wh2[None, :, :]).prod(dim=-1)  # (N, M)
    union = wh1.prod(dim=-1)[:, None] + wh2.prod(dim=-1)[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


@dataclass
class KMeansResult:
    centroids: Tensor  # (k, 2) cluster centres (w, h), sorted by area
    assignment: Tensor  # (N,) long: cluster of each box
    mean_iou: float  # mean over boxes of the IoU with their own centroid
    iterations: int  # how many assignment steps ran before nothing changed


KMEANS_MAX_ITERS = 100  # a few hundred box shapes settle in well under 30 steps


def kmeans_box_shapes(
    wh: Tensor, k: int, seed: int = 0, max_iters: int = KMEANS_MAX_ITERS
) -> KMeansResult:
    """k-means of box shapes with the distance ``1 - IoU`` (as YOLOv2 chose its anchors).

    Initialised with k-means++ (each next centre drawn with probability ∝ distance²) from a
    seeded generator, so a run repeats. Centres move to the mean (w, h) of their boxes; the loop
    stops when no box changes cluster.

    Args:
        wh: ``(N, 2)`` positive widths and heights, N >= k.
        k: number of clusters.

    Returns:
        The centroids sorted by area, each box's cluster, and the mean IoU to its centroid.
    """
    wh = torch.as_tensor(wh, dtype=torch.float64).cpu()
    if wh.dim() != 2 or wh.shape[1] != 2:
        raise ValueError(f"expected wh of shape (N, 2), got {tuple(wh.shape)}")
    if not 1 <= k <= len(wh):
        raise ValueError(f"need 1 <= k <= {len(wh)} boxes, got k={k}")
    if (wh <= 0).any():
        i = int((wh <= 0).any(dim=1).nonzero()[0])
        raise ValueError(
            f"box {i} has a non-positive side: {[round(v, 4) for v in wh[i].tolist()]}"
        )
    gen = torch.Generator().manual_seed(seed)
    centroids = wh[torch.randint(len(wh), (1,), generator=gen)]
    while len(centroids) < k:
        d2 = (1 - shape_iou(wh, centroids)).min(dim=1).values ** 2  # (N,)
        nxt = torch.multinomial(d2 + 1e-12, 1, generator=gen)
        centroids = torch.cat([centroids, wh[nxt]])
    assignment = torch.full((len(wh),), -1, dtype=torch.long)
    iterations = 0
    while iterations < max_iters:
        iterations += 1
        new = shape_iou(wh, centroids).argmax(dim=1)  # (N,)
        if torch.equal(new, assignment):
            break
        assignment = new
        for c in range(k):
            members = wh[assignment == c]
            if len(members):  # an empty cluster keeps its centre
                centroids[c] = members.mean(dim=0)
    order = centroids.prod(dim=1).argsort()
    centroids = centroids[order]
    assignment = torch.argsort(order)[assignment]
    mean_iou = float(shape_iou(wh, centroids).gather(1, assignment[:, None]).mean())
    return KMeansResult(centroids.float(), assignment, mean_iou, iterations)


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


JITTER_SCALE = 0.08  # box jitter as a fraction of the box size: overlaps mostly above 0.45
DECOY_SCORE_MAX = 0.5  # boxes placed away from any object score below this


def jittered_detections(
    gt_boxes: Tensor,
    gt_labels: Tensor,
    per_object: int = 8,
    num_decoys: int = 4,
    jitter: float = JITTER_SCALE,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Candidate detections for the NMS lesson, made from the ground truth instead of a network.

    Each object gets ``per_object`` copies whose corners move by a Gaussian of standard deviation
    ``jitter × (w, h)``; a copy's score falls with its distance from the object (score ∝ IoU with
    noise), as a detector's would. ``num_decoys`` random boxes with low scores are added.

    Args:
        gt_boxes: ``(G, 4)`` xyxy normalised.
        gt_labels: ``(G,)`` long classes >= 1.

    Returns:
        boxes ``(N, 4)`` xyxy normalised and clipped, scores ``(N,)`` in (0, 1), labels ``(N,)``,
        with ``N = G · per_object + num_decoys``.
    """
    gt_boxes = _as_boxes(gt_boxes, "gt_boxes")
    gt_labels = torch.as_tensor(gt_labels, dtype=torch.long).cpu()
    if gt_labels.shape != gt_boxes.shape[:1]:
        raise ValueError(f"got {len(gt_boxes)} boxes but labels of shape {tuple(gt_labels.shape)}")
    if per_object < 1 or num_decoys < 0:
        raise ValueError(
            f"need per_object >= 1 and num_decoys >= 0, got {per_object}, {num_decoys}"
        )
    if len(gt_boxes) == 0:
        raise ValueError("need at least one ground-truth box to make detections from")
    gen = torch.Generator().manual_seed(seed)
    g = len(gt_boxes)
    wh = (gt_boxes[:, 2:] - gt_boxes[:, :2]).repeat(1, 2)  # (G, 4): w, h, w, h
    noise = torch.randn(g, per_object, 4, generator=gen) * jitter  # (G, n, 4)
    boxes = (gt_boxes[:, None, :] + noise * wh[:, None, :]).reshape(-1, 4).clamp(0, 1)
    iou = box_iou(boxes, gt_boxes).reshape(g, per_object, g)
    fit = iou[torch.arange(g), :, torch.arange(g)]  # (G, n): each copy's IoU with its object
    scores = (fit * (0.6 + 0.4 * torch.rand(g, per_object, generator=gen))).reshape(-1)
    labels = gt_labels.repeat_interleave(per_object)
    if num_decoys:
        centre = torch.rand(num_decoys, 2, generator=gen) * 0.8 + 0.1
        size = torch.rand(num_decoys, 2, generator=gen) * 0.2 + 0.05
        decoys = torch.cat([centre - size / 2, centre + size / 2], dim=1).clamp(0, 1)
        boxes = torch.cat([boxes, decoys])
        scores = torch.cat([scores, torch.rand(num_decoys, generator=gen) * DECOY_SCORE_MAX])
        pick = torch.randint(g, (num_decoys,), generator=gen)
        labels = torch.cat([labels, gt_labels[pick]])
    return boxes, scores.clamp(1e-3, 1 - 1e-3), labels
