"""Evaluation: how good are the detections? (SSD §3, "Experimental Results").

The paper reports two kinds of mean average precision (mAP):

* **PASCAL VOC** (Tables 1-4): a detection is correct when its IoU with an unclaimed ground truth
  of its class is at least 0.5. Per class, the detections are sorted by score, which traces a
  precision-recall curve; its area is the class's AP, and mAP is the mean over classes. Boxes
  marked *difficult* are neither required nor punished: a detection on one counts as nothing.
* **COCO** (Table 5): the same, averaged over ten IoU thresholds 0.5:0.05:0.95, with 101 recall
  points and at most 100 detections per image, also split by object size. We do not re-implement
  it: :func:`coco_map` hands the boxes to pycocotools, the reference everyone reports.

:func:`precision_recall` gives the curves themselves (for the notebooks' plots),
:func:`average_precision` the two ways VOC measures their area, :func:`evaluate` runs a model over
a dataset and computes both metrics.

Boxes are xyxy in pixels throughout. Letters: ``D`` detections, ``G`` ground-truth boxes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .nms import NMS_IOU_THRESHOLD, SCORE_THRESHOLD, TOP_K

VOC_IOU_THRESHOLD = 0.5  # VOC: "overlap ... must exceed 50%" (the devkit tests >= 0.5)
VOC07_RECALL_POINTS = np.linspace(0, 1, 11)  # VOC2007 samples precision at recall 0, 0.1, ..., 1
COCO_STAT_NAMES = (  # the order of COCOeval.stats, printed by COCOeval.summarize()
    "map",  # AP @ IoU 0.50:0.95, all areas, 100 detections per image: "COCO mAP"
    "map_50",
    "map_75",
    "map_small",  # area < 32² pixels
    "map_medium",  # 32² <= area < 96²
    "map_large",  # area >= 96²
    "mar_1",  # average recall with at most 1, 10, 100 detections per image
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)
COCO_NO_GROUND_TRUTH = -1  # what pycocotools reports where a metric has no ground truth; we say nan


# -- inputs ------------------------------------------------------------------------------------


def _to_numpy(x: Any, where: str, dtype: type = np.float64) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


@dataclass
class _Image:
    """One image's boxes as NumPy arrays (float64 boxes, so IoU matches pycocotools)."""

    boxes: np.ndarray  # (N, 4) xyxy pixels
    labels: np.ndarray  # (N,) int64
    scores: np.ndarray | None = None  # (N,) predictions only
    difficult: np.ndarray | None = None  # (N,) bool, ground truth only
    area: np.ndarray | None = None  # (N,) ground truth only, for COCO's size ranges
    iscrowd: np.ndarray | None = None  # (N,) bool, ground truth only


def _read_image(d: dict[str, Any], where: str, is_prediction: bool) -> _Image:
    if not isinstance(d, dict):
        raise TypeError(f"{where}: expected a dict with 'boxes' and 'labels', got {type(d)}")
    required = ("boxes", "labels", "scores") if is_prediction else ("boxes", "labels")
    missing = [k for k in required if k not in d]
    if missing:
        raise KeyError(f"{where}: missing {missing}; has {sorted(d)}")
    boxes = _to_numpy(d["boxes"], where)
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
    out = _Image(boxes=boxes, labels=_to_numpy(d["labels"], where, np.int64).reshape(-1))
    if out.labels.shape != (n,):
        raise ValueError(f"{where}: {n} boxes but labels of shape {out.labels.shape}")
    if n and out.labels.min() < 1:
        raise ValueError(f"{where}: labels must be >= 1 (0 is background), got {out.labels}")
    fields = ("scores",) if is_prediction else ("difficult", "area", "iscrowd")
    for key in fields:
        if key not in d:
            continue
        dtype = bool if key in ("difficult", "iscrowd") else np.float64
        value = _to_numpy(d[key], where, dtype).reshape(-1)
        if value.shape != (n,):
            raise ValueError(f"{where}: {n} boxes but {key} of shape {value.shape}")
        setattr(out, key, value)
    return out


