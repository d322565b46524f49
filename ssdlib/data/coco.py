"""COCO-format detection files (SSD §3.4, "COCO"), and any dataset written in that format.

A COCO instances file lists ``images`` (id, file_name, width, height), ``annotations`` (id,
image_id, category_id, ``bbox = [x, y, w, h]`` in pixels, area, iscrowd) and ``categories``
(id, name). COCO's category ids are not contiguous (1..90 for 80 classes), so they are mapped to
labels 1..C in order of id; ``.cat_ids[label - 1]`` maps back, for writing results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .common import BACKGROUND_NAME, BoxChecker, DatasetError, make_target, read_image


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: malformed JSON: {err}") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: expected a list under {key!r}, got {data.get(key)!r:.60}")
    return data


def _field(record: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise DatasetError(f"{where}: missing {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(
            f"{where}: {key!r} is {value!r:.60}, not {getattr(kind, '__name__', kind)}"
        )
    return value


def _read_categories(categories: list[Any], file: Path) -> dict[int, str]:
    """Category id -> name, each id once."""
    names: dict[int, str] = {}
    for k, cat in enumerate(categories):
        where = f"{file}: category {k}"
        cat_id = _field(cat, "id", int, where)
        if cat_id in names:
            raise DatasetError(f"{where}: category id {cat_id} appears twice")
        names[cat_id] = str(_field(cat, "name", str, where))
    return names


def _check_images(images: list[Any], file: Path) -> None:
    """Every image record has a unique int ``id``, a ``file_name`` and a positive size."""
    seen: set[int] = set()
    for k, img in enumerate(images):
        where = f"{file}: image {k}"
        image_id = _field(img, "id", int, where)
        if image_id in seen:
            raise DatasetError(f"{where}: image id {image_id} appears twice")
        _field(img, "file_name", str, where)
        for key in ("width", "height"):
            if _field(img, key, int, where) <= 0:
                raise DatasetError(f"{where}: {key} is {img[key]}, must be > 0")
        seen.add(image_id)


def _xywh(ann: dict[str, Any], where: str) -> tuple[float, float, float, float]:
    """The annotation's ``bbox = [x, y, w, h]`` pixels, checked to be 4 numbers."""
    bbox = _field(ann, "bbox", list, where)
    if len(bbox) != 4 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in bbox
    ):
        raise DatasetError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r:.80}")
    x, y, w, h = (float(v) for v in bbox)
    return x, y, w, h


class CocoDataset:
    """A COCO instances file and its images, in the common format.

    Args:
        images_dir: the folder the ``file_name`` entries are relative to.
        annotation_file: the instances JSON.
        transforms: optional ``(image, target) -> (image, target)``.

    Items: ``(image (3, H, W) float32 in [0, 1], {"boxes": (G, 4) xyxy pixels, "labels": (G,)
    int64 in 1..C, "area": (G,) float32 (the file's ``area``, else the box's), "image_id": the
    COCO image id})``. Images are in order of id; ``.classes`` = ``["__background__", names of
    the categories in order of id]``; ``.cat_ids[label - 1]`` is the category id of a label.

    Crowd annotations (``iscrowd: 1``, one box around a group of objects) are skipped: SSD
    trains and is evaluated on single objects only (COCO's evaluation ignores crowds);
    ``.num_crowd_skipped`` counts them.

    Bad input, checked when the dataset is built (images are read when an item is loaded):
    a missing file raises ``FileNotFoundError``; malformed JSON, a missing or mistyped field, an
    annotation whose image or category does not exist, or a box entirely outside its image raise
    :class:`~ssdlib.data.common.DatasetError` naming the file and the annotation id. Boxes with
    zero width or height (COCO has a few) are skipped and boxes partly outside the image are
    clipped, with ONE warning for the whole file. An image with no annotations is valid.
    An unreadable image, or one whose size differs from the JSON's, raises when loaded.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        annotation_file: str | os.PathLike,
        transforms: Callable[[Tensor, dict], tuple[Tensor, dict]] | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        self.transforms = transforms
        data = _load_json(self.annotation_file)
        categories = _read_categories(data["categories"], self.annotation_file)
        self.cat_ids = sorted(categories)
        self.classes = [BACKGROUND_NAME] + [categories[c] for c in self.cat_ids]
        _check_images(data["images"], self.annotation_file)
        self.images: list[dict[str, Any]] = sorted(data["images"], key=lambda img: img["id"])
        self.image_ids = [img["id"] for img in self.images]
        per_image, self.num_crowd_skipped = self._read_annotations(data["annotations"])
        self._targets = [
            (
                np.array([a[0] for a in anns], dtype=np.float32).reshape(-1, 4),
                np.array([a[1] for a in anns], dtype=np.int64),
                np.array([a[2] for a in anns], dtype=np.float32),
            )
            for anns in per_image
        ]

    def _read_annotations(
        self, annotations: list[Any]
    ) -> tuple[list[list[tuple[list[float], int, float]]], int]:
        """Each image's ``(xyxy pixels, label, area)`` per kept annotation, and the number of
        crowd annotations skipped; boxes pass the :class:`BoxChecker` (one warning in all)."""
        file = self.annotation_file
        label_of = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        index_of = {image_id: i for i, image_id in enumerate(self.image_ids)}
        per_image: list[list[tuple[list[float], int, float]]] = [[] for _ in self.images]
        num_crowd = 0
        checker = BoxChecker(f"CocoDataset({file})", skip_degenerate=True)
        for k, ann in enumerate(annotations):
            ann_id = ann.get("id", f"#{k}") if isinstance(ann, dict) else f"#{k}"
            where = f"{file}: annotation {ann_id}"
            image_id = _field(ann, "image_id", int, where)
            if image_id not in index_of:
                raise DatasetError(f"{where}: image_id {image_id} is not in 'images'")
            img = self.images[index_of[image_id]]
            where = f"{where} (image {img['file_name']})"
            cat_id = _field(ann, "category_id", int, where)
            if cat_id not in label_of:
                raise DatasetError(f"{where}: category_id {cat_id} is not in 'categories'")
            if ann.get("iscrowd", 0):
                num_crowd += 1
                continue
            x, y, w, h = _xywh(ann, where)
            xyxy = checker.check((x, y, x + w, y + h), img["width"], img["height"], where)
            if xyxy is None:
                continue
            area = ann.get("area")
            if not isinstance(area, int | float) or isinstance(area, bool):
                area = (xyxy[2] - xyxy[0]) * (xyxy[3] - xyxy[1])
            per_image[index_of[image_id]].append((xyxy, label_of[cat_id], float(area)))
        checker.warn(stacklevel=4)
        return per_image, num_crowd

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.annotation_file)!r}, images={len(self)}, "
            f"classes={len(self.classes) - 1})"
        )

    def image_path(self, index: int) -> Path:
        return self.images_dir / self.images[index]["file_name"]

    def load_target(self, index: int) -> dict[str, Any]:
        """The target of image ``index`` without reading the image."""
        boxes, labels, area = self._targets[index]
        return make_target(
            boxes, labels, area=torch.from_numpy(area.copy()), image_id=self.image_ids[index]
        )

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        path, record = self.image_path(index), self.images[index]
        image = read_image(path)
        if tuple(image.shape[1:]) != (record["height"], record["width"]):
            raise DatasetError(
                f"{path} is {image.shape[2]}x{image.shape[1]} pixels but "
                f"{self.annotation_file} says {record['width']}x{record['height']}: "
                "the boxes would be wrong"
            )
        target = self.load_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
