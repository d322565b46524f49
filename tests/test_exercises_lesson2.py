"""Lesson 2's exercises: each solution, on the lesson's inputs (rebuilt small), accepts the right
answer, rejects a wrong one, and its hint does not give the value away."""

from __future__ import annotations

import math

import torch

from ssdlib import SSD300_COCO, SSD300_VOC, SSD512_VOC, box_iou, cxcywh_to_xyxy
from ssdlib.data import ShapesDataset
from ssdlib.priors import default_boxes, layer_of_prior
from tests.exercise_checks import assert_exercise


def test_ssd512_count():
    count = 64**2 * 4 + 32**2 * 6 + 16**2 * 6 + 8**2 * 6 + 4**2 * 6 + 2**2 * 4 + 1 * 4
    assert_exercise("02.ssd512", count, 8732, SSD512_VOC)


def test_third_scale_of_the_paper_formula():
    assert_exercise("02.s3", 0.2 + 2 * 0.75 / 5, 0.2 + 3 * 0.75 / 5, 0.2, 0.95, 6)


def test_conv8_2_extra_square():
    side = math.sqrt(111 * 162)  # conv8_2's min_size and max_size in SSD300_VOC, pixels
    assert SSD300_VOC.min_sizes[2] == 111 and SSD300_VOC.max_sizes[2] == 162
    assert_exercise("02.conv8_2_extra_px", round(side, 1), math.sqrt(60 * 111), SSD300_VOC)


def test_coco_limit():
    assert_exercise("02.coco_limit_px", 14.8, 21 / 2, SSD300_COCO)


def test_squares_only_count():
    assert_exercise(
        "02.squares_only", 2 * (38**2 + 19**2 + 10**2 + 5**2 + 3**2 + 1), 8732, SSD300_VOC
    )


def test_boxes_at_iou_05_with_a_40px_square():
    # Own cell: the 30 px square (IoU 900/1600), the extra square (1600/1800) and both 2:1
    # boxes (848/1652) = 4. One step (8 px) away: the extra square of the 4 neighbours (0.64),
    # and the 2:1 box of the cells above and below / the 1:2 box of the cells left and right,
    # shifted along their short side and still inside the square (0.51) = 8 more.
    assert_exercise("02.boxes_at_05", 12, 4, SSD300_VOC, 0, 19, 19, 40)


def test_coverage_by_layer_against_a_loop():
    shapes = ShapesDataset(6, seed=0)
    objects = torch.cat([t["boxes"] / shapes.image_size for _, t in shapes])
    priors, layer = cxcywh_to_xyxy(default_boxes(SSD300_VOC)), layer_of_prior(SSD300_VOC)
    right = []
    for k in range(6):  # the three lines of the lesson, on layer k's boxes only
        best = box_iou(objects, priors[layer == k]).max(dim=1).values
        right.append(float((best >= 0.5).float().mean()))
    total = float((box_iou(objects, priors).max(dim=1).values >= 0.5).float().mean())
    expected = assert_exercise(
        "02.coverage_by_layer", torch.tensor(right), torch.full((6,), total), objects, SSD300_VOC
    )
    assert expected.shape == (6,) and bool((expected <= total + 1e-6).all())
