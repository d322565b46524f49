"""Default boxes (SSD §2.2, "Choosing scales and aspect ratios for default boxes").

SSD tiles every source feature map with a fixed set of boxes per cell. Layer ``k`` of ``m`` has
scale ``s_k`` (a fraction of the image side); each cell gets

* a square of side ``s_k``,
* a square of side ``s'_k = sqrt(s_k · s_{k+1})``, "for the aspect ratio of 1", and
* for every aspect ratio ``a`` of the layer, the pair ``(w, h) = (s_k·√a, s_k/√a)`` and its
  transpose ``(s_k/√a, s_k·√a)`` (the 1/a box).

Box centres sit at ``((i + 0.5) · step / image_size, (j + 0.5) · step / image_size)``: the released
code uses the layer's stride ("step") instead of ``1 / |f_k|``, so that a 38×38 map on a 300-pixel
image has centres every 8 pixels.

Order (the network's heads produce their outputs in the same order): layer, then cell row-major
(y, then x), then box within the cell as listed above.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .boxes import _as_boxes, box_area, box_iou, cxcywh_to_xyxy
from .matching import IOU_THRESHOLD
from .utils import share_by_size


@dataclass(frozen=True)
class PriorConfig:
    """Where the default boxes go: one entry per source feature map (a "layer").

    Sizes are in pixels of the network input, as in the released configuration files;
    ``scales`` gives them as fractions of the image.
    """

    image_size: int  # side of the (square) network input, pixels
    feature_maps: tuple[int, ...]  # side of each source map: 38 means a 38×38 grid of cells
    steps: tuple[float, ...] | None  # stride of each map in input pixels; None: image / map side
    min_sizes: tuple[float, ...]  # s_k · image_size: side of the small square box, per layer
    max_sizes: tuple[float, ...]  # s_{k+1} · image_size: gives the extra square sqrt(min · max)
    aspect_ratios: tuple[tuple[float, ...], ...]  # per layer: each a adds the boxes a and 1/a
    clip: bool = False  # clamp box w, h to [0, 1] (torchvision's ssd300_vgg16 does)
    name: str = field(default="custom", compare=False)  # a label for the repr only

    def __post_init__(self) -> None:
        m = len(self.feature_maps)
        lengths = {
            "min_sizes": len(self.min_sizes),
            "max_sizes": len(self.max_sizes),
            "aspect_ratios": len(self.aspect_ratios),
        }
        if self.steps is not None:
            lengths["steps"] = len(self.steps)
        wrong = {k: v for k, v in lengths.items() if v != m}
        if m == 0 or wrong:
            raise ValueError(
                f"every per-layer field needs one entry per feature map ({m}); "
                f"got {wrong or lengths}"
            )
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        for k, (f, lo, hi) in enumerate(
            zip(self.feature_maps, self.min_sizes, self.max_sizes, strict=True)
        ):
            if f <= 0:
                raise ValueError(f"feature map {k} has side {f}; sides must be positive")
            if not 0 < lo <= hi:
                raise ValueError(f"layer {k}: need 0 < min_size <= max_size, got {lo}, {hi}")
        for k, ratios in enumerate(self.aspect_ratios):
            for a in ratios:
                if a <= 1:
                    raise ValueError(
                        f"layer {k}: aspect ratio {a} must be > 1 (each a also adds 1/a; "
                        "the ratio 1 is always there)"
                    )

    # -- what a bare notebook cell shows -------------------------------------------------------
    @property
    def boxes_per_cell(self) -> list[int]:
        """2 squares + 2 boxes per aspect ratio, per layer: ``[4, 6, 6, 6, 4, 4]`` for SSD300."""
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    @property
    def boxes_per_map(self) -> list[int]:
        return [f * f * a for f, a in zip(self.feature_maps, self.boxes_per_cell, strict=True)]

    @property
    def num_priors(self) -> int:
        return sum(self.boxes_per_map)

    @property
    def scales(self) -> list[float]:
        """``s_1 … s_m`` followed by ``s_{m+1}``: the box scales as fractions of the image."""
        return [s / self.image_size for s in self.min_sizes] + [
            self.max_sizes[-1] / self.image_size
        ]

    def step(self, k: int) -> float:
        """Pixels between neighbouring default-box centres on layer ``k``: the configured step,
        or ``image_size`` / the feature map's side."""
        return self.steps[k] if self.steps is not None else self.image_size / self.feature_maps[k]

    def __repr__(self) -> str:
        return (
            f"PriorConfig(name={self.name!r}, image={self.image_size}, "
            f"fmaps={list(self.feature_maps)}, per_cell={self.boxes_per_cell}, "
            f"total={self.num_priors})"
        )