def _read_inputs(
    predictions: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]
) -> tuple[list[_Image], list[_Image]]:
    if len(predictions) != len(targets):
        raise ValueError(
            f"got {len(predictions)} prediction dicts for {len(targets)} target dicts; "
            "expected one of each per image"
        )
    preds = [_read_image(p, f"predictions[{i}]", True) for i, p in enumerate(predictions)]
    gts = [_read_image(t, f"targets[{i}]", False) for i, t in enumerate(targets)]
    return preds, gts


def _class_ids(
    preds: list[_Image], gts: list[_Image], class_names: Sequence[str] | None
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


def _class_key(label: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[label]) if class_names is not None else str(label)


# -- COCO: pycocotools -----------------------------------------------------------------------


def _coco_objects(preds: list[_Image], gts: list[_Image], class_ids: list[int]):
    """Ground truth and results as pycocotools ``COCO`` objects (ids start at 1: COCOeval
    treats a matched id of 0 as "unmatched")."""
    from pycocotools.coco import COCO  # imported here: only this metric needs it

    images = [{"id": i + 1} for i in range(len(gts))]
    categories = [{"id": c, "name": str(c)} for c in class_ids]
    annotations = []
    for i, g in enumerate(gts):
        wh = g.boxes[:, 2:] - g.boxes[:, :2]  # (G, 2)
        area = g.area if g.area is not None else wh[:, 0] * wh[:, 1]
        crowd = g.iscrowd if g.iscrowd is not None else np.zeros(len(g.boxes), bool)
        for box, size, label, a, c in zip(
            g.boxes.tolist(), wh.tolist(), g.labels.tolist(), area.tolist(), crowd.tolist(),
            strict=True,
        ):  # fmt: skip
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label,
                    "bbox": [box[0], box[1], size[0], size[1]],  # COCO: x, y, w, h
                    "area": a,
                    "iscrowd": int(c),
                }
            )
    gt = COCO()
    gt.dataset = {"images": images, "categories": categories, "annotations": annotations}
    gt.createIndex()

    results = []
    for i, p in enumerate(preds):
        wh = p.boxes[:, 2:] - p.boxes[:, :2]
        for box, size, label, score in zip(
            p.boxes.tolist(), wh.tolist(), p.labels.tolist(), p.scores.tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": label,
                    "bbox": [box[0], box[1], size[0], size[1]],
                    "score": score,
                }
            )
    if results:
        dt = gt.loadRes(results)
    else:  # loadRes reads results[0] and fails on an empty list; an empty result set is valid
        dt = COCO()
        dt.dataset = {
            "images": list(images),
            "categories": copy.deepcopy(categories),
            "annotations": [],
        }
        dt.createIndex()
    return gt, dt


def _nan_if_missing(values: np.ndarray) -> float:
    valid = values[values > COCO_NO_GROUND_TRUTH]
    return float(np.mean(valid)) if valid.size else math.nan


