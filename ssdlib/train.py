"""Training SSD (SSD §3, "Experimental Results": "We fine-tune the resulting model using SGD with
initial learning rate 10⁻³, 0.9 momentum, 0.0005 weight decay, and batch size 32").

One function, :func:`train`, serves the notebooks and the command line. Each step:

1. a batch of augmented images and their boxes (the data order is a function of (seed, epoch),
   and each sample's augmentation of (seed, epoch, index), so a resumed run sees the same data);
2. targets for every default box at once (:func:`ssdlib.matching.assign_targets`, computed by
   its fast twin in :mod:`ssdlib.fast`);
3. the forward pass and the MultiBox loss (:class:`ssdlib.loss.MultiBoxLoss`, fast twin too);
4. a check that the loss is finite, then the backward pass and the optimiser step;
5. the bookkeeping (:mod:`ssdlib.bookkeeping`): the position in the data and the budget, the
   rows of ``metrics.csv``, validation, and the checkpoints.

:class:`TrainConfig` holds every choice; :data:`PRESETS` are the named configurations. The same
entry point runs on one device or, under ``torchrun --nproc_per_node N``, as N processes of
DistributedDataParallel that together take the same global batch.

Letters: ``B`` images, ``P`` default boxes, ``K`` classes including background 0.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import fast
from .bookkeeping import (
    BEST,
    LAST,
    METRIC_COLUMNS,
    METRICS_FILE,
    Bookkeeping,
    Budget,
    DeferredInterrupts,
    RunState,
)
from .checkpoint import read_training_checkpoint, save_training_checkpoint
from .data.common import describe_dataset, holds_objects
from .data.loader import collate
from .data.order import RunBatches, SeededSamples, epoch_batches, epoch_order
from .distributed import (
    Dist,
    all_reduce_sum,
    rng_state,
    set_rng_state,
    setup_distributed,
)
from .evaluate import check_same_classes, classes_of, evaluate
from .model import SSD, ModelConfig
from .presets import CPU_TINY_PRIORS, PRESETS, TrainConfig, preset
from .utils import seed_everything

__all__ = [  # the names a run needs, re-exported from where they live
    "BEST",
    "CPU_TINY_PRIORS",
    "LAST",
    "METRICS_FILE",
    "METRIC_COLUMNS",
    "PRESETS",
    "NonFiniteLossError",
    "RunBatches",
    "RunState",
    "SeededSamples",
    "TrainConfig",
    "TrainResult",
    "epoch_batches",
    "epoch_order",
    "lr_factor",
    "match_batch",
    "preset",
    "train",
]


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


def match_batch(
    targets: Sequence[dict[str, Tensor]], priors: Tensor, image_size: int, iou_threshold: float
) -> tuple[Tensor, Tensor]:
    """Targets of a batch of ``image_size``-pixel images: pixel boxes -> normalised, then
    :func:`ssdlib.fast.assign_targets` on the priors' device. Returns ``(B, P, 4)`` offsets,
    ``(B, P)`` labels."""
    scale = 1.0 / image_size  # not boxes.pixels_to_unit: its division can differ from this
    # product in the last bit, which would move every training number the lessons quote
    boxes = [t["boxes"].to(priors.device, priors.dtype) * scale for t in targets]  # normalised
    labels = [t["labels"].to(priors.device) for t in targets]
    return fast.assign_targets(boxes, labels, priors, iou_threshold)


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


class _Run:
    """The pieces of one run: network, optimiser, precision, loss, and their checkpoints."""

    def __init__(
        self,
        config: TrainConfig,
        class_names: list[str],
        model: SSD | None,
        d: Dist,
        out_dir: Path | None,
    ):
        self.config, self.d, self.out_dir, device = config, d, out_dir, d.device
        seed_everything(config.seed)  # the same initial weights in every process
        wanted = config.model_config(class_names)  # the network of the config and the data
        if model is None:
            model = SSD(wanted)
        elif model.config != wanted:
            raise ValueError(
                f"the model ({model!r}) does not match the config and the dataset: "
                f"{model.config.difference(wanted)}"
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

    def batch(
        self, images: Tensor, targets: Sequence[dict[str, Tensor]]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """A batch on the training device, and its targets matched there: ``(B, 3, S, S)``
        images, ``(B, P, 4)`` offsets and ``(B, P)`` labels.

        Matching runs in the main process, on the training device: on a CPU it is a small
        fraction of drawing and augmenting the batch, let alone of the step, so moving it into
        the loader's workers gains nothing measurable; on a GPU it takes well under a millisecond.
        """
        images = images.to(self.d.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        size, iou_threshold = self.config.priors.image_size, self.config.match_iou
        loc_targets, labels = match_batch(targets, self.model.priors, size, iou_threshold)
        return images, loc_targets, labels

    def step(self, net: nn.Module, images: Tensor, loc_targets: Tensor, labels: Tensor, lr: float):
        """One optimiser step on a batch; returns the (loc, conf) losses of the global batch.

        Raises :class:`NonFiniteLossError` before the weights change if a loss is inf/nan.
        """
        config, d = self.config, self.d
        # Divide by the positives of the whole global batch, per process: the averaged
        # gradients of DDP then equal one process's gradients on the whole batch.
        positives = all_reduce_sum((labels > 0).sum().float(), d)
        normalizer = positives.clamp(min=1) / d.world_size
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(
            d.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            loc_pred, conf_pred = net(images)  # (B, P, 4), (B, P, K)
        loc_loss, conf_loss = self.loss_fn(loc_pred, conf_pred, loc_targets, labels, normalizer)

        terms = all_reduce_sum(torch.stack([loc_loss.detach(), conf_loss.detach()]), d)
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
            rng=rng_state(),
            state=dataclasses.asdict(s),  # step, epoch, position in it, history, best ...
            config=self.config.to_dict(),
            world_size=self.d.world_size,
        )

    def restore(self, path: Path, train_images: int) -> None:
        """Continue the run saved at ``path``, on a training set of ``train_images`` images."""
        ckpt = read_training_checkpoint(path)
        _check_resumable(ckpt, self.config, self.model.config, path)
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt["scaler"] is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = RunState(**ckpt["state"])
        set_rng_state(ckpt["rng"])
        if self.state.train_images not in (0, train_images):
            raise ValueError(
                f"{path} was trained on {self.state.train_images} images, this training set has "
                f"{train_images}: resume needs the same data (its order follows from the size)"
            )

    def validate(self, val_set: Dataset | None) -> dict[str, Any]:
        """The metrics of :func:`ssdlib.evaluate.evaluate` on ``val_set`` (its first
        ``eval_images``), from the main process; the others wait for it and get ``{}``."""
        config, d = self.config, self.d
        metrics: dict[str, Any] = {}
        if val_set is not None and d.is_main:
            subset = val_set
            if config.eval_images is not None and config.eval_images < len(val_set):
                subset = torch.utils.data.Subset(val_set, range(config.eval_images))
            metrics = evaluate(self.model, subset, config.batch_size, d.device, progress=False)
        if d.world_size > 1:
            dist.barrier()  # the other processes wait for the main one's validation
        return metrics


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
        model: train this network instead of a new ``SSD(config.model_config(classes))`` (its
            config must equal that one).

    Returns:
        A :class:`TrainResult`. Raises :class:`NonFiniteLossError` if the loss becomes inf/nan;
        warns before training if the training set's annotations hold no object at all.
    """
    d = setup_distributed(device)
    try:
        with DeferredInterrupts() as interrupts:
            return _train(
                config, train_set, val_set, out_dir, resume, overwrite, d, progress, model,
                interrupts,
            )  # fmt: skip
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _train(
    config, train_set, val_set, out_dir, resume, overwrite, d: Dist, progress, model, interrupts
):
    """:func:`train`'s run: set up (or restore), then step after step, a batch, its targets,
    the optimiser step and the bookkeeping, until the budget is spent."""
    budget, class_names, out_dir = _check_run(
        config, train_set, val_set, out_dir, resume, overwrite, d
    )
    run = _Run(config, class_names, model, d, out_dir)  # may still refuse (the model, amp)
    if overwrite and d.is_main:  # only now: a refused run leaves the old one as it was
        _remove_run_files(out_dir)
    if resume:
        run.restore(out_dir / LAST, len(train_set))
    s = run.state  # where we are: the bookkeeping updates it in place
    s.train_images = len(train_set)
    net = run.wrap()
    stopped_by = budget.stop_reason(s)  # a finished run, resumed with its budget, stays finished
    batches = _loader(train_set, config, s, d) if not stopped_by else []
    run.model.train()
    with Bookkeeping(run, budget, val_set, progress) as books:  # closed on Ctrl-C and errors too
        for images, targets in batches:
            images, loc_targets, labels = run.batch(images, targets)  # 1, 2: batch, targets
            lr = config.lr * lr_factor(config, s.step, budget.used(s))
            loc, conf = run.step(net, images, loc_targets, labels, lr)  # 3, 4: loss, step
            stopped_by = books.after_step(loc, conf, lr, interrupts)  # 5: bookkeeping
            if interrupts:  # Ctrl-C: stopped after a whole step, with its checkpoint written
                where = f"; {out_dir / LAST} holds step {s.step}" if out_dir else ""
                raise KeyboardInterrupt(f"training interrupted{where} (resume=True continues)")
            if stopped_by:
                break
    if s.best["step"] < 0:  # no validation: best.pt holds the last weights
        s.best = {"metric": config.best_metric, "value": math.nan, "step": s.step}
        run.save(BEST)
    run.model.eval()
    return TrainResult(run.model, s.history, s.step, stopped_by, s.best, out_dir)


