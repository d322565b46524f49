"""Figures for the augmentation lesson (SSD §2.2 "Data augmentation", §3.6) and the measured
experiments of the key-observations lesson (SSD §3.2, §3.6, §4), plus the augmentation explorer.

Like the rest of :mod:`ssdlib.viz`, every plotting function is pure: data in (augmentation
stages, the result dicts of :func:`ssdlib.experiments.train_and_evaluate`), an optional ``Axes``,
a figure out. Images are drawn on the unit square by :func:`ssdlib.viz.show_image`, so pixel
boxes are divided by their image's size first. :func:`augmentation_explorer` is a thin
ipywidgets shell (an :class:`ssdlib.widgets.Explorer`) around :func:`plot_augmentation_stages`.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ..data.transforms import AugmentStage, DetectionTransform, augmentation_stages
from ..widgets import SLIDER_STYLE, WIDE, Explorer
from .common import _color, _new_axes, _pixels_to_unit, draw_boxes, show_image

STAGE_PANEL_INCHES = 2.6  # side of one stage panel: six stages fit a notebook's width in a row
MAX_SEED = 99  # the explorer's seed slider runs over 0..99: plenty of different draws
LOG_SIZE_BINS = 30  # histogram bins of object size on the log axis
TITLE_WIDTH = 34  # characters per title line of a stage panel: long notes wrap, not overlap
TITLE_PAD = 12  # points between a stage panel and its title: room for a box label at the top
METRIC_LABELS = {"map_50": "mAP@0.5", "map": "COCO mAP@[.5:.95]", "voc07_map": "VOC07 mAP"}


# -- SSD §2.2 Data augmentation ------------------------------------------------------------------


def plot_augmentation_stages(
    stages: Sequence[AugmentStage],
    class_names: Sequence[str] | None = None,
    axes: Sequence[Axes] | None = None,
    title: str | None = None,
) -> Figure:
    """One panel per stage of one augmentation draw, the boxes drawn in each stage's image.

    Each object keeps its colour through the stages (by ``object_ids``), so a box can be
    followed as the image is distorted, shrunk onto a canvas, cropped, mirrored and resized.
    A panel's title says what the draw did there; a step that did not fire is marked "skipped".

    Args:
        stages: from :func:`ssdlib.data.transforms.augmentation_stages`.
        class_names: names by label (index 0 background), to label the boxes.
        axes: one axes per stage (default: a new figure with the stages in a row).
        title: the figure's title.
    """
    if not stages:
        raise ValueError("no stages to draw")
    if axes is None:
        n = len(stages)
        fig, grid = plt.subplots(
            1, n, figsize=(STAGE_PANEL_INCHES * n, STAGE_PANEL_INCHES + 0.6), layout="constrained"
        )
        axes = list(np.atleast_1d(grid))
    elif len(axes) != len(stages):
        raise ValueError(f"got {len(axes)} axes for {len(stages)} stages")
    fig = axes[0].figure
    for i, (stage, ax) in enumerate(zip(stages, axes, strict=True)):
        h, w = stage.image.shape[-2:]
        state = stage.note if stage.applied or i == 0 else "skipped"
        show_image(stage.image, ax=ax)
        panel_title = f"{i}. {stage.name}\n{textwrap.fill(state, TITLE_WIDTH)}"
        ax.set_title(panel_title, fontsize=9, pad=TITLE_PAD)  # above the box labels at the top edge
        if not stage.applied and i > 0:
            ax.title.set_color("0.55")
        ax.set_xlabel(f"{w}×{h} px, {len(stage.target['boxes'])} boxes", fontsize=8)
        labels = None
        if class_names is not None:
            labels = [class_names[int(c)] for c in stage.target["labels"]]
        colors = [_color(int(j)) for j in stage.object_ids]
        draw_boxes(ax, _pixels_to_unit(stage.target["boxes"], w, h), colors, labels)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def augmentation_explorer(
    samples: Mapping[str, tuple[Tensor, dict[str, Any]]],
    transforms: Mapping[str, DetectionTransform],
    class_names: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
) -> Explorer:
    """Step through random draws of the augmentation: a seed slider and a sample dropdown.

    Args:
        samples: name -> ``(image (3, H, W), target)`` (photos, a shapes scene, ...).
        transforms: name -> the :class:`DetectionTransform` to draw for that sample.
        class_names: name -> the sample's class names (index 0 background), to label boxes.
        seed: the slider's first value.

    Returns:
        An :class:`ssdlib.widgets.Explorer`; ``.result`` holds the stages drawn last.
    """
    if not samples:
        raise ValueError("need at least one sample")
    missing = sorted(set(samples) - set(transforms))
    if missing:
        raise ValueError(f"no transform for the samples {missing}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    names = list(samples)
    sample = widgets.Dropdown(
        options=names, value=names[0], description="sample", style=SLIDER_STYLE
    )
    seed_slider = widgets.IntSlider(
        value=seed,
        min=0,
        max=MAX_SEED,
        description="seed",
        continuous_update=False,
        style=SLIDER_STYLE,
        layout=WIDE,
    )

    def draw(sample: str, seed: int) -> tuple[Figure, list[AugmentStage], str]:
        image, target = samples[sample]
        stages = augmentation_stages(image, target, transforms[sample], seed=seed)
        names_of = class_names.get(sample) if class_names else None
        fig = plot_augmentation_stages(stages, names_of)
        fired = [s.name for s in stages[1:] if s.applied]
        before, after = len(stages[0].target["boxes"]), len(stages[-1].target["boxes"])
        info = (
            f"<b>{html.escape(sample)}</b>, seed {seed}: {', '.join(fired)}; "
            f"{after} of {before} boxes survive"
        )
        return fig, stages, info

    return Explorer({"sample": sample, "seed": seed_slider}, draw, rows=[["sample", "seed"]])


def plot_size_distributions(
    sizes: Mapping[str, Tensor | Sequence[float]],
    ax: Axes | None = None,
    small: float | None = None,
    low: float = 0.01,
) -> Axes:
    """Histograms (as outlines, on a log axis) of object sizes under several conditions.

    Args:
        sizes: label -> ``(N,)`` object sizes √(w·h) as fractions of the image side.
        small: optional size to mark (e.g. the smallest default box), with the share of each
            condition's objects below it in the legend.
        low: the smallest size shown.
    """
    ax = _new_axes(ax, figsize=(6.5, 3.6))
    edges = np.geomspace(low, 1.0, LOG_SIZE_BINS + 1)
    for i, (label, values) in enumerate(sizes.items()):
        v = torch.as_tensor(values, dtype=torch.float64).numpy()
        if small is not None:
            label = f"{label}: {np.mean(v < small):.0%} below {small:g}"
        weights = np.full(len(v), 1 / max(len(v), 1))
        ax.hist(
            v.clip(low, 1.0),
            bins=edges,
            weights=weights,
            histtype="step",
            linewidth=2,
            color=_color(i),
            label=f"{label} (n={len(v)})",
        )
    if small is not None:
        ax.axvline(small, color="0.3", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("object size √(w·h), fraction of image side (log)")
    ax.set_ylabel("share of objects")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


# -- Results of train_and_evaluate ---------------------------------------------------------------


def _value(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _log_middles(edges: np.ndarray) -> np.ndarray:
    """Where to draw each size bin on the log axis: the geometric middle of its edges, the first
    bin (from 0) taken to start at a quarter of its upper edge, where the axis starts."""
    return np.sqrt(np.maximum(edges[:-1], edges[1] / 4) * edges[1:])


def plot_loss_curves(results: Mapping[str, Mapping[str, Any]], ax: Axes | None = None) -> Axes:
    """The training loss (averaged over each logged stretch of steps) of several runs."""
    ax = _new_axes(ax, figsize=(5.5, 3.4))
    for i, (label, r) in enumerate(results.items()):
        curve = r["loss_curve"]
        ax.plot(curve["step"], curve["loss"], marker=".", color=_color(i), label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (loc + conf)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_metric_bars(
    results: Mapping[str, Mapping[str, Any]],
    keys: Sequence[str],
    key_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    ylabel: str = "AP",
) -> Axes:
    """Grouped bars: one group per metric in ``keys``, one bar per run, value on top.

    A metric that is None (no ground truth) is drawn as a missing bar labelled "n/a".
    """
    ax = _new_axes(ax, figsize=(1.6 + 1.1 * len(keys) * max(len(results), 1) / 2, 3.4))
    key_labels = list(key_labels or keys)
    if len(key_labels) != len(keys):
        raise ValueError(f"got {len(key_labels)} labels for {len(keys)} keys")
    n = max(len(results), 1)
    width = 0.8 / n
    x = np.arange(len(keys))
    top = 0.0
    for i, (label, r) in enumerate(results.items()):
        values = [_value(r.get(k)) for k in keys]
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, np.nan_to_num(values), width * 0.95, color=_color(i), label=label)
        for p, v in zip(pos, values, strict=True):
            text = "n/a" if math.isnan(v) else f"{v:.2f}"
            ax.text(p, 0 if math.isnan(v) else v, text, ha="center", va="bottom", fontsize=7)
            top = max(top, 0 if math.isnan(v) else v)
    ax.set_xticks(x, key_labels)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max(top * 1.2, 0.05))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return ax


def plot_recall_by_size_runs(
    results: Mapping[str, Mapping[str, Any]],
    ax: Axes | None = None,
    marks: Mapping[str, float] | None = None,
    band: Mapping[str, Mapping[str, Any]] | None = None,
    band_label: str = "baseline, range of the seeds",
) -> Axes:
    """Recall at IoU 0.5 per object-size bin, one line per run; the bins' object counts below.

    Args:
        results: label -> a result of ``train_and_evaluate`` (its ``recall_by_size``).
        marks: optional label -> size to mark with a vertical line (e.g. a smallest default
            box side).
        band: optional label -> result: runs of one setting that differ only in the seed. Their
            lowest and highest recall per bin are drawn as a grey band, the seed noise that a
            line outside it has to beat.
        band_label: the band's legend entry.
    """
    ax = _new_axes(ax, figsize=(6, 3.6))
    edges = None
    if band:
        rec = next(iter(band.values()))["recall_by_size"]
        edges = np.asarray(rec["bin_edges"])
        centres = _log_middles(edges)
        values = np.array(
            [[_value(v) for v in r["recall_by_size"]["recall"]] for r in band.values()]
        )
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)  # (bins,)
        ax.fill_between(centres, low, high, color="0.75", alpha=0.6, zorder=1, label=band_label)
    for i, (label, r) in enumerate(results.items()):
        rec = r["recall_by_size"]
        edges = np.asarray(rec["bin_edges"])
        centres = _log_middles(edges)
        values = [_value(v) for v in rec["recall"]]
        ax.plot(centres, values, marker="o", color=_color(i), label=label)
    if edges is not None:
        first = next(iter({**(band or {}), **results}.values()))["recall_by_size"]
        for middle, count in zip(_log_middles(edges), first["num_objects"], strict=True):
            ax.text(middle, 0.02, str(count), ha="center", va="bottom", fontsize=7, color="0.3")
        for e in edges[1:-1]:
            ax.axvline(e, color="0.85", linewidth=0.8, zorder=0)
        ax.set_xlim(edges[1] / 4, edges[-1])
    for j, (label, size) in enumerate((marks or {}).items()):
        ax.axvline(size, color="0.3", linestyle=":", linewidth=1)
        ax.text(size, 1.02 + 0.06 * j, label, fontsize=7, ha="center", va="bottom")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.15 if marks else 1.05)
    ax.set_xlabel("object size √(w·h), fraction of image side (objects per bin at the foot)")
    ax.set_ylabel("recall at IoU 0.5")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1, 0.07))  # above the counts
    return ax


def plot_accuracy_vs_speed(
    results: Mapping[str, Mapping[str, Any]],
    metric: str = "map_50",
    speeds: Mapping[str, float] | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Two panels against the number of default boxes: accuracy (``metric``) and images/s.

    Args:
        results: label -> a result of ``train_and_evaluate``.
        metric: the accuracy to plot.
        speeds: label -> images/s measured elsewhere (e.g. side by side, interleaved); default
            each result's own ``images_per_s``.
    """
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    fig = axes[0].figure
    for i, (label, r) in enumerate(results.items()):
        color = _color(i)
        speed = speeds[label] if speeds is not None else r["images_per_s"]
        axes[0].scatter(r["num_priors"], _value(r[metric]), s=50, color=color, label=label)
        axes[1].scatter(r["num_priors"], speed, s=50, color=color, label=label)
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric))
    axes[1].set_ylabel("images/s (network + NMS)")
    axes[1].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlabel("default boxes")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def plot_per_class_ap(
    results: Mapping[str, Mapping[str, Any]], ax: Axes | None = None, key: str = "ap50_per_class"
) -> Axes:
    """AP@0.5 per class for several runs, as grouped bars."""
    first = next(iter(results.values()))
    classes = list(first[key])
    table = {label: dict(r[key]) for label, r in results.items()}
    return plot_metric_bars(table, classes, ax=ax, ylabel="AP@0.5")
