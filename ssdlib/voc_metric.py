"""The PASCAL VOC metric: precision-recall curves and their area (SSD §3, Tables 1-4).

A detection is correct when its IoU with an unclaimed ground truth of its class is at least
0.5. Per class, the detections are sorted by score, which traces a precision-recall curve; its
area is the class's AP, and mAP is the mean over classes. Boxes marked *difficult* are neither
required nor punished: a detection on one counts as nothing.

:func:`voc_match` labels every detection, :func:`precision_recall` gives the curves themselves
(for the notebooks' plots), :func:`average_precision` the two ways VOC measures their area and
:func:`voc_map` the means. Inputs as :mod:`ssdlib.detections` reads them.

Boxes are xyxy in pixels throughout. Letters: ``D`` detections, ``G`` ground-truth boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .detections import ImageArrays, class_key, evaluated_classes, iou_numpy, read_inputs

VOC_IOU_THRESHOLD = 0.5  # VOC: "overlap ... must exceed 50%" (the devkit tests >= 0.5)
VOC07_RECALL_POINTS = np.linspace(0, 1, 11)  # VOC2007 samples precision at recall 0, 0.1, ..., 1
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
        predictions, targets: one dict per image (:mod:`ssdlib.detections`); ``targets``
            may hold ``difficult`` ``(G,)``.
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
    return _voc_match(*read_inputs(predictions, targets), iou_threshold)


def _voc_match(
    preds: list[ImageArrays], gts: list[ImageArrays], iou_threshold: float
) -> dict[str, Any]:
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
            overlap = iou_numpy(p.boxes, g.boxes)  # (D, G)
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
        predictions, targets: one dict per image (:mod:`ssdlib.detections`); ``targets``
            may hold ``difficult``.
        class_names: index 0 background; when given, every class 1..K-1 gets a curve.
        iou_threshold: the overlap a true positive needs (0.5 for VOC).

    Returns:
        label -> :class:`PRCurve`. A class without ground truth has nan AP.
    """
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    preds, gts = read_inputs(predictions, targets)
    class_ids = evaluated_classes(preds, gts, class_names)
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
            name=class_key(c, class_names),
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
