"""Pretrained weights and checkpoints for :class:`ssdlib.model.SSD`.

* :func:`load_vgg16_backbone`: ImageNet VGG16 into the base network (SSD §3, "Base network":
  "VGG16, which is pre-trained on the ILSVRC CLS-LOC dataset ... we convert fc6 and fc7 to
  convolutional layers, subsample parameters from fc6 and fc7").
* :func:`from_torchvision`: torchvision's COCO-trained ``ssd300_vgg16`` (25.1 COCO AP) as an
  ssdlib model with the same outputs.
* :func:`save_model` / :func:`load_model` / :func:`load_weights`: checkpoints that carry their
  configuration, so that weights never meet default boxes they were not trained with.

Nothing here reaches the network unless asked to (``source="torchvision"``); offline, the error
says which file to fetch and where to put it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .model import SSD, VGG16_STAGES, build_ssd, config_difference, config_from_dict
from .priors import SSD300_COCO, PriorConfig
from .utils import IMAGENET_MEAN, IMAGENET_STD, atomic_save

StateSource = Mapping[str, Tensor] | str | os.PathLike


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded (offline?); the message says what to fetch."""


# -- Fetching ------------------------------------------------------------------------------------
def _torchvision_weights(weights: Any, what: str, how: str) -> dict[str, Tensor]:
    """``weights.get_state_dict()`` (torch hub's cache, else a download), with an offline error."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as err:  # no network (URLError is an OSError), bad download
        file = Path(weights.url).name
        where = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsUnavailableError(
            f"could not get the {what} weights ({type(err).__name__}: {err}). Offline? Download "
            f"{weights.url} on a machine with internet and put {file} into torch hub's "
            f"checkpoints folder, $TORCH_HOME/hub/checkpoints/ (here: {where}/), or pass its "
            f"path: {how.format(path=f'/path/to/{file}')}"
        ) from err


def _read(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load`` (tensors and plain values only) with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load fails in many ways (zip, pickle, EOF): report the file
        raise ValueError(unreadable_file_message(path, what, err)) from err


def unreadable_file_message(path: Path, what: str, err: Exception) -> str:
    """One line for a file ``torch.load(weights_only=True)`` refused. torch's own text is left
    out: it advises ``weights_only=False``, which runs whatever code a crafted file holds."""
    return (
        f"{path} is not a readable {what} file: corrupt, truncated, or not written by "
        f"torch.save ({type(err).__name__}); do not retry with weights_only=False unless you "
        "trust where the file came from"
    )


def _state_dict(source: StateSource, weights: Any, what: str, how: str) -> Mapping[str, Tensor]:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, str) and source == "torchvision":
        return _torchvision_weights(weights, what, how)
    state = _read(source, what)
    if not isinstance(state, Mapping):
        raise ValueError(f"{source}: expected a state dict, got a {type(state).__name__}")
    return state


def _get(state: Mapping[str, Tensor], key: str, what: str) -> Tensor:
    if key not in state:
        raise ValueError(f"the {what} state dict has no {key!r} (keys: {_some_keys(state)})")
    return state[key]


def _some_keys(state: Mapping[str, Any], n: int = 6) -> str:
    keys = list(state)
    return ", ".join(keys[:n]) + (f", … ({len(keys)} in all)" if len(keys) > n else "")


def _copy(dst: Tensor, src: Tensor, name: str) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"{name}: expected shape {tuple(dst.shape)}, got {tuple(src.shape)}")
    with torch.no_grad():
        dst.copy_(src)


def _copy_module(dst: nn.Module, state: Mapping[str, Tensor], prefix: str, name: str) -> None:
    """Copy ``{prefix}.weight``, ``.bias`` (and a BatchNorm's statistics) into ``dst``."""
    for key, tensor in dst.state_dict().items():
        _copy(tensor, _get(state, f"{prefix}.{key}", name), f"{name}.{key} <- {prefix}.{key}")


def _base_layer(model: SSD, name: str) -> nn.Module:
    """``"conv4_3"``, ``"bn4_3"``, ``"fc6"`` … -> that module of the base network."""
    for stage in (model.backbone.to_conv4_3, model.backbone.to_fc7):
        children = dict(stage.named_children())
        if name in children:
            return children[name]
    raise KeyError(name)


# -- ImageNet VGG16 -> the base network (SSD §3) -------------------------------------------------
VGG16_CONVS = [  # conv1_1, conv1_2, conv2_1, …, conv5_3
    f"conv{s}_{i}"
    for s, stage in enumerate(VGG16_STAGES, start=1)
    for i in range(1, len(stage) + 1)
]
FC_SUBSAMPLE = 4  # 4096 -> 1024 units: fc6 and fc7 keep every 4th unit (and fc7 every 4th input)
FC6_GRID = 7  # VGG16's fc6 reads a 7×7 grid of pool5 (25088 = 512 · 7 · 7 inputs)
FC6_TAP_STRIDE = 3  # rows/columns 0, 3, 6 of that grid become the 3×3 (dilated) kernel
FC6_IN, FC7_IN = 25088, 4096  # input sizes of VGG16's fc6 and fc7 (torchvision classifier.0, .3)


def load_vgg16_backbone(model: SSD, source: StateSource = "torchvision") -> SSD:
    """Copy ImageNet VGG16 weights (torchvision's format) into the base network of ``model``.

    conv1_1 … conv5_3 are copied; fc6 and fc7 are subsampled from the classifier, as §3 says:
    fc6 ``(4096, 25088)`` -> ``(4096, 512, 7, 7)`` -> every 4th output unit, taps 0, 3, 6 in
    both directions -> ``(1024, 512, 3, 3)`` (the taps of the dilated kernel); fc7 ``(4096,
    4096)`` -> every 4th output and input -> ``(1024, 1024, 1, 1)``; biases every 4th. The extra
    layers, L2Norm and heads are left as they are. ``model.mean``/``std`` become ImageNet's,
    which these weights expect.

    Args:
        model: an SSD built with ``width=1.0``. With ``batch_norm=True`` the weights must be
            VGG16-BN's (``vgg16_bn``), whose BatchNorm statistics are copied too.
        source: a path to the ``.pth`` file (``vgg16-397923af.pth``, or ``vgg16_bn-6c64b313.pth``),
            a state dict, or ``"torchvision"``: torchvision's ``VGG16_Weights.IMAGENET1K_V1``
            (resp. ``VGG16_BN_Weights``) from torch hub's cache, downloaded if missing.

    Returns:
        ``model``, changed in place.
    """
    if model.width != 1.0:
        raise ValueError(
            f"VGG16's weights fit only width 1.0, but the model has width {model.width}; build "
            "it with build_ssd(cfg, num_classes) to use them"
        )
    from torchvision.models import VGG16_BN_Weights, VGG16_Weights

    weights = VGG16_BN_Weights.IMAGENET1K_V1 if model.batch_norm else VGG16_Weights.IMAGENET1K_V1
    what = "ImageNet VGG16-BN" if model.batch_norm else "ImageNet VGG16"
    state = _state_dict(source, weights, what, "load_vgg16_backbone(model, '{path}')")

    # torchvision's VGG.features: convs, BatchNorms (those with running statistics), ReLUs, pools.
    indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")})
    bns = [i for i in indices if f"features.{i}.running_mean" in state]
    convs = [i for i in indices if i not in bns and f"features.{i}.weight" in state]
    if len(convs) != len(VGG16_CONVS):
        raise ValueError(
            f"expected the {len(VGG16_CONVS)} convolutions of VGG16 in the {what} state dict, "
            f"found {len(convs)} (keys: {_some_keys(state)})"
        )
    if bns and not model.batch_norm:
        raise ValueError(
            "these are VGG16-BN weights (they have BatchNorm layers), but the model has no batch "
            "norm: build it with batch_norm=True, or use the plain vgg16-397923af.pth"
        )
    if model.batch_norm and len(bns) != len(VGG16_CONVS):
        raise ValueError(
            f"the model has batch norm, but the weights have {len(bns)} BatchNorm layers, not "
            f"{len(VGG16_CONVS)}: use VGG16-BN's vgg16_bn-6c64b313.pth"
        )
    for k, name in enumerate(VGG16_CONVS):
        _copy_module(_base_layer(model, name), state, f"features.{convs[k]}", name)
        if model.batch_norm:
            bn = name.replace("conv", "bn")
            _copy_module(_base_layer(model, bn), state, f"features.{bns[k]}", bn)

    fc6_w, fc6_b = _get(state, "classifier.0.weight", what), _get(state, "classifier.0.bias", what)
    fc7_w, fc7_b = _get(state, "classifier.3.weight", what), _get(state, "classifier.3.bias", what)
    fc6, fc7 = _base_layer(model, "fc6"), _base_layer(model, "fc7")
    if tuple(fc6_w.shape) != (FC7_IN, FC6_IN) or tuple(fc7_w.shape) != (FC7_IN, FC7_IN):
        raise ValueError(
            f"expected VGG16's fc6 {(FC7_IN, FC6_IN)} and fc7 {(FC7_IN, FC7_IN)}, got "
            f"{tuple(fc6_w.shape)} and {tuple(fc7_w.shape)}"
        )
    s, t = FC_SUBSAMPLE, FC6_TAP_STRIDE
    grid = fc6_w.view(FC7_IN, -1, FC6_GRID, FC6_GRID)  # (4096, 512, 7, 7)
    _copy(fc6.weight, grid[::s, :, ::t, ::t], "fc6.weight")  # (1024, 512, 3, 3)
    _copy(fc6.bias, fc6_b[::s], "fc6.bias")  # (1024,)
    _copy(fc7.weight, fc7_w[::s, ::s, None, None], "fc7.weight")  # (1024, 1024, 1, 1)
    _copy(fc7.bias, fc7_b[::s], "fc7.bias")  # (1024,)
    _copy(model.mean, torch.tensor(IMAGENET_MEAN), "mean")
    _copy(model.std, torch.tensor(IMAGENET_STD), "std")
    return model


# -- torchvision's ssd300_vgg16 -> ssdlib --------------------------------------------------------
TORCHVISION_MEAN = (0.48235, 0.45882, 0.40784)  # torchvision's ssd300_vgg16 transform: its VGG16
TORCHVISION_STD = (1 / 255, 1 / 255, 1 / 255)  # (Caffe's) takes pixels 0..255 minus the mean pixel
# Where torchvision keeps each base layer: features.N up to conv4_3, then extra.0 (pool4, conv5_*,
# then a Sequential of pool5, fc6, ReLU, fc7, ReLU at position 7).
TORCHVISION_BASE = {
    **{
        name: f"backbone.features.{i}"
        for name, i in zip(VGG16_CONVS[:10], (0, 2, 5, 7, 10, 12, 14, 17, 19, 21), strict=True)
    },
    "conv5_1": "backbone.extra.0.1",
    "conv5_2": "backbone.extra.0.3",
    "conv5_3": "backbone.extra.0.5",
    "fc6": "backbone.extra.0.7.1",
    "fc7": "backbone.extra.0.7.3",
}


def _torchvision_names(model: SSD) -> dict[str, str]:
    """ssdlib module name -> torchvision module name, for every layer with weights."""
    names = {f"backbone.{_base_path(model, n)}": tv for n, tv in TORCHVISION_BASE.items()}
    for k, extra in enumerate(model.backbone.extras):
        first, second = (n for n, m in extra.named_children() if isinstance(m, nn.Conv2d))
        names[f"backbone.extras.{k}.{first}"] = f"backbone.extra.{k + 1}.0"
        names[f"backbone.extras.{k}.{second}"] = f"backbone.extra.{k + 1}.2"
    for k in range(len(model.head.loc)):
        names[f"head.loc.{k}"] = f"head.regression_head.module_list.{k}"
        names[f"head.conf.{k}"] = f"head.classification_head.module_list.{k}"
    return names


def _base_path(model: SSD, name: str) -> str:
    stage = "to_conv4_3" if name in dict(model.backbone.to_conv4_3.named_children()) else "to_fc7"
    return f"{stage}.{name}"


def from_torchvision(state_dict: StateSource = "torchvision") -> SSD:
    """torchvision's ``ssd300_vgg16`` as an ssdlib :class:`SSD` with the same outputs.

    The default boxes of ``SSD300_COCO`` are torchvision's, the layers are the same, and
    ``mean``/``std`` are those of torchvision's transform, so ``model(images)`` equals
    torchvision's head outputs and :func:`ssdlib.nms.postprocess` its detections.

    Args:
        state_dict: the state dict of a torchvision ``ssd300_vgg16``, a path to one (e.g.
            ``ssd300_vgg16_coco-b556d3b4.pth``), or ``"torchvision"`` for the COCO-trained weights
            (``SSD300_VGG16_Weights.COCO_V1``, 25.1 AP) from torch hub's cache or a download.

    Returns:
        An SSD for ``SSD300_COCO`` in eval mode; with 91 classes it gets torchvision's COCO
        category names (index 0 ``__background__``, unused ids ``N/A``).
    """
    from torchvision.models.detection import SSD300_VGG16_Weights

    weights = SSD300_VGG16_Weights.COCO_V1
    what = "torchvision ssd300_vgg16"
    state = _state_dict(state_dict, weights, what, "from_torchvision('{path}')")
    conf0 = _get(state, "head.classification_head.module_list.0.weight", what)
    boxes0 = SSD300_COCO.boxes_per_cell[0]
    if conf0.shape[0] % boxes0:
        raise ValueError(
            f"torchvision's first classification conv has {conf0.shape[0]} output channels, "
            f"not a multiple of the {boxes0} boxes per cell of conv4_3"
        )
    num_classes = conf0.shape[0] // boxes0
    categories = weights.meta["categories"]
    model = build_ssd(
        SSD300_COCO,
        num_classes,
        class_names=categories if num_classes == len(categories) else None,
        mean=TORCHVISION_MEAN,
        std=TORCHVISION_STD,
    )
    used = {"backbone.scale_weight"}
    _copy(model.backbone.l2norm.weight, _get(state, "backbone.scale_weight", what), "l2norm")
    modules = dict(model.named_modules())
    for ours, theirs in _torchvision_names(model).items():
        _copy_module(modules[ours], state, theirs, ours)
        used |= {f"{theirs}.weight", f"{theirs}.bias"}
    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"the {what} state dict has keys no ssdlib layer takes: {unused[:6]}")
    return model.eval()


