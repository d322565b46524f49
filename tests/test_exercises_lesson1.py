"""Lesson 1's exercises: each solution, on the lesson's inputs (rebuilt small), accepts the right
answer, rejects a wrong one, and its hint does not give the value away."""

from __future__ import annotations

import pytest
import torch

from ssdlib import SSD300_VOC, SSD512_VOC
from ssdlib.exercises import judge
from ssdlib.model import build_ssd
from tests.exercise_checks import assert_exercise

NUM_CLASSES = 21  # the lesson's VOC classes + background


@pytest.fixture(scope="module")
def model():
    # Receptive fields and the output layout do not depend on the width: an eighth of the
    # channels keeps the forward pass fast.
    return build_ssd(SSD300_VOC, num_classes=NUM_CLASSES, width=0.125).eval()


def test_conv4_3_side_of_ssd512():
    # 512 -> 256 -> 128 -> 64: the third pool meets an even side, nothing to round
    assert_exercise("01.conv4_3_side_512", 64, 65, SSD512_VOC)


def test_receptive_field_of_conv5_3(model):
    # conv4_3: 92 px at stride 8; pool4 adds 1 × 8 and doubles the stride; three 3×3 convs add
    # 2 × 16 each: 92 + 8 + 96
    assert_exercise("01.rf_conv5_3", 196, 92, model)


def test_receptive_field_of_fc7_without_dilation(model):
    # fc7's 420 px minus fc6's dilated share 2 · 6 · 16, plus a plain 3×3's 2 · 1 · 16
    assert_exercise("01.rf_fc7_plain", 260, 420, model)
    assert model.backbone.to_fc7.fc6.dilation == (6, 6)  # the solution changed a copy


def test_number_of_outputs(model):
    with torch.no_grad():
        loc, conf = model(torch.rand(1, 3, 300, 300))
    assert_exercise("01.outputs", 8732 * (4 + NUM_CLASSES), 8732 * NUM_CLASSES, loc, conf)


def test_row_of_a_box_in_ssd512s_loc():
    # box 1 of cell (2, 3) of fc7 (32×32, 6 per cell): 64² · 4 rows of conv4_3 first
    assert_exercise(
        "01.ssd512_row", 64 * 64 * 4 + (2 * 32 + 3) * 6 + 1, 16786, SSD512_VOC, 1, 2, 3, 1
    )


def test_flattening_a_head_output(model):
    images = torch.rand(1, 3, 300, 300)
    with torch.no_grad():
        sources = model.source_maps(images)
        _, conf = model(images)
    k = 3  # conv9_2
    raw = model.head.conf[k](sources[k]).detach()  # (1, 6 · 21, 5, 5)
    right = raw.permute(0, 2, 3, 1).reshape(1, -1, NUM_CLASSES)
    wrong = raw.reshape(1, -1, NUM_CLASSES)  # no permute: cells and boxes mixed
    expected = assert_exercise("01.flat_conf", right, wrong, model.head, sources, k)
    start = 38**2 * 4 + 19**2 * 6 + 10**2 * 6  # conv4_3, fc7 and conv8_2 come first
    torch.testing.assert_close(expected, conf[:, start : start + 5 * 5 * 6])
    assert judge("answer", None, expected).startswith("not yet")
