"""Shapes: a detection dataset drawn on the fly, so every lesson runs without a download.

Each image is a scene of 0 to ``max_objects`` flat-coloured shapes on a busy background
(a colour gradient, sometimes stripes and soft blotches, always some pixel noise). The seven
classes differ in outline, not only in colour, so a detector has to learn shape:

    circle, square, triangle, star, cross, ring, bar

Object sizes are log-uniform from 3% to 90% of the image side (9 to 270 px at 300 px), so about a
third of the objects are smaller than 32 px: the small-object lesson has material, and so does
the largest default box. Shapes overlap; the later (smaller) one is drawn on top.

Everything is computed with NumPy float64 on pixel-centre grids from one generator per image,
``np.random.default_rng([seed, split_id, index])``: any image can be drawn alone, in any order, in
any DataLoader worker, and the same seed gives the same pixels on every machine. Images are
quantised to 8 bits, so writing them to PNG and reading them back is exact.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from .common import BACKGROUND_NAME, make_target, uint8_to_tensor

CLASSES = (BACKGROUND_NAME, "circle", "square", "triangle", "star", "cross", "ring", "bar")
SPLITS = {"train": 0, "val": 1, "test": 2}  # split -> the middle word of each image's seed

MAX_OBJECTS = 6  # objects asked for per image (0..6); a few more than SSD's VOC average of 2.4
MIN_SIZE_FRAC = 0.03  # smallest object, as a fraction of the image side: 9 px at 300 px,
# below which a star and a cross are the same blob
MAX_SIZE_FRAC = 0.9  # largest: "most of the image", still leaving room to move it around
MIN_VISIBLE = 0.4  # an object keeps >= 40% of its pixels (occluders and image edge counted);
# a placement that would hide more of it, or of an earlier object, is not made
PLACEMENT_TRIES = 8  # positions tried per object before it is left out of the image
ASPECT_RANGE = (0.75, 1.33)  # height / width stretch of the compact shapes (ellipses, oblongs)
BAR_ASPECT = (2.5, 5.0)  # length / thickness of a bar: the elongated class, for aspect ratios
BAR_TILT_DEG = 10.0  # bars lie near horizontal or vertical, like most long objects in photos
SNAP = 16  # positions and sizes snap to 1/16 px: a last-bit difference in a machine's exp()
# or cos() then cannot move an edge pixel, so every machine draws the same image
TRIG_SNAP = 65536  # cos, sin and polygon vertices snap to 1/65536, for the same reason
STAR_INNER = 0.45  # inner / outer radius of the five-pointed star
CROSS_ARM = 0.34  # half-thickness of the cross's arms, as a fraction of its half-size
RING_INNER = 0.55  # hole radius / outer radius of the ring
COLOUR_CANDIDATES = 4  # random colours tried per object; the one farthest from what it covers wins
NOISE_MAX = 0.08  # largest per-pixel noise amplitude (uniform, +-), images in [0, 1]
JPEG_QUALITY = 95  # for to_voc: VOC ships JPEGs; 95 and no colour subsampling (4:4:4) keep
# the shapes' colour edges crisp


def _snap(x: float) -> float:
    return round(x * SNAP) / SNAP


def _cos_sin(angle: float) -> tuple[float, float]:
    """cos and sin rounded to 1/65536, for the same reason as SNAP."""
    c = round(math.cos(angle) * TRIG_SNAP) / TRIG_SNAP
    s = round(math.sin(angle) * TRIG_SNAP) / TRIG_SNAP
    return c, s


def _polygon(radii: list[float], start_deg: float) -> np.ndarray:
    """Vertices ``(V, 2)`` at the given radii, evenly spaced in angle from ``start_deg``."""
    n = len(radii)
    angles = [math.radians(start_deg + 360.0 * k / n) for k in range(n)]
    return np.array(
        [[r * c, r * s] for r, (c, s) in zip(radii, map(_cos_sin, angles), strict=True)]
    )


TRIANGLE = _polygon([1.0] * 3, -90.0)  # equilateral, pointing up (image y grows downwards)
STAR = _polygon([1.0, STAR_INNER] * 5, -90.0)


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: inside when a ray towards +u crosses the outline an odd number of times."""
    inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for (ua, va), (ub, vb) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        if va == vb:
            continue  # a horizontal edge is never crossed by a horizontal ray
        straddles = (va > v) != (vb > v)
        crossing_u = ua + (ub - ua) * (v - va) / (vb - va)
        inside ^= straddles & (u < crossing_u)
    return inside


def shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points ``(u, v)`` of the shape's own frame lie inside it; every shape fits [-1, 1]²."""
    if name in ("circle", "ring"):
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= RING_INNER**2) if name == "ring" else r2 <= 1.0
    if name in ("square", "bar"):
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 1.0) & (av <= CROSS_ARM)) | ((au <= CROSS_ARM) & (av <= 1.0))
    if name == "triangle":
        return _inside_polygon(u, v, TRIANGLE)
    if name == "star":
        return _inside_polygon(u, v, STAR)
    raise ValueError(f"unknown shape {name!r}; expected one of {CLASSES[1:]}")


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object. ``box`` is xyxy pixels of its visible pixels; ``size`` its long side."""

    name: str
    label: int
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 pixels; x2 = last visible column + 1
    size: float  # long side of the shape before rotation, pixels
    visible: float  # fraction of the shape's pixels that show (not covered, inside the image)
    area: int  # number of visible pixels
    colour: tuple[float, float, float]  # RGB in [0, 1]


@dataclass
class ShapesScene:
    """One generated image with everything that went into it (``ShapesDataset.scene``)."""

    image: np.ndarray  # (H, W, 3) uint8
    objects: list[ShapeObject] = field(default_factory=list)
    owner: np.ndarray | None = None  # (H, W) int: index into objects of each pixel, -1 background

    def target(self) -> dict[str, Any]:
        """The common target dict (boxes ``(G, 4)`` xyxy pixels, labels ``(G,)``)."""
        return make_target([o.box for o in self.objects], [o.label for o in self.objects])


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A gradient, then maybe stripes and blotches: ``(3, H, W)`` float64 in [0, 1].

    Channels first, so that NumPy's inner loops run along a whole row of one channel.
    """
    ys = (np.arange(h) + 0.5)[:, None]  # (H, 1) pixel centres
    xs = (np.arange(w) + 0.5)[None, :]  # (1, W)
    c0, c1 = rng.random((3, 1, 1)), rng.random((3, 1, 1))
    c, s = _cos_sin(rng.random() * 2 * math.pi)
    lo = min(0.0, w * c) + min(0.0, h * s)  # range of x·c + y·s over the image
    span = max(abs(w * c) + abs(h * s), 1e-9)
    # linear in x and in y, so the (3, H, W) gradient is one broadcast sum of a row and a column
    image = (c0 + (c1 - c0) * ((xs * c - lo) / span)) + (c1 - c0) * (ys * s / span)
    if rng.random() < 0.4:  # stripes: a triangle wave along another direction
        period, theta, strength = 6 + 54 * rng.random(), rng.random() * 2 * math.pi, rng.random()
        colour = rng.random((3, 1, 1))
        c, s = _cos_sin(theta)
        phase = (xs * c + ys * s) / _snap(period)  # (H, W)
        wave = np.abs(2 * (phase - np.floor(phase)) - 1)  # (H, W) in [0, 1]
        wave *= 0.15 + 0.35 * strength
        image += wave * (colour - image)
    if rng.random() < 0.5:  # soft blotches: paraboloid bumps of colour
        side = max(h, w)
        for _ in range(int(rng.integers(1, 6))):
            cy, cx = _snap(rng.random() * h), _snap(rng.random() * w)
            r = _snap((0.05 + 0.3 * rng.random()) * side)
            alpha, colour = 0.3 + 0.5 * rng.random(), rng.random((3, 1, 1))
            y0, y1 = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r))
            x0, x1 = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r))
            d2 = ((ys[y0:y1] - cy) ** 2 + (xs[:, x0:x1] - cx) ** 2) / (r * r)
            weight = alpha * np.clip(1 - d2, 0, None) ** 2  # (h', w')
            patch = image[:, y0:y1, x0:x1]
            patch += weight * (colour - patch)
    return image


