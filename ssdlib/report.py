"""Reading a trained detector: where it fails, and for which objects (SSD §3.1).

The paper does more than print one mAP. §3.1 breaks the errors of SSD300 down with the
detection analysis tool of Hoiem et al. (ECCV 2012): "the cumulative fraction of detections
that are correct (Cor) or false positive due to poor localization (Loc), confusion with similar
categories (Sim), with others (Oth), or with background (BG)" (Fig. 3), and shows that "SSD is
very sensitive to the bounding box size" (Fig. 4). This module computes the same readings for
any model and dataset in the common format (:mod:`ssdlib.detections`), with NumPy and no
plotting (its figures are in :mod:`ssdlib.viz.report`; the speed, §3.7, is in
:mod:`ssdlib.speed`):

1. the pycocotools table as text (:func:`coco_summary`);
2. every detection labelled correct or by the kind of its mistake, every object found or
   missed (:func:`diagnose` -> :class:`Diagnosis`);
3. recall by object size (:meth:`Diagnosis.recall_by_size`, binned by
   :func:`ssdlib.utils.share_by_size`, as the experiments' recall and the default boxes'
   coverage are);
4. which classes are taken for which (:func:`confusion_matrix`, :func:`most_confused`).

Boxes are xyxy in the pixels of each image, as :func:`ssdlib.evaluate.evaluate` returns them.
Letters: ``D`` detections, ``G`` ground-truth objects, ``K`` classes including background 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .detections import ImageArrays, evaluated_classes, iou_numpy, read_inputs
from .utils import share_by_size
from .voc_metric import VOC_IOU_THRESHOLD

REPORT_SCORE_THRESHOLD = 0.5  # a detection someone would act on; mAP itself uses every score
BACKGROUND_IOU = 0.1  # Hoiem et al.: under this overlap with every object, a false positive
# "fired on background"; from it up to 0.5 with its own class, it is a localisation error
# Object-size bins, √(w·h), for share_by_size (the experiments and the default boxes name their
# own, in fractions of the image side):
SIZE_EDGES_PX = (0, 16, 32, 64, 128, 256, math.inf)  # pixels, in octaves: a diagnosis knows
# each box in its own image's pixels but not the image's size (lesson 8's images differ), each
# layer's default boxes are about twice the previous layer's, and log-uniform sizes fill every
# octave alike

# The kinds of detection, in the order Hoiem et al. test them (duplicates, which they count as
# localisation errors, get their own kind: they show what NMS let through).
CORRECT, LOCALISATION, DUPLICATE, CONFUSION, BACKGROUND = range(5)
ERROR_KINDS = ("correct", "localisation", "duplicate", "confusion", "background")


# -- 1. Accuracy: the pycocotools table ---------------------------------------------------------


def coco_summary(metrics: dict[str, Any]) -> str:
    """The twelve lines ``COCOeval.summarize()`` printed for :func:`ssdlib.coco_metric.coco_map`'s
    (or ``evaluate``'s) result, as pycocotools wrote them (-1.000 where a size range has no
    ground truth). Small: area < 32² px; medium: up to 96²; large: above."""
    if "summary" not in metrics:
        raise KeyError("metrics lack 'summary': pass the result of coco_map() or evaluate()")
    return metrics["summary"]


# -- 2. Diagnosis: every detection correct or a kind of mistake, every object found or not ----


@dataclass
class Diagnosis:
    """The result of :func:`diagnose`. Arrays ``det_*`` have one entry per detection, sorted by
    falling score; ``obj_*`` one per ground-truth object (difficult ones left out), in image
    order. A detection's kind does not depend on any lower-scoring detection, so one diagnosis
    of all detections answers for every score threshold (the methods take one)."""

    class_names: list[str]  # index 0 background
    iou_threshold: float  # a correct detection needs this IoU with an object of its class
    background_iou: float  # below this IoU with every object: a background error
    det_image: np.ndarray  # (D,) image index
    det_index: np.ndarray  # (D,) index in that image's predictions
    det_label: np.ndarray  # (D,) predicted class
    det_score: np.ndarray  # (D,) falling
    det_box: np.ndarray  # (D, 4) xyxy pixels
    det_kind: np.ndarray  # (D,) index into ERROR_KINDS
    det_object: np.ndarray  # (D,) the object it is judged against (index in its image), -1: none
    det_iou: np.ndarray  # (D,) IoU with that object; for background, the best IoU with any
    obj_image: np.ndarray  # (G,) image index
    obj_index: np.ndarray  # (G,) index in that image's targets
    obj_label: np.ndarray  # (G,) class
    obj_box: np.ndarray  # (G, 4) xyxy pixels
    obj_score: np.ndarray  # (G,) score of the detection that finds it (0: none ever does), so
    # it is found at threshold t exactly when obj_score >= t

    @property
    def obj_size(self) -> np.ndarray:
        """``(G,)`` object size √(w·h) in pixels."""
        wh = self.obj_box[:, 2:] - self.obj_box[:, :2]
        return np.sqrt(wh[:, 0] * wh[:, 1])

    def _check(self, score_threshold: float) -> None:
        if not 0 < score_threshold <= 1:
            raise ValueError(f"score_threshold must be in (0, 1], got {score_threshold}")

    def found(self, score_threshold: float = REPORT_SCORE_THRESHOLD) -> np.ndarray:
        """``(G,)`` bool: the objects a detection of at least this score finds."""
        self._check(score_threshold)
        return self.obj_score >= score_threshold

    def misses(self, score_threshold: float = REPORT_SCORE_THRESHOLD) -> np.ndarray:
        """Indices into ``obj_*`` of the objects not found at this threshold, smallest first."""
        missed = np.flatnonzero(~self.found(score_threshold))
        return missed[np.argsort(self.obj_size[missed], kind="stable")]

    def false_positives(
        self, score_threshold: float = REPORT_SCORE_THRESHOLD, kinds: Sequence[str] | None = None
    ) -> np.ndarray:
        """Indices into ``det_*`` of the mistakes scoring at least ``score_threshold``, highest
        score first: the detector's most confident errors. ``kinds`` limits them (names from
        :data:`ERROR_KINDS`, default every kind but "correct")."""
        self._check(score_threshold)
        codes = [_kind_code(k) for k in kinds] if kinds is not None else range(1, len(ERROR_KINDS))
        chosen = (self.det_score >= score_threshold) & np.isin(self.det_kind, list(codes))
        return np.flatnonzero(chosen)  # det_* are already in falling score order

    def counts(self, score_threshold: float = REPORT_SCORE_THRESHOLD) -> dict[str, int]:
        """How many detections of each kind score at least ``score_threshold``, and how many
        objects stay ``"missed"``."""
        self._check(score_threshold)
        kinds = self.det_kind[self.det_score >= score_threshold]
        out = {name: int((kinds == code).sum()) for code, name in enumerate(ERROR_KINDS)}
        out["missed"] = int((~self.found(score_threshold)).sum())
        return out

    def recall_by_size(
        self,
        score_threshold: float = REPORT_SCORE_THRESHOLD,
        edges: Sequence[float] = SIZE_EDGES_PX,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Objects per size bin and the share found at ``score_threshold`` (nan for an empty
        bin). Bin ``i`` holds sizes √(w·h) in ``[edges[i], edges[i + 1])`` pixels (see
        :func:`ssdlib.utils.share_by_size`).

        Returns:
            ``(counts (len(edges) - 1,), recall (len(edges) - 1,))``.
        """
        return share_by_size(self.obj_size, self.found(score_threshold), edges)

    def __repr__(self) -> str:
        c = self.counts()
        kinds = ", ".join(f"{k} {c[k]}" for k in ERROR_KINDS)
        return (
            f"Diagnosis({len(self.det_score)} detections, {len(self.obj_label)} objects; at "
            f"score >= {REPORT_SCORE_THRESHOLD}: {kinds}; missed {c['missed']})"
        )


