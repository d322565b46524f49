"""Receptive fields of the backbone's source maps, by hand on small networks (the rest of the
backbone is tested with the whole network in test_model.py)."""

import pytest
from torch import nn

from ssdlib.backbone import layer_geometry, receptive_fields
from ssdlib.priors import PriorConfig


def test_receptive_fields_of_a_hand_made_network():
    stages = [
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)),
        nn.Sequential(nn.MaxPool2d(2, 2), nn.Conv2d(4, 4, 3, padding=1)),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.Conv2d(4, 4, 1)),
    ]
    # 1 + 2 + 2 = 5; pool: + 1 -> 6, jump 2; conv: + 2·2 -> 10; dilated: + 2·2·2 -> 18; 1×1: + 0
    assert receptive_fields(stages) == [(5.0, 1.0), (10.0, 2.0), (18.0, 2.0)]


def test_layer_geometry_puts_receptive_fields_beside_the_default_boxes():
    cfg = PriorConfig(8, (4, 2), None, (2, 4), (4, 8), ((), ()))
    stages = [nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)), nn.Conv2d(4, 4, 3, 2, 1)]
    rows = layer_geometry(stages, ["a", "b"], cfg)
    assert [
        (r.name, r.size, r.stride, r.prior_step, r.receptive_field, r.box_scale) for r in rows
    ] == [
        ("a", 4, 2.0, 2.0, 3.0, 2),
        ("b", 2, 4.0, 4.0, 7.0, 4),
    ]
    with pytest.raises(ValueError, match="1 stages and 2 names for 2"):
        layer_geometry(stages[:1], ["a", "b"], cfg)
    with pytest.raises(ValueError, match="square"):
        receptive_fields([nn.Conv2d(3, 4, (3, 1))])
