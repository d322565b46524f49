"""Figures of lesson 4, the loss and hard negative mining (SSD §2.2, "Training objective" and
"Hard negative mining"): the default boxes that enter the confidence loss of one image, every
negative's loss with the mining cut, and how other weightings (focal loss) spread the loss.

The numbers these figures draw are computed in :mod:`ssdlib.loss`
(:func:`~ssdlib.loss.mining_report`, :func:`~ssdlib.loss.cumulative_loss_share`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from ..boxes import cxcywh_to_xyxy
from ..loss import cumulative_loss_share, mining_report
from .common import GT_COLOR, _color, _new_axes, draw_boxes, image_to_numpy, show_image

POSITIVE_COLOR = "#ff33cc"  # matched default boxes: magenta, unlike the negatives (red to yellow),
# the ground truth (cyan) and most of what the shapes are painted with
NEGATIVE_CMAP = "autumn_r"  # mined negatives by loss: yellow for the least, red for the most
HARDEST_SHOWN = 20  # mined negatives a static figure draws: more hide the image and each other
NEGATIVE_ALPHA = 0.75  # the mined negatives are translucent, so that boxes behind them show
MUTED_LEVEL, MUTED_CONTRAST = 0.3, 0.4  # the image under the boxes: dark grey, flat


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


def plot_negative_weighting(
    bg_loss: Tensor,
    labels: Tensor,
    weights: dict[str, Tensor],
    ax: Axes | None = None,
    title: str | None = None,
    legend: str | None = "upper left",
) -> Axes:
    """Which negatives a confidence loss listens to: one curve per weighting, the share of its
    loss carried by the ``n`` hardest negatives, against ``n``
    (:func:`~ssdlib.loss.cumulative_loss_share`).

    A curve that reaches 1 early gives the loss to a few hard negatives; the diagonal-like curve
    of plain cross-entropy spreads it over all of them.

    Args:
        bg_loss, labels: ``(B, P)`` or ``(P,)``, as for :func:`~ssdlib.loss.cumulative_loss_share`.
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
