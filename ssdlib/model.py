"""The SSD network (SSD §2.1 "Model", Fig. 2; §3 "Base network"; §3.1 for the L2 normalisation).

"The SSD approach is based on a feed-forward convolutional network that produces a fixed-size
collection of bounding boxes and scores for the presence of object class instances in those
boxes, followed by a non-maximum suppression step" (§2.1). The network has three parts:

1. **Base network**: VGG16 up to fc7, conv4_3 L2-normalised, and
2. **Extra feature layers** that shrink the map for predictions at several scales: both in
   :mod:`ssdlib.backbone`, whose docstring quotes the paper on each;
3. **Convolutional predictors**, here: on every source map (conv4_3, fc7 and each extra
   layer's output) one 3×3 convolution predicts 4 box offsets and another K class scores for
   each of the A default boxes of every cell.

Outputs line up one-to-one with :func:`ssdlib.priors.default_boxes`: layer, then cell row-major
(y, then x), then box within the cell. Letters: ``B`` images, ``P`` default boxes, ``K`` classes
including background 0, ``A`` default boxes per cell. Shape comments use SSD300.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fast
from .backbone import (
    SSDBackbone,
    extras_for_sources,
    plan_extras,
    source_sizes,
)
from .nms import NMS_IOU_THRESHOLD, SCORE_THRESHOLD, TOP_K
from .priors import (  # config_to_dict: re-exported, lessons import it from here
    PriorConfig,
    config_difference,
    config_from_dict,
    config_to_dict,
    default_boxes,
)
from .utils import IMAGENET_MEAN, IMAGENET_STD


# -- 3. Convolutional predictors -----------------------------------------------------------------
def flatten_predictions(t: Tensor, columns: int) -> Tensor:
    """``(B, A*C, H, W) -> (B, H*W*A, C)``: cell row-major (y, then x), then box in the cell."""
    b = t.shape[0]
    return t.permute(0, 2, 3, 1).reshape(b, -1, columns)  # (B, H, W, A*C) -> (B, H*W*A, C)


class SSDHead(nn.Module):
    """One 3×3 localisation conv (``4·A`` channels) and one 3×3 confidence conv (``K·A``) per map.

    ``forward(sources)`` -> ``(loc (B, P, 4), conf (B, P, K))``, in default-box order.
    """

    def __init__(self, in_channels: Sequence[int], boxes_per_cell: Sequence[int], num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        pairs = list(zip(in_channels, boxes_per_cell, strict=True))
        self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1) for c, a in pairs)
        self.conf = nn.ModuleList(nn.Conv2d(c, a * num_classes, 3, padding=1) for c, a in pairs)

    def forward(self, sources: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        locs, confs = [], []
        for x, loc, conf in zip(sources, self.loc, self.conf, strict=True):
            locs.append(flatten_predictions(loc(x), 4))  # (B, A*4, H, W) -> (B, H*W*A, 4)
            confs.append(flatten_predictions(conf(x), self.num_classes))  # -> (B, H*W*A, K)
        return torch.cat(locs, dim=1), torch.cat(confs, dim=1)  # (B, P, 4), (B, P, K)


# -- The whole network ---------------------------------------------------------------------------
INPUT_RANGE_SLACK = 1e-3  # detect() accepts [0, 1] images with this much rounding error
RESIZE_ANTIALIAS = True  # like torchvision.transforms.v2.Resize: large photos shrink without
# aliasing (torchvision's own SSD transform resizes without it)
STATE_FORMAT = "ssdlib.SSD/2"  # tag of the metadata every SSD state dict carries: the ModelConfig
STATE_FORMAT_V1 = "ssdlib.SSD/1"  # before the ModelConfig: its fields one by one; still read


def _as_float32(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(np.asarray(values, dtype=np.float32).tolist())


@dataclass(frozen=True)
class ModelConfig:
    """Everything that builds an SSD network, in one place: :class:`SSD` is built from it, and
    every model file and training checkpoint stores it (:mod:`ssdlib.checkpoint`). Weights fit a
    network whose config is equal to theirs but for the class names, which they bring along.
    """

    priors: PriorConfig  # the default boxes: input size, maps, sizes and aspect ratios
    class_names: tuple[str, ...]  # K names, index 0 the background
    width: float = 1.0  # multiplies every base and extra channel count (multiples of 8)
    batch_norm: bool = False  # BatchNorm after every base and extra convolution
    sources: tuple[int, ...] | None = None  # the backbone map each prior layer reads (0 conv4_3,
    # 1 fc7, 2 the first extra layer's, ...); None: layer k on map k, as in the paper
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the input normalisation forward() applies
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        names, mean, std = tuple(self.class_names), tuple(self.mean), tuple(self.std)
        if len(names) < 2:
            raise ValueError(f"need at least 2 classes (background + one), got {list(names)}")
        if not self.width > 0:
            raise ValueError(f"width must be positive, got {self.width}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0; got {mean}, {std}")
        sources = _check_sources(self.priors, self.sources)
        paper = sources == tuple(range(len(self.priors.feature_maps)))
        # mean and std as the buffers hold them (float32), so that a config read back from a
        # model's weights equals the one it was built from
        for name, value in (
            ("class_names", names),
            ("width", float(self.width)),
            ("batch_norm", bool(self.batch_norm)),
            ("sources", None if paper else sources),  # one spelling for the paper's choice
            ("mean", _as_float32(mean)),
            ("std", _as_float32(std)),
        ):
            object.__setattr__(self, name, value)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (for a checkpoint or JSON); :meth:`from_dict` reads them back."""
        return {
            "priors": config_to_dict(self.priors),
            "class_names": list(self.class_names),
            "width": self.width,
            "batch_norm": self.batch_norm,
            "sources": list(self.sources) if self.sources is not None else None,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d["priors"] = config_from_dict(d["priors"])
        return cls(**d)

    def difference(self, other: ModelConfig) -> str:
        """The fields where two configs differ, e.g. ``"width: 0.125 vs 1.0"``."""
        parts = []
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a == b:
                continue
            if f.name == "priors":
                parts.append(f"priors: {config_difference(a, b)}")
            elif f.name == "class_names":
                parts.append(f"{len(a)} classes {list(a)} vs {len(b)} {list(b)}")
            else:
                parts.append(f"{f.name}: {a} vs {b}")
        return "; ".join(parts)

    def takes_weights_of(self, other: ModelConfig) -> bool:
        """Whether a network of this config can load weights made for ``other``: equal configs
        but for what the weights bring along (the class names, the same number of them; the
        input normalisation, stored as buffers)."""
        if other.num_classes != self.num_classes:
            return False
        return self.with_weights_of(other) == self

    def with_weights_of(self, other: ModelConfig) -> ModelConfig:
        """``other`` with what weights bring along (class names, mean, std) taken from this
        config: what must equal this config for the weights to fit."""
        brought = {"class_names": self.class_names, "mean": self.mean, "std": self.std}
        return dataclasses.replace(other, **brought)


def _check_sources(cfg: PriorConfig, sources: Sequence[int] | None) -> tuple[int, ...]:
    """``sources[k]``: the backbone map (0 conv4_3, 1 fc7, 2 the first extra layer's, …) that
    prior layer ``k`` reads; None gives the paper's one map per layer, ``(0, 1, …, m-1)``."""
    m = len(cfg.feature_maps)
    if sources is None:
        return tuple(range(m))
    sources = tuple(sources)
    if len(sources) != m or any(not isinstance(s, int) or s < 0 for s in sources):
        raise ValueError(
            f"{cfg.name}: sources needs one backbone map index >= 0 (0 conv4_3, 1 fc7, 2 the "
            f"first extra layer, …) for each of the {m} feature maps, got {sources}"
        )
    return sources


def _init_weights(backbone: SSDBackbone, head: SSDHead) -> None:
    """VGG16's own initialisation for the base (He, fan-out, as torchvision's VGG; normally it is
    replaced by ImageNet weights); Xavier for the extra layers and the heads, as the released
    SSD and torchvision. Biases start at 0."""
    for module in [*backbone.to_conv4_3, *backbone.to_fc7]:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    for module in [*backbone.extras.modules(), *head.modules()]:
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)


