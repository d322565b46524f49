"""Reading a trained detector: how it learned, where it fails, how fast it runs (SSD §3).

The paper does more than print one mAP. §3.1 breaks the errors of SSD300 down with the
detection analysis tool of Hoiem et al. (ECCV 2012): "the cumulative fraction of detections
that are correct (Cor) or false positive due to poor localization (Loc), confusion with similar
categories (Sim), with others (Oth), or with background (BG)" (Fig. 3), and shows that "SSD is
very sensitive to the bounding box size" (Fig. 4). §3.7 times the network and the NMS (Table 7).
This module computes the same readings for any model and dataset in the common format, with
NumPy and no plotting (its figures are in :mod:`ssdlib.viz_report`):

1. the pycocotools table as text (:func:`coco_summary`);
2. every detection labelled correct or by the kind of its mistake, every object found or
   missed (:func:`diagnose` -> :class:`Diagnosis`), recall by object size;
3. which classes are taken for which (:func:`confusion_matrix`, :func:`most_confused`);
4. inference speed: network and NMS, per batch size (:func:`measure_inference`).

Boxes are xyxy in the pixels of each image, as :func:`ssdlib.evaluate.evaluate` returns them.
Letters: ``D`` detections, ``G`` ground-truth objects, ``K`` classes including background 0.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import fast
from .evaluate import VOC_IOU_THRESHOLD, _class_ids, _iou_numpy, _read_inputs
from .nms import NMS_IOU_THRESHOLD, SCORE_THRESHOLD, TOP_K

REPORT_SCORE_THRESHOLD = 0.5  # a detection someone would act on; mAP itself uses every score
BACKGROUND_IOU = 0.1  # Hoiem et al.: under this overlap with every object, a false positive
# "fired on background"; from it up to 0.5 with its own class, it is a localisation error
SIZE_EDGES_PX = (0, 16, 32, 64, 128, 256, math.inf)  # object size √(w·h) in octaves: each
# layer's default boxes are about twice the previous layer's, and log-uniform sizes fill
# every octave alike

# The kinds of detection, in the order Hoiem et al. test them (duplicates, which they count as
# localisation errors, get their own kind: they show what NMS let through).
CORRECT, LOCALISATION, DUPLICATE, CONFUSION, BACKGROUND = range(5)
ERROR_KINDS = ("correct", "localisation", "duplicate", "confusion", "background")


# -- 1. Accuracy: the pycocotools table ---------------------------------------------------------


def coco_summary(metrics: dict[str, Any]) -> str:
    """The twelve lines ``COCOeval.summarize()`` printed for :func:`ssdlib.evaluate.coco_map`'s
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
        bin). Bin ``i`` holds sizes √(w·h) in ``[edges[i], edges[i + 1])`` pixels.

        Returns:
            ``(counts (len(edges) - 1,), recall (len(edges) - 1,))``.
        """
        return binned_recall(self.obj_size, self.found(score_threshold), edges)

    def __repr__(self) -> str:
        c = self.counts()
        kinds = ", ".join(f"{k} {c[k]}" for k in ERROR_KINDS)
        return (
            f"Diagnosis({len(self.det_score)} detections, {len(self.obj_label)} objects; at "
            f"score >= {REPORT_SCORE_THRESHOLD}: {kinds}; missed {c['missed']})"
        )


def binned_recall(
    sizes: np.ndarray, found: np.ndarray, edges: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Objects per size bin ``[edges[i], edges[i + 1])`` and the share of them ``found``."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be at least 2 increasing numbers, got {edges.tolist()}")
    num_bins = len(edges) - 1
    bins = np.digitize(sizes, edges) - 1  # (G,) -1 or num_bins: outside every bin
    inside = (bins >= 0) & (bins < num_bins)
    counts = np.bincount(bins[inside], minlength=num_bins)
    hits = np.bincount(bins[inside], weights=found[inside].astype(float), minlength=num_bins)
    recall = np.full(num_bins, np.nan)
    recall[counts > 0] = hits[counts > 0] / counts[counts > 0]
    return counts, recall


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
      (VOC's rule: the object with the highest such IoU; :func:`ssdlib.evaluate.voc_match`
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
    preds, gts = _read_inputs(predictions, targets)
    _class_ids(preds, gts, class_names)  # labels beyond the class names: a clear error
    num_gt = np.array([len(g.boxes) for g in gts], dtype=np.int64)
    first_gt = np.concatenate([[0], np.cumsum(num_gt)])  # flat index of each image's object 0
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("image", "index", "same_iou", "same_idx", "other_iou", "other_idx")
    }
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        d = len(p.boxes)
        columns["image"].append(np.full(d, i))
        columns["index"].append(np.arange(d))
        iou = _iou_numpy(p.boxes, g.boxes) if d and len(g.boxes) else np.zeros((d, 0))  # (D, G)
        same = p.labels[:, None] == g.labels[None, :]  # (D, G)
        for side, mask in (("same", same), ("other", ~same)):
            best, col = _best_where(iou, mask) if iou.size else (np.full(d, -1.0),) * 2
            columns[f"{side}_iou"].append(best)
            columns[f"{side}_idx"].append(col.astype(np.int64))
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in columns.items()}
    labels = np.concatenate([np.zeros(0, np.int64)] + [p.labels for p in preds])
    scores = np.concatenate([np.zeros(0)] + [p.scores for p in preds])
    boxes = np.concatenate([np.zeros((0, 4))] + [p.boxes for p in preds])
    difficult = np.concatenate(
        [np.zeros(0, bool)]
        + [g.difficult if g.difficult is not None else np.zeros(len(g.boxes), bool) for g in gts]
    )  # (all objects,) flat

    order = np.argsort(-scores, kind="stable")  # falling score; ties keep image order
    image, index = cat["image"][order].astype(np.int64), cat["index"][order].astype(np.int64)
    labels, scores, boxes = labels[order], scores[order], boxes[order]
    same_iou, same_idx = cat["same_iou"][order], cat["same_idx"][order].astype(np.int64)
    other_iou, other_idx = cat["other_iou"][order], cat["other_idx"][order].astype(np.int64)

    hit = same_iou >= iou_threshold
    flat = first_gt[image] + same_idx  # flat object index of the same-class best match
    on_difficult = np.zeros_like(hit)  # (D,) reaches a difficult object: left out
    if len(difficult):
        on_difficult = hit & difficult[np.where(hit, flat, 0)]
    kind = np.full(len(scores), BACKGROUND, dtype=np.int64)
    kind[(~hit) & (other_iou >= background_iou)] = CONFUSION
    kind[(~hit) & (same_iou >= background_iou)] = LOCALISATION  # Loc is tested before Sim/Oth
    claims = np.flatnonzero(hit & ~on_difficult)  # in falling score order
    kind[claims] = DUPLICATE
    _, first = np.unique(flat[claims], return_index=True)  # the first claim on each object
    kind[claims[first]] = CORRECT

    obj_score = np.zeros(len(difficult))  # (all objects,) flat
    obj_score[flat[claims[first]]] = scores[claims[first]]
    det_object = np.where(kind == CONFUSION, other_idx, same_idx)
    det_object[kind == BACKGROUND] = -1
    det_iou = np.where(kind == CONFUSION, other_iou, same_iou)
    det_iou[kind == BACKGROUND] = np.maximum(np.maximum(same_iou, other_iou), 0.0)[
        kind == BACKGROUND
    ]
    keep = ~on_difficult
    counted = ~difficult
    return Diagnosis(
        class_names=list(class_names),
        iou_threshold=iou_threshold,
        background_iou=background_iou,
        det_image=image[keep],
        det_index=index[keep],
        det_label=labels[keep],
        det_score=scores[keep],
        det_box=boxes[keep],
        det_kind=kind[keep],
        det_object=det_object[keep],
        det_iou=det_iou[keep],
        obj_image=np.repeat(np.arange(len(gts)), num_gt)[counted],
        obj_index=np.concatenate([np.zeros(0, np.int64)] + [np.arange(n) for n in num_gt])[counted],
        obj_label=np.concatenate([np.zeros(0, np.int64)] + [g.labels for g in gts])[counted],
        obj_box=np.concatenate([np.zeros((0, 4))] + [g.boxes for g in gts])[counted],
        obj_score=obj_score[counted],
    )


# -- 3. Confusion between classes --------------------------------------------------------------


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
    preds, gts = _read_inputs(predictions, targets)
    _class_ids(preds, gts, ["background"] * num_classes)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, g in zip(preds, gts, strict=True):
        keep = p.scores >= score_threshold
        boxes, labels, scores = p.boxes[keep], p.labels[keep], p.scores[keep]
        difficult = g.difficult if g.difficult is not None else np.zeros(len(g.boxes), bool)
        iou = _iou_numpy(boxes, g.boxes) if len(boxes) and len(g.boxes) else np.zeros((0, 0))
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


# -- 4. Inference speed ------------------------------------------------------------------------

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
INFERENCE_WARMUP = 3  # untimed calls first: memory allocation, cuDNN's kernel choice
INFERENCE_REPEATS = 10  # timed calls per batch size; the median ignores a few slow ones


@dataclass
class InferenceTiming:
    """Median times of one batch, on one device, at one precision."""

    batch_size: int
    device: str
    precision: str  # "fp32", "bf16" or "fp16" (autocast around the network)
    network_ms: float  # the forward pass: images (B, 3, S, S) -> loc, conf
    postprocess_ms: float  # decode + per-class NMS + top-k (ssdlib.fast.postprocess)
    total_ms: float  # both, timed together: what one call of model.detect costs, per batch

    @property
    def images_per_s(self) -> float:
        return self.batch_size / (self.total_ms / 1000)

    @property
    def ms_per_image(self) -> float:
        return self.total_ms / self.batch_size

    def __repr__(self) -> str:
        return (
            f"InferenceTiming(batch {self.batch_size}, {self.device}, {self.precision}: "
            f"{self.total_ms:.1f} ms per batch = network {self.network_ms:.1f} + "
            f"postprocess {self.postprocess_ms:.1f}; {self.images_per_s:.1f} images/s)"
        )


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that the clock measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type != "cpu":  # mps, xpu ...
        torch.accelerator.synchronize(device)


def _timing_batch(
    images: Tensor | None, batch_size: int, size: int, device: torch.device, seed: int
) -> Tensor:
    if images is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(batch_size, 3, size, size, generator=generator).to(device)
    index = torch.arange(batch_size) % len(images)  # cycle through the given images
    return images[index].to(device)


def measure_inference(
    model: Any,
    batch_sizes: Sequence[int] = (1, 32),
    device: torch.device | str | None = None,
    images: Tensor | None = None,
    precision: str = "fp32",
    repeats: int = INFERENCE_REPEATS,
    warmup: int = INFERENCE_WARMUP,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU_THRESHOLD,
    top_k: int = TOP_K,
    seed: int = 0,
) -> list[InferenceTiming]:
    """Time the network and the post-processing per batch size (SSD §3.7, Table 7).

    Each call runs the forward pass (in inference mode, under autocast for bf16/fp16), waits
    for the device, runs :func:`ssdlib.fast.postprocess` with the paper's settings and waits
    again; the median of ``repeats`` calls is reported, after ``warmup`` untimed ones. Images
    are already ``S × S`` on the device: resizing and copying are not timed. The NMS time
    depends on how many boxes pass ``score_threshold``, so real images (``images``) give a
    truer number than the default random ones.

    Args:
        model: an :class:`ssdlib.model.SSD`. Its train/eval mode is restored afterwards.
        batch_sizes: images per call, e.g. ``(1, 32)``: latency and throughput.
        device: where to run; moves the model there (None: where the model is).
        images: optional ``(M, 3, S, S)`` in [0, 1]; batches cycle through them.
        precision: "fp32", "bf16" or "fp16" (fp16 needs CUDA).
        repeats, warmup: timed and untimed calls per batch size.
        score_threshold, iou_threshold, top_k: the post-processing's (paper: 0.01, 0.45, 200).
        seed: of the random images.

    Returns:
        One :class:`InferenceTiming` per batch size, in the given order.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if len(batch_sizes) == 0 or any(int(b) != b or b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if device is not None:
        model.to(device)
    device = model.priors.device
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs CUDA, the model is on {device}; try 'bf16'")
    size = model.cfg.image_size
    if images is not None and (
        images.dim() != 4 or images.shape[1:] != (3, size, size) or len(images) == 0
    ):
        raise ValueError(
            f"images must be (M, 3, {size}, {size}) for {model.cfg.name}, got "
            f"{tuple(images.shape)}; resize them with eval_transform({size})"
        )
    dtype = PRECISIONS[precision]
    channels_last = next(model.parameters()).is_contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    timings = []
    try:
        for batch_size in batch_sizes:
            batch = _timing_batch(images, int(batch_size), size, device, seed)
            if channels_last:  # as the model's weights: no layout change inside the convs
                batch = batch.contiguous(memory_format=torch.channels_last)
            samples: list[tuple[float, float]] = []
            for call in range(warmup + repeats):
                with torch.inference_mode():
                    _synchronize(device)
                    start = time.perf_counter()
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        loc, conf = model(batch)  # (B, P, 4), (B, P, K)
                    _synchronize(device)
                    middle = time.perf_counter()
                    fast.postprocess(loc, conf, model.priors, score_threshold, iou_threshold, top_k)
                    _synchronize(device)
                    end = time.perf_counter()
                if call >= warmup:
                    samples.append((middle - start, end - middle))
            timings.append(
                InferenceTiming(
                    batch_size=int(batch_size),
                    device=str(device),
                    precision=precision,
                    network_ms=1000 * statistics.median(s[0] for s in samples),
                    postprocess_ms=1000 * statistics.median(s[1] for s in samples),
                    total_ms=1000 * statistics.median(s[0] + s[1] for s in samples),
                )
            )
    finally:
        model.train(was_training)
    return timings
