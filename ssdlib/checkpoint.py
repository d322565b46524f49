"""Model files and training checkpoints: the one module that writes and reads them.

Both kinds carry the network's :class:`~ssdlib.model.ModelConfig` under ``"model"``, so weights
never meet default boxes they were not trained with:

* a **model file** (:func:`save_model`, ``python -m ssdlib export``): the config, the weights
  and ``extra`` (plain values: the step, the preset, the training curves);
* a **training checkpoint** (``last.pt`` / ``best.pt``, :func:`save_training_checkpoint`):
  also the optimiser, the loss scaler, the random generators, the run's position and its
  :class:`~ssdlib.train.TrainConfig` (and how many processes wrote it): what an exact resume
  needs, and nothing else.

:func:`load_model` reads either kind. Files are read with ``torch.load(weights_only=True)``
(tensors and plain values only, never code); anything that is not one of the two kinds (a
truncated file, a bare state dict, torchvision's weights, another class count) fails with one
line that names the file and what to do. Files of version 1 (the config's fields one by one)
still load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .model import SSD, ModelConfig, config_difference, config_from_v1
from .priors import PriorConfig
from .utils import IMAGENET_MEAN, IMAGENET_STD, atomic_save

MODEL_FORMAT = "ssdlib-checkpoint"  # the tag of model files (the name they have had since v1)
TRAINING_FORMAT = "ssdlib-training-checkpoint"  # the tag of last.pt and best.pt
VERSION = 2  # 2: the network as one ModelConfig; bumped when a layout changes
TRAINING_KEYS = ("optimizer", "scaler", "rng", "state", "config", "world_size")  # and the model


def unreadable_file_message(path: Path, what: str, err: Exception) -> str:
    """One line for a file ``torch.load(weights_only=True)`` refused. torch's own text is left
    out: it advises ``weights_only=False``, which runs whatever code a crafted file holds."""
    return (
        f"{path} is not a readable {what} file: corrupt, truncated, or not written by "
        f"torch.save ({type(err).__name__}); do not retry with weights_only=False unless you "
        "trust where the file came from"
    )


def read_file(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load`` (tensors and plain values only) with errors that name the file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the path of a {what} file")
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load fails in many ways (zip, pickle, EOF): report the file
        raise ValueError(unreadable_file_message(path, what, err)) from err


def _cpu_state(model: SSD) -> dict[str, Any]:
    return {
        k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in model.state_dict().items()
    }


# -- writing -------------------------------------------------------------------------------------


def save_model(model: SSD, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as a model file, atomically (a crash leaves the previous file intact):
    its config, its weights on the CPU, and ``extra`` (plain values)."""
    return atomic_save(
        {
            "format": MODEL_FORMAT,
            "version": VERSION,
            "model": model.config.to_dict(),
            "state_dict": _cpu_state(model),
            "extra": dict(extra or {}),
        },
        path,
    )


def save_training_checkpoint(path: str | os.PathLike, model: SSD, **training: Any) -> Path:
    """Write a training checkpoint atomically: the model's config and weights, and the
    :data:`TRAINING_KEYS` (``optimizer``, ``scaler``, ``rng``, ``state``, ``config``,
    ``world_size``)."""
    missing = [k for k in TRAINING_KEYS if k not in training]
    unknown = sorted(set(training) - set(TRAINING_KEYS))
    if missing or unknown:
        raise ValueError(
            f"a training checkpoint needs {list(TRAINING_KEYS)}, got {sorted(training)}"
        )
    return atomic_save(
        {
            "format": TRAINING_FORMAT,
            "version": VERSION,
            "model": model.config.to_dict(),
            "state_dict": model.state_dict(),
            **training,
        },
        path,
    )


