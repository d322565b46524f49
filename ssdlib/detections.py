"""Detections and ground truth in the common format, read into NumPy and checked.

Every metric and every reading of a detector takes the same input: one dict per image, in
image order, for the predictions (``boxes`` ``(D, 4)`` xyxy pixels, ``scores``, ``labels``)
and for the targets (``boxes`` ``(G, 4)``, ``labels``, optional ``difficult``, ``area``,
``iscrowd``), as tensors or arrays. :func:`read_inputs` turns them into :class:`ImageArrays`
and fails loudly on a malformed one; :func:`iou_numpy` is the IoU they are compared with.
Used by :mod:`ssdlib.voc_metric`, :mod:`ssdlib.coco_metric` and :mod:`ssdlib.report`.

Boxes are xyxy in pixels throughout. Letters: ``D`` detections, ``G`` ground-truth boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .boxes import box_iou


def _to_numpy(x: Any, dtype: type = np.float64) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


@dataclass
class ImageArrays:
    """One image's boxes as NumPy arrays (float64 boxes, so IoU matches pycocotools)."""

    boxes: np.ndarray  # (N, 4) xyxy pixels
    labels: np.ndarray  # (N,) int64
    scores: np.ndarray | None = None  # (N,) predictions only
    difficult: np.ndarray | None = None  # (N,) bool, ground truth only
    area: np.ndarray | None = None  # (N,) ground truth only, for COCO's size ranges
    iscrowd: np.ndarray | None = None  # (N,) bool, ground truth only


def _read_image(d: dict[str, Any], where: str, is_prediction: bool) -> ImageArrays:
    if not isinstance(d, dict):
        raise TypeError(f"{where}: expected a dict with 'boxes' and 'labels', got {type(d)}")
    required = ("boxes", "labels", "scores") if is_prediction else ("boxes", "labels")
    missing = [k for k in required if k not in d]
    if missing:
        raise KeyError(f"{where}: missing {missing}; has {sorted(d)}")
    boxes = _to_numpy(d["boxes"])
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)  # an empty list or a (0,) tensor: no boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: expected boxes of shape (N, 4), got {boxes.shape}")
    n = len(boxes)
    if not np.isfinite(boxes).all():
        i = int(np.flatnonzero(~np.isfinite(boxes).all(axis=1))[0])
        raise ValueError(f"{where}: box {i} = {boxes[i].tolist()} is not finite")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: box {i} = {boxes[i].tolist()} has x2 < x1 or y2 < y1 (xyxy?)")
    out = ImageArrays(boxes=boxes, labels=_to_numpy(d["labels"], np.int64).reshape(-1))
    if out.labels.shape != (n,):
        raise ValueError(f"{where}: {n} boxes but labels of shape {out.labels.shape}")
    if n and out.labels.min() < 1:
        raise ValueError(f"{where}: labels must be >= 1 (0 is background), got {out.labels}")
    fields = ("scores",) if is_prediction else ("difficult", "area", "iscrowd")
    for key in fields:
        if key not in d:
            continue
        dtype = bool if key in ("difficult", "iscrowd") else np.float64
        value = _to_numpy(d[key], dtype).reshape(-1)
        if value.shape != (n,):
            raise ValueError(f"{where}: {n} boxes but {key} of shape {value.shape}")
        setattr(out, key, value)
    return out


def read_inputs(
    predictions: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]
) -> tuple[list[ImageArrays], list[ImageArrays]]:
    """Both lists as :class:`ImageArrays`, one per image, after checking every dict: the keys,
    the shapes, finite xyxy boxes and labels >= 1. The error names the bad image and value."""
    if len(predictions) != len(targets):
        raise ValueError(
            f"got {len(predictions)} prediction dicts for {len(targets)} target dicts; "
            "expected one of each per image"
        )
    preds = [_read_image(p, f"predictions[{i}]", True) for i, p in enumerate(predictions)]
    gts = [_read_image(t, f"targets[{i}]", False) for i, t in enumerate(targets)]
    return preds, gts


def evaluated_classes(
    preds: list[ImageArrays], gts: list[ImageArrays], class_names: Sequence[str] | None
) -> list[int]:
    """The labels to evaluate: 1..K-1 when names are given, else every label that appears."""
    seen = {int(c) for im in [*preds, *gts] for c in im.labels}
    if class_names is None:
        return sorted(seen)
    num_classes = len(class_names)
    outside = sorted(c for c in seen if c >= num_classes)
    if outside:
        raise ValueError(
            f"labels {outside} are outside the {num_classes} class names (index 0 = background)"
        )
    return list(range(1, num_classes))


def class_key(label: int, class_names: Sequence[str] | None) -> str:
    """How results name a class: its name, or the label as a string when there are none."""
    return str(class_names[label]) if class_names is not None else str(label)


def iou_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``(N, 4)`` x ``(M, 4)`` -> ``(N, M)``, 0 where the union is empty:
    :func:`ssdlib.boxes.box_iou` on the arrays."""
    return box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
