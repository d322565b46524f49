"""Figures of lesson 5, non-maximum suppression (SSD §3, "Inference time"): greedy NMS one step
at a time, the raw candidates before it, and the detections after it.

The candidates of the lesson come from :func:`ssdlib.nms.jittered_detections`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from ..boxes import _as_boxes
from ..nms import NMSStep
from .common import _color, _label_box, draw_boxes, show_image


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
