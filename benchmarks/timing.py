"""Timers that share the machine's noise fairly, and a description of the machine.

Two implementations are timed *interleaved*: repeat ``r`` runs ours then the peer's, repeat
``r + 1`` the peer's then ours, and so on. A burst of load from another process then lands on
both sides, and neither always runs first (with warm or cold caches). The reported number is
the median per call, which a few slow outliers do not move.
"""

from __future__ import annotations

import datetime
import gc
import importlib.metadata
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

MIN_SAMPLE_S = 0.02  # a sample runs the function enough times to last this long, so that the
# timer's resolution and the sync's fixed cost stay well under 1% of what is measured
MAX_CALLS_PER_SAMPLE = 1000  # cap for very fast functions (µs), so calibration cannot run away


@dataclass
class Measurement:
    """Seconds per call, one entry per sample (each sample averages ``calls_per_sample`` calls)."""

    samples: list[float]
    calls_per_sample: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range over the median: 0.05 means the middle half lies within ±2.5%."""
        if len(self.samples) < 4:
            return float("nan")
        q1, _, q3 = statistics.quantiles(self.samples, n=4)
        return (q3 - q1) / self.median

    def to_json(self) -> dict:
        return {
            "median_s": self.median,
            "spread": self.spread,
            "calls_per_sample": self.calls_per_sample,
            "samples_s": self.samples,
        }


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _calls_per_sample(fn: Callable[[], object], sync: Callable[[], None]) -> int:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    once = time.perf_counter() - start
    return max(1, min(MAX_CALLS_PER_SAMPLE, round(MIN_SAMPLE_S / max(once, 1e-9))))


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    device: torch.device | str = "cpu",
    repeats: int = 15,
    warmup: int = 2,
    latency: bool = False,
) -> dict[str, Measurement]:
    """Time each function of ``fns`` ``repeats`` times, alternating their order every repeat.

    Args:
        fns: name -> a function of no arguments (inputs are bound in advance).
        device: where the functions queue their work; CUDA is synchronised around each sample.
        repeats: samples per function; the median is robust from about 5 on.
        warmup: untimed calls per function first (allocator caches, lazy initialisation, cuDNN's
            algorithm search).
        latency: one call per sample, synchronised on both ends: the time one request waits.
            Otherwise a sample runs calls back to back (on CUDA, queued while the previous
            run), which measures throughput.

    Returns:
        name -> :class:`Measurement` (seconds per call).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = synchronizer(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    calls = {name: 1 if latency else _calls_per_sample(fn, sync) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of one sample is noise, not the function's cost
    try:
        for r in range(repeats):
            for name in order if r % 2 == 0 else order[::-1]:
                fn, n = fns[name], calls[name]
                sync()
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                sync()
                samples[name].append((time.perf_counter() - start) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Measurement(samples[name], calls[name]) for name in fns}


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The checked-out commit (with ``+dirty`` if there are local changes), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def machine_info() -> dict:
    """What the numbers depend on: CPU, cores and threads, GPU, library versions, date."""
    info = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": git_commit(),
    }
    try:
        info["pycocotools"] = importlib.metadata.version("pycocotools")
    except importlib.metadata.PackageNotFoundError:
        info["pycocotools"] = None
    return info
