"""Training: the schedule, the data order, the non-finite stop, checkpoints and exact resume,
atomic writes, and one DistributedDataParallel step against a single process.

Everything runs on the CPU with a tiny network (64-pixel images, 8 channels per layer)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import sys
import types

import pytest
import torch
import torch.multiprocessing as mp

import ssdlib.train as train_module
from ssdlib.checkpoint import TRAINING_FORMAT, load_model, read_training_checkpoint
from ssdlib.data.shapes import ShapesDataset
from ssdlib.data.transforms import train_transform
from ssdlib.fast import MultiBoxLoss  # the loss training runs
from ssdlib.model import build_ssd
from ssdlib.priors import config_from_scales
from ssdlib.train import (
    BEST,
    LAST,
    METRIC_COLUMNS,
    PRESETS,
    NonFiniteLossError,
    RunBatches,
    SeededSamples,
    TrainConfig,
    epoch_batches,
    epoch_order,
    lr_factor,
    preset,
    train,
)

# 64-pixel inputs: conv4_3 gives 8×8, fc7 4×4, then 2×2 and 1×1 (340 default boxes).
TINY_PRIORS = config_from_scales(0.2, 0.9, ((2,),) * 4, (8, 4, 2, 1), 64, name="TINY")
TINY = TrainConfig(
    name="tiny",
    priors=TINY_PRIORS,
    width=0.125,  # 8 channels everywhere: a forward pass takes milliseconds
    batch_norm=False,
    optimizer="sgd",
    lr=0.01,  # 0.05 made this unnormalised net diverge to nan weights by step 4
    warmup_steps=2,
    schedule="cosine",
    batch_size=4,
    max_steps=4,
    log_every=1,
    checkpoint_every=2,
    eval_every=0,
    seed=3,
)


def tiny_data(n: int = 8) -> ShapesDataset:
    return ShapesDataset(n, 64, seed=1, transforms=train_transform(64))


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = model.state_dict().items()  # (the model's config sits in an "_extra_state" entry)
    return {k: v.detach().clone() for k, v in state if isinstance(v, torch.Tensor)}


# -- configuration -------------------------------------------------------------------------------


def test_presets_and_overrides():
    assert set(PRESETS) == {"cpu-tiny", "ssd300-cpu", "ssd300-gpu", "ssd300", "ssd512"}
    ssd300 = preset("ssd300")
    assert (ssd300.optimizer, ssd300.lr, ssd300.momentum, ssd300.weight_decay) == (
        "sgd", 1e-3, 0.9, 5e-4,
    )  # fmt: skip
    assert ssd300.batch_size == 32 and ssd300.width == 1.0 and ssd300.priors.num_priors == 8732
    assert preset("ssd512").priors.image_size == 512
    tiny = preset("cpu-tiny", lr=1e-4)
    assert tiny.lr == 1e-4 and tiny.optimizer == "adamw" and tiny.batch_norm
    assert PRESETS["cpu-tiny"].lr != 1e-4  # the preset itself is untouched
    text = repr(tiny)
    assert "name='cpu-tiny'" in text and "\n    lr=0.0001," in text  # one field per line
    with pytest.raises(ValueError, match="unknown preset 'ssd999'"):
        preset("ssd999")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="batch_size must be positive"):
        TrainConfig(batch_size=0)
    again = TrainConfig.from_dict(tiny.to_dict())
    assert again == tiny
    old = {**tiny.to_dict(), "assign_in_workers": False}  # a retired field, in older checkpoints
    assert TrainConfig.from_dict(old) == tiny
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['lr_max'\]"):
        TrainConfig.from_dict({**tiny.to_dict(), "lr_max": 1.0})


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, warmup_start=0.1, schedule="step", max_steps=60)
    assert lr_factor(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_factor(cfg, 5, 5 / 60) == pytest.approx(0.55)  # halfway up the ramp
    assert lr_factor(cfg, 10, 10 / 60) == 1.0
    assert lr_factor(cfg, 40, 40 / 60) == pytest.approx(0.1)  # the paper's 40k of 60k
    assert lr_factor(cfg, 50, 50 / 60) == pytest.approx(0.01)
    cos = dataclasses.replace(cfg, schedule="cosine", warmup_steps=0)
    assert lr_factor(cos, 30, 0.5) == pytest.approx(0.5)
    assert lr_factor(cos, 60, 1.0) == pytest.approx(0.0)


def test_data_order_is_a_function_of_seed_and_epoch():
    a, b = epoch_order(20, seed=0, epoch=3), epoch_order(20, seed=0, epoch=3)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(20))
    assert not torch.equal(a, epoch_order(20, seed=0, epoch=4))
    assert not torch.equal(a, epoch_order(20, seed=1, epoch=3))
    full = epoch_batches(20, 8, seed=0, epoch=3)
    assert len(full) == 2  # the last 4 images do not make a batch
    assert epoch_batches(20, 8, seed=0, epoch=3, start=1) == full[1:]  # what resume skips
    # Two processes split each global batch into contiguous halves.
    r0 = epoch_batches(20, 8, seed=0, epoch=3, rank=0, world_size=2)
    r1 = epoch_batches(20, 8, seed=0, epoch=3, rank=1, world_size=2)
    assert [x + y for x, y in zip(r0, r1, strict=True)] == full


def test_the_ssd300_presets_have_ssd300s_geometry():
    """The CPU and GPU SSD300 presets keep all 8732 default boxes on the six maps of SSD300."""
    for name in ("ssd300-cpu", "ssd300-gpu"):
        cfg = preset(name)
        assert cfg.priors.image_size == 300 and cfg.priors.num_priors == 8732
        assert tuple(cfg.priors.feature_maps) == (38, 19, 10, 5, 3, 1) and cfg.batch_norm
    assert preset("ssd300-cpu").max_steps and preset("ssd300-cpu").max_minutes is None  # seeded
    assert preset("ssd300-gpu").width == 1.0 and preset("ssd300-gpu").max_minutes == 5.0


def test_run_batches_are_the_epochs_batches_one_after_another():
    run = iter(RunBatches(20, 8, seed=0, epoch=3, start=1))
    expected = epoch_batches(20, 8, 0, 3, start=1) + epoch_batches(20, 8, 0, 4)
    assert [next(run) for _ in range(3)] == expected
    shares = [iter(RunBatches(20, 8, 0, rank=r, world_size=2)) for r in (0, 1)]
    assert [next(shares[0]) + next(shares[1]) for _ in range(2)] == epoch_batches(20, 8, 0, 0)
    with pytest.raises(ValueError, match="batch 2 of an epoch of 2 batches"):
        RunBatches(20, 8, seed=0, start=2)


def test_augmentation_depends_only_on_seed_epoch_index():
    samples = SeededSamples(tiny_data(), seed=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    image1, target1 = samples[(2, 3)]
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is left alone
    torch.manual_seed(999)
    image2, target2 = samples[(2, 3)]
    assert torch.equal(image1, image2) and torch.equal(target1["boxes"], target2["boxes"])
    image3, _ = samples[(3, 3)]
    assert not torch.equal(image1, image3)  # a new epoch, a new augmentation


# -- the run -------------------------------------------------------------------------------------


def test_train_writes_checkpoints_and_metrics(tmp_path, device):
    val = ShapesDataset(4, 64, seed=1, split="val")
    cfg = dataclasses.replace(TINY, eval_every=2)  # on CUDA: bf16 autocast, channels_last
    result = train(cfg, tiny_data(), val, out_dir=tmp_path, progress=False, device=device)
    assert result.model.priors.device.type == device.type
    assert result.step == 4 and result.stopped_by == "max_steps"
    assert [row["step"] for row in result.history] == [1, 2, 3, 4]
    assert all(math.isfinite(row["loss"]) for row in result.history)
    assert "val_map" in result.history[1] and "val_map" not in result.history[0]
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == list(METRIC_COLUMNS) and len(lines) == 5
    ckpt = read_training_checkpoint(tmp_path / LAST)
    assert ckpt["format"] == TRAINING_FORMAT and ckpt["state"]["step"] == 4
    for key in ("model", "state_dict", "optimizer", "scaler", "rng", "config", "state"):
        assert key in ckpt
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch"}
    assert (ckpt["state"]["epoch"], ckpt["state"]["batch_in_epoch"]) == (2, 0)  # 4 steps of 2
    assert (tmp_path / BEST).exists()
    assert read_training_checkpoint(tmp_path / BEST)["state"]["best"]["step"] in (2, 4)
    model = load_model(tmp_path / LAST)
    for k, v in params(result.model).items():
        assert torch.equal(v, model.state_dict()[k]), k
    with pytest.raises(FileExistsError, match="resume=True"):
        train(cfg, tiny_data(), out_dir=tmp_path, progress=False)


def test_tensorboard_gets_every_row_when_installed(tmp_path, monkeypatch):
    """tensorboard is optional (not installed here): a stand-in SummaryWriter records calls."""
    scalars = []

    class SummaryWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def close(self):
            scalars.append(("closed", -1))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    train(dataclasses.replace(TINY, max_steps=2), tiny_data(), out_dir=tmp_path, progress=False)
    assert ("loss", 1) in scalars and ("lr", 2) in scalars and ("images_per_s", 2) in scalars
    assert scalars[-1] == ("closed", -1)


def test_mixed_precision_choices():
    cfg = dataclasses.replace(TINY, max_steps=1, amp="bf16")  # bf16 autocast works on the CPU
    result = train(cfg, tiny_data(), progress=False, device="cpu")
    assert math.isfinite(result.history[0]["loss"])
    with pytest.raises(ValueError, match="amp='fp16' needs CUDA"):
        train(dataclasses.replace(cfg, amp="fp16"), tiny_data(), progress=False, device="cpu")


def test_a_training_set_without_objects_is_warned_about_once():
    """Every loss is 0 without objects, so training would "succeed" at learning nothing."""
    empty = ShapesDataset(8, 64, seed=1, transforms=train_transform(64), max_objects=0)
    with pytest.warns(UserWarning, match=r"has no objects in any of its 8 images") as caught:
        result = train(dataclasses.replace(TINY, max_steps=2), empty, progress=False)
    assert [row["loss"] for row in result.history] == [0.0, 0.0]
    warned = [w for w in caught if "no objects" in str(w.message)]
    assert len(warned) == 1 and warned[0].filename == __file__  # once, and at the caller's line


def test_objects_are_looked_for_in_the_annotations_alone(tmp_path):
    """No image file exists here: COCO's targets come from the JSON, through the wrappers."""
    from torch.utils.data import ConcatDataset, Subset

    from ssdlib.data.coco import CocoDataset

    image = {"file_name": "missing.png", "width": 64, "height": 64}
    (tmp_path / "instances.json").write_text(
        json.dumps({
            "images": [{"id": 1, **image}, {"id": 2, **image}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 64], "iscrowd": 1},
                {"id": 2, "image_id": 2, "category_id": 1, "bbox": [4, 4, 10, 10]},
            ],
            "categories": [{"id": 1, "name": "thing"}],
        })
    )  # fmt: skip
    coco = CocoDataset(tmp_path, tmp_path / "instances.json")
    from ssdlib.data.common import holds_objects as holds

    assert holds(coco) is True
    assert holds(Subset(coco, [0])) is False  # image 1 has a crowd box only, which is left out
    both = ConcatDataset([Subset(coco, [0]), coco])  # images 1, 1, 2
    assert holds(Subset(both, [0, 1])) is False and holds(Subset(both, [0, 2])) is True
    assert holds(ShapesDataset(4, 64, max_objects=0)) is False
    assert holds(tiny_data()) is None  # only drawing the scenes would tell
    assert holds(ConcatDataset([Subset(coco, [0]), tiny_data()])) is None


