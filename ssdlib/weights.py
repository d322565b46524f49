"""Pretrained weights and the shipped models for :class:`ssdlib.model.SSD`.

* :func:`load_vgg16_backbone`: ImageNet VGG16 into the base network (SSD §3, "Base network":
  "VGG16, which is pre-trained on the ILSVRC CLS-LOC dataset ... we convert fc6 and fc7 to
  convolutional layers, subsample parameters from fc6 and fc7").
* :func:`from_torchvision`: torchvision's COCO-trained ``ssd300_vgg16`` (25.1 COCO AP) as an
  ssdlib model with the same outputs.
* :func:`load_shipped_model`: the trained models the repository ships (model files, read by
  :func:`ssdlib.checkpoint.load_model`).

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

from .backbone import VGG16_STAGES
from .checkpoint import load_model, read_file
from .model import SSD, build_ssd
from .priors import SSD300_COCO
from .utils import IMAGENET_MEAN, IMAGENET_STD

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


def _state_dict(source: StateSource, weights: Any, what: str, how: str) -> Mapping[str, Tensor]:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, str) and source == "torchvision":
        return _torchvision_weights(weights, what, how)
    state = read_file(source, what)
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

    _copy_features(model, state, what)  # conv1_1 … conv5_3 (and their BatchNorms)
    _copy_fc6_fc7(model, state, what)  # subsampled (SSD §3)
    _copy(model.mean, torch.tensor(IMAGENET_MEAN), "mean")
    _copy(model.std, torch.tensor(IMAGENET_STD), "std")
    return model


def _copy_features(model: SSD, state: Mapping[str, Tensor], what: str) -> None:
    """VGG16's conv1_1 … conv5_3 (``features.N``; with their BatchNorms for VGG16-BN) into the
    model's base network, in order."""
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


def _copy_fc6_fc7(model: SSD, state: Mapping[str, Tensor], what: str) -> None:
    """fc6 and fc7 of VGG16's classifier, subsampled into the base network's fc6 and fc7
    (convolutions there; see :func:`load_vgg16_backbone`)."""
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
    return load_model(path, map_location)  # ssdlib.checkpoint
