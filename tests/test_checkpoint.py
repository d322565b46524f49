"""Model files and training checkpoints: one ModelConfig in each, one load_model for both, and
one clear line for every file that is neither."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ssdlib.checkpoint import (
    MODEL_FORMAT,
    VERSION,
    load_model,
    load_weights,
    read_checkpoint,
    read_training_checkpoint,
    save_model,
    save_training_checkpoint,
)
from ssdlib.model import ModelConfig, build_ssd, config_to_dict
from ssdlib.priors import SSD300_COCO, SSD300_VOC, config_from_scales
from ssdlib.weights import SHIPPED_MODEL

SMALL = config_from_scales(0.2, 0.9, [(2,), (2, 3), (2, 3), (2,), (2,)], (20, 10, 5, 3, 1), 160)
SLIM = 0.125


def small_model(**kwargs):
    return build_ssd(SMALL, 3, width=SLIM, class_names=["bg", "circle", "square"], **kwargs)


def test_model_config_is_one_value_that_round_trips():
    config = small_model(batch_norm=True).config
    assert config == ModelConfig.from_dict(config.to_dict())
    assert config.num_classes == 3 and config.sources is None
    # the paper's one map per layer has one spelling, so equal networks have equal configs
    assert dataclasses.replace(config, sources=(0, 1, 2, 3, 4)) == config
    other_names = dataclasses.replace(config, class_names=("a", "b", "c"))
    assert small_model(batch_norm=True).config.takes_weights_of(other_names)  # names: brought
    assert not small_model().config.takes_weights_of(other_names)  # no batch norm
    four = build_ssd(SMALL, 4, width=SLIM, batch_norm=True).config
    assert not four.takes_weights_of(config)  # another class count
    with pytest.raises(ValueError, match="width must be positive"):
        dataclasses.replace(config, width=0)


def test_model_file_round_trip(tmp_path, device):
    model = small_model(batch_norm=True)
    with torch.no_grad():
        model.backbone.l2norm.weight.fill_(7.0)
        model.mean.fill_(0.25)
    model.config = dataclasses.replace(model.config, mean=(0.25,) * 3)
    model(torch.rand(2, 3, 160, 160))  # training mode: BatchNorm statistics move away from 0/1
    path = save_model(model, tmp_path / "run" / "best.pt", extra={"epoch": 3})
    assert path.is_file() and not list(path.parent.glob("*.tmp"))

    loaded = load_model(path, map_location=device)
    assert not loaded.training and loaded.mean.device.type == device.type
    assert loaded.config == model.config and loaded.cfg.name == SMALL.name
    images = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        expected = model.eval()(images)
        got = loaded(images.to(device))
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g.cpu(), e, atol=1e-4, rtol=1e-4)

    ckpt = read_checkpoint(path)
    assert ckpt["kind"] == "model" and ckpt["version"] == VERSION and ckpt["extra"] == {"epoch": 3}
    assert ckpt["model"] == model.config

    again = build_ssd(SMALL, 3, width=SLIM, batch_norm=True)  # class names from the file
    load_weights(again, path)
    assert again.class_names == ["bg", "circle", "square"]
    assert torch.equal(again.backbone.l2norm.weight, model.backbone.l2norm.weight)


def test_load_model_reads_a_training_checkpoint_too(tmp_path):
    model = small_model()
    path = save_training_checkpoint(
        tmp_path / "last.pt", model, optimizer={}, scaler=None, rng={}, state={"step": 5},
        config={"name": "x"}, world_size=1,
    )  # fmt: skip
    assert read_training_checkpoint(path)["state"] == {"step": 5}
    back = load_model(path)
    assert back.config == model.config
    with pytest.raises(ValueError, match="a model file, not a training checkpoint"):
        read_training_checkpoint(save_model(model, tmp_path / "model.pt"))
    with pytest.raises(ValueError, match="needs"):
        save_training_checkpoint(tmp_path / "bad.pt", model, optimizer={})


def test_version_1_files_still_load(tmp_path):
    shipped = read_checkpoint(SHIPPED_MODEL)  # written before the ModelConfig
    assert shipped["kind"] == "model" and shipped["model"].priors.name == "CPU_TINY"
    model = small_model()
    old = {  # a version-1 model file: the config's fields at the top level
        "format": MODEL_FORMAT,
        "version": 1,
        "cfg": config_to_dict(SMALL),
        "num_classes": 3,
        "class_names": ["bg", "circle", "square"],
        "width": SLIM,
        "batch_norm": False,
        "mean": model.mean.tolist(),
        "std": model.std.tolist(),
        "state_dict": model.state_dict(),
        "extra": {},
    }
    torch.save(old, tmp_path / "v1.pt")
    assert load_model(tmp_path / "v1.pt").config == model.config


def test_checkpoint_for_another_network(tmp_path):
    path = save_model(build_ssd(SSD300_VOC, 3, width=SLIM), tmp_path / "voc.pt")
    assert load_model(path, expect_cfg=SSD300_VOC).cfg == SSD300_VOC
    with pytest.raises(
        ValueError, match=r"voc.pt holds a model for.*SSD300_VOC.*expected.*SSD300_COCO"
    ):
        load_model(path, expect_cfg=SSD300_COCO)
    coco = build_ssd(SSD300_COCO, 3, width=SLIM)  # the same layers: only the config differs
    with pytest.raises(ValueError, match=r"voc.pt holds weights for another network: priors"):
        load_weights(coco, path)
    with pytest.raises(ValueError, match=r"3 classes .* vs 4 "):
        load_weights(build_ssd(SSD300_VOC, 4, width=SLIM), path)


def test_missing_corrupt_foreign_and_future_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint file at .*nowhere.pt"):
        load_model(tmp_path / "nowhere.pt")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_model(tmp_path)
    path = save_model(small_model(), tmp_path / "model.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"truncated.pt is not a readable checkpoint file"):
        load_model(truncated)
    foreign = tmp_path / "state_dict.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match=r"state_dict.pt is not an ssdlib model file"):
        load_model(foreign)
    future = tmp_path / "future.pt"
    raw = torch.load(path, weights_only=True)
    torch.save({**raw, "version": VERSION + 1}, future)
    with pytest.raises(ValueError, match=rf"future.pt has checkpoint version {VERSION + 1}, newer"):
        load_model(future)


def test_unreadable_foreign_and_incomplete_files_get_one_clear_line(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00 not a torch file " * 20)
    with pytest.raises(ValueError) as err:
        read_checkpoint(junk)
    text = str(err.value)
    assert "\n" not in text and "\x1b" not in text  # no torch paragraph, no ANSI colours
    assert "do not retry with weights_only=False" in text  # the opposite of torch's advice
    for tag in (MODEL_FORMAT, "ssdlib-training-checkpoint"):
        torch.save({"format": tag}, tmp_path / "tag_only.pt")
        with pytest.raises(ValueError, match=r"incomplete ssdlib .* file: it lacks"):
            read_checkpoint(tmp_path / "tag_only.pt")
    torch.save(
        {"head.classification_head.module_list.0.weight": torch.zeros(1)}, tmp_path / "tv.pt"
    )
    with pytest.raises(ValueError, match="from_torchvision"):
        read_checkpoint(tmp_path / "tv.pt")