def _rasterise(
    name: str, cx: float, cy: float, half_w: float, half_h: float, angle: float
) -> tuple[int, int, np.ndarray]:
    """The shape's mask on the pixel grid around it (may extend past the image).

    Returns ``(x0, y0, mask)``: ``mask[i, j]`` is pixel ``(x0 + j, y0 + i)``.
    """
    reach = math.hypot(half_w, half_h)  # every shape lies inside its [-1, 1]² frame
    x0, y0 = math.floor(cx - reach), math.floor(cy - reach)
    x1, y1 = math.ceil(cx + reach), math.ceil(cy + reach)
    dx = (np.arange(x0, x1) + 0.5 - cx)[None, :]  # (1, w') pixel centres relative to the shape
    dy = (np.arange(y0, y1) + 0.5 - cy)[:, None]  # (h', 1)
    c, s = _cos_sin(angle)
    u = (dx * c + dy * s) / half_w  # (h', w') in the shape's own frame
    v = (dy * c - dx * s) / half_h
    return x0, y0, shape_mask(name, u, v)


def _outline(rng: np.random.Generator, name: str, size: float) -> tuple[float, float, float]:
    """Draw an object's half width, half height (pixels) and tilt (radians) for its long side
    ``size``: bars long and thin near horizontal or vertical, other shapes mildly stretched."""
    if name == "bar":
        thick = size / (BAR_ASPECT[0] + (BAR_ASPECT[1] - BAR_ASPECT[0]) * rng.random())
        half_w, half_h = size / 2, max(_snap(thick), 1.0) / 2
        tilt = (2 * rng.random() - 1) * BAR_TILT_DEG + 90.0 * int(rng.integers(0, 2))
        return half_w, half_h, math.radians(tilt)
    aspect = ASPECT_RANGE[0] * (ASPECT_RANGE[1] / ASPECT_RANGE[0]) ** rng.random()
    long_half, short_half = size / 2, _snap(size / 2 / max(aspect, 1 / aspect))
    half_w, half_h = (short_half, long_half) if aspect > 1 else (long_half, short_half)
    angle = rng.random() * (math.pi if name in ("circle", "ring") else 2 * math.pi)
    return half_w, half_h, angle