def coco_map(
    predictions: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    class_names: Sequence[str] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """COCO-style mAP, computed by pycocotools' ``COCOeval`` (the "bbox" protocol).

    Args:
        predictions: one dict per image: ``boxes`` ``(D, 4)`` xyxy pixels, ``scores`` ``(D,)``,
            ``labels`` ``(D,)`` in 1..K-1. ``D`` may be 0.
        targets: one dict per image, same order: ``boxes`` ``(G, 4)`` xyxy pixels, ``labels``
            ``(G,)``; optional ``area`` ``(G,)`` (COCO's segment area; default box area) and
            ``iscrowd`` ``(G,)``. ``G`` may be 0. ``difficult`` is ignored: COCO counts every box.
        class_names: index 0 background; when given, every class 1..K-1 is evaluated and the
            per-class results are keyed by name (else by label, as a string).
        verbose: let pycocotools print its progress and its 12-line summary.

    Returns:
        A dict with the twelve ``COCOeval.stats`` (names in :data:`COCO_STAT_NAMES`: ``map``,
        ``map_50``, ``map_75``, ``map_small``, ``map_medium``, ``map_large``, ``mar_1`` ...),
        ``ap_per_class`` and ``ap50_per_class`` (class -> AP @ 0.5:0.95 and @ 0.5), and
        ``summary``, the 12-line table ``COCOeval.summarize()`` prints. A metric
        without any ground truth (a class, or a size range, that never occurs) is ``nan`` where
        pycocotools prints -1. With no ground truth at all, every value is nan.
    """
    from pycocotools.cocoeval import COCOeval

    preds, gts = _read_inputs(predictions, targets)
    class_ids = _class_ids(preds, gts, class_names)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        gt, dt = _coco_objects(preds, gts, class_ids)
        if not gt.dataset["annotations"]:  # nothing to find: every metric is undefined
            undefined = {_class_key(c, class_names): math.nan for c in class_ids}
            return {
                **dict.fromkeys(COCO_STAT_NAMES, math.nan),
                "ap_per_class": undefined,
                "ap50_per_class": dict(undefined),
                "summary": "no ground truth: every COCO metric is undefined",
            }
        coco_eval = COCOeval(gt, dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()  # pycocotools' own 12-line table, kept for report.coco_summary
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()
    if verbose:
        print(summary.getvalue(), end="")
    stats = [math.nan if s == COCO_NO_GROUND_TRUTH else float(s) for s in coco_eval.stats]
    out: dict[str, Any] = dict(zip(COCO_STAT_NAMES, stats, strict=True))
    out["summary"] = summary.getvalue().rstrip("\n")
    # precision: (T IoUs, R recall points, K classes, A areas, M max-dets); area "all" is index
    # 0, maxDets=100 is the last; IoU 0.5 is index 0.
    precision = coco_eval.eval["precision"]
    cat_ids = list(coco_eval.params.catIds)
    out["ap_per_class"] = {
        _class_key(c, class_names): _nan_if_missing(precision[:, :, cat_ids.index(c), 0, -1])
        for c in class_ids
    }
    out["ap50_per_class"] = {
        _class_key(c, class_names): _nan_if_missing(precision[0, :, cat_ids.index(c), 0, -1])
        for c in class_ids
    }
    return out


# -- VOC: precision-recall curves and their area ---------------------------------------------


def _iou_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``(N, 4)`` x ``(M, 4)`` -> ``(N, M)``, 0 where the union is empty."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1  # status of each detection under VOC's rules


def voc_match(
    predictions: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    iou_threshold: float = VOC_IOU_THRESHOLD,
) -> dict[str, np.ndarray]:
    """Label every detection true positive, false positive or ignored, as the VOC devkit does.

    Rules (per class, detections taken in order of falling score over the whole dataset): a
    detection finds the ground truth of its class in its image with the highest IoU. If that IoU
    is below ``iou_threshold``: false positive. Else, if the box is *difficult*: ignored (neither
    true nor false positive). Else the first detection to reach it is the true positive and any
    later one a duplicate, a false positive. (Unlike COCO, a duplicate does not fall back to its
    second-best box.) So only the first claim on each box matters, which this finds for all
    detections at once with one sort instead of a loop.

    IoU uses continuous coordinates; the devkit adds one pixel to widths and heights
    (inclusive integer pixels), which changes nothing but the IoU of boxes a few pixels wide.

    Args:
        predictions, targets: as for :func:`coco_map`; ``targets`` may hold ``difficult`` ``(G,)``.
        iou_threshold: the overlap a true positive needs.

    Returns:
        Arrays over all ``N`` detections, sorted by falling score (ties: image order, then order
        within the image): ``image`` ``(N,)``, ``label`` ``(N,)``, ``score`` ``(N,)``, ``status``
        ``(N,)`` (:data:`TRUE_POSITIVE` 1, :data:`FALSE_POSITIVE` 0, :data:`IGNORED` -1), ``iou``
        ``(N,)`` with the best same-class ground truth (-1 if none); and ``num_gt`` ``(C,)``
        counting the non-difficult boxes of each label 0..C-1.
    """
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    return _voc_match(*_read_inputs(predictions, targets), iou_threshold)


def _voc_match(preds: list[_Image], gts: list[_Image], iou_threshold: float) -> dict[str, Any]:
    image = np.repeat(np.arange(len(preds)), [len(p.boxes) for p in preds])  # (N,)
    label = np.concatenate([np.zeros(0, np.int64)] + [p.labels for p in preds])
    score = np.concatenate([np.zeros(0)] + [p.scores for p in preds])
    iou = np.full(len(score), -1.0)  # (N,) best IoU with a same-class ground truth
    gt_idx = np.zeros(len(score), np.int64)  # (N,) which ground truth that is
    on_difficult = np.zeros(len(score), bool)  # (N,) and whether it is difficult
    start = 0
    for p, g in zip(preds, gts, strict=True):
        d, stop = len(p.boxes), start + len(p.boxes)
        if d and len(g.boxes):
            overlap = _iou_numpy(p.boxes, g.boxes)  # (D, G)
            overlap[p.labels[:, None] != g.labels[None, :]] = -1.0  # other classes never match
            j = overlap.argmax(axis=1)  # (D,) first best on ties, as the devkit's max()
            iou[start:stop] = overlap[np.arange(d), j]
            gt_idx[start:stop] = j
            if g.difficult is not None:
                on_difficult[start:stop] = g.difficult[j]
        start = stop

    order = np.argsort(-score, kind="stable")  # falling score; ties keep image order
    image, label, score = image[order], label[order], score[order]
    iou, gt_idx, on_difficult = iou[order], gt_idx[order], on_difficult[order]

    reaches = iou >= iou_threshold
    status = np.full(len(score), FALSE_POSITIVE, dtype=np.int8)
    status[reaches & on_difficult] = IGNORED
    claims = np.flatnonzero(reaches & ~on_difficult)  # detections that claim a box, in order
    # A ground truth is (image, index); the first claim on each is the true positive.
    most_gt = max((len(g.boxes) for g in gts), default=0)
    _, first = np.unique(image[claims] * (most_gt + 1) + gt_idx[claims], return_index=True)
    status[claims[first]] = TRUE_POSITIVE

    counted = np.concatenate(
        [np.zeros(0, np.int64)]
        + [g.labels[~g.difficult] if g.difficult is not None else g.labels for g in gts]
    )
    num_labels = int(max(counted.max(initial=0), label.max(initial=0))) + 1
    return {
        "image": image,
        "label": label,
        "score": score,
        "status": status,
        "iou": iou,
        "num_gt": np.bincount(counted, minlength=num_labels),
    }


def average_precision(precision: np.ndarray, recall: np.ndarray, method: str = "all") -> float:
    """The area under one class's precision-recall curve, the two ways VOC has defined it.

    Both first make precision monotone: the precision at recall r becomes the best precision at
    any recall >= r (a detector can always stop earlier, so the curve's zig-zags do not count).

    * ``"11point"`` (VOC2007, the paper's tables): the mean of that precision at the 11 recalls
      0, 0.1, ..., 1.0.
    * ``"all"`` (VOC2010 onwards, and COCO in spirit): the exact area under the monotone curve,
      summed over every recall where it steps.

    They differ because 11 samples approximate the area: with few objects per class the coarse
    grid over- or under-counts the steps between samples (e.g. precision 1 up to recall 0.5 and
    0.5 after gives 0.75 exactly, but 0.773 with 11 points). 11-point numbers are a point or so
    higher on VOC; compare like with like.

    Args:
        precision: ``(N,)`` precision after each detection (sorted by falling score).
        recall: ``(N,)`` recall after each detection, non-decreasing, in [0, 1].
        method: ``"all"`` or ``"11point"``.

    Returns:
        AP in [0, 1]; 0 when there are no detections.
    """
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if precision.shape != recall.shape or precision.ndim != 1:
        raise ValueError(
            f"precision and recall must be 1-D of one length, got {precision.shape} and "
            f"{recall.shape}"
        )
    if recall.size and np.any(np.diff(recall) < 0):
        raise ValueError("recall must be non-decreasing (detections sorted by falling score)")
    if method == "11point":
        # The best precision at recall >= t, for each t; 0 where recall never reaches t.
        best = [precision[recall >= t].max(initial=0.0) for t in VOC07_RECALL_POINTS]
        return float(np.mean(best))
    if method != "all":
        raise ValueError(f"method must be 'all' or '11point', got {method!r}")
    # Sentinels: recall 0 -> 1, precision 0 at both ends; then the monotone envelope.
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])  # where recall moves
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@dataclass
class PRCurve:
    """One class's precision-recall curve at one IoU threshold (VOC rules)."""

    label: int  # class index, 1..K-1
    name: str  # class name (the label as a string when no names were given)
    num_gt: int  # non-difficult ground-truth boxes: the denominator of recall
    scores: np.ndarray  # (N,) detection scores, falling (ignored detections dropped)
    precision: np.ndarray  # (N,) precision after each detection
    recall: np.ndarray  # (N,) recall after each detection
    ap: float  # all-point AP (VOC2010+); nan when num_gt is 0
    ap_11point: float  # 11-point AP (VOC2007); nan when num_gt is 0

    def __repr__(self) -> str:
        return (
            f"PRCurve({self.name!r}, num_gt={self.num_gt}, detections={len(self.scores)}, "
            f"ap={self.ap:.4f}, ap_11point={self.ap_11point:.4f})"
        )


