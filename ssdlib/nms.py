"""Non-maximum suppression and turning raw outputs into detections (SSD §3, "Inference time").

"Given the large number of boxes generated from our method, it is essential to perform
non-maximum suppression (nms) efficiently during inference. By using a confidence threshold of
0.01, we can filter out most boxes. We then apply nms with jaccard overlap of 0.45 per class and
keep the top 200 detections per image."

:func:`nms` is the greedy algorithm written out to be read; :func:`nms_steps` records every step
for the notebook's slider; :func:`postprocess_reference` turns raw outputs into detections with
plain loops over images and classes; :func:`postprocess` computes the same detections fast:
batched, with torchvision.ops' compiled NMS kernel, and on only as many candidates as the top
200 detections need (the tests compare the two).

Letters: ``B`` images, ``P`` default boxes, ``K`` classes including background 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import nms as tv_nms

from .boxes import VARIANCES, box_iou, clip_boxes, decode

SCORE_THRESHOLD = 0.01  # "a confidence threshold of 0.01" (SSD §3)
NMS_IOU_THRESHOLD = 0.45  # "nms with jaccard overlap of 0.45 per class" (SSD §3)
TOP_K = 200  # "keep the top 200 detections per image" (SSD §3)
CANDIDATES_PER_CLASS = 400  # the released code keeps the 400 best boxes of a class before NMS


def _check_nms_input(boxes: Tensor, scores: Tensor, iou_threshold: float) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"expected boxes of shape (N, 4), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"expected scores of shape ({boxes.shape[0]},), got {tuple(scores.shape)}")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float = NMS_IOU_THRESHOLD) -> Tensor:
    """Greedy NMS, written to be read: take the best box, drop every box that overlaps it by
    more than ``iou_threshold``, repeat with the best box left.

    Args:
        boxes: ``(N, 4)`` xyxy.
        scores: ``(N,)``.
        iou_threshold: a box is suppressed when its IoU with a kept box is *greater* than this.

    Returns:
        ``(N_kept,)`` long indices of the kept boxes, best score first (ties: lower index first).
        Equal to ``torchvision.ops.nms``.
    """
    _check_nms_input(boxes, scores, iou_threshold)
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes, boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


@dataclass
class NMSStep:
    """One iteration of greedy NMS: the box kept and the boxes it suppressed."""

    kept: int  # index of the box kept in this step
    suppressed: list[int]  # indices it removes (IoU with it > threshold), not yet removed before
    ious: list[float]  # their IoU with the kept box


def nms_steps(
    boxes: Tensor, scores: Tensor, iou_threshold: float = NMS_IOU_THRESHOLD
) -> list[NMSStep]:
    """:func:`nms`, recording each iteration: ``[step.kept for step in steps]`` equals ``nms``."""
    _check_nms_input(boxes, scores, iou_threshold)
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes, boxes)
    alive = torch.ones(len(boxes), dtype=torch.bool)
    steps = []
    for i in order.tolist():
        if not alive[i]:
            continue
        alive[i] = False
        hit = (iou[i].cpu() > iou_threshold) & alive
        idx = hit.nonzero().flatten().tolist()
        alive &= ~hit
        steps.append(NMSStep(kept=i, suppressed=idx, ious=[float(iou[i, j]) for j in idx]))
    return steps


def _check_outputs(loc_pred: Tensor, conf_pred: Tensor, priors: Tensor) -> None:
    if loc_pred.dim() != 3 or loc_pred.shape[-1] != 4:
        raise ValueError(f"expected loc_pred of shape (B, P, 4), got {tuple(loc_pred.shape)}")
    if conf_pred.dim() != 3 or conf_pred.shape[:2] != loc_pred.shape[:2]:
        raise ValueError(
            f"expected conf_pred of shape (B, P, K) with (B, P) = {tuple(loc_pred.shape[:2])}, "
            f"got {tuple(conf_pred.shape)}"
        )
    if conf_pred.shape[-1] < 2:
        raise ValueError(f"need K >= 2 classes (background + one), got {conf_pred.shape[-1]}")
    if priors.shape != (loc_pred.shape[1], 4):
        raise ValueError(
            f"expected priors of shape ({loc_pred.shape[1]}, 4), got {tuple(priors.shape)}"
        )
    for name, t in (("loc_pred", loc_pred), ("conf_pred", conf_pred)):
        finite = t.sum(dim=(1, 2)).isfinite()  # (B,): one nan or inf makes its image's sum so
        if not finite.all():  # nan boxes or scores would become detections without a word
            i = int((~finite).nonzero()[0])
            raise ValueError(f"image {i}: {name} holds nan or inf (are the weights finite?)")


def _to_pixels(det: dict[str, Tensor], image_size: tuple[int, int] | None) -> dict[str, Tensor]:
    if image_size is not None:
        h, w = image_size
        det["boxes"] = det["boxes"] * det["boxes"].new_tensor([w, h, w, h])
    return det


PREFIX_PER_DETECTION = 2  # postprocess first tries each image's best 2 × top_k (box, class)
# pairs: NMS rarely removes half of them, so this usually yields the top_k detections ...
PREFIX_GROWTH = 4  # ... and an image that falls short tries 4 times as many, and so on
GROUP_SHIFT = 2.0  # candidates are clipped to [0, 1], so shifting group g by 2g keeps groups apart
NMS_CALL_MAX_BOXES = {"cpu": 0, "cuda": 5000}  # candidates one NMS call may take (at least one
# image's): the CPU kernel costs kept × candidates, so one image per call; the CUDA kernel
# compares all pairs at once, so images share a call up to an (M × M)-bit mask of 3 MB


def _check_postprocess_args(
    score_threshold: float, iou_threshold: float, top_k: int, candidates_per_class: int
) -> None:
    if not 0 <= score_threshold <= 1:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if top_k < 0 or candidates_per_class < 0:
        raise ValueError(
            f"top_k and candidates_per_class must be >= 0, got {top_k} and {candidates_per_class}"
        )


def _in_reference_order(
    pair_scores: Tensor, pair_idx: Tensor, p: int, k: int
) -> tuple[Tensor, Tensor]:
    """Sort ``(N, n)`` (box, class) pairs best first, breaking ties of score by class, then by
    box, as the per-class loop of :func:`postprocess_reference` (and torchvision) does."""
    class_major = (pair_idx % k) * p + pair_idx // k  # (N, n)
    by_class = class_major.argsort(dim=1)
    pair_scores, pair_idx = pair_scores.gather(1, by_class), pair_idx.gather(1, by_class)
    by_score = pair_scores.argsort(dim=1, descending=True, stable=True)
    return pair_scores.gather(1, by_score), pair_idx.gather(1, by_score)


def _rank_in_group(groups: Tensor) -> Tensor:
    """``(M,)`` group ids of entries sorted best first -> each entry's rank inside its group
    (0 for the group's best), ``(M,)`` long."""
    order = groups.argsort(stable=True)  # grouped, still best first inside each group
    counts = torch.bincount(groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(groups)
    rank[order] = torch.arange(len(groups), device=groups.device) - starts[groups[order]]
    return rank


def _image_chunks(counts: list[int], max_boxes: int) -> list[tuple[int, int]]:
    """Consecutive images ``[first, stop)`` grouped so that each group has at most ``max_boxes``
    candidates (an image with more forms a group alone); every image is in one group."""
    chunks, first, total = [], 0, 0
    for i, count in enumerate(counts):
        if i > first and total + count > max_boxes:
            chunks.append((first, i))
            first, total = i, 0
        total += count
    if counts:
        chunks.append((first, len(counts)))
    return chunks


def _detect(
    pair_scores: Tensor,
    pair_idx: Tensor,
    complete: Tensor,
    images: Tensor,
    loc_pred: Tensor,
    priors: Tensor,
    num_classes: int,
    score_threshold: float,
    iou_threshold: float,
    top_k: int,
    candidates_per_class: int,
    variances: tuple[float, float],
) -> tuple[list[dict[str, Tensor]], list[int]]:
    """Detections from the best (box, class) pairs of some images.

    Args:
        pair_scores: ``(N, n)`` class probabilities of N images, best first in each row.
        pair_idx: ``(N, n)`` long: the pair, as ``box * K + class``.
        complete: ``(N,)`` bool: the row holds every candidate of its image.
        images: ``(N,)`` long: the row's image in ``loc_pred``.
        loc_pred: ``(B, P, 4)`` offsets.

    Returns:
        N dicts (normalised boxes), and the number of detections of each.
    """
    b, n = pair_scores.shape
    k = num_classes
    prior, cls = pair_idx // k, pair_idx % k  # (N, n) each
    row = torch.arange(b, device=pair_idx.device)[:, None].expand(b, n)
    rank = _rank_in_group((row * k + cls).flatten()).view(b, n)
    chosen = (pair_scores > score_threshold) & (rank < candidates_per_class)
    # Where a row was cut, pairs tied with its last score may have lost their tie to a pair
    # left out: only pairs strictly better than the last one are certain.
    chosen &= complete[:, None] | (pair_scores > pair_scores[:, -1:])
    row, j = chosen.nonzero(as_tuple=True)  # (M,) each: row-major, best first in each row
    box_idx, cls, scores = prior[row, j], cls[row, j], pair_scores[row, j]
    offsets = loc_pred[images[row], box_idx].float()  # (M, 4): only the candidates are decoded
    boxes = clip_boxes(decode(offsets, priors[box_idx].float(), variances))

    # Per-class NMS, one call per group of images (each call returns its survivors best first).
    # Inside a call, each (image, class) group is shifted by GROUP_SHIFT × its number: shifted
    # groups never overlap, so one call runs every group's NMS (torchvision's batched_nms trick).
    counts = torch.bincount(row, minlength=b).tolist()
    chunks = _image_chunks(counts, NMS_CALL_MAX_BOXES.get(boxes.device.type, 0))
    first_row = torch.tensor([f for f, stop in chunks for _ in range(f, stop)], device=row.device)
    group = (row - first_row[row]) * k + cls  # (M,) numbered from 0 inside each call
    # In float64, where adding a shift of a few hundred loses none of a box's float32 bits.
    shifted = boxes.double() + (group * GROUP_SHIFT)[:, None]
    scores64 = scores.double()
    ends = torch.tensor(counts).cumsum(0).tolist()
    kept = []
    for f, stop in chunks:
        start, end = ends[f] - counts[f], ends[stop - 1]
        if end > start:
            kept.append(tv_nms(shifted[start:end], scores64[start:end], iou_threshold) + start)
    keep = torch.cat(kept) if kept else row.new_zeros(0)
    # Back to row order (a stable sort keeps each row's best-first order), then top_k each.
    keep = keep[row[keep].argsort(stable=True)]
    kept_per_row = torch.bincount(row[keep], minlength=b)
    starts = torch.cumsum(kept_per_row, 0) - kept_per_row
    keep = keep[torch.arange(len(keep), device=keep.device) - starts[row[keep]] < top_k]
    found = torch.bincount(row[keep], minlength=b).tolist()
    detections = [
        {"boxes": bx, "scores": sc, "labels": lb}
        for bx, sc, lb in zip(
            boxes[keep].split(found), scores[keep].split(found), cls[keep].split(found), strict=True
        )
    ]
    return detections, found


def postprocess(
    loc_pred: Tensor,
    conf_pred: Tensor,
    priors: Tensor,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU_THRESHOLD,
    top_k: int = TOP_K,
    candidates_per_class: int = CANDIDATES_PER_CLASS,
    variances: tuple[float, float] = VARIANCES,
    image_sizes: list[tuple[int, int]] | None = None,
) -> list[dict[str, Tensor]]:
    """Raw network outputs -> detections, for the whole batch at once.

    Gives the detections of :func:`postprocess_reference`: per image, softmax; per class the
    ``candidates_per_class`` best scores above ``score_threshold``; per-class NMS; the ``top_k``
    best survivors. It does less work to get there. Greedy NMS decides a box from the better
    boxes of its class alone, so an image's best ``n`` (box, class) pairs, whatever their
    classes, go through NMS exactly as they would among all candidates; if ``top_k`` of them
    survive, no worse pair could make the cut, and those are never decoded or compared. We try
    ``n = PREFIX_PER_DETECTION × top_k`` and grow ``n`` for an image where too few survive.

    Args:
        loc_pred: ``(B, P, 4)`` offsets.
        conf_pred: ``(B, P, K)`` logits, class 0 = background.
        priors: ``(P, 4)`` cxcywh default boxes.
        score_threshold: a (box, class) pair is a candidate if its probability is above this.
        iou_threshold: NMS removes a box whose IoU with a better box of its class is above this.
        top_k: detections kept per image.
        candidates_per_class: how many of a class's best candidates enter NMS.
        image_sizes: optional ``(height, width)`` per image; boxes come back in those pixels.

    Returns:
        B dicts with ``boxes`` ``(D, 4)`` xyxy clipped to the image (normalised, or pixels),
        ``scores`` ``(D,)`` descending, ``labels`` ``(D,)`` long in 1..K-1.
    """
    _check_outputs(loc_pred, conf_pred, priors)
    _check_postprocess_args(score_threshold, iou_threshold, top_k, candidates_per_class)
    b, p, k = conf_pred.shape
    if image_sizes is not None and len(image_sizes) != b:
        raise ValueError(f"got {len(image_sizes)} image sizes for {b} images")
    args = (k, score_threshold, iou_threshold, top_k, candidates_per_class, variances)
    detections: list[dict[str, Tensor]] = [{}] * b
    with torch.no_grad():
        scores = F.softmax(conf_pred.float(), dim=-1)  # (B, P, K)
        scores[..., 0] = -1.0  # background is never a detection: below every threshold
        pairs = scores.view(b, p * k)  # (B, P*K): entry j is default box j // K, class j % K
        todo = torch.arange(b, device=pairs.device)  # images without their detections yet
        n = max(top_k, 1) * PREFIX_PER_DETECTION
        while len(todo):
            n = min(n, p * k)
            rows = pairs if len(todo) == b else pairs[todo]
            best_scores, best_idx = _in_reference_order(*rows.topk(n, dim=1), p, k)  # (N, n)
            complete = (best_scores[:, -1] <= score_threshold) | (n == p * k)  # (N,)
            dets, found = _detect(best_scores, best_idx, complete, todo, loc_pred, priors, *args)
            short = []
            for i, det, count, whole in zip(
                todo.tolist(), dets, found, complete.tolist(), strict=True
            ):
                if count < top_k and not whole:
                    short.append(i)  # too few survivors among the first n: look further
                else:
                    detections[i] = det
            todo = torch.tensor(short, dtype=torch.long, device=pairs.device)
            n *= PREFIX_GROWTH
    return [
        _to_pixels(det, image_sizes[i] if image_sizes is not None else None)
        for i, det in enumerate(detections)
    ]


def postprocess_reference(
    loc_pred: Tensor,
    conf_pred: Tensor,
    priors: Tensor,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU_THRESHOLD,
    top_k: int = TOP_K,
    candidates_per_class: int = CANDIDATES_PER_CLASS,
    variances: tuple[float, float] = VARIANCES,
) -> list[dict[str, Tensor]]:
    """:func:`postprocess` as plain loops over images and classes, with the readable :func:`nms`.

    Slow; the tests use it as the oracle for the fast path. Normalised boxes only.
    """
    _check_outputs(loc_pred, conf_pred, priors)
    detections = []
    for loc, conf in zip(loc_pred.float(), conf_pred.float(), strict=True):
        scores = F.softmax(conf, dim=-1)  # (P, K)
        boxes = clip_boxes(decode(loc, priors.float(), variances))  # (P, 4)
        all_boxes, all_scores, all_labels = [], [], []
        for c in range(1, conf.shape[-1]):
            s = scores[:, c]
            s, idx = s.sort(descending=True, stable=True)  # ties: the lower box first
            s, idx = s[:candidates_per_class], idx[:candidates_per_class]
            above = s > score_threshold
            s, idx = s[above], idx[above]
            kept = nms(boxes[idx], s, iou_threshold)
            all_boxes.append(boxes[idx][kept])
            all_scores.append(s[kept])
            all_labels.append(torch.full((len(kept),), c, dtype=torch.long))
        s = torch.cat(all_scores)
        order = s.argsort(descending=True, stable=True)[:top_k]
        detections.append(
            {
                "boxes": torch.cat(all_boxes)[order],
                "scores": s[order],
                "labels": torch.cat(all_labels)[order],
            }
        )
    return detections