def _place(
    rng: np.random.Generator,
    image: np.ndarray,
    owner: np.ndarray,
    placed: list[dict[str, Any]],
    name: str,
    size: float,
) -> None:
    """Try up to PLACEMENT_TRIES positions for one object; at the first where it and every
    object already ``placed`` keep MIN_VISIBLE of their pixels, paint it into ``image``
    ``(3, H, W)`` and ``owner`` ``(H, W)`` and append its record to ``placed``."""
    _, h, w = image.shape
    half_w, half_h, angle = _outline(rng, name, size)
    for _ in range(PLACEMENT_TRIES):
        cx, cy = _snap(rng.random() * w), _snap(rng.random() * h)
        x0, y0, mask = _rasterise(name, cx, cy, half_w, half_h, angle)
        full = int(mask.sum())
        # the part inside the image
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + mask.shape[1], w), min(y0 + mask.shape[0], h)
        if full == 0 or ix1 <= ix0 or iy1 <= iy0:
            continue
        m = mask[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
        shown = int(m.sum())
        if shown < MIN_VISIBLE * full:
            continue
        window = owner[iy0:iy1, ix0:ix1]
        covered = window[m]
        hidden = np.bincount(covered[covered >= 0], minlength=len(placed))
        if any(
            hidden[j] and p["shown"] - hidden[j] < MIN_VISIBLE * p["full"]
            for j, p in enumerate(placed)
        ):
            continue
        for j, p in enumerate(placed):
            p["shown"] -= int(hidden[j])
        region = image[:, iy0:iy1, ix0:ix1]
        under = region[:, m].mean(axis=1)  # (3,) mean colour the object will cover
        candidates = rng.random((COLOUR_CANDIDATES, 3))
        colour = candidates[np.argmax(((candidates - under) ** 2).sum(axis=1))]
        region[:, m] = colour[:, None]
        window[m] = len(placed)
        placed.append(
            {"name": name, "size": size, "full": full, "shown": shown, "colour": colour,
             "window": (ix0, iy0, ix1, iy1)}
        )  # fmt: skip
        return


def _add_noise_and_quantise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Pixel noise of a random amplitude, then 8 bits: ``(3, H, W)`` float64 (changed in
    place) -> ``(H, W, 3)`` uint8."""
    amplitude = NOISE_MAX * rng.random()
    noise = rng.random(image.shape)
    noise -= 0.5
    noise *= 2 * amplitude
    image += noise
    np.clip(image, 0.0, 1.0, out=image)
    image *= 255
    image += 0.5  # then truncation rounds to the nearest level
    return np.ascontiguousarray(image.astype(np.uint8).transpose(1, 2, 0))


def _shape_object(p: dict[str, Any], j: int, owner: np.ndarray) -> ShapeObject:
    """Placed object ``j`` (record ``p``) with the tight box of its visible pixels."""
    ix0, iy0, ix1, iy1 = p["window"]
    mine = owner[iy0:iy1, ix0:ix1] == j
    rows, cols = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
    box = (ix0 + int(cols[0]), iy0 + int(rows[0]), ix0 + int(cols[-1]) + 1, iy0 + int(rows[-1]) + 1)
    return ShapeObject(
        name=p["name"],
        label=CLASSES.index(p["name"]),
        box=box,
        size=p["size"],
        visible=p["shown"] / p["full"],
        area=p["shown"],
        colour=tuple(float(c) for c in p["colour"]),
    )


def generate_scene(
    rng: np.random.Generator,
    image_size: int,
    max_objects: int = MAX_OBJECTS,
    min_size: float = MIN_SIZE_FRAC,
    max_size: float = MAX_SIZE_FRAC,
) -> ShapesScene:
    """Draw one scene from ``rng``. See :class:`ShapesDataset` for what is drawn and why.

    The draws come in a fixed order (background, object count, labels, sizes, then each
    object's outline, positions and colour, then the noise): the same ``rng`` state gives the
    same scene, bit for bit.
    """
    h = w = image_size
    image = _background(rng, h, w)  # (3, H, W) float64
    owner = np.full((h, w), -1, dtype=np.int16)  # which object each pixel shows
    placed: list[dict[str, Any]] = []
    n = int(rng.integers(0, max_objects + 1))
    labels = rng.integers(1, len(CLASSES), size=n)
    sizes = image_size * min_size * (max_size / min_size) ** rng.random(n)  # log-uniform
    for i in np.argsort(-sizes, kind="stable"):  # large first, so small ones sit on top
        _place(rng, image, owner, placed, CLASSES[int(labels[i])], _snap(float(sizes[i])))
    pixels = _add_noise_and_quantise(rng, image)  # (H, W, 3) uint8
    objects = [_shape_object(p, j, owner) for j, p in enumerate(placed)]
    return ShapesScene(image=pixels, objects=objects, owner=owner)


class ShapesDataset:
    """Procedurally drawn detection scenes in the common format; no files, no download.

    Each image holds 0 to ``max_objects`` shapes of :data:`CLASSES` (chosen uniformly), random
    colours (of four candidates, the one most unlike the pixels it covers), random positions,
    tilts and mild stretch; bars are long and thin, near horizontal or vertical. Sizes (the
    long side) are log-uniform in ``[min_size, max_size] * image_size``; larger shapes are
    placed first so that smaller ones partly cover them.

    Occlusion and the image edge: an object is kept only where at least ``MIN_VISIBLE`` (40%)
    of its pixels stay visible, counting both the shapes drawn over it and the part cut off by
    the image border. A position that would break this for the new object or for any earlier
    one is not used; after ``PLACEMENT_TRIES`` failed positions the object is left out (so an
    image may have fewer objects than drawn). So every object a labeller could see is labelled,
    and no label points at a shape that is hidden.

    Boxes are what a labeller would draw: the tight box of the object's VISIBLE pixels, in
    integer pixels, ``x1`` = first column, ``x2`` = last column + 1 (same for rows). Masks use
    pixel centres, with no anti-aliasing, so every box edge touches a pixel of the object.

    Args:
        num_images: the dataset's length.
        image_size: side of the square images, pixels.
        seed: selects the dataset; image ``i`` of a split depends only on ``(seed, split, i)``.
        split: "train", "val" or "test": separate streams of images for the same seed.
        transforms: optional callable ``(image, target) -> (image, target)``, e.g.
            :func:`ssdlib.data.train_transform`.
        max_objects: at most this many objects per image (uniform count 0..max_objects).
        min_size, max_size: object size range as fractions of ``image_size``.

    Items are ``(image float32 (3, H, W) in [0, 1], {"boxes": (G, 4) xyxy pixels float32,
    "labels": (G,) int64 in 1..7, "image_id": index})``.
    """

    def __init__(
        self,
        num_images: int,
        image_size: int = 300,
        seed: int = 0,
        split: str = "train",
        transforms: Callable[[Tensor, dict], tuple[Tensor, dict]] | None = None,
        max_objects: int = MAX_OBJECTS,
        min_size: float = MIN_SIZE_FRAC,
        max_size: float = MAX_SIZE_FRAC,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        if int(num_images) != num_images or num_images < 0:
            raise ValueError(f"num_images must be a non-negative integer, got {num_images!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
        if max_objects < 0:
            raise ValueError(f"max_objects must be >= 0, got {max_objects}")
        if not 0 < min_size <= max_size <= 1:
            raise ValueError(f"need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
        self.classes = list(CLASSES)
        self.num_images = int(num_images)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.split = split
        self.transforms = transforms
        self.max_objects = int(max_objects)
        self.min_size = float(min_size)
        self.max_size = float(max_size)

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(num_images={self.num_images}, image_size={self.image_size}, "
            f"seed={self.seed}, split={self.split!r}, classes={len(self.classes) - 1})"
        )

    def _check_index(self, index: int) -> int:
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return index % self.num_images if self.num_images else index

    def scene(self, index: int) -> ShapesScene:
        """Image ``index`` as uint8 pixels with every object's details (no transforms)."""
        index = self._check_index(index)
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        return generate_scene(rng, self.image_size, self.max_objects, self.min_size, self.max_size)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        scene = self.scene(index)
        image, target = uint8_to_tensor(scene.image), scene.target()
        target["image_id"] = self._check_index(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    # ---- files, so that the real-data loaders have something to load ----

    def _file_id(self, index: int) -> str:
        return f"{self.split}_{index:06d}"

    def to_coco(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        """Write the images (PNG) and a COCO instances JSON; return ``(images_dir, json_path)``.

        Layout: ``directory/{split}/{split}_000000.png`` and
        ``directory/annotations/instances_{split}.json``. Category ids are the labels 1..7;
        ``bbox`` is ``[x, y, w, h]`` in pixels (integers here), ``area`` the visible pixel count.
        PNG is lossless, so ``CocoDataset(*ds.to_coco(d))[i]`` equals ``ds[i]``.
        """
        directory = Path(directory)
        images_dir = directory / self.split
        images_dir.mkdir(parents=True, exist_ok=True)
        (directory / "annotations").mkdir(exist_ok=True)
        images, annotations = [], []
        for i in range(len(self)):
            scene = self.scene(i)
            name = f"{self._file_id(i)}.png"
            Image.fromarray(scene.image).save(images_dir / name)
            images.append(
                {
                    "id": i + 1,
                    "file_name": name,
                    "width": self.image_size,
                    "height": self.image_size,
                }
            )
            for obj in scene.objects:
                x1, y1, x2, y2 = obj.box
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": obj.label,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": obj.area,
                        "iscrowd": 0,
                    }
                )
        categories = [
            {"id": k, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASSES) if k > 0
        ]
        info = {"description": f"ssdlib ShapesDataset (seed {self.seed}, split {self.split})"}
        data = {
            "info": info,
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        json_path = directory / "annotations" / f"instances_{self.split}.json"
        json_path.write_text(json.dumps(data))
        return images_dir, json_path

    def to_voc(self, directory: str | os.PathLike, year: str = "2007") -> Path:
        """Write a VOCdevkit tree; return its ``VOCdevkit/VOC{year}`` folder.

        ``JPEGImages/{split}_000000.jpg``, ``Annotations/{split}_000000.xml`` with 1-based,
        inclusive pixel coordinates (``xmin = x1 + 1``, ``xmax = x2``), and
        ``ImageSets/Main/{split}.txt``. ``trainval.txt`` lists every id of ``train.txt`` and
        ``val.txt`` present, so writing a train and a val dataset into one folder gives a full
        tree. JPEG is lossy: pixels come back close, boxes and labels exactly.
        """
        root = Path(directory) / "VOCdevkit" / f"VOC{year}"
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        ids = []
        for i in range(len(self)):
            scene = self.scene(i)
            file_id = self._file_id(i)
            Image.fromarray(scene.image).save(
                root / "JPEGImages" / f"{file_id}.jpg", quality=JPEG_QUALITY, subsampling=0
            )
            self._voc_xml(scene, file_id, year).write(root / "Annotations" / f"{file_id}.xml")
            ids.append(file_id)
        lists = root / "ImageSets" / "Main"
        (lists / f"{self.split}.txt").write_text("".join(f"{i}\n" for i in ids))
        trainval = []
        for part in ("train", "val"):
            if (lists / f"{part}.txt").exists():
                trainval += (lists / f"{part}.txt").read_text().split()
        if trainval:
            (lists / "trainval.txt").write_text("".join(f"{i}\n" for i in trainval))
        return root

    def _voc_xml(self, scene: ShapesScene, file_id: str, year: str) -> ET.ElementTree:
        def sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
            node = ET.SubElement(parent, tag)
            if text is not None:
                node.text = str(text)
            return node

        ann = ET.Element("annotation")
        sub(ann, "folder", f"VOC{year}")
        sub(ann, "filename", f"{file_id}.jpg")
        source = sub(ann, "source")
        sub(source, "database", f"ssdlib ShapesDataset (seed {self.seed}, split {self.split})")
        size = sub(ann, "size")
        for tag, value in (("width", self.image_size), ("height", self.image_size), ("depth", 3)):
            sub(size, tag, value)
        sub(ann, "segmented", 0)
        for obj in scene.objects:
            x1, y1, x2, y2 = obj.box
            node = sub(ann, "object")
            sub(node, "name", obj.name)
            sub(node, "pose", "Unspecified")
            at_edge = min(x1, y1) == 0 or max(x2, y2) == self.image_size
            sub(node, "truncated", int(at_edge))
            sub(node, "difficult", 0)
            box = sub(node, "bndbox")
            for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                sub(box, tag, value)
        ET.indent(ann)
        return ET.ElementTree(ann)