# -- reading -------------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A model file or a training checkpoint, checked, in one layout: ``kind`` (``"model"`` or
    ``"training"``), ``model`` (a :class:`ModelConfig`), ``state_dict``, and the kind's other
    keys (``extra``; or those of :data:`TRAINING_KEYS`). Version 1 files are converted."""
    path = Path(path)
    ckpt = read_file(path, "checkpoint", map_location)
    tag = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    if tag == MODEL_FORMAT:
        kind, needed = "model", ("model", "state_dict")
    elif tag in (TRAINING_FORMAT, TRAINING_FORMAT + "/1"):
        kind, needed = "training", ("model", "state_dict", *TRAINING_KEYS)
    else:
        hint = "a bare state dict loads with model.load_state_dict()"
        if isinstance(ckpt, dict) and any(str(k).startswith("head.") for k in ckpt):
            hint = "torchvision's ssd300_vgg16 weights load with weights.from_torchvision(path)"
        raise ValueError(
            f"{path} is not an ssdlib model file or training checkpoint (format {tag!r}); {hint}"
        )
    if ckpt.get("version", 1) > VERSION:
        raise ValueError(
            f"{path} has checkpoint version {ckpt['version']}, newer than this ssdlib's "
            f"{VERSION}: update ssdlib"
        )
    ckpt = _from_version_1(ckpt, kind) if ckpt.get("version", 1) == 1 else dict(ckpt)
    missing = [k for k in needed if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is an incomplete ssdlib {kind} file: it lacks {missing}")
    try:
        ckpt["model"] = ModelConfig.from_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: its network description is unreadable ({err})") from err
    ckpt["kind"] = kind
    return ckpt


def _from_version_1(ckpt: dict[str, Any], kind: str) -> dict[str, Any]:
    """Version 1 kept the config's fields at the top level of a model file, and a training
    checkpoint's weights under ``model`` with the fields under ``model_args``."""
    ckpt = dict(ckpt)
    if kind == "training":
        args = ckpt.pop("model_args", None)
        ckpt["state_dict"] = ckpt.pop("model", None)
    else:
        args = ckpt
    needed = ("cfg", "class_names", "width", "batch_norm")
    if args is None or any(k not in args for k in needed) or ckpt.get("state_dict") is None:
        return {k: v for k, v in ckpt.items() if k not in ("model", "state_dict")}  # incomplete
    ckpt["model"] = config_from_v1(args, IMAGENET_MEAN, IMAGENET_STD).to_dict()
    return ckpt


def read_training_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """A training checkpoint (``last.pt`` / ``best.pt``): :func:`read_checkpoint`'s dict."""
    ckpt = read_checkpoint(path, map_location)
    if ckpt["kind"] != "training":
        raise ValueError(
            f"{path} is a model file, not a training checkpoint: load_model reads it, but a run "
            "cannot resume from it"
        )
    return ckpt


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    expect_cfg: PriorConfig | None = None,
) -> SSD:
    """The network of a model file or a training checkpoint, in eval mode on ``map_location``.

    Args:
        path: the file.
        map_location: the device to load onto.
        expect_cfg: if given, the file's default boxes must be these (ValueError otherwise).
    """
    ckpt = read_checkpoint(path, "cpu")
    config: ModelConfig = ckpt["model"]
    if expect_cfg is not None and config.priors != expect_cfg:
        raise ValueError(
            f"{path} holds a model for {config.priors!r}, expected {expect_cfg!r} "
            f"({config_difference(config.priors, expect_cfg)})"
        )
    model = SSD(config)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval()


def load_weights(model: SSD, path: str | os.PathLike) -> SSD:
    """Load the weights of a model file or training checkpoint into an existing ``model``.

    The file must have been made for an equal :class:`ModelConfig` but for the class names
    (which the model then takes from the file); otherwise a ValueError names the file and the
    fields that differ. Returns ``model``.
    """
    ckpt = read_checkpoint(path, model.mean.device)
    model.check_weights(ckpt["model"], f"checkpoint {path}")
    model.load_state_dict(ckpt["state_dict"])
    return model