def _kind_code(kind: str) -> int:
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {ERROR_KINDS}")
    return ERROR_KINDS.index(kind)


def _best_where(iou: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``iou`` ``(D, G)``: the best IoU among the ``mask``ed columns and its column
    (the first on ties, as the VOC devkit's max); ``(-1, -1)`` where no column is allowed."""
    masked = np.where(mask, iou, -1.0)
    col = masked.argmax(axis=1)
    best = masked[np.arange(len(iou)), col]
    return best, np.where(best >= 0, col, -1)


def diagnose(
    predictions: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    iou_threshold: float = VOC_IOU_THRESHOLD,
    background_iou: float = BACKGROUND_IOU,
) -> Diagnosis:
    """Label every detection, as the analysis tool SSD §3.1 uses (Hoiem et al., ECCV 2012).

    Detections are taken in falling score order over the whole dataset. Each looks at the
    objects of its image:

    * **correct**: IoU >= ``iou_threshold`` with an object of its class, the first to claim it
      (VOC's rule: the object with the highest such IoU; :func:`ssdlib.voc_metric.voc_match`
      calls these the true positives);
    * **duplicate**: the same, but a higher-scoring detection claimed that object already;
    * **localisation**: its best IoU with an object of its class is in
      ``[background_iou, iou_threshold)``: the right class in the wrong place;
    * **confusion**: it overlaps no object of its class that much, but one of another class by
      at least ``background_iou``: the right place, the wrong class;
    * **background**: IoU < ``background_iou`` with every object.

    An object is found when a correct detection claims it. Difficult objects (``difficult``
    in a target) are neither required nor punished, as in VOC: they are not in ``obj_*`` and
    a detection that reaches one is left out.

    Args:
        predictions: one dict per image: ``boxes`` ``(D, 4)`` xyxy pixels, ``scores``, ``labels``
            (e.g. ``evaluate(..., return_predictions=True)``; all scores, not thresholded).
        targets: one dict per image: ``boxes`` ``(G, 4)`` xyxy pixels, ``labels``, optional
            ``difficult``.
        class_names: index 0 background; labels must be below ``len(class_names)``.
        iou_threshold: a correct detection's IoU (0.5 for VOC and AP50).
        background_iou: below this overlap with everything, a detection is a background error.

    Returns:
        A :class:`Diagnosis`.
    """
    if not 0 < background_iou <= iou_threshold <= 1:
        raise ValueError(
            "need 0 < background_iou <= iou_threshold <= 1, got "
            f"background_iou={background_iou}, iou_threshold={iou_threshold}"
        )
    preds, gts = read_inputs(predictions, targets)
    evaluated_classes(preds, gts, class_names)  # labels beyond the class names: a clear error
    dets = _best_overlaps(preds, gts)  # (D,) each, in image order
    order = np.argsort(-dets["score"], kind="stable")  # falling score; ties keep image order
    dets = {k: v[order] for k, v in dets.items()}
    num_gt = np.array([len(g.boxes) for g in gts], dtype=np.int64)
    first_gt = np.concatenate([[0], np.cumsum(num_gt)])  # flat index of each image's object 0
    flat = first_gt[dets["image"]] + dets["same_idx"]  # (D,) flat index of the same-class best
    difficult = np.concatenate(
        [np.zeros(0, bool)]
        + [g.difficult if g.difficult is not None else np.zeros(len(g.boxes), bool) for g in gts]
    )  # (all objects,) flat
    kind, on_difficult, finders = _judge(dets, flat, difficult, iou_threshold, background_iou)
    obj_score = np.zeros(len(difficult))  # (all objects,) flat
    obj_score[flat[finders]] = dets["score"][finders]
    det_object, det_iou = _judged_against(kind, dets)
    keep = ~on_difficult
    return Diagnosis(
        class_names=list(class_names),
        iou_threshold=iou_threshold,
        background_iou=background_iou,
        det_image=dets["image"][keep],
        det_index=dets["index"][keep],
        det_label=dets["label"][keep],
        det_score=dets["score"][keep],
        det_box=dets["box"][keep],
        det_kind=kind[keep],
        det_object=det_object[keep],
        det_iou=det_iou[keep],
        **_objects(gts, num_gt, obj_score, counted=~difficult),
    )


def _best_overlaps(preds: list[ImageArrays], gts: list[ImageArrays]) -> dict[str, np.ndarray]:
    """Every detection in image order: its ``image``, ``index``, ``label``, ``score``, ``box``,
    and its best IoU with an object of its own class (``same_iou``, ``same_idx``) and of another
    class (``other_iou``, ``other_idx``), ``-1`` where its image has no such object."""
    kinds = {"image": np.int64, "index": np.int64, "same_iou": np.float64}
    kinds.update({"same_idx": np.int64, "other_iou": np.float64, "other_idx": np.int64})
    columns = {k: [np.zeros(0, dtype)] for k, dtype in kinds.items()}
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        d = len(p.boxes)
        columns["image"].append(np.full(d, i))
        columns["index"].append(np.arange(d))
        iou = iou_numpy(p.boxes, g.boxes) if d and len(g.boxes) else np.zeros((d, 0))  # (D, G)
        same = p.labels[:, None] == g.labels[None, :]  # (D, G)
        for side, mask in (("same", same), ("other", ~same)):
            best, col = _best_where(iou, mask) if iou.size else (np.full(d, -1.0),) * 2
            columns[f"{side}_iou"].append(best)
            columns[f"{side}_idx"].append(col.astype(np.int64))
    columns["label"] = [np.zeros(0, np.int64)] + [p.labels for p in preds]
    columns["score"] = [np.zeros(0)] + [p.scores for p in preds]
    columns["box"] = [np.zeros((0, 4))] + [p.boxes for p in preds]
    return {k: np.concatenate(v) for k, v in columns.items()}


def _judge(
    dets: dict[str, np.ndarray],
    flat: np.ndarray,
    difficult: np.ndarray,
    iou_threshold: float,
    background_iou: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hoiem et al.'s tests on detections in falling score order (``flat``: each one's
    same-class best object, flat over the images). Returns each one's kind ``(D,)``, whether it
    reaches a difficult object ``(D,)`` (left out), and the indices of the correct detections,
    the first claim on each object."""
    same_iou, other_iou = dets["same_iou"], dets["other_iou"]
    hit = same_iou >= iou_threshold
    on_difficult = np.zeros_like(hit)  # (D,) reaches a difficult object: left out
    if len(difficult):
        on_difficult = hit & difficult[np.where(hit, flat, 0)]
    kind = np.full(len(same_iou), BACKGROUND, dtype=np.int64)
    kind[(~hit) & (other_iou >= background_iou)] = CONFUSION
    kind[(~hit) & (same_iou >= background_iou)] = LOCALISATION  # Loc is tested before Sim/Oth
    claims = np.flatnonzero(hit & ~on_difficult)  # in falling score order
    kind[claims] = DUPLICATE
    _, first = np.unique(flat[claims], return_index=True)  # the first claim on each object
    kind[claims[first]] = CORRECT
    return kind, on_difficult, claims[first]


def _judged_against(kind: np.ndarray, dets: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The object each detection is judged against (a confusion: the other class's; -1 for
    background) and the IoU with it (background: the best IoU with any object, at least 0)."""
    confused, background = kind == CONFUSION, kind == BACKGROUND
    det_object = np.where(confused, dets["other_idx"], dets["same_idx"])
    det_object[background] = -1
    det_iou = np.where(confused, dets["other_iou"], dets["same_iou"])
    best_any = np.maximum(np.maximum(dets["same_iou"], dets["other_iou"]), 0.0)
    det_iou[background] = best_any[background]
    return det_object, det_iou


def _objects(
    gts: list[ImageArrays], num_gt: np.ndarray, obj_score: np.ndarray, counted: np.ndarray
) -> dict[str, np.ndarray]:
    """The :class:`Diagnosis` fields ``obj_*`` of the ``counted`` objects (flat over images)."""
    index = np.concatenate([np.zeros(0, np.int64)] + [np.arange(n) for n in num_gt])  # in image
    return {
        "obj_image": np.repeat(np.arange(len(gts)), num_gt)[counted],
        "obj_index": index[counted],
        "obj_label": np.concatenate([np.zeros(0, np.int64)] + [g.labels for g in gts])[counted],
        "obj_box": np.concatenate([np.zeros((0, 4))] + [g.boxes for g in gts])[counted],
        "obj_score": obj_score[counted],
    }


# -- 4. Confusion between classes --------------------------------------------------------------


def confusion_matrix(
    predictions: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    num_classes: int,
    score_threshold: float = REPORT_SCORE_THRESHOLD,
    iou_threshold: float = VOC_IOU_THRESHOLD,
) -> np.ndarray:
    """Which class the detector says for which object: a ``(K, K)`` table of counts.

    Per image, the detections scoring at least ``score_threshold`` are paired with the objects
    **by overlap alone**, the class ignored: the pair with the highest IoU first, then the next
    among the unpaired, down to ``iou_threshold`` (ties: higher score, then lower indices).
    A pair counts in ``[object's class, detection's class]``; an object left unpaired in
    ``[its class, 0]`` (missed); a detection left unpaired in ``[0, its class]`` (nothing
    there). So row ``c`` sums to the objects of class ``c``, column ``c`` to the detections of
    class ``c``, and the off-diagonal cells of rows and columns 1..K-1 are the confusions.
    A difficult object and the detection paired with it count nowhere.

    Args:
        predictions, targets: as for :func:`diagnose`.
        num_classes: K, including the background 0.

    Returns:
        ``(K, K)`` int64: rows the true class, columns the predicted class.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + a class), got {num_classes}")
    if not 0 <= score_threshold <= 1 or not 0 < iou_threshold <= 1:
        raise ValueError(
            f"need score_threshold in [0, 1] and iou_threshold in (0, 1], got "
            f"{score_threshold}, {iou_threshold}"
        )
    preds, gts = read_inputs(predictions, targets)
    evaluated_classes(preds, gts, ["background"] * num_classes)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, g in zip(preds, gts, strict=True):
        keep = p.scores >= score_threshold
        boxes, labels, scores = p.boxes[keep], p.labels[keep], p.scores[keep]
        difficult = g.difficult if g.difficult is not None else np.zeros(len(g.boxes), bool)
        iou = iou_numpy(boxes, g.boxes) if len(boxes) and len(g.boxes) else np.zeros((0, 0))
        det, obj = np.nonzero(iou >= iou_threshold)  # candidate pairs
        # highest IoU first; ties: higher score, then lower detection and object indices
        order = np.lexsort((obj, det, -scores[det], -iou[det, obj]))
        det_used = np.zeros(len(boxes), bool)
        obj_used = np.zeros(len(g.boxes), bool)
        for d, o in zip(det[order].tolist(), obj[order].tolist(), strict=True):
            if det_used[d] or obj_used[o]:
                continue
            det_used[d], obj_used[o] = True, True
            if not difficult[o]:
                matrix[g.labels[o], labels[d]] += 1
        np.add.at(matrix, (g.labels[~obj_used & ~difficult], 0), 1)
        np.add.at(matrix, (0, labels[~det_used]), 1)
    return matrix


def most_confused(matrix: np.ndarray, class_names: Sequence[str]) -> tuple[str, str, int]:
    """The off-diagonal cell of classes 1..K-1 with the most pairs: ``(true, detected as, n)``;
    ``("", "", 0)`` when there is no confusion at all."""
    inner = np.array(matrix, dtype=np.int64)[1:, 1:]
    np.fill_diagonal(inner, 0)
    if inner.size == 0 or inner.max() == 0:
        return "", "", 0
    r, c = np.unravel_index(int(inner.argmax()), inner.shape)  # first in row-major order on ties
    return class_names[r + 1], class_names[c + 1], int(inner[r, c])