class SSD(nn.Module):
    """The SSD network of one :class:`ModelConfig`. Build it with :func:`build_ssd`.

    ``forward(images)`` takes ``(B, 3, S, S)`` RGB in [0, 1] (S = ``cfg.image_size``), normalises
    them with ``mean``/``std`` as its first step, and returns ``(loc (B, P, 4), conf (B, P, K))``:
    offsets and class logits for each default box of ``self.priors`` (``(P, 4)`` cxcywh).
    ``forward = head(backbone(normalize(images)))``; :meth:`source_maps` returns the maps between.

    Prior layer ``k`` reads backbone map ``sources[k]``: by default map k, as in the paper. Other
    choices rebuild the experiments of SSD Table 3, e.g. ``sources=(1,) * 5`` puts the boxes of
    all five scales on fc7 alone ("conv7 only", the stacked scales of a single source layer).

    ``print(nn.Module.__repr__(model))`` lists every layer.
    """

    priors: Tensor
    mean: Tensor
    std: Tensor

    def __init__(self, config: ModelConfig):
        super().__init__()
        cfg = config.priors
        sources = _check_sources(cfg, config.sources)
        paper_sources = config.sources is None
        extras = (
            plan_extras(cfg) if paper_sources else extras_for_sources(cfg, sources, config.width)
        )
        actual = source_sizes(cfg, extras, config.width)
        used = [actual[s] if s < len(actual) else None for s in sources]
        if used != list(cfg.feature_maps):
            read = "" if paper_sources else f" (its layers read maps {list(sources)})"
            raise ValueError(
                f"{cfg.name}: for {cfg.image_size}×{cfg.image_size} inputs the network's source "
                f"maps are {actual}{read}, but the config expects {list(cfg.feature_maps)} "
                "(conv4_3 has stride 8, fc7 stride 16)"
            )
        self.config = config
        self.sources = sources  # (m,): the backbone map of each prior layer
        self.backbone = SSDBackbone(extras, config.width, config.batch_norm)
        channels = [self.backbone.out_channels[s] for s in sources]  # per prior layer
        self.head = SSDHead(channels, cfg.boxes_per_cell, config.num_classes)
        _init_weights(self.backbone, self.head)
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32))
        self.register_buffer("priors", default_boxes(cfg), persistent=False)  # (P, 4) cxcywh

    # The config's fields, as the lessons read them off a model.
    @property
    def cfg(self) -> PriorConfig:
        return self.config.priors

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def width(self) -> float:
        return self.config.width

    @property
    def batch_norm(self) -> bool:
        return self.config.batch_norm

    @property
    def source_names(self) -> list[str]:
        """``["conv4_3", "fc7", "conv8_2", …]``: the layer each prior layer's head looks at."""
        return [self.backbone.source_names[s] for s in self.sources]

    @property
    def num_priors(self) -> int:
        return self.cfg.num_priors

    def normalize(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S)`` RGB in [0, 1] -> ``(images - mean) / std``, checking the shape."""
        s = self.cfg.image_size
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
            raise ValueError(
                f"expected images of shape (B, 3, {s}, {s}) for {self.cfg.name}, got "
                f"{tuple(images.shape)}; detect() takes images of any size"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"expected float RGB images in [0, 1], got dtype {images.dtype} (divide by 255)"
            )
        return (images - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)

    def source_maps(self, images: Tensor) -> list[Tensor]:
        """``(B, 3, S, S)`` RGB in [0, 1] -> the source maps ``(B, C_k, f_k, f_k)``, conv4_3 first.

        conv4_3's map is returned after the L2 normalisation, as the heads see it. One map per
        prior layer: a map that several layers read (see ``sources``) appears once for each.
        """
        maps = self.backbone(self.normalize(images))
        return [maps[s] for s in self.sources]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 3, S, S)`` RGB in [0, 1] -> ``(loc (B, P, 4), conf (B, P, K))``."""
        return self.head(self.source_maps(images))

    # -- inference ------------------------------------------------------------------------------
    def _batch(self, images: Tensor | Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Images of any sizes -> ``(B, 3, S, S)`` on the model's device, and their (H, W)."""
        device, s = self.mean.device, self.cfg.image_size
        if isinstance(images, Tensor):
            images = images.unsqueeze(0) if images.dim() == 3 else images
            if images.dim() != 4:
                raise ValueError(
                    f"expected a (B, 3, H, W) tensor or a list of (3, H, W), got "
                    f"{tuple(images.shape)}"
                )
            images = list(images)
        if len(images) == 0:
            raise ValueError("detect() needs at least one image")
        resized, sizes = [], []
        for i, img in enumerate(images):
            if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != 3:
                shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
                raise ValueError(f"image {i}: expected a (3, H, W) RGB tensor, got {shape}")
            if not img.is_floating_point():
                raise ValueError(
                    f"image {i}: expected float RGB in [0, 1], got dtype {img.dtype} "
                    "(divide by 255)"
                )
            sizes.append((img.shape[1], img.shape[2]))
            img = img.to(device=device, dtype=torch.float32)[None]
            if sizes[-1] != (s, s):
                img = F.interpolate(
                    img,
                    size=(s, s),
                    mode="bilinear",
                    align_corners=False,
                    antialias=RESIZE_ANTIALIAS,
                )
            resized.append(img)
        batch = torch.cat(resized)  # (B, 3, S, S)
        lo, hi = batch.amin(dim=(1, 2, 3)), batch.amax(dim=(1, 2, 3))  # (B,) each
        finite = lo.isfinite() & hi.isfinite()  # a nan pixel makes its image's min and max nan
        outside = (lo < -INPUT_RANGE_SLACK) | (hi > 1 + INPUT_RANGE_SLACK)
        bad = (outside | ~finite).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            if not finite[i]:
                raise ValueError(f"image {i}: holds nan or inf pixel values")
            raise ValueError(
                f"image {i}: expected RGB values in [0, 1], got [{lo[i]:.3g}, {hi[i]:.3g}]"
                + (" (divide by 255)" if hi[i] > 1.5 else "")
            )
        return batch, sizes

    def detect(
        self,
        images: Tensor | Sequence[Tensor],
        score_threshold: float = SCORE_THRESHOLD,
        iou_threshold: float = NMS_IOU_THRESHOLD,
        top_k: int = TOP_K,
    ) -> list[dict[str, Tensor]]:
        """Detections for images of any sizes, in each image's pixels (SSD §3, "Inference time").

        Each image is resized to ``S × S``; one batched forward pass in eval mode without
        gradients (the previous train/eval mode is restored); then :func:`ssdlib.fast.postprocess`
        (the detections of :func:`ssdlib.nms.postprocess`, faster).

        Args:
            images: a ``(B, 3, H, W)`` tensor, or a list of ``(3, H_i, W_i)`` tensors; RGB in
                [0, 1], on any device.
            score_threshold, iou_threshold, top_k: as in :func:`ssdlib.nms.postprocess`.

        Returns:
            One dict per image: ``boxes`` ``(D, 4)`` xyxy in that image's pixels, ``scores``
            ``(D,)`` descending, ``labels`` ``(D,)`` long in 1..K-1 (names: ``class_names``).
        """
        batch, sizes = self._batch(images)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                loc, conf = self(batch)  # (B, P, 4), (B, P, K)
                return fast.postprocess(
                    loc,
                    conf,
                    self.priors,
                    score_threshold=score_threshold,
                    iou_threshold=iou_threshold,
                    top_k=top_k,
                    image_sizes=sizes,
                )
        finally:
            self.train(was_training)

    # -- what a notebook cell shows -------------------------------------------------------------
    def __repr__(self) -> str:
        cfg = self.cfg
        params = sum(p.numel() for p in self.parameters())
        bn = ", batch norm" if self.batch_norm else ""
        if self.sources != tuple(range(len(cfg.feature_maps))):
            bn += f", layers read {self.source_names}"
        return (
            f"SSD({cfg.name}: maps {list(cfg.feature_maps)} × boxes {cfg.boxes_per_cell} = "
            f"{cfg.num_priors} default boxes, {self.num_classes} classes, width {self.width}{bn}, "
            f"{params:,} parameters)"
        )

    def summary(self) -> str:
        """A table of the source maps: layer, channels, map, default boxes per cell and in all."""
        cfg = self.cfg
        rows = [f"{'source':<10}{'channels':>9}{'map':>9}{'boxes/cell':>12}{'boxes':>8}"]
        for name, c, f, a, n in zip(
            self.source_names,
            [self.backbone.out_channels[s] for s in self.sources],
            cfg.feature_maps,
            cfg.boxes_per_cell,
            cfg.boxes_per_map,
            strict=True,
        ):
            rows.append(f"{name:<10}{c:>9}{f'{f}×{f}':>9}{a:>12}{n:>8}")
        rows.append(f"{'total':<10}{'':>9}{'':>9}{'':>12}{cfg.num_priors:>8}")
        return "\n".join(rows)

    # -- the state dict carries the configuration -----------------------------------------------
    def check_weights(self, theirs: ModelConfig, source: str) -> None:
        """Raise a ValueError naming both sides if weights made for ``theirs`` do not fit."""
        if self.config.takes_weights_of(theirs):
            return
        if theirs.num_classes == self.num_classes:  # what the weights bring never matters
            theirs = self.config.with_weights_of(theirs)
        raise ValueError(
            f"{source} holds weights for another network: {theirs.difference(self.config)} "
            f"(its {theirs.priors.name} vs this model's {self.cfg.name})"
        )

    def get_extra_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "model": self.config.to_dict()}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
            theirs = ModelConfig.from_dict(state["model"])
        elif isinstance(state, dict) and state.get("format") == STATE_FORMAT_V1:
            theirs = config_from_v1(state, self.config.mean, self.config.std)  # mean, std: buffers
        else:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"the state dict's metadata is {got!r}, expected {STATE_FORMAT!r}")
        self.check_weights(theirs, "the state dict")
        # the weights say what their classes are, and bring their normalisation (now in the buffers)
        self.config = dataclasses.replace(
            self.config,
            class_names=theirs.class_names,
            mean=tuple(self.mean.tolist()),
            std=tuple(self.std.tolist()),
        )