def precision_recall(
    predictions: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    class_names: Sequence[str] | None = None,
    iou_threshold: float = VOC_IOU_THRESHOLD,
) -> dict[int, PRCurve]:
    """The precision-recall curve of every class, under VOC's matching rules (:func:`voc_match`).

    Args:
        predictions, targets: as for :func:`coco_map`; ``targets`` may hold ``difficult``.
        class_names: index 0 background; when given, every class 1..K-1 gets a curve.
        iou_threshold: the overlap a true positive needs (0.5 for VOC).

    Returns:
        label -> :class:`PRCurve`. A class without ground truth has nan AP.
    """
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    preds, gts = _read_inputs(predictions, targets)
    class_ids = _class_ids(preds, gts, class_names)
    m = _voc_match(preds, gts, iou_threshold)
    curves = {}
    for c in class_ids:
        mine = (m["label"] == c) & (m["status"] != IGNORED)  # already in falling-score order
        tp = np.cumsum(m["status"][mine] == TRUE_POSITIVE)  # (N,)
        fp = np.cumsum(m["status"][mine] == FALSE_POSITIVE)
        num_gt = int(m["num_gt"][c]) if c < len(m["num_gt"]) else 0
        precision = tp / np.maximum(tp + fp, 1)
        recall = tp / num_gt if num_gt else np.zeros(len(tp))
        curves[c] = PRCurve(
            label=c,
            name=_class_key(c, class_names),
            num_gt=num_gt,
            scores=m["score"][mine],
            precision=precision,
            recall=recall,
            ap=average_precision(precision, recall, "all") if num_gt else math.nan,
            ap_11point=average_precision(precision, recall, "11point") if num_gt else math.nan,
        )
    return curves