def linear_scales(s_min: float, s_max: float, m: int) -> list[float]:
    """The paper's scale formula: ``s_k = s_min + (s_max - s_min) / (m - 1) · (k - 1)``, k = 1..m.

    "the lowest layer has a scale of 0.2 and the highest layer has a scale of 0.9, and all
    layers in between are regularly spaced" (SSD §2.2).
    """
    if m < 1:
        raise ValueError(f"need at least one layer, got m={m}")
    if not 0 < s_min <= s_max:
        raise ValueError(f"need 0 < s_min <= s_max, got s_min={s_min}, s_max={s_max}")
    if m == 1:
        return [s_min]
    step = (s_max - s_min) / (m - 1)
    return [s_min + step * k for k in range(m)]


def config_from_scales(
    s_min: float,
    s_max: float,
    aspect_ratios: Sequence[Sequence[float]],
    feature_maps: Sequence[int],
    image_size: int,
    steps: Sequence[float] | None = None,
    clip: bool = False,
    name: str = "paper",
) -> PriorConfig:
    """A :class:`PriorConfig` built the way §2.2 describes it, from ``(s_min, s_max)``.

    The layers get ``linear_scales(s_min, s_max, m)``. The extra square of the last layer needs
    ``s_{m+1}``, which the paper leaves open; we continue the line one more step (0.9 -> 1.04,
    close to the 1.05 of the released SSD300).

    Args:
        s_min, s_max: scales of the first and last layer, fractions of the image side.
        aspect_ratios: per layer, the ratios a > 1 whose a and 1/a boxes are added.
        feature_maps: side of each source map.
        image_size: network input side in pixels.
        steps: stride of each map in pixels; None places centres at (i + 0.5) / f.
        clip: clamp box sizes to the image.

    Returns:
        The configuration; ``default_boxes(cfg)`` makes its boxes.
    """
    m = len(feature_maps)
    scales = linear_scales(s_min, s_max, m)
    step = scales[1] - scales[0] if m > 1 else 0.0
    next_scales = [*scales[1:], scales[-1] + step if m > 1 else 1.0]
    return PriorConfig(
        image_size=image_size,
        feature_maps=tuple(feature_maps),
        steps=tuple(steps) if steps is not None else None,
        min_sizes=tuple(s * image_size for s in scales),
        max_sizes=tuple(s * image_size for s in next_scales),
        aspect_ratios=tuple(tuple(r) for r in aspect_ratios),
        clip=clip,
        name=name,
    )


