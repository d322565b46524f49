"""Measured experiments whose results are cached, keyed on the code and the config.

The observation notebooks train small models to measure a claim (hard negative mining helps,
augmentation helps, more default boxes cost speed…). Training takes minutes, a notebook should
take seconds, and a cached number must never outlive the code that produced it. So a result is
stored under ``data/experiments/`` with a key made of

* the experiment's name and its config (everything the run depends on, as JSON), and
* a hash of every source file of ``ssdlib`` (any change to the library invalidates every result),

and :func:`cached_experiment` re-runs the experiment whenever the key differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CACHE_DIR = PACKAGE_DIR.parent / "data" / "experiments"


def code_hash(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 of every ``.py`` file of the package (path and content), in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(str(path.relative_to(package_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def experiment_key(name: str, config: dict[str, Any], code: str | None = None) -> str:
    """The cache key of one experiment: name, canonical JSON of the config, and the code hash."""
    try:
        canonical = json.dumps(config, sort_keys=True)
    except TypeError as err:
        raise ValueError(
            f"experiment {name!r}: the config must be JSON-serialisable ({err})"
        ) from err
    digest = hashlib.sha256()
    for part in (name, canonical, code or code_hash()):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _write_json_atomically(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_experiment(
    name: str,
    run: Callable[..., Any],
    config: dict[str, Any],
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """``run(**config)``, or its stored result if the same code already ran the same config.

    Args:
        name: a file-name-safe identifier, e.g. ``"hnm_vs_all_negatives"``.
        run: called as ``run(**config)``; must return something JSON-serialisable.
        config: everything the result depends on besides the library's code.
        cache_dir: where results live (default ``data/experiments`` of the repository).
        force: ignore a stored result and run again.

    Returns:
        A dict with ``result``, ``config``, ``cached`` (True if read from disk), ``seconds`` (how
        long the run took when it ran) and ``machine`` (where it ran).
    """
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"experiment name must be letters, digits, '-' or '_', got {name!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    key = experiment_key(name, config)
    path = cache_dir / f"{name}.json"
    if path.exists() and not force:
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: the cached experiment is not valid JSON ({err})") from err
        if stored.get("key") == key:
            return {**stored, "cached": True}
    start = time.perf_counter()
    result = run(**config)
    record = {
        "name": name,
        "key": key,
        "config": config,
        "result": result,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
    }
    try:
        json.dumps(result)
    except TypeError as err:
        raise ValueError(
            f"experiment {name!r}: the result must be JSON-serialisable ({err})"
        ) from err
    _write_json_atomically(record, path)
    return {**record, "cached": False}
