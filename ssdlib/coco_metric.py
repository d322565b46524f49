"""The COCO metric, computed by pycocotools (SSD §3.4, Table 5).

COCO averages VOC's AP over ten IoU thresholds 0.5:0.05:0.95, with 101 recall points and at
most 100 detections per image, and also splits it by object size. We do not re-implement it:
:func:`coco_map` hands the boxes to pycocotools, the reference everyone reports. Inputs as
:mod:`ssdlib.detections` reads them.

Boxes are xyxy in pixels throughout (pycocotools' xywh only inside). Letters: ``D``
detections, ``G`` ground-truth boxes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .detections import ImageArrays, class_key, evaluated_classes, read_inputs

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


def _coco_objects(preds: list[ImageArrays], gts: list[ImageArrays], class_ids: list[int]):
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

    preds, gts = read_inputs(predictions, targets)
    class_ids = evaluated_classes(preds, gts, class_names)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        gt, dt = _coco_objects(preds, gts, class_ids)
        if not gt.dataset["annotations"]:  # nothing to find: every metric is undefined
            undefined = {class_key(c, class_names): math.nan for c in class_ids}
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
        class_key(c, class_names): _nan_if_missing(precision[:, :, cat_ids.index(c), 0, -1])
        for c in class_ids
    }
    out["ap50_per_class"] = {
        class_key(c, class_names): _nan_if_missing(precision[0, :, cat_ids.index(c), 0, -1])
        for c in class_ids
    }
    return out