class _StopAtCall(MultiBoxLoss):
    """MultiBoxLoss that misbehaves at its ``call``-th forward (counting from 1)."""

    call, what = 3, "interrupt"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        loc, conf = super().forward(*args, **kwargs)
        if self.calls == self.call:
            if self.what == "interrupt":
                raise KeyboardInterrupt
            return loc, conf * math.inf
        return loc, conf


def test_resume_continues_the_loss_curve_exactly(tmp_path, monkeypatch):
    data = tiny_data(12)  # 3 steps per epoch: the checkpoint of step 2 is mid-epoch
    straight = train(TINY, data, out_dir=tmp_path / "straight", progress=False)

    # The same run, killed during step 3 (the checkpoint of step 2 is on disk), then resumed.
    monkeypatch.setattr(train_module.fast, "MultiBoxLoss", _StopAtCall)
    with pytest.raises(KeyboardInterrupt):
        train(TINY, data, out_dir=tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train_module.fast, "MultiBoxLoss", MultiBoxLoss)
    stopped = read_training_checkpoint(tmp_path / "resumed" / LAST)
    position = (stopped["state"]["epoch"], stopped["state"]["batch_in_epoch"])
    assert stopped["state"]["step"] == 2 and position == (0, 2)
    torch.manual_seed(12345)  # the resumed process starts from other RNG states
    resumed = train(TINY, data, out_dir=tmp_path / "resumed", resume=True, progress=False)

    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history, strict=True):
        for key in ("loss", "loc_loss", "conf_loss", "lr", "epoch"):
            assert a[key] == b[key], (a["step"], key, a[key], b[key])
    for k, v in params(straight.model).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    csv_rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in csv_rows[1:]] == ["1", "2", "3", "4"]