def voc_map(
    predictions: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    class_names: Sequence[str] | None = None,
    iou_threshold: float = VOC_IOU_THRESHOLD,
) -> dict[str, Any]:
    """PASCAL VOC mAP at one IoU threshold, both ways (see :func:`average_precision`).

    Returns:
        ``voc07_map`` (11-point, the paper's VOC2007 numbers), ``voc_map`` (all-point, VOC2010+),
        ``voc07_ap_per_class`` and ``voc_ap_per_class`` (class -> AP). The means skip classes
        without ground truth (their AP is nan); with none at all the means are nan.
    """
    curves = precision_recall(predictions, targets, class_names, iou_threshold)
    counted = [c for c in curves.values() if c.num_gt > 0]
    return {
        "voc07_map": float(np.mean([c.ap_11point for c in counted])) if counted else math.nan,
        "voc_map": float(np.mean([c.ap for c in counted])) if counted else math.nan,
        "voc07_ap_per_class": {c.name: c.ap_11point for c in curves.values()},
        "voc_ap_per_class": {c.name: c.ap for c in curves.values()},
    }


# -- running a model over a dataset ----------------------------------------------------------


def check_same_classes(model_classes: list[str], data_classes: list[str] | None, what: str) -> None:
    """Raise a ValueError unless ``data_classes`` are the model's classes, in the same order
    (index 0, the background, may be named differently). A model built without names
    (``class_1``, ``class_2`` ...) is checked by count only. ``None``: nothing to compare."""
    if data_classes is None:
        return
    if len(data_classes) != len(model_classes):
        raise ValueError(
            f"the model has {len(model_classes)} classes {model_classes}, {what} "
            f"{len(data_classes)} {data_classes}"
        )
    unnamed = [f"class_{i}" for i in range(1, len(model_classes))]
    if model_classes[1:] == unnamed:
        return
    for i, (ours, theirs) in enumerate(zip(model_classes, data_classes, strict=True)):
        if i > 0 and ours != theirs:
            raise ValueError(
                f"class {i} is {ours!r} for the model but {theirs!r} in {what}: the labels would "
                f"be scored against the wrong classes (model {model_classes[1:]}, "
                f"{what} {data_classes[1:]})"
            )