# The released SSD300 (weiliu89/caffe, ssd_pascal.py): conv4_3 gets scale 0.1, the other five
# layers run from 0.2 to 0.9 in steps of 17% of the image (the paper's formula, rounded).
SSD300_VOC = PriorConfig(
    image_size=300,
    feature_maps=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    min_sizes=(30, 60, 111, 162, 213, 264),
    max_sizes=(60, 111, 162, 213, 264, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    clip=False,
    name="SSD300_VOC",
)

# COCO objects are smaller: conv4_3 starts at 0.07 and the rest at 0.15 (torchvision's
# ssd300_vgg16 uses exactly these boxes, with the sizes clamped to the image).
SSD300_COCO = PriorConfig(
    image_size=300,
    feature_maps=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    min_sizes=(21, 45, 99, 153, 207, 261),
    max_sizes=(45, 99, 153, 207, 261, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    clip=True,
    name="SSD300_COCO",
)

# The released SSD512 for VOC: seven maps, conv4_3 at 0.07 and the rest from 0.15 to 0.9.
SSD512_VOC = PriorConfig(
    image_size=512,
    feature_maps=(64, 32, 16, 8, 4, 2, 1),
    steps=(8, 16, 32, 64, 128, 256, 512),
    min_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
    max_sizes=(76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    clip=False,
    name="SSD512_VOC",
)


def cell_box_sizes(cfg: PriorConfig, layer: int) -> Tensor:
    """The ``(A, 2)`` widths and heights (fractions of the image) of one cell of ``layer``.

    Order: square s_k, square sqrt(s_k·s_{k+1}), then (a, 1/a) for every aspect ratio a.
    """
    if not 0 <= layer < len(cfg.feature_maps):
        raise ValueError(f"layer must be in [0, {len(cfg.feature_maps)}), got {layer}")
    s_k = cfg.min_sizes[layer] / cfg.image_size
    s_extra = math.sqrt(cfg.min_sizes[layer] * cfg.max_sizes[layer]) / cfg.image_size
    sizes = [(s_k, s_k), (s_extra, s_extra)]
    for a in cfg.aspect_ratios[layer]:
        r = math.sqrt(a)
        sizes += [(s_k * r, s_k / r), (s_k / r, s_k * r)]
    wh = torch.tensor(sizes, dtype=torch.float64)
    return wh.clamp(0, 1) if cfg.clip else wh


def default_boxes(
    cfg: PriorConfig, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """Every default box of ``cfg``: ``(P, 4)`` cxcywh, normalised to [0, 1].

    Computed in float64 and then cast, so the boxes do not depend on the device.
    """
    per_layer = []
    for k, f in enumerate(cfg.feature_maps):
        step = cfg.step(k)
        centres_1d = (torch.arange(f, dtype=torch.float64) + 0.5) * step / cfg.image_size
        cy, cx = torch.meshgrid(centres_1d, centres_1d, indexing="ij")  # (f, f) each, y first
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)  # (f*f, 1, 2) row-major
        wh = cell_box_sizes(cfg, k)  # (A, 2)
        a = wh.shape[0]
        boxes = torch.cat([centres.expand(-1, a, 2), wh.expand(f * f, a, 2)], dim=-1)
        per_layer.append(boxes.reshape(-1, 4))  # (f*f*A, 4)
    return torch.cat(per_layer).to(dtype=dtype, device=device)


def layer_of_prior(cfg: PriorConfig) -> Tensor:
    """``(P,)`` long: the source layer each default box belongs to (for per-layer plots)."""
    return torch.repeat_interleave(
        torch.arange(len(cfg.feature_maps)), torch.tensor(cfg.boxes_per_map)
    )


def prior_index(cfg: PriorConfig, layer: int, row: int, col: int) -> slice:
    """The slice of ``default_boxes(cfg)`` that holds the boxes of one cell."""
    if not 0 <= layer < len(cfg.feature_maps):
        raise ValueError(f"layer must be in [0, {len(cfg.feature_maps)}), got {layer}")
    f = cfg.feature_maps[layer]
    if not (0 <= row < f and 0 <= col < f):
        raise ValueError(f"cell ({row}, {col}) is outside layer {layer}'s {f}×{f} map")
    a = cfg.boxes_per_cell[layer]
    start = sum(cfg.boxes_per_map[:layer]) + (row * f + col) * a
    return slice(start, start + a)


# -- Variants for the key-observations lesson (SSD §3.2 Table 3, §3.6, §4) -------------------------


SCALE_DECIMALS = 9  # scales read back from pixel sizes are rounded to this many decimals


def with_scales(
    cfg: PriorConfig, s_min: float, s_max: float | None = None, name: str = ""
) -> PriorConfig:
    """``cfg`` with the paper's linear scales from ``s_min`` to ``s_max`` (default: ``cfg``'s top
    scale), same maps, steps and aspect ratios: the knob of the small-object experiment."""
    # (rounded: min_sizes / image_size carries a float error that would leak into every box)
    s_max = round(cfg.scales[-2], SCALE_DECIMALS) if s_max is None else s_max
    return config_from_scales(
        s_min,
        s_max,
        cfg.aspect_ratios,
        cfg.feature_maps,
        cfg.image_size,
        steps=cfg.steps,
        clip=cfg.clip,
        name=name or f"{cfg.name}, s_min={s_min:g}",
    )


def config_on_one_map(cfg: PriorConfig, layer: int, name: str = "") -> PriorConfig:
    """Every layer's boxes moved onto the cells of one map: SSD Table 3's single source layer.

    When the paper removes source layers (§3.2, Table 3; its last row keeps only conv7, our
    fc7), it stacks the removed layers' scales on the remaining ones, so that the total number
    of boxes stays close to the original 8732. Here each layer keeps its scale and ratios but sits
    on the grid of ``layer``; the network then reads that one map for all of them
    (``build_ssd(..., sources=(layer,) * m)``). The count of boxes becomes
    ``f² · Σ_k A_k`` for the map's side ``f``.
    """
    if not 0 <= layer < len(cfg.feature_maps):
        raise ValueError(f"layer must be in [0, {len(cfg.feature_maps)}), got {layer}")
    m = len(cfg.feature_maps)
    f = cfg.feature_maps[layer]
    step = cfg.step(layer)
    return dataclasses.replace(
        cfg,
        feature_maps=(f,) * m,
        steps=(step,) * m,
        name=name or f"{cfg.name} on map {layer} only",
    )


ELONGATED = 1.5  # a cluster whose long side is at least 1.5× its short side gets a ratio pair;
# closer to square, the layer's two square boxes already fit it (shape IoU >= 0.8)
RATIO_STEP = 0.5  # learned aspect ratios are rounded to halves (2, 2.5, 3, ...) so that nearby
# clusters of one layer share a ratio instead of adding near-duplicate boxes


def config_from_box_shapes(
    wh: Tensor,
    cfg: PriorConfig,
    name: str = "k-means",
) -> PriorConfig:
    """A :class:`PriorConfig` on ``cfg``'s maps whose boxes come from clustered box shapes.

    A PriorConfig cannot list arbitrary shapes: each layer has one scale ``s_k``, two squares
    and ``(a, 1/a)`` pairs of area ``s_k²``. So the ``k`` shapes (e.g. k-means centroids of the
    training boxes' ``(w, h)``) are turned into that form in three honest steps:

    1. sort the shapes by size √(w·h) and deal them out to the ``m`` layers in order, as evenly
       as possible (smallest to the finest map, as SSD does): layer k gets a run of them;
    2. the layer's scale ``s_k`` is the geometric mean size of its shapes (the extra square
       uses the next layer's scale; the last layer's continues the ratio of the last two);
    3. each shape at least :data:`ELONGATED` from square adds the aspect ratio ``max(w/h, h/w)``
       (rounded to :data:`RATIO_STEP`) to its layer; both orientations come with it.

    What is lost: a shape's own area (it takes its layer's), and its orientation (a ratio
    always adds the pair). Compare the shape fit before and after with
    :func:`shape_iou` to see how much that costs.

    Args:
        wh: ``(k, 2)`` shapes, widths and heights as fractions of the image, k >= m.
        cfg: gives the maps, steps, image size and clipping.
        name: the new config's name.

    Returns:
        The configuration; its boxes per cell depend on how many shapes are elongated.
    """
    wh = torch.as_tensor(wh, dtype=torch.float64).cpu()
    m = len(cfg.feature_maps)
    if wh.dim() != 2 or wh.shape[1] != 2:
        raise ValueError(f"expected shapes of shape (k, 2), got {tuple(wh.shape)}")
    if len(wh) < m:
        raise ValueError(f"need at least one shape per layer ({m}), got {len(wh)}")
    if not bool(((wh > 0) & (wh <= 1)).all()):
        i = int((~((wh > 0) & (wh <= 1))).any(dim=1).nonzero()[0])
        raise ValueError(
            f"shape {i} = {[round(v, 4) for v in wh[i].tolist()]} is not in (0, 1] (fractions "
            "of the image)"
        )
    size = (wh[:, 0] * wh[:, 1]).sqrt()  # (k,)
    order = size.argsort()
    groups = torch.tensor_split(order, m)  # m runs of consecutive sizes, sizes differ by <= 1
    scales, ratios = [], []
    for group in groups:
        scales.append(float(size[group].log().mean().exp()))
        elongation = (wh[group, 0] / wh[group, 1]).log().abs().exp()  # max(w/h, h/w)
        rounded = {round(float(e) / RATIO_STEP) * RATIO_STEP for e in elongation if e >= ELONGATED}
        ratios.append(tuple(sorted(r for r in rounded if r > 1)))
    last = scales[-1] * (scales[-1] / scales[-2]) if m > 1 else 1.0
    return PriorConfig(
        image_size=cfg.image_size,
        feature_maps=cfg.feature_maps,
        steps=cfg.steps,
        min_sizes=tuple(s * cfg.image_size for s in scales),
        max_sizes=tuple(s * cfg.image_size for s in [*scales[1:], last]),
        aspect_ratios=tuple(ratios),
        clip=cfg.clip,
        name=name,
    )


def config_to_dict(cfg: PriorConfig) -> dict[str, Any]:
    """Every field of a :class:`PriorConfig` (name included), as plain Python values."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict[str, Any]) -> PriorConfig:
    """Inverse of :func:`config_to_dict`."""
    d = dict(d)
    for key in ("feature_maps", "min_sizes", "max_sizes"):
        d[key] = tuple(d[key])
    d["steps"] = tuple(d["steps"]) if d.get("steps") is not None else None
    d["aspect_ratios"] = tuple(tuple(r) for r in d["aspect_ratios"])
    return PriorConfig(**d)


def config_difference(a: PriorConfig, b: PriorConfig) -> str:
    """The fields where two configs differ, e.g. ``"min_sizes: (30, …) vs (21, …)"``."""
    fields = [f.name for f in dataclasses.fields(PriorConfig) if f.compare]
    return "; ".join(
        f"{name}: {getattr(a, name)} vs {getattr(b, name)}"
        for name in fields
        if getattr(a, name) != getattr(b, name)
    )


# -- Default boxes against real objects: coverage, the cell under a point, k-means shapes ----------
# The numbers lesson 2 draws (ssdlib.viz.priors): how well the boxes fit a set of objects, and
# box shapes learned from the objects instead of picked by hand (as YOLOv2 chose its anchors).


COVERAGE_SIZE_EDGES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)  # fractions of the
# image side, for how well default boxes cover objects of any size: finer at the small end,
# where default boxes leave the largest gaps, and up to the largest scales (s_max = 0.9)


@dataclass
class CoverageReport:
    """How well a set of default boxes covers a set of ground-truth boxes."""

    threshold: float  # IoU from which a default box counts as a match (0.5 in the paper)
    best_iou: Tensor  # (N,) each object's best IoU with any default box
    num_matches: Tensor  # (N,) long: default boxes with IoU >= threshold, per object
    sizes: Tensor  # (N,) object size √(w·h), fraction of the image side
    bin_edges: Tensor  # (S+1,) size bins
    count_per_bin: Tensor  # (S,) long: objects per size bin
    coverage_per_bin: Tensor  # (S,) share of a bin's objects with best IoU >= threshold (nan: none)

    @property
    def num_objects(self) -> int:
        return len(self.best_iou)

    @property
    def coverage(self) -> float:
        """Share of all objects whose best default box reaches the threshold."""
        return float((self.best_iou >= self.threshold).float().mean()) if self.num_objects else 0.0

    def __repr__(self) -> str:
        return (
            f"CoverageReport(objects={self.num_objects}, threshold={self.threshold:g}, "
            f"coverage={self.coverage:.1%}, matches={int(self.num_matches.sum())})"
        )


def default_box_coverage(
    objects: Tensor,
    cfg_or_priors: PriorConfig | Tensor,
    threshold: float = IOU_THRESHOLD,
    bin_edges: Sequence[float] = COVERAGE_SIZE_EDGES,
) -> CoverageReport:
    """For each object, its best IoU with any default box and how many boxes reach ``threshold``.

    An object whose best IoU stays below the threshold still gets one positive in training (the
    forced best match), but a poorly fitting one; coverage measures how often that happens.

    Args:
        objects: ``(N, 4)`` xyxy normalised ground truth (pooled over any number of images: the
            default boxes are the same for every image).
        cfg_or_priors: a :class:`PriorConfig`, or ``(P, 4)`` cxcywh default boxes.
        threshold: IoU that counts as covered.
        bin_edges: object-size bins for the per-size summary.
    """
    objects = _as_boxes(objects, "objects")
    priors = (
        default_boxes(cfg_or_priors) if isinstance(cfg_or_priors, PriorConfig) else cfg_or_priors
    )
    iou = box_iou(objects, cxcywh_to_xyxy(priors.float().cpu()))  # (N, P)
    best = iou.max(dim=1).values
    num = (iou >= threshold).sum(dim=1)
    sizes = box_area(objects).sqrt()
    counts, share = share_by_size(sizes.numpy(), (best >= threshold).numpy(), bin_edges)
    edges = torch.tensor(bin_edges, dtype=torch.float32)
    per_bin = torch.from_numpy(share).float()
    return CoverageReport(threshold, best, num, sizes, edges, torch.from_numpy(counts), per_bin)


def point_to_cell(cfg: PriorConfig, layer: int, x: float, y: float) -> tuple[int, int]:
    """``(row, col)`` of the cell of ``layer`` whose area contains the normalised point (x, y)."""
    if not 0 <= layer < len(cfg.feature_maps):
        raise ValueError(f"layer must be in [0, {len(cfg.feature_maps)}), got {layer}")
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"point ({x}, {y}) is outside the unit square")
    f = cfg.feature_maps[layer]
    step = cfg.step(layer) / cfg.image_size
    return min(int(y / step), f - 1), min(int(x / step), f - 1)


def shape_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of box shapes placed on a common centre: ``(N, 2)`` × ``(M, 2)`` -> ``(N, M)``.

    The distance k-means needs for box shapes: it compares sizes and aspect ratios, not
    positions, and unlike a Euclidean distance on (w, h) it does not favour large boxes.
    """
    if wh1.shape[-1:] != (2,) or wh2.shape[-1:] != (2,):
        raise ValueError(
            f"expected shapes (N, 2) and (M, 2), got {tuple(wh1.shape)}, {tuple(wh2.shape)}"
        )
    inter = torch.minimum(wh1[:, None, :], wh2[None, :, :]).prod(dim=-1)  # (N, M)
    union = wh1.prod(dim=-1)[:, None] + wh2.prod(dim=-1)[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


@dataclass
class KMeansResult:
    """The clusters :func:`kmeans_box_shapes` found."""

    centroids: Tensor  # (k, 2) cluster centres (w, h), sorted by area
    assignment: Tensor  # (N,) long: cluster of each box
    mean_iou: float  # mean over boxes of the IoU with their own centroid
    iterations: int  # how many assignment steps ran before nothing changed


KMEANS_MAX_ITERS = 100  # a few hundred box shapes settle in well under 30 steps


def kmeans_box_shapes(
    wh: Tensor, k: int, seed: int = 0, max_iters: int = KMEANS_MAX_ITERS
) -> KMeansResult:
    """k-means of box shapes with the distance ``1 - IoU`` (as YOLOv2 chose its anchors).

    Initialised with k-means++ (each next centre drawn with probability ∝ distance²) from a
    seeded generator, so a run repeats. Centres move to the mean (w, h) of their boxes; the loop
    stops when no box changes cluster.

    Args:
        wh: ``(N, 2)`` positive widths and heights, N >= k.
        k: number of clusters.

    Returns:
        The centroids sorted by area, each box's cluster, and the mean IoU to its centroid.
    """
    wh = torch.as_tensor(wh, dtype=torch.float64).cpu()
    if wh.dim() != 2 or wh.shape[1] != 2:
        raise ValueError(f"expected wh of shape (N, 2), got {tuple(wh.shape)}")
    if not 1 <= k <= len(wh):
        raise ValueError(f"need 1 <= k <= {len(wh)} boxes, got k={k}")
    if (wh <= 0).any():
        i = int((wh <= 0).any(dim=1).nonzero()[0])
        raise ValueError(
            f"box {i} has a non-positive side: {[round(v, 4) for v in wh[i].tolist()]}"
        )
    gen = torch.Generator().manual_seed(seed)
    centroids = wh[torch.randint(len(wh), (1,), generator=gen)]
    while len(centroids) < k:
        d2 = (1 - shape_iou(wh, centroids)).min(dim=1).values ** 2  # (N,)
        nxt = torch.multinomial(d2 + 1e-12, 1, generator=gen)
        centroids = torch.cat([centroids, wh[nxt]])
    assignment = torch.full((len(wh),), -1, dtype=torch.long)
    iterations = 0
    while iterations < max_iters:
        iterations += 1
        new = shape_iou(wh, centroids).argmax(dim=1)  # (N,)
        if torch.equal(new, assignment):
            break
        assignment = new
        for c in range(k):
            members = wh[assignment == c]
            if len(members):  # an empty cluster keeps its centre
                centroids[c] = members.mean(dim=0)
    order = centroids.prod(dim=1).argsort()
    centroids = centroids[order]
    assignment = torch.argsort(order)[assignment]
    mean_iou = float(shape_iou(wh, centroids).gather(1, assignment[:, None]).mean())
    return KMeansResult(centroids.float(), assignment, mean_iou, iterations)
