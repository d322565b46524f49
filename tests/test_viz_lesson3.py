"""Lesson 3's figures: the IoU histogram on a log axis that tells an object's own positives from
boxes another object took, and the two rules for objects that share a best default box."""

from __future__ import annotations

import pytest
import torch
from matplotlib.patches import Rectangle

from ssdlib import SSD300_VOC, box_iou, cxcywh_to_xyxy, default_boxes, viz
from ssdlib import widgets as W
from tests.figure_checks import legend_texts

IMAGE = torch.rand(3, 40, 40)


def test_iou_histogram_is_logarithmic_and_counts_the_taken_boxes():
    iou = torch.tensor([0.0, 0.2, 0.5, 0.7, 0.49, 0.6, 0.55])
    taken = torch.tensor([False, False, False, False, False, True, True])
    ax = viz.plot_iou_histogram(iou, threshold=0.5, taken=taken)
    assert ax.get_yscale() == "log"
    assert ax.get_title().startswith("4 of 7 default boxes at IoU ≥ 0.50")
    assert legend_texts(ax) == [
        "below the threshold",
        "at or above it, its own: 2",
        "at or above it, another object's: 2",
    ]
    plain = viz.plot_iou_histogram(iou, threshold=0.5, log=False)
    assert plain.get_yscale() == "linear"
    assert legend_texts(plain)[1] == "at or above it: 4"
    with pytest.raises(ValueError, match="taken must have the shape"):
        viz.plot_iou_histogram(iou, taken=taken[:3])


def test_matching_explorer_shows_the_boxes_another_object_took():
    # Two overlapping objects: at a low threshold some boxes reach both and go to the other.
    gt = torch.tensor([[0.1, 0.1, 0.7, 0.9], [0.3, 0.1, 0.9, 0.9]])
    ex = W.matching_explorer(IMAGE, gt, torch.tensor([1, 2]))
    ex.controls["threshold"].value = 0.3
    # Counted apart from the matcher, by the paper's rules: of the boxes at IoU >= 0.3 with
    # object 0, another object's are those that overlap object 1 more (rule 1; a tie stays with
    # object 0) and the best box both objects share (rule 2 gives it to the later object).
    iou = box_iou(gt, cxcywh_to_xyxy(default_boxes(SSD300_VOC)))
    shared_best = int(iou[0].argmax())
    assert shared_best == int(iou[1].argmax())
    reach = iou[0] >= 0.3
    taken = reach & (iou[1] > iou[0])
    taken[shared_best] = True
    assert (int((reach & ~taken).sum()), int(taken.sum())) == (49, 19)
    assert legend_texts(ex.figure.axes[1]) == [
        "below the threshold",
        "at or above it, its own: 49",
        "at or above it, another object's: 19",
    ]


def test_forced_boxes_draw_each_rules_boxes_and_name_a_missing_one():
    priors = default_boxes(SSD300_VOC)
    gt = torch.tensor([[0.45, 0.47, 0.55, 0.51], [0.46, 0.47, 0.56, 0.51]])
    rules = {"later wins": [-1, 2810], "greedy": [2810, 2814]}
    fig = viz.plot_forced_boxes(gt, priors, rules, cfg=SSD300_VOC, layer=0, names=["A", "B"])
    later, greedy = fig.axes
    assert [later.get_title(), greedy.get_title()] == list(rules)
    assert legend_texts(later) == ["A: no default box", "B: default box 2810"]
    assert legend_texts(greedy) == ["A: default box 2810", "B: default box 2814"]

    def solid(ax):  # the default boxes (the objects are dashed)
        return [
            (round(p.get_x(), 4), round(p.get_y(), 4))
            for p in ax.patches
            if isinstance(p, Rectangle) and p.get_linestyle() == "-"
        ]

    boxes = cxcywh_to_xyxy(priors)
    assert solid(later) == [(round(float(boxes[2810, 0]), 4), round(float(boxes[2810, 1]), 4))]
    assert len(solid(greedy)) == 2
    with pytest.raises(ValueError, match="1 boxes for 2 objects"):
        viz.plot_forced_boxes(gt, priors, {"bad": [3]})
