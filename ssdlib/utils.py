"""Small shared helpers: seeding, device choice, atomic file writes, input statistics."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics, RGB in [0, 1]: the
IMAGENET_STD = (0.229, 0.224, 0.225)  # VGG16 backbone weights expect inputs normalised by them


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


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place.

    A crash or a full disk while writing leaves the previous file intact: readers see either
    the old checkpoint or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
