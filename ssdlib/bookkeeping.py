"""The bookkeeping of a training run (:mod:`ssdlib.train`, step 5 of each step): where the run
stands, when its budget is spent, the rows of ``metrics.csv`` (and TensorBoard and the progress
bar), validation and checkpoints after a step, and Ctrl-C that lets the step in progress finish.

:class:`RunState` is what a training checkpoint stores to resume; :class:`Bookkeeping` updates it
in place after every step.
"""

from __future__ import annotations

import csv
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .distributed import all_reduce_max
from .presets import TrainConfig

LAST, BEST = "last.pt", "best.pt"  # checkpoint names in the output directory
METRICS_FILE = "metrics.csv"
METRIC_COLUMNS = (
    "step", "epoch", "loss", "loc_loss", "conf_loss", "lr", "images_per_s", "elapsed_s",
    "val_map", "val_map_50", "val_voc07_map",
)  # fmt: skip


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


@dataclass
class Budget:
    """When a run stops: after its steps (``max_steps``, ``epochs``) or its minutes, whichever
    comes first."""

    config: TrainConfig
    steps_per_epoch: int

    @property
    def total_steps(self) -> int | None:
        """The number of steps the budget allows, or None for a time budget only."""
        limits = []
        if self.config.max_steps is not None:
            limits.append(self.config.max_steps)
        if self.config.epochs is not None:
            limits.append(self.config.epochs * self.steps_per_epoch)
        return min(limits) if limits else None

    def used(self, s: RunState) -> float:
        """The fraction of the budget used: of the steps, or of the minutes."""
        fractions = [s.step / self.total_steps] if self.total_steps else []
        if self.config.max_minutes is not None:
            fractions.append(s.elapsed_s / (60 * self.config.max_minutes))
        return max(fractions)

    def stop_reason(self, s: RunState) -> str:
        """Why the run stops where it stands: "epochs", "max_steps", "max_minutes", or ""."""
        config, total_steps = self.config, self.total_steps
        if total_steps is not None and s.step >= total_steps:
            by_epochs = config.epochs is not None and s.step >= config.epochs * self.steps_per_epoch
            return "epochs" if by_epochs else "max_steps"
        if config.max_minutes is not None and s.elapsed_s >= 60 * config.max_minutes:
            return "max_minutes"
        return ""


class MetricsLog:
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


def metrics_row(
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


class Bookkeeping:
    """What follows each step: the run's position and clock, validation, the rows of
    metrics.csv (and TensorBoard and the progress bar), best.pt and last.pt."""

    def __init__(self, run: Any, budget: Budget, val_set: Dataset | None, progress: bool):
        from tqdm.auto import tqdm

        self.run, self.budget, self.val_set = run, budget, val_set
        s, d = run.state, run.d
        self.log = MetricsLog(run.out_dir, s.history, d.is_main)
        self.bar = tqdm(
            total=budget.total_steps,
            initial=s.step,
            disable=not (progress and d.is_main),
            desc=f"train {run.config.name}",
            unit="step",
        )
        # The clock: elapsed_s goes on from the checkpoint's; a row's speed is since the last row,
        # less the time spent validating.
        self.start, self.elapsed_before = time.perf_counter(), s.elapsed_s
        self.last_row_time, self.last_row_step = self.start, s.step
        self.validating_s = 0.0  # since the last row

    def after_step(self, loc: float, conf: float, lr: float, interrupts: DeferredInterrupts) -> str:
        """Count the step just taken, then validate, log and save as the config asks. Returns
        why the run stops now (:meth:`Budget.stop_reason`; "" to go on)."""
        run, s, config = self.run, self.run.state, self.run.config
        self._count(loc, conf)
        stopped_by = self.budget.stop_reason(s)
        validating = bool(stopped_by) or (config.eval_every > 0 and s.step % config.eval_every == 0)
        if validating:  # a validation that fails (a bad annotation) leaves the step saved
            run.save(LAST)
        before = time.perf_counter()
        metrics = run.validate(self.val_set) if validating else {}
        self.validating_s += time.perf_counter() - before
        if s.step % config.log_every == 0 or validating:
            self._write_row(lr, metrics)
        self.bar.update(1)
        value = metrics.get(config.best_metric, math.nan)
        if math.isfinite(value) and value > s.best["value"]:
            s.best = {"metric": config.best_metric, "value": value, "step": s.step}
            run.save(BEST)
        # At a validation step this is LAST's second write: the first, before validating,
        # keeps the step if validation fails; this one adds its metrics and best to resume.
        if validating or s.step % config.checkpoint_every == 0 or interrupts:
            run.save(LAST)
        return stopped_by

    def _count(self, loc: float, conf: float) -> None:
        """One more step: the position in the epoch, the losses since the last row, the time."""
        s = self.run.state
        s.step, s.batch_in_epoch = s.step + 1, s.batch_in_epoch + 1
        if s.batch_in_epoch == self.budget.steps_per_epoch:  # the next batch starts a new epoch
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
        s.loss_sums = [s.loss_sums[0] + loc, s.loss_sums[1] + conf, s.loss_sums[2] + 1]
        s.elapsed_s = self.elapsed_before + time.perf_counter() - self.start
        if self.run.config.max_minutes is not None:  # every process stops at the same step
            s.elapsed_s = all_reduce_max(s.elapsed_s, self.run.d)

    def _write_row(self, lr: float, metrics: dict[str, Any]) -> None:
        """A row of metrics.csv: the losses averaged since the last row, the speed, validation."""
        s = self.run.state
        now = time.perf_counter()
        images = (s.step - self.last_row_step) * self.run.config.batch_size
        speed = images / max(now - self.last_row_time - self.validating_s, 1e-9)
        row = metrics_row(s, self.budget.steps_per_epoch, lr, speed, metrics)
        s.history.append(row)
        self.log.write(row)
        s.loss_sums = [0.0, 0.0, 0.0]
        self.last_row_time, self.last_row_step, self.validating_s = now, s.step, 0.0
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{speed:.1f}")

    def __enter__(self) -> Bookkeeping:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()
        self.log.close()


class DeferredInterrupts:
    """Ctrl-C during training: the first one lets the step in progress finish (the loop then
    saves and stops), a second one stops at once. Only in the main thread, where Python
    delivers signals; elsewhere it does nothing."""

    def __init__(self) -> None:
        self.count, self.previous = 0, None

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

    def __enter__(self) -> DeferredInterrupts:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