def config_from_v1(
    args: dict[str, Any], mean: Sequence[float], std: Sequence[float]
) -> ModelConfig:
    """The :class:`ModelConfig` of a version-1 file or state dict (its fields at the top level,
    ``cfg`` for the default boxes; mean and std beside them or in the weights)."""
    return ModelConfig(
        priors=config_from_dict(args["cfg"]),
        class_names=tuple(args["class_names"]),
        width=args["width"],
        batch_norm=args["batch_norm"],
        sources=args.get("sources"),
        mean=tuple(args.get("mean", mean)),
        std=tuple(args.get("std", std)),
    )


def build_ssd(
    cfg: PriorConfig,
    num_classes: int,
    width: float = 1.0,
    batch_norm: bool = False,
    class_names: Sequence[str] | None = None,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    sources: Sequence[int] | None = None,
) -> SSD:
    """The SSD network for ``cfg`` (SSD §2.1, Fig. 2), with freshly initialised weights.

    Args:
        cfg: where the default boxes go; the network's source maps must have the sides
            ``cfg.feature_maps`` (checked with a dry run; ValueError otherwise).
        num_classes: K, including the background class 0.
        width: multiplies every channel count of the base and extra layers (rounded to a
            multiple of 8, at least 8): ``width=0.25`` is a slim model with the same boxes.
        batch_norm: add BatchNorm after every base and extra convolution.
        class_names: K names, index 0 the background; default ``background, class_1, …``.
        mean, std: the input normalisation ``forward`` applies to [0, 1] RGB images.
        sources: for each layer of ``cfg``, the backbone map its boxes sit on (0 conv4_3, 1 fc7,
            2 the first extra layer's map, …); None: layer k on map k, as in the paper. With
            ``(1,) * m`` every layer sits on fc7: ``cfg`` then lists fc7's side m times.

    Returns:
        An :class:`SSD` whose ``forward`` maps ``(B, 3, S, S)`` to ``(B, P, 4), (B, P, K)``.
    """
    if class_names is None:
        class_names = ["background"] + [f"class_{i}" for i in range(1, num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(
            f"got {len(class_names)} class names for {num_classes} classes "
            "(index 0 is the background)"
        )
    return SSD(ModelConfig(cfg, tuple(class_names), width, batch_norm, sources, mean, std))
