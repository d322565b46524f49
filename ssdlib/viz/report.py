"""Figures for reading a trained detector (lesson 8): the curves, detections, error kinds,
recall by size, galleries and confusion that :mod:`ssdlib.report` computes.

1. the training curves from :func:`ssdlib.train.train`'s history (:func:`plot_history`);
2. precision-recall curves (:func:`plot_pr_curves`), detections over an image
   (:func:`plot_image_detections`);
3. a :class:`~ssdlib.report.Diagnosis` drawn: the error breakdown, recall by object size,
   galleries of misses and false positives;
4. the confusion matrix (:func:`plot_confusion`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ..detections import iou_numpy
from ..report import (
    ERROR_KINDS,
    REPORT_SCORE_THRESHOLD,
    SIZE_EDGES_PX,
    Diagnosis,
)
from ..utils import share_by_size
from ..voc_metric import PRCurve
from .common import GT_COLOR, _color, _panels, _pixels_to_unit, draw_boxes, show_image
from .nms import plot_detections

KIND_COLORS = ("#d9d9d9", "#1f77b4", "#17becf", "#d62728", "#9467bd")  # correct: a quiet grey


# -- 1. Training curves ------------------------------------------------------------------------


def plot_history(history: Sequence[dict[str, float]]) -> Figure:
    """Three panels from :attr:`ssdlib.train.TrainResult.history` (the rows of metrics.csv):
    the localisation, confidence and total losses; the learning rate; validation mAP (COCO's
    AP@[.5:.95] and AP50) where the run evaluated. All against the optimiser step."""
    if len(history) == 0:
        raise ValueError("the history is empty: train() logs a row every log_every steps")
    missing = {"step", "loss", "loc_loss", "conf_loss", "lr"} - set(history[0])
    if missing:
        raise KeyError(f"history rows need {sorted(missing)}; row 0 has {sorted(history[0])}")
    step = np.array([row["step"] for row in history])
    fig, (ax_loss, ax_lr, ax_map) = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    for key, label, style in (
        ("loss", "total", "-"),
        ("conf_loss", "confidence (softmax)", "--"),
        ("loc_loss", "localisation (smooth L1)", ":"),
    ):
        ax_loss.plot(step, [row[key] for row in history], style, label=label)
    ax_loss.set(xlabel="step", ylabel="loss per positive", title="MultiBox loss", yscale="log")
    ax_loss.legend(fontsize=8)
    ax_lr.plot(step, [row["lr"] for row in history])
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    evaluated = [row for row in history if math.isfinite(row.get("val_map_50", math.nan))]
    if evaluated:
        eval_step = [row["step"] for row in evaluated]
        ax_map.plot(eval_step, [row["val_map_50"] for row in evaluated], "o-", label="AP50")
        ax_map.plot(eval_step, [row["val_map"] for row in evaluated], "s-", label="AP@[.5:.95]")
        ax_map.legend(fontsize=8)
    else:
        ax_map.text(0.5, 0.5, "no validation in this run", ha="center", va="center")
    ax_map.set(xlabel="step", ylabel="mAP", title="validation mAP (COCO)", ylim=(0, 1))
    return fig


def plot_pr_curves(curves: dict[int, PRCurve], ax: Axes | None = None) -> Axes:
    """One precision-recall curve per class (from :func:`ssdlib.voc_metric.precision_recall`),
    labelled with its all-point AP. A curve ends at the recall the detections reach."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    for i, curve in enumerate(curves.values()):
        if curve.num_gt == 0:
            continue
        recall = np.concatenate([[0.0], curve.recall])
        precision = np.concatenate([[1.0], curve.precision])
        ax.plot(recall, precision, color=_color(i + 1), label=_curve_label(curve))
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title("precision-recall per class (IoU 0.5)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return ax


def _curve_label(curve: PRCurve) -> str:
    return f"{curve.name}  AP {curve.ap:.2f}"


def plot_image_detections(
    image: Tensor,
    detections: dict[str, Tensor],
    class_names: Sequence[str],
    score_threshold: float = REPORT_SCORE_THRESHOLD,
    target: dict[str, Any] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """An image with the detections scoring at least ``score_threshold`` ("name score", one
    colour per class) and, if ``target`` is given, its ground truth dashed in cyan.

    Args:
        image: ``(3, H, W)`` in [0, 1].
        detections: ``model.detect``'s dict for this image: ``boxes`` ``(D, 4)`` xyxy pixels,
            ``scores`` ``(D,)``, ``labels`` ``(D,)``.
        class_names: index 0 background.
        target: optional ``{"boxes": (G, 4) xyxy pixels, ...}``.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {tuple(image.shape)}")
    h, w = image.shape[1:]
    keep = detections["scores"] >= score_threshold
    ax = plot_detections(
        image,
        _pixels_to_unit(detections["boxes"][keep].cpu(), w, h),
        detections["scores"][keep].cpu(),
        detections["labels"][keep].cpu(),
        class_names,
        ax=ax,
        title=title,
    )
    if target is not None:
        draw_boxes(ax, _pixels_to_unit(target["boxes"], w, h), color=GT_COLOR, linestyle="--")
    return ax


def plot_error_breakdown(
    diagnosis: Diagnosis,
    score_threshold: float = REPORT_SCORE_THRESHOLD,
    ax: Axes | None = None,
) -> Axes:
    """SSD Fig. 3's top row: of the top ``n`` detections, the share of each kind, as ``n``
    grows (in multiples of the number of objects, as Hoiem et al. plot it). A dotted line
    marks where the scores fall below ``score_threshold``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    d, g = len(diagnosis.det_kind), max(len(diagnosis.obj_label), 1)
    if d == 0:
        ax.text(0.5, 0.5, "no detections", ha="center", va="center")
        return ax
    top = np.arange(1, d + 1)  # (D,) top-n
    shares = [np.cumsum(diagnosis.det_kind == code) / top for code in range(len(ERROR_KINDS))]
    x = top / g
    ax.stackplot(x, *shares, labels=ERROR_KINDS, colors=KIND_COLORS)
    above = int((diagnosis.det_score >= score_threshold).sum())
    if 0 < above < d:
        ax.axvline(above / g, color="black", linestyle=":", linewidth=1)
        ax.text(above / g, 1.01, f" score {score_threshold}", fontsize=8, va="bottom")
    ax.set(xscale="log", xlim=(x[0], x[-1]), ylim=(0, 1), ylabel="share of the top detections")
    ax.set_xlabel(f"top detections, in multiples of the {g} objects")
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    return ax


def _size_bin_names(edges: Sequence[float]) -> list[str]:
    names = []
    for lo, hi in itertools.pairwise(edges):
        names.append(
            f"≥ {lo:g}" if math.isinf(hi) else f"< {hi:g}" if lo == 0 else f"{lo:g}-{hi:g}"
        )
    return names


def plot_recall_by_size(
    diagnosis: Diagnosis,
    score_threshold: float = REPORT_SCORE_THRESHOLD,
    edges: Sequence[float] = SIZE_EDGES_PX,
    ax: Axes | None = None,
) -> Axes:
    """SSD Fig. 4 in one panel: the share of objects found, per size bin, at
    ``score_threshold`` (dark) and by a detection of any score (light); the number of objects
    of each bin is written above it."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    counts, recall = diagnosis.recall_by_size(score_threshold, edges)
    _, ever = share_by_size(diagnosis.obj_size, diagnosis.obj_score > 0, edges)
    x = np.arange(len(counts))
    ax.bar(x, np.nan_to_num(ever), color="#c6dbef", label="found at any score")
    ax.bar(x, np.nan_to_num(recall), color="#2171b5", label=f"found at score ≥ {score_threshold}")
    for xi, n in zip(x, counts, strict=True):
        ax.text(xi, 1.02, f"n={n}", ha="center", fontsize=8)
    ax.set_xticks(x, _size_bin_names(edges))
    ax.set(xlabel="object size √(w·h), pixels", ylabel="recall", ylim=(0, 1.12))
    ax.legend(fontsize=8, loc="lower right")
    return ax


ZOOM_CONTEXT = 3.0  # a gallery panel shows three times the box's longer side: object and
# surroundings
MIN_ZOOM = 0.25  # ... but never less than a quarter of the image's longer side
MAX_CONTEXT_DETECTIONS = 3  # other detections drawn on a gallery panel: the best that overlap
# its box; an unsure model has hundreds above any threshold, which would hide the picture
GALLERY_PANEL_INCHES = (3.0, 3.2)  # width, height of a gallery panel: room for two title lines


def _image_of(dataset: Any, i: int) -> Tensor:
    item = dataset[int(i)]
    image = item[0] if isinstance(item, tuple | list) else item
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"dataset[{i}] should give a (3, H, W) image tensor first, got {item!r}")
    return image


def _zoom(ax: Axes, box: np.ndarray, height: int, width: int) -> None:
    """Limit the unit-square axes of :func:`show_image` to a square window around ``box``."""
    side = max(
        ZOOM_CONTEXT * float(max(box[2] - box[0], box[3] - box[1])), MIN_ZOOM * max(height, width)
    )
    limits = []
    for lo, hi, extent in ((box[0], box[2], width), (box[1], box[3], height)):
        span = min(side, extent)
        start = min(max((lo + hi) / 2 - span / 2, 0.0), extent - span)
        limits.append((start / extent, (start + span) / extent))
    ax.set_xlim(*limits[0])
    ax.set_ylim(limits[1][1], limits[1][0])


def _draw_scene(
    ax: Axes,
    diagnosis: Diagnosis,
    image_index: int,
    height: int,
    width: int,
    score_threshold: float,
    focus: np.ndarray,
    skip: int = -1,
) -> None:
    """The image's objects (cyan, dashed), and the best few detections above the threshold
    that overlap the ``focus`` box (xyxy pixels), in their class colours; ``skip`` is a
    detection (index into ``det_*``) drawn elsewhere."""
    names = diagnosis.class_names
    objs = np.flatnonzero(diagnosis.obj_image == image_index)
    draw_boxes(
        ax,
        _pixels_to_unit(diagnosis.obj_box[objs], width, height),
        color=GT_COLOR,
        linestyle="--",
        labels=[names[c] for c in diagnosis.obj_label[objs]],
    )
    dets = np.flatnonzero(
        (diagnosis.det_image == image_index) & (diagnosis.det_score >= score_threshold)
    )  # falling score
    dets = dets[dets != skip]
    if len(dets):
        overlap = iou_numpy(diagnosis.det_box[dets], np.asarray(focus, np.float64)[None])[:, 0]
        dets = dets[overlap > 0][:MAX_CONTEXT_DETECTIONS]
    for j in dets:
        label = int(diagnosis.det_label[j])
        draw_boxes(
            ax,
            _pixels_to_unit(diagnosis.det_box[j], width, height),
            color=_color(label),
            labels=[f"{names[label]} {diagnosis.det_score[j]:.2f}"],
        )


def _empty_figure(message: str) -> Figure:
    fig, ax = plt.subplots(figsize=(4, 1), layout="constrained")
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _clip_texts(ax: Axes) -> None:
    for text in ax.texts:  # labels of boxes that start outside a zoomed window stay inside it
        text.set_clip_on(True)


def plot_misses(
    dataset: Any,
    diagnosis: Diagnosis,
    score_threshold: float = REPORT_SCORE_THRESHOLD,
    n: int = 8,
    ncols: int = 4,
) -> Figure:
    """A gallery of objects no detection of at least ``score_threshold`` finds.

    The ``n`` panels are spread evenly over the misses sorted by size (smallest first), so the
    gallery shows what a typical miss looks like. Each zooms on the missed object (thick cyan),
    with the image's other objects (dashed) and the best few detections above the threshold
    that overlap it; the title gives the object's size and the score at which a detection
    would find it, if any.

    Args:
        dataset: ``dataset[i]`` gives image ``i`` (or ``(image, target)``), as evaluated.
        diagnosis: :func:`diagnose` of that dataset's predictions.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    missed = diagnosis.misses(score_threshold)
    if len(missed) == 0:
        return _empty_figure(f"no misses at score ≥ {score_threshold}")
    picks = missed[
        np.unique(np.linspace(0, len(missed) - 1, min(n, len(missed))).round()).astype(int)
    ]
    fig, axes = _panels(len(picks), max(1, min(ncols, len(picks))), size=GALLERY_PANEL_INCHES)
    for ax, k in zip(axes, picks, strict=True):
        i, box = int(diagnosis.obj_image[k]), diagnosis.obj_box[k]
        image = _image_of(dataset, i)
        h, w = image.shape[1:]
        score = diagnosis.obj_score[k]
        found = f"found at {score:.2f}" if score > 0 else "never found"
        name = diagnosis.class_names[int(diagnosis.obj_label[k])]
        show_image(image, ax, f"image {i}: {name}, {diagnosis.obj_size[k]:.0f} px\n{found}")
        _draw_scene(ax, diagnosis, i, h, w, score_threshold, box)
        draw_boxes(ax, _pixels_to_unit(box, w, h), color=GT_COLOR, linewidth=3)
        _zoom(ax, box, h, w)
        _clip_texts(ax)
    return fig


def plot_false_positives(
    dataset: Any,
    diagnosis: Diagnosis,
    score_threshold: float = REPORT_SCORE_THRESHOLD,
    n: int = 8,
    ncols: int = 4,
    kinds: Sequence[str] | None = None,
) -> Figure:
    """A gallery of the ``n`` highest-scoring mistakes: the detector's most confident errors.

    Each panel zooms on the false detection (thick, in its class colour) over the image's
    objects (cyan, dashed) and the best few other detections that overlap it; the title names
    its kind and, for a localisation, duplicate or confusion error, the object it was judged
    against and their IoU.

    Args:
        dataset, diagnosis: as for :func:`plot_misses`.
        kinds: only these kinds (see :data:`ERROR_KINDS`); default every mistake.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    wrong = diagnosis.false_positives(score_threshold, kinds)[:n]
    if len(wrong) == 0:
        return _empty_figure(f"no false positives at score ≥ {score_threshold}")
    names = diagnosis.class_names
    fig, axes = _panels(len(wrong), max(1, min(ncols, len(wrong))), size=GALLERY_PANEL_INCHES)
    for ax, j in zip(axes, wrong, strict=True):
        i, box = int(diagnosis.det_image[j]), diagnosis.det_box[j]
        image = _image_of(dataset, i)
        h, w = image.shape[1:]
        kind = ERROR_KINDS[int(diagnosis.det_kind[j])]
        title = f"{kind}: {names[int(diagnosis.det_label[j])]} {diagnosis.det_score[j]:.2f}"
        if kind in ("localisation", "confusion", "duplicate"):
            objs = np.flatnonzero(
                (diagnosis.obj_image == i) & (diagnosis.obj_index == diagnosis.det_object[j])
            )
            if len(objs):
                title += f"\non a {names[int(diagnosis.obj_label[objs[0]])]}"
            title += f", IoU {diagnosis.det_iou[j]:.2f}"
        show_image(image, ax, title)
        _draw_scene(ax, diagnosis, i, h, w, score_threshold, box, skip=j)
        label = int(diagnosis.det_label[j])
        draw_boxes(ax, _pixels_to_unit(box, w, h), color=_color(label), linewidth=3)
        _zoom(ax, box, h, w)
        _clip_texts(ax)
    return fig


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], ax: Axes | None = None) -> Axes:
    """The confusion matrix with its counts; colour = share of the row (of the true class's
    objects, or for row 0 of all unpaired detections)."""
    matrix = np.asarray(matrix)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"expected a ({k}, {k}) matrix for {k} class names, got {matrix.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(1 + 0.62 * k, 0.8 + 0.55 * k), layout="constrained")
    rows = matrix.sum(axis=1, keepdims=True)
    shares = matrix / np.maximum(rows, 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (r, c), n in np.ndenumerate(matrix):
        if n:
            color = "white" if shares[r, c] > 0.6 else "black"
            ax.text(c, r, str(n), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(k), ["missed", *class_names[1:]], rotation=45, ha="right")
    ax.set_yticks(range(k), ["nothing", *class_names[1:]])
    ax.set(xlabel="detected as", ylabel="true object")
    ax.set_title("confusion (paired by IoU, class ignored)", fontsize=10)
    return ax
