"""The fast paths: the same results as the readable functions, computed with speed tricks.

The functions the lessons teach (:func:`ssdlib.boxes.box_iou`, :func:`ssdlib.matching.match` and
:func:`~ssdlib.matching.assign_targets`, :func:`ssdlib.loss.hard_negative_mining`,
:func:`~ssdlib.loss.background_loss` and :class:`~ssdlib.loss.MultiBoxLoss`,
:func:`ssdlib.nms.postprocess`) are written to be read, as the paper states each rule. This module
computes the same things faster, for the places where speed matters: training uses
:func:`assign_targets` and :class:`MultiBoxLoss`, ``SSD.detect`` and evaluation use
:func:`postprocess`. Each function's docstring names its readable twin and its ``make bench`` row;
``tests/test_fast.py`` checks each against its twin on random, tie-heavy and edge-case inputs.

Read the readable version first: everything here is an optimisation of it, not a new idea.

Letters: ``B`` images, ``P`` default boxes, ``N`` objects of a batch, ``K`` classes including
background 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import nms as tv_nms

from . import loss as readable_loss
from .boxes import VARIANCES, _check_box_pairs, clip_boxes, cxcywh_to_xyxy, decode, encode
from .loss import _check_loss_inputs
from .matching import IOU_THRESHOLD, _check_priors, _check_threshold, stack_targets
from .nms import (
    CANDIDATES_PER_CLASS,
    NMS_IOU_THRESHOLD,
    SCORE_THRESHOLD,
    TOP_K,
    _check_postprocess_call,
    _to_pixels,
)

# -- IoU ---------------------------------------------------------------------------------------

IOU_BLOCK_ELEMENTS = 131072  # pairs per block of rows on a CPU: the block's float32 temporaries
# (512 KB) stay in a core's L2 cache instead of streaming (N, M) matrices through memory


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """:func:`ssdlib.boxes.box_iou`, computed in cache-sized blocks of rows on a CPU, in place.

    Same arguments and result (bit for bit). Used by :func:`assign_targets`; no row of its own
    (the ``cpu-targets-loss`` row times it).
    """
    _check_box_pairs(boxes1, boxes2)
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    # One coordinate at a time, each copied to a contiguous vector first: an op over a strided
    # column (every 4th float) is not vectorised and runs several times slower.
    x1b, y1b, x2b, y2b = (c.contiguous()[..., None, :] for c in boxes2.unbind(-1))  # (..., 1, M)
    # union = area1 + area2 - inter is 0 only when both boxes have zero area, and then inter is
    # 0 too. Raising a zero area2 to the smallest float gives 0 / tiny = 0 there and changes no
    # other union (a1 + tiny == a1), without a pass over the (N, M) matrix to clamp it.
    area2 = ((x2b - x1b).clamp(min=0) * (y2b - y1b).clamp(min=0)).clamp_(
        min=torch.finfo(dtype).tiny
    )
    x1a, y1a, x2a, y2a = (c.contiguous()[..., :, None] for c in boxes1.unbind(-1))  # (..., N, 1)
    area1 = (x2a - x1a).clamp(min=0) * (y2a - y1a).clamp(min=0)  # (..., N, 1)
    iou = boxes1.new_empty((*boxes1.shape[:-1], boxes2.shape[-2]))  # (..., N, M)
    # On a CPU, a few rows at a time: each step's temporaries then stay in the cache instead of
    # streaming (N, M) matrices through memory.
    n, row_size = iou.shape[-2], math.prod(iou.shape[:-2]) * iou.shape[-1]
    rows = max(1, IOU_BLOCK_ELEMENTS // max(1, row_size)) if iou.device.type == "cpu" else n
    for start in range(0, n, rows):
        r = slice(start, start + rows)
        inter = torch.minimum(x2a[..., r, :], x2b, out=iou[..., r, :])  # (..., r, M)
        inter.sub_(torch.maximum(x1a[..., r, :], x1b)).clamp_(min=0)  # the overlap's width
        height = torch.minimum(y2a[..., r, :], y2b).sub_(torch.maximum(y1a[..., r, :], y1b))
        inter.mul_(height.clamp_(min=0))
        # height's buffer is free again: the union goes there
        union = torch.add(area1[..., r, :], area2, out=height).sub_(inter)
        inter.div_(union)
    return iou


# -- matching and targets ----------------------------------------------------------------------


def match_stacked(
    iou: Tensor, image: Tensor, num_images: int, iou_threshold: float
) -> tuple[Tensor, Tensor]:
    """Both matching rules for a batch whose objects are stacked, not padded.

    A batch pads to its most crowded image: 32 VOC images hold about 80 objects but pad to
    32 × 12 rows. Stacking computes the IoU of the real objects only, and both rules work on
    the few (object, box) pairs that matter (at or above the threshold; each object's best)
    rather than on ``(B, P)`` temporaries. Equals :func:`ssdlib.matching.match_iou` on the
    padded batch.

    Args:
        iou: ``(N, P)`` IoU of every object of the batch with every default box.
        image: ``(N,)`` long: each object's image, in image order.
        num_images: ``B``.

    Returns:
        ``(B, P)`` long: the matched object's row of ``iou``, -1 for background; and the
        positives' ``image · P + box`` indices, ascending. Ties go as in
        :func:`ssdlib.matching.match_iou`: the first object wins rule 1, the last one rule 2.
    """
    n, p = iou.shape
    matched = torch.full((num_images * p,), -1, dtype=torch.long, device=iou.device)  # (B*P,)
    if n == 0:
        return matched.view(num_images, p), matched[:0]
    # Only a few hundred of the P boxes reach the threshold with any object. A maximum over the
    # objects (down the columns: a fast, vectorised reduction) finds them, and both rules then
    # read those columns instead of the whole matrix.
    near = (iou.amax(dim=0) >= iou_threshold).nonzero().squeeze(1)  # (C,) ascending
    near_iou = iou[:, near]  # (N, C)

    # Rule 1: among the pairs at or above the threshold (a few per object), each (image, box)
    # slot takes the object with the highest IoU, the first of equals (as torch.max does).
    obj, col = (near_iou >= iou_threshold).nonzero(as_tuple=True)  # (A,) each
    overlap = near_iou[obj, col]
    slots, slot_of = torch.unique(image[obj] * p + near[col], return_inverse=True)  # (S,), (A,)
    best = overlap.new_zeros(len(slots)).scatter_reduce_(
        0, slot_of, overlap, "amax", include_self=False
    )
    is_best = overlap == best[slot_of]
    matched[slots] = torch.zeros_like(slots).scatter_reduce_(
        0, slot_of[is_best], obj[is_best], "amin", include_self=False
    )
    # Rule 2: each object takes its best default box; of objects sharing one, the last wins.
    # An object whose best IoU reaches the threshold has that box among the columns above (the
    # first of equals too, the columns being in order); the others search their whole row.
    best_prior = torch.zeros(n, dtype=torch.long, device=iou.device)  # (N,)
    elsewhere = torch.ones(n, dtype=torch.bool, device=iou.device)
    if len(near):
        best_overlap, best_col = near_iou.max(dim=1)
        best_prior, elsewhere = near[best_col], best_overlap < iou_threshold
    if elsewhere.any():
        best_prior[elsewhere] = iou[elsewhere].argmax(dim=1)
    forced, slot_of = torch.unique(image * p + best_prior, return_inverse=True)  # (F,), (N,)
    objects = torch.arange(n, device=iou.device)
    matched[forced] = torch.zeros_like(forced).scatter_reduce_(
        0, slot_of, objects, "amax", include_self=False
    )
    return matched.view(num_images, p), torch.unique(torch.cat([slots, forced]))


def assign_targets(
    gt_boxes_list: list[Tensor],
    gt_labels_list: list[Tensor],
    priors: Tensor,
    iou_threshold: float = IOU_THRESHOLD,
    variances: tuple[float, float] = VARIANCES,
) -> tuple[Tensor, Tensor]:
    """:func:`ssdlib.matching.assign_targets` (without ``return_details``): the batch's objects
    stacked instead of padded, :func:`match_stacked`, and only the positives encoded.

    Same arguments and result. Bench rows ``cpu-targets-loss`` and ``gpu-targets-loss``.
    """
    _check_priors(priors)
    _check_threshold(iou_threshold)
    gt_boxes, gt_labels, counts = stack_targets(gt_boxes_list, gt_labels_list)  # (N, 4), (N,)
    gt_boxes = gt_boxes.to(device=priors.device, dtype=priors.dtype)
    gt_labels = gt_labels.to(priors.device)
    b, p = len(counts), priors.shape[0]
    image = torch.repeat_interleave(torch.arange(b), torch.tensor(counts)).to(priors.device)

    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # (N, P)
    matched, positive = match_stacked(iou, image, b, iou_threshold)  # (B, P), (N_pos,)

    # Encode only the positives (a few hundred of B·P boxes), then scatter them into place.
    obj, prior = matched.view(-1)[positive], positive % p  # (N_pos,) each
    labels = torch.zeros_like(matched)  # (B, P), 0 = background
    labels.view(-1)[positive] = gt_labels[obj]
    loc_targets = priors.new_zeros(b, p, 4)
    loc_targets.view(-1, 4)[positive] = encode(gt_boxes[obj], priors[prior], variances)
    return loc_targets, labels


# -- loss --------------------------------------------------------------------------------------

IMAGES_PER_CHUNK = 8  # background_loss's working set on a CPU: 8 SSD300 images × 21 classes
# (6 MB) stay in the last-level cache between its four sweeps
LOG2_E = 1 / math.log(2)  # exp(d) = exp2(d · log2 e)


def background_loss(conf_pred: Tensor) -> Tensor:
    """:func:`ssdlib.loss.background_loss`, ``-log p_0``, without a row maximum and with exp2.

    Equals the readable ``-F.log_softmax(conf_pred, -1)[..., 0]`` to float32 rounding: against a
    float64 reference both are off by the same few 1e-6 at most, far below any gap the mining's
    ranking could act on. Bench row ``cpu-background-loss``.

    On a CPU it is computed as ``log Σ_k exp(x_k - x_0)``. Shifting every logit by the
    background's own ``x_0`` makes that class's term ``exp(0) = 1``, so the sum is at least 1 and
    no row needs its maximum first: a row maximum over 21 classes costs as much as the whole
    softmax, while a shift, an ``exp`` and a sum each sweep the block once, fully vectorised;
    ``exp2`` is cheaper than ``exp``. A box whose background trails another class by more than
    about 88 (``p_0 < e^-88``) overflows float32; such rows are recomputed with ``log_softmax``.

    Args:
        conf_pred: ``(B, P, K)`` logits.

    Returns:
        ``(B, P)`` float32, no gradient.
    """
    if conf_pred.dim() != 3:
        raise ValueError(f"expected conf_pred of shape (B, P, K), got {tuple(conf_pred.shape)}")
    with torch.no_grad():
        if conf_pred.device.type != "cpu":
            # One kernel over the whole batch; a GPU has no cache to fit and no check to wait for.
            return readable_loss.background_loss(conf_pred)
        ranking = conf_pred.new_empty(conf_pred.shape[:2], dtype=torch.float32)
        # A few images at a time, reusing one buffer that stays in the cache between the steps.
        chunk = max(1, min(IMAGES_PER_CHUNK, len(conf_pred)))  # a lone image needs no more
        buffer = conf_pred.new_empty((chunk, *conf_pred.shape[1:]), dtype=torch.float32)
        for logits, out in zip(conf_pred.split(chunk), ranking.split(chunk), strict=True):
            logits = logits.float()
            shifted = torch.sub(logits, logits[..., :1], out=buffer[: len(logits)])  # x_k - x_0
            torch.sum(shifted.mul_(LOG2_E).exp2_(), dim=-1, out=out).log_()
        if not torch.isfinite(ranking.sum()):  # one inf or nan makes the sum so
            overflow = ~torch.isfinite(ranking)
            ranking[overflow] = -F.log_softmax(conf_pred[overflow].float(), dim=-1)[:, 0]
    return ranking


def hardest_negatives(
    negative_loss: Tensor, num_pos: Tensor, neg_pos_ratio: float
) -> tuple[Tensor, Tensor]:
    """The negatives :func:`ssdlib.loss.hard_negative_mining` chooses, as ``(image, box)`` index
    pairs (``(M,)`` each), from a top-k instead of a sort of every box: the loss gathers these
    few boxes without a pass over a ``(B, P)`` mask.

    Args:
        negative_loss: ``(B, P)`` the ranking loss, ``-inf`` at the positives (they sort last).
        num_pos: ``(B,)`` positives per image.
    """
    num_neg = (neg_pos_ratio * num_pos[:, None]).long()  # (B, 1)
    # The k hardest boxes of each image, k = the most negatives any image may take; then each
    # image keeps its own first num_neg of them. topk avoids sorting all P boxes.
    k = min(int(num_neg.max()), negative_loss.shape[1]) if negative_loss.numel() else 0
    hardest_loss, hardest = negative_loss.topk(k, dim=1)  # (B, k), descending
    take = (torch.arange(k, device=negative_loss.device) < num_neg) & (hardest_loss > -float("inf"))
    image = torch.arange(len(negative_loss), device=negative_loss.device)[:, None].expand(-1, k)
    return image[take], hardest[take]


class MultiBoxLoss(readable_loss.MultiBoxLoss):
    """:class:`ssdlib.loss.MultiBoxLoss`, gathering only the chosen boxes instead of masking all.

    Same arguments and results (to float32 rounding; where negatives tie in loss at the cut, it
    may choose another of the equals, with the same loss). Training uses it. Bench rows
    ``cpu-targets-loss`` and ``cpu-targets-loss-backward``.
    """

    def forward(
        self,
        loc_pred: Tensor,
        conf_pred: Tensor,
        loc_targets: Tensor,
        labels: Tensor,
        normalizer: Tensor | float | None = None,
    ) -> tuple[Tensor, Tensor]:
        _check_loss_inputs(loc_pred, conf_pred, loc_targets, labels)
        positive = labels > 0  # (B, P)
        num_pos = positive.sum(dim=1)  # (B,)
        if normalizer is None:
            normalizer = num_pos.sum().clamp(min=1).to(torch.float32)  # N (1 when there are none)

        # Rank every box by its background loss -log p_0 (no gradient: only the order is used)
        # and keep the positives and the hardest negatives, as index pairs.
        pos_img, pos_prior = positive.nonzero(as_tuple=True)  # (N_pos,) each
        negative_loss = background_loss(conf_pred).masked_fill_(positive, -float("inf"))
        neg_img, neg_prior = hardest_negatives(negative_loss, num_pos, self.neg_pos_ratio)
        img, prior = torch.cat([pos_img, neg_img]), torch.cat([pos_prior, neg_prior])  # (M,)
        conf_loss = F.cross_entropy(
            conf_pred[img, prior].float(), labels[img, prior], reduction="sum"
        )
        loc_loss = F.smooth_l1_loss(
            loc_pred[pos_img, pos_prior].float(),
            loc_targets[pos_img, pos_prior].float(),
            reduction="sum",
            beta=readable_loss.SMOOTH_L1_BETA,
        )
        return self.alpha * loc_loss / normalizer, conf_loss / normalizer


# -- postprocess -------------------------------------------------------------------------------

PREFIX_PER_DETECTION = 2  # postprocess first tries each image's best 2 × top_k (box, class)
# pairs: NMS rarely removes half of them, so this usually yields the top_k detections ...
PREFIX_GROWTH = 4  # ... and an image that falls short tries 4 times as many, and so on
GROUP_SHIFT = 2.0  # candidates are clipped to [0, 1], so shifting group g by 2g keeps groups apart
NMS_CALL_MAX_BOXES = {"cpu": 0, "cuda": 5000}  # candidates one NMS call may take (at least one
# image's): the CPU kernel costs kept × candidates, so one image per call; the CUDA kernel
# compares all pairs at once, so images share a call up to an (M × M)-bit mask of 3 MB


def _in_reference_order(
    pair_scores: Tensor, pair_idx: Tensor, p: int, k: int
) -> tuple[Tensor, Tensor]:
    """Sort ``(N, n)`` (box, class) pairs best first, breaking ties of score by class, then by
    box, as the per-class loop of :func:`ssdlib.nms.postprocess` (and torchvision) does."""
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
    """:func:`ssdlib.nms.postprocess`, on only as many candidates as the top_k detections need.

    Same arguments and detections (the tests compare them, ties included). Greedy NMS decides a
    box from the better boxes of its class alone, so an image's best ``n`` (box, class) pairs,
    whatever their classes, go through NMS exactly as they would among all candidates; if
    ``top_k`` of them survive, no worse pair could make the cut, and those are never decoded or
    compared. We try ``n = PREFIX_PER_DETECTION × top_k`` and grow ``n`` for an image where too
    few survive. ``SSD.detect`` and evaluation use it. Bench rows ``cpu-postprocess-trained``,
    ``cpu-postprocess-random``, ``cpu-postprocess-tiny-model``. Arguments and result: those of
    :func:`ssdlib.nms.postprocess`.
    """
    _check_postprocess_call(
        loc_pred, conf_pred, priors, score_threshold, iou_threshold, top_k, candidates_per_class,
        image_sizes,
    )  # fmt: skip
    b, p, k = conf_pred.shape
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
