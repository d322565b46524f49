"""Lesson 3's exercises: each solution, on the lesson's inputs (rebuilt small), accepts the right
answer, rejects a wrong one, and its hint does not give the value away."""

from __future__ import annotations

import math

import pytest
import torch

from ssdlib import SSD300_VOC, default_boxes
from ssdlib.boxes import pixels_to_unit
from ssdlib.data import PhotoDataset
from tests.exercise_checks import assert_exercise

LAYER_NAMES = ["conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]


@pytest.fixture(scope="module")
def cameraman():
    photo, target = PhotoDataset().get("camera")
    h, w = photo.shape[1:]
    gt = pixels_to_unit(target["boxes"], w, h)  # person, camera, tripod
    return gt, target["labels"], default_boxes(SSD300_VOC)


def test_tripod_positives_at_035(cameraman):
    # 48 of the tripod's boxes reach 0.35; one of them overlaps the person more (lesson 3)
    gt, _, priors = cameraman
    assert_exercise("03.tripod_positives_035", 47, 48, gt, priors, 2, 0.35)


def test_layer_of_the_persons_best_box(cameraman):
    gt, _, priors = cameraman
    assert_exercise(
        "03.person_layer", "conv9_2", "conv10_2", gt, priors, 0, SSD300_VOC, LAYER_NAMES
    )


def test_offsets_by_hand():
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    box = torch.tensor([[0.45, 0.35, 0.65, 0.85]])  # cxcywh (0.55, 0.6, 0.2, 0.5)
    right = [0.05 / 0.2 / 0.1, 0.1 / 0.4 / 0.1, 0.0, math.log(0.5 / 0.4) / 0.2]
    wrong = [0.05 / 0.2, 0.1 / 0.4, 0.0, math.log(0.5 / 0.4)]  # the variances left out
    assert_exercise("03.offsets", right, wrong, box, prior)


def test_positives_and_forced_at_07(cameraman):
    # Only the camera (best 0.74) has a box at 0.7; the person (0.68) and the tripod (0.62)
    # keep their forced best box.
    gt, labels, priors = cameraman
    assert_exercise("03.positives_07", 3, 1, gt, labels, priors)
    assert_exercise("03.forced_07", 2, 0, gt, labels, priors)


def test_decode_against_eq_2_backwards(cameraman):
    _, _, priors = cameraman
    offsets = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    d = priors[:6]
    v0, v1 = 0.1, 0.2
    centre = d[:, :2] + offsets[:, :2] * v0 * d[:, 2:]
    size = d[:, 2:] * torch.exp(offsets[:, 2:] * v1)
    right = torch.cat([centre - size / 2, centre + size / 2], dim=1)  # xyxy
    wrong = torch.cat([centre, size], dim=1)  # still cxcywh
    assert_exercise("03.decode", right, wrong, offsets, d)
