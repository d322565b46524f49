"""Lesson 7's exercises: each solution, on the lesson's inputs (rebuilt small), accepts the right
answer, rejects a wrong one, and its hint does not give the value away."""

from __future__ import annotations

import math

from ssdlib import build_ssd
from ssdlib.exercises import EXERCISES
from ssdlib.priors import config_on_one_map, with_scales
from ssdlib.train import PRESETS
from tests.exercise_checks import assert_exercise

BASE = PRESETS["cpu-tiny"].priors  # the lesson's baseline: maps 16, 8, 4, 2, 1 of a 128 px input
NUM_CLASSES = 8  # the shapes' seven classes and the background


def test_ratios_23_boxes():
    # six boxes per cell (two squares, 2 and 1/2, 3 and 1/3) on 16² + 8² + 4² + 2² + 1² cells
    expected = assert_exercise("07.ratios_23_boxes", 6 * 341, 4 * 341, BASE)
    assert expected == 2046


def _head_macs_by_hand(cfg, channels, num_classes):
    return sum(
        f * f * a * (4 + num_classes) * c * 9
        for f, a, c in zip(cfg.feature_maps, cfg.boxes_per_cell, channels, strict=True)
    )


def test_head_macs_of_the_fc7_only_network():
    one_map = config_on_one_map(BASE, 1, name="fc7 only")
    width = PRESETS["cpu-tiny"].width
    net = build_ssd(one_map, NUM_CLASSES, width, batch_norm=True, sources=(1,) * 5)
    channels = [net.backbone.out_channels[s] for s in net.sources]
    right = _head_macs_by_hand(one_map, channels, NUM_CLASSES)
    loc_only = _head_macs_by_hand(one_map, channels, 0)  # a wrong answer: the offsets' head alone
    expected = assert_exercise("07.head_macs", right, loc_only, net)
    assert expected == 21_233_664  # 8 × 8 cells × 24 boxes × 12 outputs × 128 channels × 9


def test_head_macs_of_the_baseline_is_the_hand_count():
    net = build_ssd(BASE, NUM_CLASSES, PRESETS["cpu-tiny"].width, batch_norm=True)
    channels = [net.backbone.out_channels[s] for s in net.sources]
    expected = EXERCISES["07.head_macs"].solve(net)
    assert expected == _head_macs_by_hand(BASE, channels, NUM_CLASSES)


def test_smallest_side():
    coarse = with_scales(BASE, 0.2, name="s_min 0.2")
    expected = assert_exercise("07.smallest_side", 0.1414, 0.1, coarse)
    assert expected == math.sqrt(0.02)


def test_recall_under_01_pools_objects_not_bins():
    rec = {
        "bin_edges": [0.0, 0.05, 0.1, 0.15, 1.0],
        "num_objects": [100, 300, 50, 20],
        "recall": [0.5, 0.9, 1.0, None],
    }
    # (50 + 270) / 400 = 0.8; the mean of the two bins' recalls, 0.7, is the slip
    expected = assert_exercise("07.recall_under_01", 0.8, 0.7, rec)
    assert expected == 0.8


def test_min_size_px():
    expected = assert_exercise("07.min_size_px", 19.2, 0.15, BASE)
    assert expected == 0.15 * 128
