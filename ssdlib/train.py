"""Training SSD (SSD §3, "Experimental Results": "We fine-tune the resulting model using SGD with
initial learning rate 10⁻³, 0.9 momentum, 0.0005 weight decay, and batch size 32").

One function, :func:`train`, serves the notebooks and the command line. Each step:

1. a batch of augmented images and their boxes (the data order is a function of (seed, epoch),
   and each sample's augmentation of (seed, epoch, index), so a resumed run sees the same data);
2. targets for every default box at once (:func:`ssdlib.matching.assign_targets`);
3. the forward pass and the MultiBox loss (:class:`ssdlib.loss.MultiBoxLoss`);
4. a check that the loss is finite, then the backward pass and the optimiser step.

:class:`TrainConfig` holds every choice; :data:`PRESETS` are the named configurations. The same
entry point runs on one device or, under ``torchrun --nproc_per_node N``, as N processes of
DistributedDataParallel that together take the same global batch.

Letters: ``B`` images, ``P`` default boxes, ``K`` classes including background 0.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .data.loader import collate
from .evaluate import evaluate
from .loss import NEG_POS_RATIO, MultiBoxLoss
from .matching import IOU_THRESHOLD, assign_targets
from .model import SSD, build_ssd, config_from_dict, config_to_dict
from .priors import SSD300_VOC, SSD512_VOC, PriorConfig, config_from_scales
from .utils import atomic_save, default_device, seed_everything

CHECKPOINT_FORMAT = "ssdlib-training-checkpoint/1"  # vs "ssdlib-checkpoint", a model file
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
    # The objective (§2.2).
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
    channels_last: bool = True  # NHWC memory layout on CUDA (faster convs); ignored on CPU
    compile: bool = False  # torch.compile the network (slow first steps, faster later)
    num_workers: int = 0  # DataLoader worker processes
    assign_in_workers: bool = False  # match targets in the workers instead of on the device
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
        if self.warmup_steps < 0 or self.eval_every < 0:
            raise ValueError("warmup_steps and eval_every must be >= 0")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones are fractions of the budget in (0, 1): {self.milestones}")
        self.milestones = tuple(sorted(self.milestones))

    def __repr__(self) -> str:
        lines = [f"    {f.name}={getattr(self, f.name)!r}," for f in dataclasses.fields(self)]
        return "TrainConfig(\n" + "\n".join(lines) + "\n)"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the priors as a dict), for checkpoints and JSON."""
        d = dataclasses.asdict(self)
        d["priors"] = config_to_dict(self.priors)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["priors"] = config_from_dict(d["priors"])
        d["milestones"] = tuple(d["milestones"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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

PRESETS: dict[str, TrainConfig] = {
    # The smallest SSD that still shows every idea, trainable on 2 CPU cores in minutes. Slim
    # (a quarter of VGG16's channels) with BatchNorm, AdamW and a short warmup, because it
    # starts from scratch. Edit here to tune it.
    "cpu-tiny": TrainConfig(
        name="cpu-tiny",
        priors=CPU_TINY_PRIORS,
        width=0.25,
        batch_norm=True,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        warmup_steps=100,
        schedule="cosine",
        batch_size=16,
        max_minutes=15.0,
        eval_every=500,
        eval_images=200,
        log_every=10,
        checkpoint_every=200,
    ),
    # The paper's SSD300 (§3): VGG16 at full width, SGD 1e-3, momentum 0.9, weight decay 5e-4,
    # batch 32, lr ×0.1 after 40k and 50k of 60k iterations. The warmup is torchvision's
    # recipe (the paper starts from ImageNet weights, which nothing here downloads).
    "ssd300": TrainConfig(
        name="ssd300",
        priors=SSD300_VOC,
        max_steps=60_000,
        warmup_steps=1000,
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


class TargetCollate:
    """``collate`` and, with ``priors`` given, the matching: a batch becomes
    ``(images (B, 3, S, S), targets, loc_targets (B, P, 4) | None, labels (B, P) | None)``.

    Run inside DataLoader workers when ``assign_in_workers`` is on, so matching overlaps with
    the network's step; otherwise the training loop matches on its device.
    """

    def __init__(self, priors: Tensor | None, image_size: int, iou_threshold: float) -> None:
        self.priors, self.image_size, self.iou_threshold = priors, image_size, iou_threshold

    def __call__(self, samples: list[Any]) -> tuple[Tensor, list[dict], Tensor | None, ...]:
        images, targets = collate(samples)
        if self.priors is None:
            return images, targets, None, None
        loc_targets, labels = match_batch(targets, self.priors, self.image_size, self.iou_threshold)
        return images, targets, loc_targets, labels


def match_batch(
    targets: Sequence[dict[str, Tensor]], priors: Tensor, image_size: int, iou_threshold: float
) -> tuple[Tensor, Tensor]:
    """Targets of a batch of ``image_size``-pixel images: pixel boxes -> normalised, then
    :func:`assign_targets` on the priors' device. Returns ``(B, P, 4)`` offsets, ``(B, P)``
    labels."""
    scale = 1.0 / image_size
    boxes = [t["boxes"].to(priors.device, priors.dtype) * scale for t in targets]  # normalised
    labels = [t["labels"].to(priors.device) for t in targets]
    return assign_targets(boxes, labels, priors, iou_threshold)


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


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (``last.pt`` / ``best.pt``), checking that it is one.

    Returns the dict :func:`train` wrote: ``model`` (state dict), ``model_args``, ``optimizer``,
    ``scheduler``, ``scaler``, ``rng``, ``data``, ``step``, ``epoch``, ``config``, ``history`` ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path} is not a training checkpoint (format {got!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); a model file from `export` is read by load_model"
        )
    return ckpt


def model_from_checkpoint(
    ckpt: dict[str, Any] | str | os.PathLike, device: torch.device | str = "cpu"
) -> SSD:
    """The network stored in a training checkpoint (a dict from :func:`load_checkpoint`, or a
    path), in eval mode on ``device``."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    args = ckpt["model_args"]
    model = build_ssd(
        config_from_dict(args["cfg"]),
        args["num_classes"],
        args["width"],
        args["batch_norm"],
        args["class_names"],
    )
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


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


def _unwrap(model: nn.Module) -> SSD:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


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
        A :class:`TrainResult`. Raises :class:`NonFiniteLossError` if the loss becomes inf/nan.
    """
    d = _setup_distributed(device)
    try:
        return _train(config, train_set, val_set, out_dir, resume, overwrite, d, progress, model)
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _train(config, train_set, val_set, out_dir, resume, overwrite, d: _Dist, progress, model):
    from tqdm.auto import tqdm

    device = d.device
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
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise ValueError("resume=True needs the out_dir of the run to continue")
    if out_dir is not None and not resume and not overwrite and (out_dir / LAST).exists():
        raise FileExistsError(
            f"{out_dir} already holds a run ({LAST}); pass resume=True to continue it, "
            "overwrite=True to start again, or choose another directory"
        )

    # The network, the optimiser, the precision.
    seed_everything(config.seed)  # the same initial weights in every process
    if model is None:
        model = build_ssd(
            config.priors, len(class_names), config.width, config.batch_norm, class_names
        )
    elif model.cfg != config.priors or model.num_classes != len(class_names):
        raise ValueError(
            f"the model ({model!r}) does not match the config's priors {config.priors!r} "
            f"and the dataset's {len(class_names)} classes"
        )
    model.to(device)
    if device.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(model, config)
    amp_dtype = _autocast_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    loss_fn = MultiBoxLoss(config.neg_pos_ratio)

    # Where we are. A resume restores all of it.
    step, epoch, batch_in_epoch, elapsed_before = 0, 0, 0, 0.0
    history: list[dict[str, float]] = []
    meter = {"loc": 0.0, "conf": 0.0, "n": 0}  # losses summed since the last metrics row
    best = {"metric": config.best_metric, "value": -math.inf, "step": -1}
    if resume:
        ckpt = load_checkpoint(out_dir / LAST, map_location="cpu")
        _check_resumable(ckpt, config, class_names, out_dir / LAST)
        _unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        step, epoch = ckpt["step"], ckpt["data"]["epoch"]
        batch_in_epoch, elapsed_before = ckpt["data"]["batch_in_epoch"], ckpt["elapsed_s"]
        history, meter, best = ckpt["history"], ckpt["meter"], ckpt["best"]
        _set_rng_state(ckpt["rng"])

    train_model: nn.Module = model
    if d.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        train_model = torch.compile(train_model)
    priors = model.priors  # (P, 4) on the device
    image_size = config.priors.image_size
    collate_fn = TargetCollate(
        priors.cpu() if config.assign_in_workers else None, image_size, config.match_iou
    )
    samples = SeededSamples(train_set, config.seed)
    logger = _MetricsLog(out_dir, history, d.is_main)
    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not (progress and d.is_main),
        desc=f"train {config.name}",
        unit="step",
    )

    def progress_fraction(elapsed: float) -> float:
        fractions = [step / total_steps] if total_steps else []
        if config.max_minutes is not None:
            fractions.append(elapsed / (60 * config.max_minutes))
        return max(fractions)

    def checkpoint(path_name: str) -> None:
        if out_dir is None or not d.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": _unwrap(model).state_dict(),
            "model_args": _unwrap(model).build_args(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"kind": config.schedule, "step": step, "progress": progress_now},
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(),
            "data": {"epoch": epoch, "batch_in_epoch": batch_in_epoch, "seed": config.seed},
            "step": step,
            "epoch": epoch,
            "elapsed_s": elapsed,
            "config": config.to_dict(),
            "history": history,
            "meter": meter,
            "best": best,
            "world_size": d.world_size,
        }
        atomic_save(state, out_dir / path_name)

    def validate() -> dict[str, float]:
        metrics: dict[str, float] = {}
        if val_set is not None and d.is_main:
            subset = val_set
            if config.eval_images is not None and config.eval_images < len(val_set):
                subset = torch.utils.data.Subset(val_set, range(config.eval_images))
            metrics = evaluate(_unwrap(model), subset, config.batch_size, device, progress=False)
        if d.world_size > 1:
            dist.barrier()
        return metrics

    start_time = time.perf_counter()
    elapsed, progress_now = elapsed_before, progress_fraction(elapsed_before)
    last_log_time, last_log_step = start_time, step
    stopped_by = ""
    model.train()
    while not stopped_by:
        batches = epoch_batches(
            len(train_set),
            config.batch_size,
            config.seed,
            epoch,
            d.rank,
            d.world_size,
            batch_in_epoch,
        )
        loader = DataLoader(
            samples,
            batch_sampler=batches,
            collate_fn=collate_fn,
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        for images, targets, loc_targets, labels in loader:
            # 1-2. The batch and its targets.
            images = images.to(device, non_blocking=True)
            if device.type == "cuda" and config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if loc_targets is None:
                loc_targets, labels = match_batch(targets, priors, image_size, config.match_iou)
            loc_targets = loc_targets.to(device, non_blocking=True)  # (B, P, 4)
            labels = labels.to(device, non_blocking=True)  # (B, P)
            # Divide by the positives of the whole global batch, per process: the averaged
            # gradients of DDP then equal one process's gradients on the whole batch.
            positives = _all_reduce_sum((labels > 0).sum().float(), d)
            normalizer = positives.clamp(min=1) / d.world_size

            # 3. Forward and loss.
            lr = config.lr * lr_factor(config, step, progress_now)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loc_pred, conf_pred = train_model(images)  # (B, P, 4), (B, P, K)
            loc_loss, conf_loss = loss_fn(loc_pred, conf_pred, loc_targets, labels, normalizer)

            # 4. Stop on a non-finite loss, before it reaches the weights.
            terms = _all_reduce_sum(torch.stack([loc_loss.detach(), conf_loss.detach()]), d)
            loc_value, conf_value = (terms / d.world_size).tolist()
            if not (math.isfinite(loc_value) and math.isfinite(conf_value)):
                raise _non_finite(step, loc_value, conf_value, lr, config, out_dir)
            optimizer.zero_grad(set_to_none=True)
            loss = loc_loss + conf_loss
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.grad_clip is not None:
                norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                if scaler is None and not torch.isfinite(norm):
                    raise _non_finite(step, loc_value, conf_value, lr, config, out_dir, "grad")
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()

            # Bookkeeping: position, budget, logs, validation, checkpoints.
            step += 1
            batch_in_epoch += 1
            meter["loc"] += loc_value
            meter["conf"] += conf_value
            meter["n"] += 1
            elapsed = elapsed_before + time.perf_counter() - start_time
            if d.world_size > 1 and config.max_minutes is not None:  # all stop together
                elapsed = float(_all_reduce_max(torch.tensor(elapsed), d))
            progress_now = progress_fraction(elapsed)
            if total_steps is not None and step >= total_steps:
                at_epoch_limit = config.epochs is not None and step >= config.epochs * (
                    steps_per_epoch
                )
                stopped_by = "epochs" if at_epoch_limit else "max_steps"
            elif config.max_minutes is not None and elapsed >= 60 * config.max_minutes:
                stopped_by = "max_minutes"
            if batch_in_epoch == steps_per_epoch:  # the next step starts a new epoch
                epoch, batch_in_epoch = epoch + 1, 0
            evaluate_now = bool(stopped_by) or (
                config.eval_every > 0 and step % config.eval_every == 0
            )
            metrics = validate() if evaluate_now and val_set is not None else {}
            if step % config.log_every == 0 or evaluate_now:
                now = time.perf_counter()
                row = {
                    "step": step,
                    "epoch": epoch + batch_in_epoch / steps_per_epoch,
                    "loss": (meter["loc"] + meter["conf"]) / meter["n"],
                    "loc_loss": meter["loc"] / meter["n"],
                    "conf_loss": meter["conf"] / meter["n"],
                    "lr": lr,
                    "images_per_s": (step - last_log_step)
                    * config.batch_size
                    / max(now - last_log_time, 1e-9),
                    "elapsed_s": elapsed,
                }
                for key in ("map", "map_50", "voc07_map"):
                    if key in metrics:
                        row[f"val_{key}"] = metrics[key]
                history.append(row)
                logger.write(row)
                meter = {"loc": 0.0, "conf": 0.0, "n": 0}
                last_log_time, last_log_step = now, step
                bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{row['images_per_s']:.1f}")
            bar.update(1)
            if metrics:
                value = metrics.get(config.best_metric, math.nan)
                if math.isfinite(value) and value > best["value"]:
                    best = {"metric": config.best_metric, "value": value, "step": step}
                    checkpoint(BEST)
            if evaluate_now or step % config.checkpoint_every == 0:
                checkpoint(LAST)
            if stopped_by:
                break
        del loader
    bar.close()
    logger.close()
    if val_set is None or best["step"] < 0:  # no validation: best.pt is the last weights
        best = {"metric": config.best_metric, "value": math.nan, "step": step}
        checkpoint(BEST)
    model.eval()
    return TrainResult(model, history, step, stopped_by, best, out_dir)


def _all_reduce_max(t: Tensor, d: _Dist) -> Tensor:
    t = t.to(d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.cpu()


def _non_finite(
    step: int,
    loc: float,
    conf: float,
    lr: float,
    config: TrainConfig,
    out_dir: Path | None,
    what: str = "loss",
) -> NonFiniteLossError:
    if what == "grad":
        term = "gradient norm"
    else:
        term = "localisation (loc) loss" if not math.isfinite(loc) else "confidence (conf) loss"
    where = f"; {out_dir / LAST} holds the last good checkpoint" if out_dir is not None else ""
    return NonFiniteLossError(
        f"step {step}: the {term} is not finite "
        f"(loc {loc}, conf {conf}); training stopped before this step changed the weights"
        f"{where}. Try a lower learning rate (lr={lr:.3g} at this step), a longer warmup "
        f"(warmup_steps={config.warmup_steps}), full fp32 (amp='off', now {config.amp!r}) or "
        f"gradient clipping (grad_clip={config.grad_clip})."
    )


def _check_resumable(
    ckpt: dict[str, Any], config: TrainConfig, class_names: list[str], path: Path
) -> None:
    """A run continues only with the same network, classes, batch and seed."""
    old = TrainConfig.from_dict(ckpt["config"])
    for key in ("priors", "width", "batch_norm", "batch_size", "seed"):
        if getattr(old, key) != getattr(config, key):
            raise ValueError(
                f"{path} was trained with {key}={getattr(old, key)!r}, this run has "
                f"{key}={getattr(config, key)!r}; resume needs the same configuration"
            )
    if ckpt["model_args"]["class_names"] != class_names:
        raise ValueError(
            f"{path} was trained on classes {ckpt['model_args']['class_names']}, the dataset "
            f"has {class_names}"
        )
