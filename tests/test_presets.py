"""TrainConfig's ``sources``: which backbone map each prior layer reads, one field like the others
(checked, one spelling for the paper's choice, through JSON and older checkpoints and back)."""

import json

import pytest

from ssdlib.model import SSD
from ssdlib.presets import CPU_TINY_PRIORS, TrainConfig, preset
from ssdlib.priors import config_on_one_map

CLASSES = ("background", "circle", "square")


def test_sources_default_to_the_papers_maps():
    config = preset("cpu-tiny")
    assert config.sources is None
    assert config.model_config(CLASSES).sources is None
    assert preset("cpu-tiny", sources=[0, 1, 2, 3, 4]) == config  # one spelling: None


def test_sources_reach_the_network():
    one_map = config_on_one_map(CPU_TINY_PRIORS, 1)  # every layer on fc7, SSD Table 3
    config = preset("cpu-tiny", priors=one_map, sources=[1] * 5)
    assert config.sources == (1, 1, 1, 1, 1)  # a tuple, like milestones
    model = SSD(config.model_config(CLASSES))
    assert model.source_names == ["fc7"] * 5


def test_sources_round_trip_through_json_and_old_checkpoints_load():
    config = preset("cpu-tiny", priors=config_on_one_map(CPU_TINY_PRIORS, 1), sources=(1,) * 5)
    stored = json.loads(json.dumps(config.to_dict()))
    assert stored["sources"] == [1, 1, 1, 1, 1]
    assert TrainConfig.from_dict(stored) == config
    old = {k: v for k, v in preset("cpu-tiny").to_dict().items() if k != "sources"}
    assert TrainConfig.from_dict(old) == preset("cpu-tiny")  # before the field: the paper's maps


def test_bad_sources_are_named():
    with pytest.raises(ValueError, match=r"for each of the 5 feature maps, got \(1, 1\)"):
        preset("cpu-tiny", sources=[1, 1])
    with pytest.raises(ValueError, match="backbone map index >= 0"):
        preset("cpu-tiny", sources=[0, 1, 2, 3, -1])
