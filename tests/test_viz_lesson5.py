"""Lesson 5's figures: candidates before NMS with a class legend, and box labels that stay inside
the image (never under the panel's title)."""

from __future__ import annotations

import pytest
import torch
from matplotlib.patches import Rectangle

from ssdlib import viz
from ssdlib.nms import nms_steps
from tests.figure_checks import legend_texts

IMAGE = torch.rand(3, 30, 40)
NAMES = ["background", "cat", "cup"]


def test_labels_at_the_top_edge_go_inside_the_box():
    boxes = torch.tensor(
        [
            [0.1, 0.0, 0.4, 0.5],  # at the top edge: label inside, below the edge
            [0.1, 0.5, 0.4, 0.9],  # lower down: label above the box, as before
            [0.9, 0.3, 1.0, 0.6],  # at the right edge: label right-aligned to the box
        ]
    )
    ax = viz.plot_detections(
        IMAGE, boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 2, 1]), NAMES, title="t"
    )
    top, low, right = ax.texts
    assert top.get_va() == "top" and top.get_position() == pytest.approx((0.1, 0.0))
    assert low.get_va() == "bottom" and low.get_ha() == "left"
    assert right.get_ha() == "right" and right.get_position() == pytest.approx((1.0, 0.3))
    assert [t.get_text() for t in ax.texts] == ["cat 0.90", "cup 0.80", "cat 0.70"]


def test_nms_step_labels_stay_inside_at_the_top():
    boxes = torch.tensor([[0.1, 0.0, 0.5, 0.5], [0.6, 0.5, 0.8, 0.9]])
    scores = torch.tensor([0.9, 0.8])
    steps = nms_steps(boxes, scores, 0.45)
    ax = viz.plot_nms_step(IMAGE, boxes, scores, steps, len(steps))
    assert [t.get_va() for t in ax.texts] == ["top", "bottom"]


def test_plot_candidates_has_a_legend_of_classes_and_counts():
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.4], [0.12, 0.1, 0.42, 0.4], [0.5, 0.5, 0.9, 0.9]])
    labels = torch.tensor([2, 2, 1])
    ax = viz.plot_candidates(IMAGE, boxes, labels, NAMES, title="before NMS")
    assert legend_texts(ax) == ["cat: 1", "cup: 2"]
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(rects) == 3
    # Each class in the colour plot_detections gives it.
    assert rects[0].get_edgecolor()[:3] == pytest.approx(viz.PALETTE[2])
    assert rects[2].get_edgecolor()[:3] == pytest.approx(viz.PALETTE[1])
    assert ax.get_title() == "before NMS"
    with pytest.raises(ValueError, match="3 boxes and labels of shape"):
        viz.plot_candidates(IMAGE, boxes, labels[:2], NAMES)


def test_plot_candidates_without_boxes_has_no_legend():
    ax = viz.plot_candidates(IMAGE, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert ax.get_legend() is None