# -- Checkpoints ---------------------------------------------------------------------------------
CHECKPOINT_FORMAT = "ssdlib-checkpoint"  # tag of files written by save_model
CHECKPOINT_VERSION = 1  # bumped when the layout changes; older files stay readable
MODEL_FILE_KEYS = ("cfg", "num_classes", "class_names", "width", "batch_norm", "state_dict")


def save_model(model: SSD, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically: a crash leaves the previous file intact.

    The file holds everything :func:`load_model` needs (the PriorConfig's fields and name,
    num_classes, class names, width, batch_norm, mean/std), a format tag and version, the state
    dict on the CPU, and ``extra`` (plain values such as the epoch or a metric).
    """
    state = {
        k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in model.state_dict().items()
    }
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        **model.build_args(),
        "mean": model.mean.tolist(),
        "std": model.std.tolist(),
        "state_dict": state,
        "extra": dict(extra or {}),
    }
    return atomic_save(checkpoint, path)


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The contents of a :func:`save_model` file, checked: a clear error for a missing, corrupt,
    foreign or too new file."""
    checkpoint = _read(path, "checkpoint", map_location)
    tag = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
    if tag != CHECKPOINT_FORMAT:
        hint = "a bare state dict loads with model.load_state_dict()"
        if isinstance(checkpoint, dict) and any(str(k).startswith("head.") for k in checkpoint):
            hint = "torchvision's ssd300_vgg16 weights load with weights.from_torchvision(path)"
        raise ValueError(
            f"{path} is not an ssdlib checkpoint (format {tag!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); {hint}"
        )
    missing = [k for k in MODEL_FILE_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"{path} is an incomplete ssdlib checkpoint: it lacks {missing}")
    if checkpoint.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint version {checkpoint['version']}, newer than this ssdlib's "
            f"{CHECKPOINT_VERSION}: update ssdlib"
        )
    return checkpoint


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    expect_cfg: PriorConfig | None = None,
) -> SSD:
    """Rebuild the model saved by :func:`save_model`, in eval mode on ``map_location``.

    Args:
        path: the checkpoint file.
        map_location: the device to load onto.
        expect_cfg: if given, the checkpoint's PriorConfig must equal it (ValueError otherwise).
    """
    checkpoint = read_checkpoint(path, map_location)
    cfg = config_from_dict(checkpoint["cfg"])
    if expect_cfg is not None and cfg != expect_cfg:
        raise ValueError(
            f"{path} holds a model for {cfg!r}, expected {expect_cfg!r} "
            f"({config_difference(cfg, expect_cfg)})"
        )
    model = build_ssd(
        cfg,
        checkpoint["num_classes"],
        width=checkpoint["width"],
        batch_norm=checkpoint["batch_norm"],
        class_names=checkpoint["class_names"],
        mean=checkpoint["mean"],
        std=checkpoint["std"],
        sources=checkpoint.get("sources"),  # present only for non-default source maps
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(map_location).eval()


def load_weights(model: SSD, path: str | os.PathLike) -> SSD:
    """Load the weights of a :func:`save_model` file into an existing ``model``.

    The checkpoint must have been made for the same PriorConfig, classes, width and batch norm;
    otherwise a ValueError names the file and both configurations. Returns ``model``.
    """
    checkpoint = read_checkpoint(path, model.mean.device)
    model.check_compatible(checkpoint, f"checkpoint {path}")
    model.load_state_dict(checkpoint["state_dict"])
    return model


# -- The shipped models --------------------------------------------------------------------------
SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "data" / "cpu_tiny_shapes.pt"
# the cpu-tiny preset trained on ShapesDataset by `make checkpoint`; the concept notebooks show
# its matches, hard negatives and detections without training
SHIPPED_SSD300 = SHIPPED_MODEL.with_name("ssd300_cpu_shapes.pt")
# the ssd300-cpu preset (SSD300's 8732 default boxes at an eighth of VGG16's width) trained on
# ShapesDataset by `make checkpoint-ssd300`; lesson 8 evaluates it
_HOW_TO_MAKE = {  # preset -> how a clone of the repository makes its shipped model again
    "cpu-tiny": "`make checkpoint` trains it again (15 minutes on 2 CPU cores)",
    "ssd300-cpu": "`make checkpoint-ssd300` trains it again (about an hour on 2 CPU cores)",
}


def load_shipped_model(map_location: str | torch.device = "cpu", preset: str = "cpu-tiny") -> SSD:
    """A trained model the repository ships, in eval mode: ``"cpu-tiny"`` (:data:`SHIPPED_MODEL`)
    or ``"ssd300-cpu"`` (:data:`SHIPPED_SSD300`).

    Raises FileNotFoundError saying how to make it if the file is missing (an installed copy of
    ssdlib has no ``data/`` beside it).
    """
    if preset not in _HOW_TO_MAKE:
        raise ValueError(f"no shipped model of preset {preset!r}; there are {sorted(_HOW_TO_MAKE)}")
    path = SHIPPED_MODEL if preset == "cpu-tiny" else SHIPPED_SSD300
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped model {path} is missing: in a clone of the repository, "
            f"{_HOW_TO_MAKE[preset]}"
        )
    return load_model(path, map_location)
