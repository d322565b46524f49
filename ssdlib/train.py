"""Training SSD (SSD §3, "Experimental Results": "We fine-tune the resulting model using SGD with
initial learning rate 10⁻³, 0.9 momentum, 0.0005 weight decay, and batch size 32").

One function, :func:`train`, serves the notebooks and the command line. Each step:

1. a batch of augmented images and their boxes (the data order is a function of (seed, epoch),
   and each sample's augmentation of (seed, epoch, index), so a resumed run sees the same data);
2. targets for every default box at once (:func:`ssdlib.matching.assign_targets`, computed by
   its fast twin in :mod:`ssdlib.fast`);
3. the forward pass and the MultiBox loss (:class:`ssdlib.loss.MultiBoxLoss`, fast twin too);
4. a check that the loss is finite, then the backward pass and the optimiser step.

:class:`TrainConfig` holds every choice; :data:`PRESETS` are the named configurations. The same
entry point runs on one device or, under ``torchrun --nproc_per_node N``, as N processes of
DistributedDataParallel that together take the same global batch.

Letters: ``B`` images, ``P`` default boxes, ``K`` classes including background 0.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from . import fast
from .checkpoint import read_training_checkpoint, save_training_checkpoint
from .data.loader import collate
from .data.shapes import ShapesDataset
from .data.transforms import AUGMENTATIONS
from .evaluate import check_same_classes, classes_of, evaluate
from .loss import NEG_POS_RATIO
from .matching import IOU_THRESHOLD
from .model import SSD, ModelConfig, config_from_dict, config_to_dict
from .priors import SSD300_COCO, SSD300_VOC, SSD512_VOC, PriorConfig, config_from_scales
from .utils import default_device, seed_everything

LAST, BEST = "last.pt", "best.pt"  # checkpoint names in the output directory
METRICS_FILE = "metrics.csv"
METRIC_COLUMNS = (
    "step", "epoch", "loss", "loc_loss", "conf_loss", "lr", "images_per_s", "elapsed_s",
    "val_map", "val_map_50", "val_voc07_map",
)  # fmt: skip


# -- the configuration -------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything a training run depends on besides the data. ``print(cfg)`` shows one per line."""

    name: str = "custom"  # a label: the preset it came from
    # The network.
    priors: PriorConfig = SSD300_VOC  # where the default boxes go; fixes the input size
    width: float = 1.0  # channel multiplier of the VGG16 base and extras (1.0 = the paper's)
    batch_norm: bool = False  # BatchNorm after every conv: lets a slim net train from scratch
    # (under DDP each process normalises with its own share of the batch)
    # The objective (§2.2).
    augment: str = "ssd"  # the data augmentation, by name: ssdlib.data.AUGMENTATIONS (the
    # training set is built with it by the command line and the experiments)
    neg_pos_ratio: float = NEG_POS_RATIO  # hard negatives per positive: "at most 3:1"
    match_iou: float = IOU_THRESHOLD  # a default box is positive from this IoU (0.5)
    # The optimiser.
    optimizer: str = "sgd"  # "sgd" (the paper's) or "adamw"
    lr: float = 1e-3  # peak learning rate (the paper's SGD: 1e-3)
    momentum: float = 0.9  # SGD momentum; AdamW's beta1
    weight_decay: float = 5e-4  # on conv weights only; biases and norms are not decayed, as Caffe
    warmup_steps: int = 0  # linear ramp from warmup_start·lr up to lr over these steps
    warmup_start: float = 1e-3  # the ramp's first factor (torchvision's detection recipe)
    schedule: str = "step"  # after warmup: "step" (×gamma at milestones) or "cosine" (to 0)
    milestones: tuple[float, ...] = (2 / 3, 5 / 6)  # fractions of the budget where "step" decays:
    # the paper's 40k and 50k of 60k iterations on VOC07+12
    gamma: float = 0.1  # "step" multiplies the lr by this at each milestone
    grad_clip: float | None = None  # clip the gradients' global L2 norm to this (None: never)
    # The budget: training stops at whichever limit comes first; at least one is needed.
    batch_size: int = 32  # global batch: split evenly over the processes under DDP
    epochs: int | None = None  # passes over the training set
    max_steps: int | None = None  # optimiser steps
    max_minutes: float | None = None  # wall-clock minutes (evaluation included)
    # Speed.
    amp: str = "auto"  # "auto": bf16 on CUDA with bf16 (else fp16 + GradScaler), off on CPU;
    # or "off", "bf16", "fp16"
    channels_last: bool = False  # NHWC memory layout, on any device: faster convs on CUDA (the
    # GPU presets turn it on); the CPU presets leave it off
    compile: bool = False  # torch.compile the network (slow first steps, faster later)
    num_workers: int = 0  # DataLoader worker processes; they live for the whole run
    # Evaluation, logging, checkpoints.
    eval_every: int = 0  # steps between validations (0: only at the end)
    eval_images: int | None = None  # validate on the first N images (None: all)
    best_metric: str = "map"  # key of evaluate()'s result that picks best.pt
    log_every: int = 10  # steps per row of metrics.csv (losses are averaged over the row)
    checkpoint_every: int = 500  # steps between writes of last.pt (also at evals and the end)
    seed: int = 0  # weights, data order and augmentation all follow from it

    def __post_init__(self) -> None:
        choices = {
            "optimizer": ("sgd", "adamw"),
            "schedule": ("step", "cosine"),
            "amp": ("auto", "off", "bf16", "fp16"),
            "augment": AUGMENTATIONS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        positive = ("lr", "batch_size", "log_every", "checkpoint_every", "width")
        for key in positive:
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        for key in ("epochs", "max_steps", "max_minutes", "grad_clip", "eval_images"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"{key} must be positive or None, got {value}")
        for key in ("warmup_steps", "eval_every"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones are fractions of the budget in (0, 1): {self.milestones}")
        self.milestones = tuple(sorted(self.milestones))

    def __repr__(self) -> str:
        lines = [f"    {f.name}={getattr(self, f.name)!r}," for f in dataclasses.fields(self)]
        return "TrainConfig(\n" + "\n".join(lines) + "\n)"

    def model_config(self, class_names: Sequence[str]) -> ModelConfig:
        """The network this config trains on a dataset of ``class_names`` (background first)."""
        return ModelConfig(self.priors, tuple(class_names), self.width, self.batch_norm)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the priors as a dict), for checkpoints and JSON."""
        d = dataclasses.asdict(self)
        d["priors"] = config_to_dict(self.priors)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; also reads the dicts of older checkpoints."""
        d = dict(d)
        d.pop("assign_in_workers", None)  # retired: training always matches on its device
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        d["priors"] = config_from_dict(d["priors"])
        d["milestones"] = tuple(d["milestones"])
        return cls(**d)


# A small input and five maps (16, 8, 4, 2, 1 cells for 128 px): still multi-scale, with
# default boxes of several shapes, matching and hard negatives, but ~1.5k boxes instead of 8732.
CPU_TINY_PRIORS = config_from_scales(
    s_min=0.1,
    s_max=0.9,
    aspect_ratios=((2,), (2, 3), (2, 3), (2,), (2,)),
    feature_maps=(16, 8, 4, 2, 1),
    image_size=128,
    name="CPU_TINY",
)

# The smallest SSD that still shows every idea, trainable on 2 CPU cores in minutes. Slim (an
# eighth of VGG16's channels) with BatchNorm, AdamW and a short warmup, because it starts from
# scratch; light augmentation, because every shapes image is new anyway. The README's "The CPU
# preset" gives the runs that chose these settings.
CPU_TINY = TrainConfig(
    name="cpu-tiny",
    priors=CPU_TINY_PRIORS,
    width=0.125,
    batch_norm=True,
    augment="light",
    optimizer="adamw",
    lr=4e-3,
    weight_decay=0.05,
    warmup_steps=100,
    schedule="cosine",
    batch_size=16,
    max_minutes=15.0,
    eval_every=500,
    eval_images=200,
    log_every=10,
    checkpoint_every=200,
)

PRESETS: dict[str, TrainConfig] = {
    "cpu-tiny": CPU_TINY,
    # SSD300 itself on 2 CPU cores: 300-pixel input, the six source maps 38/19/10/5/3/1 and
    # all 8732 default boxes, in COCO's sizes (21 px up: the shapes are as small as COCO's
    # objects, §3.4). cpu-tiny's slim layers, optimiser and light augmentation otherwise. A step
    # budget, not minutes, so the shipped model (`make checkpoint-ssd300`, about an hour) is the
    # same whatever else the machine does.
    "ssd300-cpu": dataclasses.replace(
        CPU_TINY,
        name="ssd300-cpu",
        priors=SSD300_COCO,
        max_minutes=None,
        max_steps=3000,
        num_workers=1,  # draws the next batch while the step runs
        eval_every=250,
        checkpoint_every=250,
    ),
    # The full-width SSD300 on one GPU in five minutes from scratch (lesson 8, `make gpu-check`):
    # BatchNorm and AdamW so it trains from random weights at a high learning rate, a short
    # warmup and a cosine that ends with the clock, bf16 and channels-last, and loader
    # processes that live for the whole run. SSD's augmentation, as on VOC and COCO.
    "ssd300-gpu": TrainConfig(
        name="ssd300-gpu",
        priors=SSD300_COCO,
        batch_norm=True,
        augment="ssd",
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        warmup_steps=300,
        schedule="cosine",
        batch_size=32,
        max_minutes=5.0,
        amp="auto",
        channels_last=True,
        num_workers=14,  # a 16-core GPU machine, less the main process and one to spare
        eval_every=1500,
        eval_images=250,
        log_every=20,
        checkpoint_every=1000,
    ),
    # The paper's SSD300 (§3): VGG16 at full width, SGD 1e-3, momentum 0.9, weight decay 5e-4,
    # batch 32, lr ×0.1 after 40k and 50k of 60k iterations. The warmup is torchvision's
    # recipe (the paper starts from ImageNet weights, which nothing here downloads).
    "ssd300": TrainConfig(
        name="ssd300",
        priors=SSD300_VOC,
        max_steps=60_000,
        warmup_steps=1000,
        channels_last=True,
        eval_every=5000,
        eval_images=None,
        log_every=50,
        checkpoint_every=1000,
    ),
    # SSD512: the same recipe on the 512-pixel geometry (7 source maps, 24564 default boxes).
    "ssd512": TrainConfig(
        name="ssd512",
        priors=SSD512_VOC,
        max_steps=60_000,
        warmup_steps=1000,
        channels_last=True,
        eval_every=5000,
        log_every=50,
        checkpoint_every=1000,
    ),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A copy of ``PRESETS[name]`` with some fields replaced: ``preset("cpu-tiny", lr=1e-3)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


# -- the learning rate -------------------------------------------------------------------------


def lr_factor(config: TrainConfig, step: int, progress: float) -> float:
    """The learning rate of optimiser step ``step`` (0-based) as a multiple of ``config.lr``.

    Warmup ramps linearly over the first ``warmup_steps`` steps; the decay follows ``progress``,
    the fraction of the budget used (of the steps, or of the minutes for a time budget).
    """
    warm = 1.0
    if step < config.warmup_steps:
        warm = config.warmup_start + (1 - config.warmup_start) * step / config.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    if config.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        decay = config.gamma ** sum(progress >= m for m in config.milestones)
    return warm * decay


# -- the data order ----------------------------------------------------------------------------


def epoch_order(num_samples: int, seed: int, epoch: int) -> Tensor:
    """``(num_samples,)`` long: the order of the training set in ``epoch``, a function of
    ``(seed, epoch)`` alone, so that a resumed run can skip what it already consumed."""
    generator = torch.Generator().manual_seed(_mix(seed, epoch))
    return torch.randperm(num_samples, generator=generator)


def _mix(*numbers: int) -> int:
    """One 63-bit seed from several integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(2, np.uint64)[0] >> 1)


def epoch_batches(
    num_samples: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
) -> list[list[tuple[int, int]]]:
    """This process's batches of one epoch, from batch ``start`` on.

    Global batch ``b`` is ``epoch_order(...)[b·B : (b+1)·B]``; process ``rank`` takes its
    ``rank``-th contiguous share of ``B / world_size``. The last incomplete batch is dropped
    (every step then has the same batch size). Items are ``(epoch, index)``, so each sample
    can seed its own augmentation.
    """
    order = epoch_order(num_samples, seed, epoch).tolist()
    share = batch_size // world_size
    batches = []
    for b in range(start, num_samples // batch_size):
        mine = order[b * batch_size + rank * share : b * batch_size + (rank + 1) * share]
        batches.append([(epoch, i) for i in mine])
    return batches


class RunBatches:
    """The batch sampler of a whole run: :func:`epoch_batches` of epoch ``epoch`` from batch
    ``start`` on, then of every following epoch, without end.

    One DataLoader iterates it once, so its worker processes live for the whole run instead of
    starting again every epoch; the batches are the same as epoch by epoch.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        epoch: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        per_epoch = num_samples // batch_size
        if not 0 <= start < per_epoch:
            raise ValueError(
                f"batch {start} of an epoch of {per_epoch} batches ({num_samples} images, batch "
                f"{batch_size}) does not exist: was the run started on a larger training set?"
            )
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.epoch, self.start, self.rank, self.world_size = epoch, start, rank, world_size

    def __iter__(self):
        epoch, start = self.epoch, self.start
        while True:
            yield from epoch_batches(
                self.num_samples, self.batch_size, self.seed, epoch, self.rank, self.world_size,
                start,
            )  # fmt: skip
            epoch, start = epoch + 1, 0


class SeededSamples(Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` draws its augmentation from a seed made
    of ``(seed, epoch, index)``: the same in any worker, any process, and after a resume.

    The global RNGs are restored afterwards, so the wrapper leaves no trace on them.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        epoch, index = item
        seed = _mix(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(seed)
                np.random.seed(seed % 2**32)  # noqa: NPY002 - transforms may use the global RNG
                torch.manual_seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


def match_batch(
    targets: Sequence[dict[str, Tensor]], priors: Tensor, image_size: int, iou_threshold: float
) -> tuple[Tensor, Tensor]:
    """Targets of a batch of ``image_size``-pixel images: pixel boxes -> normalised, then
    :func:`ssdlib.fast.assign_targets` on the priors' device. Returns ``(B, P, 4)`` offsets,
    ``(B, P)`` labels."""
    scale = 1.0 / image_size
    boxes = [t["boxes"].to(priors.device, priors.dtype) * scale for t in targets]  # normalised
    labels = [t["labels"].to(priors.device) for t in targets]
    return fast.assign_targets(boxes, labels, priors, iou_threshold)


# -- distributed -------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # whether train() started the process group (and ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: torch.device | str | None) -> _Dist:
    """One process per device under ``torchrun`` (it sets RANK, WORLD_SIZE, LOCAL_RANK), or an
    already initialised process group; else a single process."""
    if not dist.is_available() or (
        not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) <= 1
    ):
        return _Dist(device=torch.device(device) if device is not None else default_device())
    owns = False
    if device is None:
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        else:
            device = torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), device, owns)


def _all_reduce_sum(t: Tensor, d: _Dist) -> Tensor:
    if d.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# -- checkpoints -------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    """Every RNG's state, as types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the loop ----------------------------------------------------------------------------------


class NonFiniteLossError(RuntimeError):
    """The loss became inf or nan; training stopped before that step changed the weights."""


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: SSD  # the trained network (the last weights; best.pt holds the best)
    history: list[dict[str, float]]  # the rows of metrics.csv, for plots
    step: int  # optimiser steps taken in all (including before a resume)
    stopped_by: str  # "max_steps", "epochs" or "max_minutes"
    best: dict[str, Any]  # {"metric", "value", "step"} of best.pt (value nan without validation)
    out_dir: Path | None


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on conv weights only: biases and norm scales are not decayed (the released
    Caffe SSD gives biases decay_mult 0)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))


def _autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs CUDA (its GradScaler); use 'bf16' or 'off' on the CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


class _MetricsLog:
    """metrics.csv (rewritten from the history on resume, so it matches the checkpoint), and
    TensorBoard when it is installed. Only the main process writes."""

    def __init__(self, out_dir: Path | None, history: list[dict[str, float]], enabled: bool):
        self.path = out_dir / METRICS_FILE if (out_dir is not None and enabled) else None
        self.writer = None
        if self.path is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerow(METRIC_COLUMNS)
            for row in history:
                csv.writer(f).writerow([row.get(k, "") for k in METRIC_COLUMNS])
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.writer = None

    def write(self, row: dict[str, float]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in METRIC_COLUMNS])
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "epoch"):
                    self.writer.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _budget(config: TrainConfig, steps_per_epoch: int) -> int | None:
    """The number of steps the budget allows, or None for a time budget only."""
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.epochs is not None:
        limits.append(config.epochs * steps_per_epoch)
    return min(limits) if limits else None


@dataclass
class RunState:
    """Where a run stands: with the weights, optimiser, scaler and RNGs, all a resume needs."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0  # the epoch in progress
    batch_in_epoch: int = 0  # batches of this epoch consumed (a resume skips them)
    elapsed_s: float = 0.0  # wall-clock seconds so far, across resumes (for max_minutes)
    history: list[dict[str, float]] = field(default_factory=list)  # the rows of metrics.csv
    loss_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loc, conf, steps
    # since the last row: a row's losses are means over its steps
    best: dict[str, Any] = field(default_factory=dict)  # {"metric", "value", "step"}: best.pt
    train_images: int = 0  # the training set's size: a resume needs the same (0: not recorded)


class _Run:
    """The pieces of one run: network, optimiser, precision, loss, and their checkpoints."""

    def __init__(
        self,
        config: TrainConfig,
        class_names: list[str],
        model: SSD | None,
        d: _Dist,
        out_dir: Path | None,
    ):
        self.config, self.d, self.out_dir, device = config, d, out_dir, d.device
        seed_everything(config.seed)  # the same initial weights in every process
        wanted = config.model_config(class_names)  # the network of the config and the data
        if model is None:
            model = SSD(wanted)
        elif dataclasses.replace(model.config, sources=None) != wanted:  # sources: its own choice
            raise ValueError(
                f"the model ({model!r}) does not match the config and the dataset: "
                f"{dataclasses.replace(model.config, sources=None).difference(wanted)}"
            )
        self.model = model.to(device)
        self.channels_last = config.channels_last
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = _make_optimizer(self.model, config)
        self.amp_dtype = _autocast_dtype(config.amp, device)
        fp16 = self.amp_dtype == torch.float16  # bf16 has fp32's range: no scaling needed
        self.scaler = torch.amp.GradScaler(device.type) if fp16 else None
        self.loss_fn = fast.MultiBoxLoss(config.neg_pos_ratio)
        self.state = RunState(best={"metric": config.best_metric, "value": -math.inf, "step": -1})

    def wrap(self) -> nn.Module:
        """The module the steps call: DDP over several processes, compiled if asked."""
        net: nn.Module = self.model
        if self.d.world_size > 1:
            device = self.d.device
            ids = [device.index] if device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        return torch.compile(net) if self.config.compile else net

    def step(self, net: nn.Module, images: Tensor, loc_targets: Tensor, labels: Tensor, lr: float):
        """One optimiser step on a batch; returns the (loc, conf) losses of the global batch.

        Raises :class:`NonFiniteLossError` before the weights change if a loss is inf/nan.
        """
        config, d = self.config, self.d
        # Divide by the positives of the whole global batch, per process: the averaged
        # gradients of DDP then equal one process's gradients on the whole batch.
        positives = _all_reduce_sum((labels > 0).sum().float(), d)
        normalizer = positives.clamp(min=1) / d.world_size
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(
            d.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            loc_pred, conf_pred = net(images)  # (B, P, 4), (B, P, K)
        loc_loss, conf_loss = self.loss_fn(loc_pred, conf_pred, loc_targets, labels, normalizer)

        terms = _all_reduce_sum(torch.stack([loc_loss.detach(), conf_loss.detach()]), d)
        loc, conf = (terms / d.world_size).tolist()  # the global batch's losses
        if not (math.isfinite(loc) and math.isfinite(conf)):
            raise self.non_finite(loc, conf, lr, "loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss = loc_loss + conf_loss
        if self.scaler is not None:  # fp16: scale the loss so small gradients do not underflow
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if config.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            if self.scaler is None and not torch.isfinite(norm):  # (the scaler skips those)
                raise self.non_finite(loc, conf, lr, "gradient norm")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return loc, conf

    def non_finite(self, loc: float, conf: float, lr: float, what: str) -> NonFiniteLossError:
        config, step = self.config, self.state.step
        if what == "loss":
            what = "localisation (loc) loss" if not math.isfinite(loc) else "confidence (conf) loss"
        out = self.out_dir
        where = f"; {out / LAST} holds the last checkpoint" if out is not None else ""
        return NonFiniteLossError(
            f"step {step}: the {what} is not finite (loc {loc}, conf {conf}); training stopped "
            f"before this step changed the weights{where}. Try a lower learning rate "
            f"(lr={lr:.3g} at this step), a longer warmup (warmup_steps={config.warmup_steps}), "
            f"full fp32 (amp='off', now {config.amp!r}) or gradient clipping "
            f"(grad_clip={config.grad_clip})."
        )

    def save(self, name: str) -> None:
        """Write a checkpoint atomically (main process only)."""
        if self.out_dir is None or not self.d.is_main:
            return
        s = self.state
        weights = self.model.state_dict()
        bad = [k for k, v in weights.items() if isinstance(v, Tensor) and not v.isfinite().all()]
        if bad:  # a checkpoint never holds inf or nan: the file keeps its last finite weights
            raise NonFiniteLossError(
                f"step {s.step}: {len(bad)} of the network's {len(weights)} tensors hold inf or "
                f"nan (the first: {bad[0]}), so {self.out_dir / name} was not written. Try a "
                f"lower learning rate (lr={self.config.lr:g}) or gradient clipping "
                f"(grad_clip={self.config.grad_clip})"
            )
        save_training_checkpoint(
            self.out_dir / name,
            self.model,
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            rng=_rng_state(),
            state=dataclasses.asdict(s),  # step, epoch, position in it, history, best ...
            config=self.config.to_dict(),
            world_size=self.d.world_size,
        )

    def restore(self, path: Path, class_names: list[str]) -> None:
        ckpt = read_training_checkpoint(path)
        _check_resumable(ckpt, self.config, self.model.config, path)
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt["scaler"] is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = RunState(**ckpt["state"])
        _set_rng_state(ckpt["rng"])


def train(
    config: TrainConfig,
    train_set: Dataset,
    val_set: Dataset | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    model: SSD | None = None,
) -> TrainResult:
    """Train an SSD on ``train_set`` as ``config`` says; validate on ``val_set`` if given.

    Args:
        config: the run's settings (see :class:`TrainConfig`, :func:`preset`).
        train_set: items ``(image (3, S, S) in [0, 1], {"boxes": (G, 4) xyxy pixels, "labels":
            (G,)})`` with ``S = config.priors.image_size`` (e.g. ``train_transform(S)``), and a
            ``.classes`` list (index 0 background).
        val_set: same format, any image size; evaluated every ``eval_every`` steps and at the end.
        out_dir: where ``last.pt``, ``best.pt`` and ``metrics.csv`` go (None: nothing written).
        resume: continue from ``out_dir/last.pt``: weights, optimiser, schedule, RNGs and data
            position, so the loss curve continues exactly as if never interrupted.
        overwrite: start afresh even if ``out_dir`` already holds a run.
        device: default CUDA if present (under torchrun: this process's GPU), else the CPU.
        progress: show a tqdm bar with the loss and images/s.
        model: train this network instead of a new ``build_ssd(config...)`` (it must match).

    Returns:
        A :class:`TrainResult`. Raises :class:`NonFiniteLossError` if the loss becomes inf/nan;
        warns before training if the training set's annotations hold no object at all.
    """
    d = _setup_distributed(device)
    try:
        with _DeferredInterrupts() as interrupts:
            return _train(
                config, train_set, val_set, out_dir, resume, overwrite, d, progress, model,
                interrupts,
            )  # fmt: skip
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _train(
    config, train_set, val_set, out_dir, resume, overwrite, d: _Dist, progress, model, interrupts
):
    from tqdm.auto import tqdm

    if config.batch_size % d.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} does not split over {d.world_size} processes"
        )
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training set has {len(train_set)} images, fewer than one batch of "
            f"{config.batch_size}"
        )
    total_steps = _budget(config, steps_per_epoch)
    if total_steps is None and config.max_minutes is None:
        raise ValueError("set a budget: epochs, max_steps or max_minutes")
    class_names = list(getattr(train_set, "classes", []))
    if len(class_names) < 2:
        raise ValueError("train_set needs a .classes list: background first, then the classes")
    if val_set is not None:  # before training, not at the first validation
        check_same_classes(class_names, classes_of(val_set), "the validation set")
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise ValueError("resume=True needs the out_dir of the run to continue")
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True contradict each other: choose one")
    run_files = [n for n in (LAST, BEST, METRICS_FILE) if out_dir and (out_dir / n).exists()]
    if run_files and not resume and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a run ({', '.join(run_files)}); pass resume=True to "
            "continue it, overwrite=True to start again, or choose another directory"
        )
    if d.is_main and _holds_objects(train_set) is False:  # once here, not per batch of loss 0
        warnings.warn(
            f"the training set ({_describe(train_set)}) has no objects in any of its "
            f"{len(train_set)} images: every loss is 0 and nothing is learnt; were the "
            "annotations not found, or all left out (difficult, crowd or zero-size boxes)?",
            stacklevel=3,
        )
    if run_files and overwrite and d.is_main:  # no old weights beside the new run's metrics
        for name in run_files:
            (out_dir / name).unlink()

    run = _Run(config, class_names, model, d, out_dir)
    if resume:
        run.restore(out_dir / LAST, class_names)
    s = run.state  # where we are: updated in place below
    if resume and s.train_images not in (0, len(train_set)):
        raise ValueError(
            f"{out_dir / LAST} was trained on {s.train_images} images, this training set has "
            f"{len(train_set)}: resume needs the same data (its order follows from the size)"
        )
    s.train_images = len(train_set)
    net = run.wrap()
    device, priors, size = d.device, run.model.priors, config.priors.image_size  # (P, 4) priors
    # Matching runs in the main process, on the training device: on a CPU it is a small fraction
    # of drawing and augmenting the batch, let alone of the step, so moving it into the loader's
    # workers gains nothing measurable; on a GPU it takes well under a millisecond.
    samples = SeededSamples(train_set, config.seed)
    logger = _MetricsLog(out_dir, s.history, d.is_main)
    bar = tqdm(
        total=total_steps,
        initial=s.step,
        disable=not (progress and d.is_main),
        desc=f"train {config.name}",
        unit="step",
    )

    def budget_used(elapsed: float) -> float:
        """The fraction of the budget used: of the steps, or of the minutes."""
        fractions = [s.step / total_steps] if total_steps else []
        if config.max_minutes is not None:
            fractions.append(elapsed / (60 * config.max_minutes))
        return max(fractions)

    def stop_reason() -> str:
        if total_steps is not None and s.step >= total_steps:
            by_epochs = config.epochs is not None and s.step >= config.epochs * steps_per_epoch
            return "epochs" if by_epochs else "max_steps"
        if config.max_minutes is not None and s.elapsed_s >= 60 * config.max_minutes:
            return "max_minutes"
        return ""

    def validate() -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if val_set is not None and d.is_main:
            subset = val_set
            if config.eval_images is not None and config.eval_images < len(val_set):
                subset = torch.utils.data.Subset(val_set, range(config.eval_images))
            metrics = evaluate(run.model, subset, config.batch_size, device, progress=False)
        if d.world_size > 1:
            dist.barrier()  # the other processes wait for the main one's validation
        return metrics

    start, elapsed_before = time.perf_counter(), s.elapsed_s
    last_row_time, last_row_step = start, s.step
    stopped_by = stop_reason()  # a finished run, resumed with the same budget, stays finished
    run.model.train()
    batches = RunBatches(
        len(train_set), config.batch_size, config.seed, s.epoch, s.batch_in_epoch, d.rank,
        d.world_size,
    )  # fmt: skip
    loader = DataLoader(
        samples,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    if not stopped_by:
        for images, targets in loader:
            # The batch and its targets, then one step.
            images = images.to(device, non_blocking=True)
            if run.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            # (B, P, 4) offsets and (B, P) labels, matched on the device
            loc_targets, labels = match_batch(targets, priors, size, config.match_iou)
            lr = config.lr * lr_factor(config, s.step, budget_used(s.elapsed_s))
            loc, conf = run.step(net, images, loc_targets, labels, lr)

            # Bookkeeping: position, budget, metrics, validation, checkpoints.
            s.step, s.batch_in_epoch = s.step + 1, s.batch_in_epoch + 1
            if s.batch_in_epoch == steps_per_epoch:  # the next batch starts a new epoch
                s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            s.loss_sums = [s.loss_sums[0] + loc, s.loss_sums[1] + conf, s.loss_sums[2] + 1]
            s.elapsed_s = elapsed_before + time.perf_counter() - start
            if d.world_size > 1 and config.max_minutes is not None:  # all stop at one step
                s.elapsed_s = _all_reduce_max(s.elapsed_s, d)
            stopped_by = stop_reason()
            validating = bool(stopped_by) or (
                config.eval_every > 0 and s.step % config.eval_every == 0
            )
            if validating:  # a validation that fails (a bad annotation) leaves the step saved
                run.save(LAST)
            metrics = validate() if validating else {}
            if s.step % config.log_every == 0 or validating:
                now = time.perf_counter()
                speed = (
                    (s.step - last_row_step) * config.batch_size / max(now - last_row_time, 1e-9)
                )
                row = _metrics_row(s, steps_per_epoch, lr, speed, metrics)
                s.history.append(row)
                logger.write(row)
                s.loss_sums = [0.0, 0.0, 0.0]
                last_row_time, last_row_step = now, s.step
                bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{speed:.1f}")
            bar.update(1)
            value = metrics.get(config.best_metric, math.nan)
            if math.isfinite(value) and value > s.best["value"]:
                s.best = {"metric": config.best_metric, "value": value, "step": s.step}
                run.save(BEST)
            # At a validation step this is LAST's second write: the first, before validating,
            # keeps the step if validation fails; this one adds its metrics and best to resume.
            if validating or s.step % config.checkpoint_every == 0 or interrupts:
                run.save(LAST)
            if interrupts:  # Ctrl-C: stopped after a whole step, with its checkpoint written
                where = f"; {out_dir / LAST} holds step {s.step}" if out_dir else ""
                raise KeyboardInterrupt(f"training interrupted{where} (resume=True continues)")
            if stopped_by:
                break
    bar.close()
    logger.close()
    if s.best["step"] < 0:  # no validation: best.pt holds the last weights
        s.best = {"metric": config.best_metric, "value": math.nan, "step": s.step}
        run.save(BEST)
    run.model.eval()
    return TrainResult(run.model, s.history, s.step, stopped_by, s.best, out_dir)


class _DeferredInterrupts:
    """Ctrl-C during training: the first one lets the step in progress finish (the loop then
    saves and stops), a second one stops at once. Only in the main thread, where Python
    delivers signals; elsewhere it does nothing."""

    def __init__(self) -> None:
        self.count, self.previous = 0, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            self.close()
            raise KeyboardInterrupt

    def __bool__(self) -> bool:
        return self.count > 0

    def close(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def __enter__(self) -> _DeferredInterrupts:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _metrics_row(
    s: RunState, steps_per_epoch: int, lr: float, speed: float, metrics: dict[str, Any]
) -> dict[str, float]:
    """One row of metrics.csv: losses averaged since the previous row, and validation."""
    loc, conf, n = s.loss_sums
    row = {
        "step": s.step,
        "epoch": s.epoch + s.batch_in_epoch / steps_per_epoch,
        "loss": (loc + conf) / n,
        "loc_loss": loc / n,
        "conf_loss": conf / n,
        "lr": lr,
        "images_per_s": speed,
        "elapsed_s": s.elapsed_s,
    }
    for key in ("map", "map_50", "voc07_map"):
        if key in metrics:
            row[f"val_{key}"] = metrics[key]
    return row


def _all_reduce_max(value: float, d: _Dist) -> float:
    t = torch.tensor(value, dtype=torch.float64, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def _check_resumable(
    ckpt: dict[str, Any], config: TrainConfig, network: ModelConfig, path: Path
) -> None:
    """A run continues only with the same network (classes included), batch and seed."""
    if ckpt["model"] != network:
        raise ValueError(
            f"{path} was trained with another network or classes "
            f"({ckpt['model'].difference(network)}; the checkpoint's vs this run's); resume "
            "needs the same configuration"
        )
    old = TrainConfig.from_dict(ckpt["config"])
    for key in ("batch_size", "seed"):
        if getattr(old, key) != getattr(config, key):
            raise ValueError(
                f"{path} was trained with {key}={getattr(old, key)!r}, this run has "
                f"{key}={getattr(config, key)!r}; resume needs the same configuration"
            )


def _holds_objects(dataset: Any, indices: Sequence[int] | None = None) -> bool | None:
    """Whether any image of ``dataset`` (of its ``indices``, if given) has an object, read from
    the annotations alone; None where that would mean drawing or decoding images.

    Looks through ``Subset`` and ``ConcatDataset``. A dataset with ``load_target`` (VOC reads
    one XML file, COCO its parsed JSON) is read up to its first image with an object, so a
    sound dataset costs one annotation; a ShapesDataset with ``max_objects=0`` has none.
    """
    indices = range(len(dataset)) if indices is None else indices
    if isinstance(dataset, Subset):
        return _holds_objects(dataset.dataset, [int(dataset.indices[i]) for i in indices])
    if isinstance(dataset, ConcatDataset):
        ends = dataset.cumulative_sizes  # index one past each part's last image
        parts: list[list[int]] = [[] for _ in dataset.datasets]
        for i in indices:
            k = bisect.bisect_right(ends, i)
            parts[k].append(i - (ends[k - 1] if k else 0))
        answers = [
            _holds_objects(part, idx)
            for part, idx in zip(dataset.datasets, parts, strict=True)
            if idx  # a part the indices do not reach does not count
        ]
        if True in answers:
            return True
        return None if None in answers else False
    if isinstance(dataset, ShapesDataset):
        return False if dataset.max_objects == 0 else None  # else only drawing would tell
    load_target = getattr(dataset, "load_target", None)
    if load_target is None:
        return None
    for i in indices:
        target = load_target(i)
        if isinstance(target, tuple):  # VOCDataset's (target, (height, width))
            target = target[0]
        if len(target["labels"]):
            return True
    return False


def _describe(dataset: Any) -> str:
    """A dataset's repr, looking through ``Subset`` and ``ConcatDataset`` (which have none)."""
    if isinstance(dataset, Subset):
        return f"{len(dataset)} images of {_describe(dataset.dataset)}"
    if isinstance(dataset, ConcatDataset):
        return " + ".join(_describe(part) for part in dataset.datasets)
    if type(dataset).__repr__ is object.__repr__:  # "<... object at 0x7f...>" says nothing
        return type(dataset).__name__
    return repr(dataset)
