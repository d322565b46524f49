"""Figures of lesson 2, default boxes (SSD §2.2, "Choosing scales and aspect ratios for default
boxes"): the boxes of one cell, the scales per layer, how well the boxes cover objects of each
size, and box shapes learned by k-means beside the hand-picked ones.

The numbers these figures draw are computed in :mod:`ssdlib.priors`
(:func:`~ssdlib.priors.default_box_coverage`, :func:`~ssdlib.priors.kmeans_box_shapes`).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ..boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from ..matching import IOU_THRESHOLD
from ..priors import (
    CoverageReport,
    PriorConfig,
    default_box_coverage,
    default_boxes,
    point_to_cell,
    prior_index,
)
from .common import GT_COLOR, _color, _new_axes, draw_boxes, draw_grid, show_image


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
        report: from :func:`ssdlib.priors.default_box_coverage`.
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
        The figure and the :class:`~ssdlib.priors.CoverageReport` it shows.
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
        centroids: ``(k, 2)`` cluster centres (from :func:`ssdlib.priors.kmeans_box_shapes`).
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