def test_workers_change_nothing():
    """Augmentation is seeded per sample, so worker processes see the same data as the main
    process."""
    cfg = dataclasses.replace(TINY, max_steps=2)
    inline = train(cfg, tiny_data(), progress=False)
    workers = dataclasses.replace(cfg, num_workers=1)
    in_workers = train(workers, tiny_data(), progress=False)
    assert [r["loss"] for r in inline.history] == [r["loss"] for r in in_workers.history]


def test_resume_on_a_smaller_training_set_fails_at_once(tmp_path):
    """It used to spin forever: the checkpoint's batch 3 of the epoch did not exist any more."""
    cfg = dataclasses.replace(TINY, max_steps=3, batch_size=2)  # 4 batches per epoch of 8
    train(cfg, tiny_data(8), out_dir=tmp_path, progress=False)
    cfg = dataclasses.replace(cfg, max_steps=6)

    def hung(signum, frame):
        raise TimeoutError("resume on a smaller training set still spins")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)  # a hang fails the test instead of the whole run
    try:
        with pytest.raises(ValueError, match="trained on 8 images, this training set has 4"):
            train(cfg, tiny_data(4), out_dir=tmp_path, resume=True, progress=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_gpu_recipe_runs_on_the_cpu_with_all_but_cuda(monkeypatch):
    """ssd300-gpu's own configuration for a few steps, with what does not need CUDA switched
    on: bf16 autocast, channels-last weights, loader processes that live across epochs."""
    loaders = []

    class CountingLoader(train_module.DataLoader):
        def __iter__(self):
            loaders.append(self.num_workers)
            return super().__iter__()

    monkeypatch.setattr(train_module, "DataLoader", CountingLoader)
    cfg = preset(
        "ssd300-gpu", width=0.0625, batch_size=2, max_steps=5, max_minutes=None, num_workers=2,
        eval_every=0, log_every=1,
    )  # fmt: skip
    assert cfg.amp == "auto" and cfg.channels_last and cfg.augment == "ssd"
    cfg = dataclasses.replace(cfg, amp="bf16")  # "auto" means bf16 on CUDA, off on the CPU
    data = ShapesDataset(4, 300, seed=1, transforms=train_transform(300))  # 2 steps per epoch
    result = train(cfg, data, progress=False, device="cpu")
    assert result.step == 5 and all(math.isfinite(r["loss"]) for r in result.history)
    assert loaders == [2]  # one loader for 2.5 epochs: its workers were never restarted
    conv = next(m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_resume_refuses_another_config(tmp_path):
    train(dataclasses.replace(TINY, max_steps=2), tiny_data(), out_dir=tmp_path, progress=False)
    wider = dataclasses.replace(TINY, width=0.25)
    with pytest.raises(ValueError, match=r"another network or classes \(width: 0\.125 vs 0\.25"):
        train(wider, tiny_data(), out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(FileNotFoundError):
        train(TINY, tiny_data(), out_dir=tmp_path / "nothing", resume=True, progress=False)


def test_non_finite_loss_stops_before_touching_the_weights(tmp_path, monkeypatch):
    class InfAtSecondCall(_StopAtCall):
        call, what = 2, "inf"

    monkeypatch.setattr(train_module.fast, "MultiBoxLoss", InfAtSecondCall)
    cfg = dataclasses.replace(TINY, checkpoint_every=1)
    data = tiny_data()
    torch.manual_seed(0)
    model = build_ssd(TINY_PRIORS, len(data.classes), 0.125, class_names=data.classes)
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg, data, out_dir=tmp_path, progress=False, model=model)
    message = str(info.value)
    assert message.startswith("step 1: the confidence (conf) loss is not finite")
    for hint in ("lower learning rate", "warmup", "amp='off'", "grad_clip"):
        assert hint in message
    # The model in memory still has the weights after step 1, which last.pt holds.
    stored = read_training_checkpoint(tmp_path / LAST)
    assert stored["state"]["step"] == 1
    for k, v in params(model).items():
        assert torch.equal(v, stored["state_dict"][k]), k


def test_a_failed_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, checkpoint_every=1, max_steps=3)
    real_save = torch.save
    saves = []

    def save_then_fail(obj, f, *args, **kwargs):
        saves.append(obj["state"]["step"])
        if obj["state"]["step"] == 2:  # the disk fills up halfway through step 2's checkpoint
            f.write(b"PK\x03\x04 half a zip file")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        train(cfg, tiny_data(), out_dir=tmp_path, progress=False)
    assert saves == [1, 2]
    assert read_training_checkpoint(tmp_path / LAST)["state"]["step"] == 1  # the old file, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST, "metrics.csv"]  # no debris


# -- DistributedDataParallel ----------------------------------------------------------------------


DDP_CFG = dataclasses.replace(
    TINY, max_steps=1, warmup_steps=0, lr=0.1, schedule="step", amp="off", checkpoint_every=1
)


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    train(DDP_CFG, tiny_data(), out_dir=out_dir, device="cpu", progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_step_equals_one_process(tmp_path):
    """Two gloo processes, each with half of the global batch of 4, take one SGD step; the
    weights equal one process's step on the whole batch (no BatchNorm, so the halves do not
    see different batch statistics; the loss divides by the global number of positives)."""
    single = train(DDP_CFG, tiny_data(), out_dir=tmp_path / "single", progress=False)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = read_training_checkpoint(tmp_path / "ddp" / LAST)
    assert ddp["world_size"] == 2 and ddp["state"]["step"] == 1
    torch.manual_seed(DDP_CFG.seed)
    start = params(build_ssd(TINY_PRIORS, 8, 0.125, False))  # the initial weights
    for k, v in params(single.model).items():
        step_single, step_ddp = v - start[k], ddp["state_dict"][k] - start[k]
        # Equal up to float32 rounding: of gradient sums taken in another order (1e-5 of the
        # update), and of the weights themselves (a few ulps of the largest weight).
        tolerance = 1e-5 * float(step_single.abs().max()) + 1e-6 * float(v.abs().max())
        torch.testing.assert_close(step_ddp, step_single, rtol=0, atol=tolerance, msg=k)
    biggest = max(float((v - start[k]).abs().max()) for k, v in params(single.model).items())
    assert biggest > 0.01  # the step did move the weights
    assert ddp["state"]["history"][0]["loss"] == pytest.approx(single.history[0]["loss"], rel=1e-5)


# -- nothing lost, nothing silently wrong ------------------------------------------------------


class _SigintAtCall(MultiBoxLoss):
    """MultiBoxLoss that sends this process a Ctrl-C (SIGINT) during its 3rd forward."""

    calls = 0

    def forward(self, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return super().forward(*args, **kwargs)


def test_ctrl_c_finishes_the_step_saves_it_and_the_run_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module.fast, "MultiBoxLoss", _SigintAtCall)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="holds step 3"):
        train(TINY, tiny_data(), out_dir=tmp_path, progress=False)
    assert signal.getsignal(signal.SIGINT) is handler  # the user's Ctrl-C is theirs again
    assert read_training_checkpoint(tmp_path / LAST)["state"]["step"] == 3
    monkeypatch.setattr(train_module.fast, "MultiBoxLoss", MultiBoxLoss)
    resumed = train(TINY, tiny_data(), out_dir=tmp_path, resume=True, progress=False)
    assert resumed.step == 4 and [r["step"] for r in resumed.history] == [1, 2, 3, 4]


def test_no_checkpoint_ever_holds_non_finite_weights(tmp_path):
    cfg = dataclasses.replace(TINY, max_steps=1, lr=math.inf)  # one step makes every weight nan
    with pytest.raises(NonFiniteLossError, match="was not written"):
        train(cfg, tiny_data(), out_dir=tmp_path, progress=False)
    assert not (tmp_path / LAST).exists() and not (tmp_path / BEST).exists()


def test_a_folder_with_a_run_is_not_overwritten_without_being_asked(tmp_path):
    (tmp_path / BEST).write_bytes(b"someone's best model")  # no last.pt beside it
    cfg = dataclasses.replace(TINY, max_steps=1)
    with pytest.raises(FileExistsError, match=r"best\.pt"):
        train(cfg, tiny_data(), out_dir=tmp_path, progress=False)
    assert (tmp_path / BEST).read_bytes() == b"someone's best model"
    with pytest.raises(ValueError, match="contradict"):
        train(cfg, tiny_data(), out_dir=tmp_path, resume=True, overwrite=True, progress=False)
    train(cfg, tiny_data(), out_dir=tmp_path, overwrite=True, progress=False)
    # the old run's files are gone
    assert read_training_checkpoint(tmp_path / BEST)["state"]["step"] == 1


def test_a_validation_set_with_other_classes_is_refused_before_training(tmp_path):
    val = ShapesDataset(2, 64, seed=1, split="val")
    val.classes = [val.classes[0], *reversed(val.classes[1:])]  # same names, another order
    with pytest.raises(ValueError, match="the validation set"):
        train(TINY, tiny_data(), val, out_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_failing_validation_leaves_its_step_saved(tmp_path):
    """A bad validation annotation used to surface before the step's checkpoint was written."""

    class BrokenVal(torch.utils.data.Dataset):
        classes = ShapesDataset(1, 64).classes

        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise ValueError(f"val annotation {index}: box 0 is degenerate")

    cfg = dataclasses.replace(TINY, eval_every=2)
    with pytest.raises(ValueError, match="val annotation 0"):
        train(cfg, tiny_data(), BrokenVal(), out_dir=tmp_path, progress=False)
    assert read_training_checkpoint(tmp_path / LAST)["state"]["step"] == 2


def test_overwrite_keeps_the_old_run_when_the_new_one_is_refused(tmp_path):
    from ssdlib.train import METRICS_FILE

    old = {LAST: b"old last", BEST: b"old best", METRICS_FILE: b"old metrics"}
    for name, content in old.items():
        (tmp_path / name).write_bytes(content)
    data = tiny_data()
    other_classes = build_ssd(TINY_PRIORS, len(data.classes) + 1, 0.125)
    with pytest.raises(ValueError, match="does not match the config"):
        train(TINY, data, out_dir=tmp_path, overwrite=True, progress=False, model=other_classes)
    with pytest.raises(ValueError, match="needs CUDA"):
        fp16 = dataclasses.replace(TINY, amp="fp16")
        train(fp16, data, out_dir=tmp_path, overwrite=True, device="cpu", progress=False)
    assert {name: (tmp_path / name).read_bytes() for name in old} == old


def test_a_gpu_index_under_torchrun_is_refused(monkeypatch):
    from ssdlib.distributed import setup_distributed

    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=r"'cuda:0' under torchrun would put every process"):
        setup_distributed("cuda:0")
