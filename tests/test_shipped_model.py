"""The trained models the repository ships (``data/cpu_tiny_shapes.pt``, made by ``make
checkpoint``; ``data/ssd300_cpu_shapes.pt``, made by ``make checkpoint-ssd300``): they load, and
their mAP on the shapes val split is the one the README states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssdlib import weights
from ssdlib.checkpoint import read_checkpoint
from ssdlib.cli import SHAPES_DATA_SEED, SHAPES_VAL_IMAGES
from ssdlib.data import ShapesDataset
from ssdlib.evaluate import evaluate
from ssdlib.train import PRESETS

README = Path(__file__).resolve().parent.parent / "README.md"
MAP_TOLERANCE = 0.005  # evaluation is deterministic; this only absorbs the README's rounding
MAX_MEGABYTES = 10


def readme_number(name: str) -> float:
    """A number the README states as ``<!-- name -->0.123``."""
    found = re.search(rf"<!-- {name} -->\s*([0-9.]+)", README.read_text())
    assert found, f"README.md has no '<!-- {name} -->' number"
    return float(found.group(1))


def test_the_shipped_model_is_small_and_is_the_cpu_tiny_preset():
    assert weights.SHIPPED_MODEL.is_file(), "make checkpoint writes it"
    assert weights.SHIPPED_MODEL.stat().st_size <= MAX_MEGABYTES * 2**20
    model = weights.load_shipped_model()
    assert model.cfg == PRESETS["cpu-tiny"].priors
    assert model.width == PRESETS["cpu-tiny"].width and not model.training
    assert model.class_names == ShapesDataset(1).classes


@pytest.mark.slow
def test_the_shipped_models_map_is_the_readmes():
    model = weights.load_shipped_model()
    size = model.cfg.image_size
    val = ShapesDataset(SHAPES_VAL_IMAGES, size, SHAPES_DATA_SEED, "val")  # as `ssdlib evaluate`
    metrics = evaluate(model, val, progress=False)
    assert metrics["map_50"] == pytest.approx(readme_number("shipped-map50"), abs=MAP_TOLERANCE)
    assert metrics["map"] == pytest.approx(readme_number("shipped-map"), abs=MAP_TOLERANCE)


def test_a_missing_shipped_model_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "SHIPPED_MODEL", tmp_path / "gone.pt")
    with pytest.raises(FileNotFoundError, match="make checkpoint"):
        weights.load_shipped_model()
    monkeypatch.setattr(weights, "SHIPPED_SSD300", tmp_path / "gone.pt")
    with pytest.raises(FileNotFoundError, match="make checkpoint-ssd300"):
        weights.load_shipped_model(preset="ssd300-cpu")
    with pytest.raises(ValueError, match="no shipped model of preset 'ssd512'"):
        weights.load_shipped_model(preset="ssd512")


def test_the_shipped_ssd300_is_small_and_has_all_8732_default_boxes():
    assert weights.SHIPPED_SSD300.is_file(), "make checkpoint-ssd300 writes it"
    assert weights.SHIPPED_SSD300.stat().st_size <= MAX_MEGABYTES * 2**20
    model = weights.load_shipped_model(preset="ssd300-cpu")
    ssd300 = PRESETS["ssd300-cpu"]
    assert model.cfg == ssd300.priors and model.num_priors == 8732
    assert model.width == ssd300.width and model.batch_norm and not model.training
    extra = read_checkpoint(weights.SHIPPED_SSD300)["extra"]
    assert extra["preset"] == "ssd300-cpu" and extra["step"] == ssd300.max_steps
    assert [r["step"] for r in extra["history"] if "val_map_50" in r][-1] == ssd300.max_steps


@pytest.mark.slow
def test_the_shipped_ssd300s_map_is_the_readmes():
    model = weights.load_shipped_model(preset="ssd300-cpu")
    val = ShapesDataset(SHAPES_VAL_IMAGES, 300, SHAPES_DATA_SEED, "val")  # as `ssdlib evaluate`
    metrics = evaluate(model, val, progress=False)
    assert metrics["map_50"] == pytest.approx(readme_number("ssd300-map50"), abs=MAP_TOLERANCE)
    assert metrics["map"] == pytest.approx(readme_number("ssd300-map"), abs=MAP_TOLERANCE)
