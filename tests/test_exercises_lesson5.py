"""Lesson 5's exercises: each solution, on the lesson's inputs (rebuilt), accepts the right
answer, rejects a wrong one, and its hint does not give the value away."""

from __future__ import annotations

import pytest
import torch

from ssdlib import box_iou
from ssdlib.boxes import pixels_to_unit
from ssdlib.data import PhotoDataset
from ssdlib.nms import NMS_IOU_THRESHOLD, jittered_detections, nms, nms_steps
from ssdlib.utils import seed_everything
from tests.exercise_checks import assert_exercise


@pytest.fixture(scope="module")
def lesson():
    """The lesson's candidates, made in its order from its seed: the rocket's, then the
    coffee's."""
    seed_everything(0)
    photos = PhotoDataset()
    photo, target = photos.get("rocket")
    rocket_gt = pixels_to_unit(target["boxes"], width=photo.shape[2], height=photo.shape[1])
    boxes, scores, labels = jittered_detections(
        rocket_gt, target["labels"], per_object=8, num_decoys=4
    )
    coffee, coffee_target = photos.get("coffee")
    coffee_gt = pixels_to_unit(
        coffee_target["boxes"], width=coffee.shape[2], height=coffee.shape[1]
    )
    c_boxes, c_scores, c_labels = jittered_detections(coffee_gt, coffee_target["labels"])
    return {
        "classes": photos.classes,
        "rocket": (boxes, scores, labels),
        "coffee_gt": coffee_gt,
        "coffee_names": [photos.classes[c] for c in coffee_target["labels"].tolist()],
        "coffee": (c_boxes, c_scores, c_labels),
    }


def _greedy(boxes, scores, threshold):
    """Greedy NMS as a plain loop over Python floats (the oracle)."""
    iou = box_iou(boxes, boxes).tolist()
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        if all(iou[i][k] <= threshold for k in keep):
            keep.append(i)
    return keep


def test_kept_at_08_on_the_rockets_candidates(lesson):
    boxes, scores, labels = lesson["rocket"]
    rocket = labels == lesson["classes"].index("rocket")
    r_boxes, r_scores = boxes[rocket], scores[rocket]
    right = len(_greedy(r_boxes, r_scores, 0.8))
    assert right != len(_greedy(r_boxes, r_scores, NMS_IOU_THRESHOLD))  # 0.8 is not 0.45
    assert_exercise("05.kept_at_08", right, right + 1, r_boxes, r_scores)


def test_agnostic_removes_the_saucer_under_the_cup(lesson):
    gt, names = lesson["coffee_gt"], lesson["coffee_names"]
    assert names == ["cup", "saucer", "spoon"]
    scores = torch.tensor([0.9, 0.8, 0.7])
    iou = box_iou(gt, gt)
    # The cup is kept; the saucer overlaps it by more than 0.3, the spoon by less.
    assert iou[0, 1] > 0.3 > iou[0, 2]
    assert_exercise("05.agnostic_removes", ["saucer"], ["spoon"], gt, scores, names)
    assert_exercise("05.agnostic_removes", ["saucer"], ["saucer", "spoon"], gt, scores, names)


def test_agnostic_on_the_coffee_candidates(lesson):
    c_boxes, c_scores, c_labels = lesson["coffee"]
    right = _greedy(c_boxes, c_scores, 0.3)
    per_class = []
    for c in c_labels.unique().tolist():
        idx = (c_labels == c).nonzero().flatten()
        per_class += idx[nms(c_boxes[idx], c_scores[idx], 0.3)].tolist()
    per_class.sort(key=lambda i: -float(c_scores[i]))
    assert per_class != right
    assert_exercise("05.agnostic", right, per_class, c_boxes, c_scores)


def test_per_class_is_a_loop_over_classes(lesson):
    c_boxes, c_scores, c_labels = lesson["coffee"]
    right = []
    for c in c_labels.unique().tolist():
        idx = (c_labels == c).nonzero().flatten().tolist()
        right += [idx[k] for k in _greedy(c_boxes[idx], c_scores[idx], 0.3)]
    right.sort(key=lambda i: -float(c_scores[i]))
    # The trick the exercise asks for: shift each class out of the others' way, one nms call.
    shifted = c_boxes + 2.0 * c_labels[:, None]
    assert nms(shifted, c_scores, 0.3).tolist() == right
    wrong = _greedy(c_boxes, c_scores, 0.3)  # classes ignored
    assert wrong != right
    assert_exercise("05.per_class", right, wrong, c_boxes, c_scores, c_labels)


def test_soft_score_is_the_score_times_one_minus_iou(lesson):
    boxes, scores, labels = lesson["rocket"]
    tower = labels == lesson["classes"].index("tower")
    t_boxes, t_scores = boxes[tower], scores[tower]
    step = nms_steps(t_boxes, t_scores, NMS_IOU_THRESHOLD)[0]
    first, victim = step.kept, step.suppressed[0]
    right = float(t_scores[victim]) * (1 - step.ious[0])
    wrong = float(t_scores[victim]) * step.ious[0]  # the decay turned around
    assert_exercise("05.soft_score", right, wrong, t_boxes, t_scores, first, victim)
