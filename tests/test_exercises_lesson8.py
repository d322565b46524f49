"""Lesson 8's exercises: each solution, on inputs shaped like the lesson's (rebuilt small, by
hand), accepts the right answer, rejects a wrong one, and its hint does not give the value away."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssdlib import report
from ssdlib.exercises import EXERCISES
from ssdlib.speed import InferenceTiming
from tests.exercise_checks import assert_exercise

CLASSES = ["background", "circle", "square"]


def _det(boxes, labels, scores):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


def _obj(boxes, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


@pytest.fixture(scope="module")
def diagnosis():
    """Three images, four objects (three under 32 px); two of the small ones are found at score
    >= 0.5; two detections scoring >= 0.3 and one scoring 0.2 lie on background."""
    targets = [
        _obj([[10, 10, 30, 30], [50, 50, 110, 110]], [1, 2]),  # 20 px circle, 60 px square
        _obj([[0, 0, 16, 16]], [1]),  # 16 px circle, never found
        _obj([[0, 0, 25, 25]], [1]),  # 25 px circle
    ]
    predictions = [
        _det(
            [[10, 10, 30, 30], [200, 200, 220, 220], [50, 50, 110, 110]], [1, 1, 2], [0.9, 0.4, 0.3]
        ),
        _det([[300, 300, 320, 320], [150, 150, 170, 170]], [2, 1], [0.35, 0.2]),
        _det([[0, 0, 25, 25]], [1], [0.7]),
    ]
    return report.diagnose(predictions, targets, CLASSES)


def test_small_recall(diagnosis):
    expected = assert_exercise("08.small_recall", 2 / 3, 0.5, diagnosis)
    assert expected == pytest.approx(2 / 3)


def test_background_at_03(diagnosis):
    assert diagnosis.counts(0.5)["background"] == 0  # the printed threshold shows none
    expected = assert_exercise("08.background_03", 2, 3, diagnosis)
    assert expected == 2


def test_network_images_per_s_leaves_out_the_postprocessing():
    timing = InferenceTiming(
        32, "cpu", "fp32", network_ms=800.0, postprocess_ms=30.0, total_ms=830.0
    )
    # 32 / 0.8 s = 40; the table's images/s (network and NMS, 38.6) is the slip
    expected = assert_exercise("08.network_images_per_s", 40.0, timing.images_per_s, timing)
    assert expected == pytest.approx(40.0)


def test_most_missed_is_a_share_not_a_count():
    matrix = np.array(
        [
            [0, 4, 1, 0],
            [10, 90, 0, 0],  # circle: most misses, 10 of 100
            [8, 0, 12, 0],  # square: 8 of 20
            [3, 0, 0, 3],  # ring: 3 of 6, the largest share
        ]
    )
    names = ["background", "circle", "square", "ring"]
    expected = assert_exercise("08.most_missed", "ring", "circle", matrix, names)
    assert expected == "ring"


def test_iou_20px():
    expected = assert_exercise("08.iou_20px", 324 / 476, 324 / 400)
    assert expected == pytest.approx(18 * 18 / (2 * 400 - 18 * 18))


def test_shifted_map_is_all_or_nothing_per_threshold():
    # IoU 0.68 passes the thresholds 0.5, 0.55, 0.6, 0.65: 4 of the 10
    expected = assert_exercise("08.shifted_map", [1.0, 0.0, 0.4], [1.0, 0.0, 0.5])
    assert expected == pytest.approx([1.0, 0.0, 0.4])


def test_pr_at_threshold_matches_a_count_by_hand():
    scores = torch.tensor([0.30, 0.92, 0.55, 0.81, 0.47, 0.66, 0.98, 0.52])
    correct = torch.tensor([True, True, False, True, True, False, True, True])
    kept = scores >= 0.5
    hits = int((correct & kept).sum())
    by_hand = [hits / int(kept.sum()), hits / 7]  # 4 / 6 and 4 / 7
    expected = assert_exercise(
        "08.pr_at_05", by_hand, [by_hand[0], hits / 6], scores, correct, 7, 0.5
    )
    assert expected == pytest.approx(by_hand)


def test_pr_at_threshold_refuses_more_correct_detections_than_objects():
    scores = torch.tensor([0.9, 0.8, 0.7])
    correct = torch.tensor([True, False, True])
    with pytest.raises(ValueError, match=r"^2 correct detections but only 1 objects$"):
        EXERCISES["08.pr_at_05"].solve(scores, correct, 1, 0.5)
