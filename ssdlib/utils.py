"""Small shared helpers: seeding, device choice, atomic file writes, input statistics, the
colour palette, and objects binned by size."""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics, RGB in [0, 1]: the
IMAGENET_STD = (0.229, 0.224, 0.225)  # VGG16 backbone weights expect inputs normalised by them

# matplotlib's tab10, one colour per class or object: the figures (viz.PALETTE) and the command
# line's pictures share it, without the command line importing pyplot
TAB10 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices) so that a run repeats."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - code that uses the global NumPy RNG repeats too
    torch.manual_seed(seed)  # also seeds every CUDA device


def default_device() -> torch.device:
    """CUDA if present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


STALE_TEMP_SECONDS = 3600  # an atomic write's temporary file this old is a killed process's
# orphan: a live writer's file is as young as its last write, and renamed once written


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file all at once or not at all: ``write(f)`` fills a temporary file beside
    ``path`` (``.{name}.<random>.tmp``), which is then renamed into place.

    A crash, a full disk or Ctrl-C while writing leaves the previous file intact (readers see
    the old file or the new one, never half of one) and removes the temporary file. A process
    killed outright (``kill -9``) cannot clean up; its temporary file is removed by the next
    write to the same path once it is older than :data:`STALE_TEMP_SECONDS`.

    Args:
        path: the file to write; its folder is created if missing.
        write: called once with the temporary file, open for binary writing; it writes the
            content (no need to flush or close).

    Returns:
        ``path`` as a ``Path``. The file's mode is the usual one, ``0o666`` less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the file gets the usual mode
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: no debris
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _remove_stale_temps(path: Path) -> None:
    """Remove ``path``'s temporary files (``.{name}.<random>.tmp``) older than
    :data:`STALE_TEMP_SECONDS`; a younger one may belong to a writer that is still running."""
    prefix, suffix = f".{path.name}.", ".tmp"
    now = time.time()
    for entry in os.scandir(path.parent):
        middle = entry.name[len(prefix) : -len(suffix)]
        if not (entry.name.startswith(prefix) and entry.name.endswith(suffix)) or not middle:
            continue
        if "." in middle:  # mkstemp's random part has no dot: a temp of "{name}.something"
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:  # its writer has just renamed or removed it
            continue
        if age > STALE_TEMP_SECONDS and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`: a crash leaves the previous file intact."""
    return atomic_write(path, lambda f: torch.save(obj, f))


# -- Objects by size: recall by size (lessons 6-8), default-box coverage (lesson 2) -------------


def share_by_size(
    sizes: np.ndarray, flags: np.ndarray, edges: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Objects per size bin and the share of them whose ``flag`` is set: recall by size when the
    flag is "found", default-box coverage when it is "a default box reaches IoU 0.5".

    Bin ``i`` holds sizes in ``[edges[i], edges[i + 1])``; the last bin also holds sizes at or
    above its upper edge (an object as large as the image counts), and sizes below ``edges[0]``
    count nowhere. The edges are in the unit of the sizes, and each user names its own:
    :data:`ssdlib.report.SIZE_EDGES_PX` (pixels), :data:`ssdlib.experiments.RECALL_SIZE_EDGES`
    and :data:`ssdlib.priors.COVERAGE_SIZE_EDGES` (fractions of the image side).

    Args:
        sizes: ``(N,)`` object sizes, e.g. √(w·h).
        flags: ``(N,)`` bool, one per object.
        edges: ``S + 1`` increasing numbers (the last may be ``math.inf``).

    Returns:
        ``(counts (S,) int64, share (S,) float64)``, the share nan where a bin is empty.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be at least 2 increasing numbers, got {edges.tolist()}")
    sizes, flags = np.asarray(sizes, dtype=np.float64), np.asarray(flags, dtype=bool)
    if sizes.shape != flags.shape or sizes.ndim != 1:
        raise ValueError(
            f"need sizes and flags of one shape (N,), got {sizes.shape}, {flags.shape}"
        )
    num_bins = len(edges) - 1
    bins = np.minimum(np.digitize(sizes, edges) - 1, num_bins - 1)  # (N,) -1: below every bin
    inside = bins >= 0
    counts = np.bincount(bins[inside], minlength=num_bins)
    hits = np.bincount(bins[inside], weights=flags[inside].astype(float), minlength=num_bins)
    share = np.full(num_bins, np.nan)
    share[counts > 0] = hits[counts > 0] / counts[counts > 0]
    return counts, share
