"""Lesson 1's figure of object sizes per layer: every object in its layer's column, and no two
names overlapping."""

from __future__ import annotations

import itertools

import pytest
import torch
from matplotlib.text import Text

from ssdlib import viz
from ssdlib.viz.feature_maps import _spread


def test_spread_keeps_labels_apart_and_centred():
    assert _spread([0.0, 5.0], gap=1.0) == [0.0, 5.0]  # far apart: untouched
    assert _spread([1.0, 1.0], gap=1.0) == [0.5, 1.5]  # a tie: centred on the value
    spread = _spread([0.0, 0.1, 0.2, 3.0], gap=1.0)
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(spread))
    assert spread[:3] == pytest.approx([-0.9, 0.1, 1.1])  # the group of three, around 0.1


def test_object_size_labels_do_not_overlap():
    # A crowd of near-equal sizes in one column (the lesson's conv8_2: towers, helmet, flag)
    sizes = torch.tensor([0.32, 0.33, 0.36, 0.37, 0.37, 0.39, 0.43, 0.1, 0.2, 0.21, 0.21])
    layer = torch.tensor([2, 2, 2, 2, 2, 2, 2, 0, 1, 1, 1])
    names = ["shuttle", "spoon", "tower", "tower", "tower", "helmet", "flag", "camera"]
    names += ["rocket", "tower", "tower"]
    scales = [0.1, 0.2, 0.37, 0.54, 0.71, 0.88]
    ax = viz.plot_object_sizes(sizes, layer, scales, names, [f"L{k}" for k in range(6)])
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the names, not the lines
    assert sorted(t.get_text() for t in ax.texts) == sorted(names)  # one name per object
    overlaps = [
        (ax.texts[i].get_text(), ax.texts[j].get_text())
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]
    assert not overlaps
    points = ax.collections[1].get_offsets()  # the objects, drawn in their layer's column
    assert points[:, 0].tolist() == layer.tolist()


def test_object_sizes_names_bad_input():
    with pytest.raises(ValueError, match="N names"):
        viz.plot_object_sizes(torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), [0.1, 0.2], ["a"])
