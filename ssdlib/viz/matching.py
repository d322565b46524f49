"""Figures of lesson 3, matching and encoding (SSD §2.2, "Matching strategy"; eq. 2): one
object's IoU with every default box, the positives per layer, what the forced best match adds,
and the offsets a matched box regresses to.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from torch import Tensor

from ..boxes import _as_boxes, cxcywh_to_xyxy, xyxy_to_cxcywh
from ..matching import IOU_THRESHOLD
from ..priors import PriorConfig, layer_of_prior
from .common import GT_COLOR, _color, _new_axes, _panels, draw_boxes, draw_grid, show_image


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


def _match_flags(
    priors: Tensor, matched_gt: Tensor, forced: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``matched_gt`` (checked against ``priors``) and ``forced`` (all False if None), on CPU."""
    matched_gt = torch.as_tensor(matched_gt).cpu()
    if matched_gt.shape != priors.shape[:1]:
        raise ValueError(
            f"expected matched_gt of shape ({priors.shape[0]},), got {tuple(matched_gt.shape)}"
        )
    forced = torch.zeros_like(matched_gt, dtype=torch.bool) if forced is None else forced.cpu()
    return matched_gt, forced


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
    matched_gt, forced = _match_flags(priors, matched_gt, forced)
    layer = layer_of_prior(cfg)
    boxes = cxcywh_to_xyxy(priors.detach().cpu().float())
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
    matched_gt, forced = _match_flags(priors, matched_gt, forced)
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