def _loader(train_set: Dataset, config: TrainConfig, s: RunState, d: Dist) -> DataLoader:
    """This process's batches from where the run stands, epoch after epoch: one DataLoader for
    the whole run, so that its worker processes start once."""
    batches = RunBatches(
        len(train_set), config.batch_size, config.seed, s.epoch, s.batch_in_epoch, d.rank,
        d.world_size,
    )  # fmt: skip
    return DataLoader(
        SeededSamples(train_set, config.seed),
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=config.num_workers,
        pin_memory=d.device.type == "cuda",
    )


def _check_run(
    config: TrainConfig,
    train_set: Dataset,
    val_set: Dataset | None,
    out_dir: str | os.PathLike | None,
    resume: bool,
    overwrite: bool,
    d: Dist,
) -> tuple[Budget, list[str], Path | None]:
    """What a run can refuse before it builds the network (:class:`_Run` checks the network
    and the precision). Returns the budget, the class names and the output folder."""
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
    budget = Budget(config, steps_per_epoch)
    if budget.total_steps is None and config.max_minutes is None:
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
    if d.is_main and holds_objects(train_set) is False:  # once here, not per batch of loss 0
        warnings.warn(
            f"the training set ({describe_dataset(train_set)}) has no objects in any of its "
            f"{len(train_set)} images: every loss is 0 and nothing is learnt; were the "
            "annotations not found, or all left out (difficult, crowd or zero-size boxes)?",
            stacklevel=4,
        )
    return budget, class_names, out_dir


def _remove_run_files(out_dir: Path | None) -> None:
    """Start again (``overwrite``): no old weights beside the new run's metrics."""
    for name in (LAST, BEST, METRICS_FILE):
        if out_dir is not None and (out_dir / name).exists():
            (out_dir / name).unlink()


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