def classes_of(dataset: Any) -> list[str] | None:
    """A dataset's ``.classes`` (looking through Subset-like wrappers), or None."""
    while not hasattr(dataset, "classes") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset  # torch.utils.data.Subset and other wrappers
    classes = getattr(dataset, "classes", None)
    return list(classes) if classes is not None else None


def _as_lists(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict]]:
    """Keep a batch as lists: evaluation images may differ in size."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def evaluate(
    model: Any,
    dataset: Any,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    progress: bool = True,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU_THRESHOLD,
    top_k: int = TOP_K,
    return_predictions: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], list[dict[str, Tensor]], list[dict[str, Any]]]:
    """Detect on every image of ``dataset`` and score the detections, COCO- and VOC-style.

    Images may have any size (``model.detect`` resizes them); boxes are compared in each image's
    own pixels, so a dataset without a resizing transform gives COCO's size ranges (small,
    medium, large) in the original pixels. IoU itself is unchanged by resizing.

    Args:
        model: an :class:`ssdlib.model.SSD` (anything with ``detect`` and ``class_names``).
        dataset: items ``(image (3, H, W) in [0, 1], target dict)`` as for :func:`coco_map`.
        batch_size: images per forward pass.
        device: where to run; moves the model there. None: where the model is.
        num_workers: DataLoader worker processes.
        progress: show a tqdm progress bar.
        score_threshold, iou_threshold, top_k: passed to ``model.detect`` (the paper's 0.01,
            0.45, 200 by default).
        return_predictions: also return the per-image predictions and targets (on the CPU),
            e.g. for a gallery of misses.

    Returns:
        ``metrics``: :func:`coco_map`'s and :func:`voc_map`'s keys plus ``num_images`` and
        ``images_per_s``; or ``(metrics, predictions, targets)``.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    class_names = list(model.class_names)
    check_same_classes(class_names, classes_of(dataset), "the dataset")
    if device is not None:
        model.to(device)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size, shuffle=False, num_workers=num_workers, collate_fn=_as_lists
    )
    predictions: list[dict[str, Tensor]] = []
    targets: list[dict[str, Any]] = []
    start = time.perf_counter()
    for images, batch_targets in tqdm(loader, desc="evaluate", disable=not progress):
        detections = model.detect(images, score_threshold, iou_threshold, top_k)
        predictions += [{k: v.cpu() for k, v in det.items()} for det in detections]
        targets += batch_targets
    seconds = time.perf_counter() - start
    metrics = {
        **coco_map(predictions, targets, class_names),
        **voc_map(predictions, targets, class_names),
        "num_images": len(targets),
        "images_per_s": len(targets) / max(seconds, 1e-9),
    }
    return (metrics, predictions, targets) if return_predictions else metrics
