"""Matching default boxes to ground truth (SSD §2.2, "Matching strategy").

"We begin by matching each ground truth box to the default box with the best jaccard overlap
(as in MultiBox). Unlike MultiBox, we then match default boxes to any ground truth with jaccard
overlap higher than a threshold (0.5)."

Two rules, applied in this order so that the second wins:

1. threshold: every default box whose best IoU is >= ``iou_threshold`` takes that ground truth;
2. forcing: every ground truth takes its single best default box, even below the threshold,
   so no object is left without a positive. If two objects share a best box, the later one wins
   (as torchvision's ``SSDMatcher``).

Letters: ``B`` images, ``P`` default boxes, ``G`` ground-truth boxes (padded to the most in the
batch), ``K`` classes including background 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import VARIANCES, box_iou, cxcywh_to_xyxy, encode

IOU_THRESHOLD = 0.5  # "jaccard overlap higher than a threshold (0.5)" (SSD §2.2)
BACKGROUND = 0  # class index of "no object"; real classes are 1..K-1
NORMALISED_SLACK = 0.5  # ground truth may stick out of the image (unclipped annotations), but a
# coordinate beyond half an image outside it is a box in pixels, not normalised


def _check_priors(priors: Tensor) -> None:
    if priors.dim() != 2 or priors.shape[-1] != 4:
        raise ValueError(f"expected priors of shape (P, 4) cxcywh, got {tuple(priors.shape)}")


def _bad_box(gt_boxes: Tensor) -> int | None:
    """Index of the first degenerate (x2 <= x1 or y2 <= y1) or non-finite box, or None."""
    if not gt_boxes.numel():
        return None
    wh = gt_boxes[:, 2:] - gt_boxes[:, :2]
    bad = (wh <= 0).any(dim=1) | ~torch.isfinite(gt_boxes).all(dim=1)
    return int(bad.nonzero()[0]) if bad.any() else None


def _degenerate_box_error(gt_boxes: Tensor, i: int, where: str) -> ValueError:
    box = [round(v, 4) for v in gt_boxes[i].tolist()]
    return ValueError(
        f"{where}: box {i} = {box} is degenerate or not finite; "
        "expected xyxy with x2 > x1 and y2 > y1"
    )


def _check_gt(gt_boxes: Tensor, where: str) -> None:
    if gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"{where}: expected boxes of shape (G, 4), got {tuple(gt_boxes.shape)}")
    i = _bad_box(gt_boxes)
    if i is not None:
        raise _degenerate_box_error(gt_boxes, i, where)


def _match_padded(iou: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Both matching rules on a padded batch: the readable version of :func:`_match_stacked`,
    which the tests compare it with.

    Args:
        iou: ``(B, G, P)`` IoU of each ground truth with each default box.
        valid: ``(B, G)`` bool, False for padding rows.

    Returns:
        ``(B, P)`` long: index of the matched ground truth, -1 for background.
    """
    b, g, p = iou.shape
    iou = iou.masked_fill(~valid[:, :, None], -1.0)  # padding never wins
    if g == 0:
        return torch.full((b, p), -1, dtype=torch.long, device=iou.device)
    # Rule 1: each default box takes its best ground truth if the overlap reaches the threshold.
    best_iou, best_gt = iou.max(dim=1)  # (B, P)
    matched = torch.where(best_iou >= iou_threshold, best_gt, -1)
    # Rule 2: each ground truth takes its best default box. scatter_reduce("amax") lets the
    # highest index win ties deterministically on every device.
    best_prior = iou.argmax(dim=2)  # (B, G)
    gt_idx = torch.arange(g, device=iou.device).expand(b, g)
    forced = torch.full((b, p), -1, dtype=torch.long, device=iou.device)
    forced.scatter_reduce_(1, best_prior, torch.where(valid, gt_idx, -1), reduce="amax")
    return torch.where(forced >= 0, forced, matched)


def _match_stacked(
    iou: Tensor, image: Tensor, num_images: int, iou_threshold: float
) -> tuple[Tensor, Tensor]:
    """Both matching rules for a batch whose objects are stacked, not padded.

    A batch pads to its most crowded image: 32 VOC images hold about 80 objects but pad to
    32 × 12 rows. Stacking computes the IoU of the real objects only, and both rules work on
    the few (object, box) pairs that matter (at or above the threshold; each object's best)
    rather than on ``(B, P)`` temporaries.

    Args:
        iou: ``(N, P)`` IoU of every object of the batch with every default box.
        image: ``(N,)`` long: each object's image, in image order.
        num_images: ``B``.

    Returns:
        ``(B, P)`` long: the matched object's row of ``iou``, -1 for background; and the
        positives' ``image · P + box`` indices, ascending. Ties go as in :func:`_match_padded`:
        the first object wins rule 1, the last one rule 2.
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


def _check_threshold(iou_threshold: float) -> None:
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")


def match(gt_boxes: Tensor, priors: Tensor, iou_threshold: float = IOU_THRESHOLD) -> Tensor:
    """Match the default boxes of one image to its ground truth.

    Args:
        gt_boxes: ``(G, 4)`` xyxy, normalised; ``G`` may be 0.
        priors: ``(P, 4)`` cxcywh default boxes.
        iou_threshold: the overlap from which a default box is a positive.

    Returns:
        ``(P,)`` long: index into ``gt_boxes`` of each default box's match, -1 for background.
    """
    _check_priors(priors)
    _check_gt(gt_boxes, "gt_boxes")
    _check_threshold(iou_threshold)
    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # (G, P)
    image = torch.zeros(gt_boxes.shape[0], dtype=torch.long, device=gt_boxes.device)
    return _match_stacked(iou, image, 1, iou_threshold)[0][0]


def _image_and_index(row: int, counts: list[int]) -> tuple[int, int]:
    """Image, and index inside it, of row ``row`` of per-image tensors stacked in order."""
    for i, count in enumerate(counts):
        if row < count:
            return i, row
        row -= count
    raise IndexError(f"row {row} is past the last image")


def stack_targets(
    gt_boxes_list: list[Tensor], gt_labels_list: list[Tensor]
) -> tuple[Tensor, Tensor, list[int]]:
    """Check per-image ground truth and stack it into one tensor (the whole batch at once).

    Returns:
        boxes ``(N, 4)`` and labels ``(N,)`` long of all ``N`` objects, image after image, and
        the number of objects of each image.
    """
    if len(gt_boxes_list) != len(gt_labels_list):
        raise ValueError(
            f"got {len(gt_boxes_list)} box tensors but {len(gt_labels_list)} label tensors"
        )
    if not gt_boxes_list:
        raise ValueError("expected at least one image")
    for i, (boxes, labels) in enumerate(zip(gt_boxes_list, gt_labels_list, strict=True)):
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"image {i}: expected boxes of shape (G, 4), got {tuple(boxes.shape)}")
        if labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"image {i}: {boxes.shape[0]} boxes but labels of shape {tuple(labels.shape)}"
            )
    counts = [len(t) for t in gt_boxes_list]
    boxes = torch.cat(gt_boxes_list)  # (N, 4)
    labels = torch.cat([t.long() for t in gt_labels_list])  # (N,)
    # One check for the whole batch (on a GPU, one wait instead of one per image); the error
    # still names the image and the box.
    bad = _bad_box(boxes)
    if bad is not None:
        i, j = _image_and_index(bad, counts)
        raise _degenerate_box_error(gt_boxes_list[i], j, f"image {i}")
    outside = ((boxes < -NORMALISED_SLACK) | (boxes > 1 + NORMALISED_SLACK)).any(dim=1)
    if outside.any():
        i, j = _image_and_index(int(outside.nonzero()[0]), counts)
        box = [round(v, 4) for v in gt_boxes_list[i][j].tolist()]
        raise ValueError(
            f"image {i}: box {j} = {box} lies far outside the image [0, 1]: ground truth must "
            "be normalised (pixel coordinates divided by the image's width and height)"
        )
    if labels.numel() and int(labels.min()) < 1:
        i, _ = _image_and_index(int((labels < 1).nonzero()[0]), counts)
        raise ValueError(
            f"image {i}: labels must be >= 1 (0 is background), got {gt_labels_list[i].tolist()}"
        )
    return boxes, labels, counts


def pad_targets(
    gt_boxes_list: list[Tensor], gt_labels_list: list[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Check per-image ground truth and pad it into batch tensors.

    Returns:
        boxes ``(B, G, 4)``, labels ``(B, G)`` long, valid ``(B, G)`` bool, with ``G`` the most
        objects in any image (padding rows are zero boxes with label 0 and valid False).
    """
    stack_targets(gt_boxes_list, gt_labels_list)  # the checks
    boxes = torch.nn.utils.rnn.pad_sequence(gt_boxes_list, batch_first=True)  # (B, G, 4)
    labels = torch.nn.utils.rnn.pad_sequence([t.long() for t in gt_labels_list], batch_first=True)
    counts = torch.tensor([len(t) for t in gt_boxes_list], device=boxes.device)
    valid = torch.arange(boxes.shape[1], device=boxes.device)[None, :] < counts[:, None]
    return boxes, labels, valid


@dataclass
class MatchDetails:
    """Every intermediate step of :func:`assign_targets`, for the notebooks' figures."""

    iou: Tensor  # (B, G, P) IoU of every ground truth with every default box
    valid: Tensor  # (B, G) bool: which rows of G are real objects
    matched_gt: Tensor  # (B, P) long: matched ground truth, -1 for background
    above_threshold: Tensor  # (B, P) bool: positives by rule 1 (IoU >= threshold)
    forced: Tensor  # (B, P) bool: positives that only rule 2 made (forced best match)
    best_prior: Tensor  # (B, G) long: each object's best default box


def assign_targets(
    gt_boxes_list: list[Tensor],
    gt_labels_list: list[Tensor],
    priors: Tensor,
    iou_threshold: float = IOU_THRESHOLD,
    variances: tuple[float, float] = VARIANCES,
    return_details: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, MatchDetails]:
    """Training targets for a whole batch in one vectorised pass.

    Args:
        gt_boxes_list: B tensors ``(G_i, 4)`` xyxy normalised; an image may have no objects.
        gt_labels_list: B tensors ``(G_i,)`` with classes >= 1.
        priors: ``(P, 4)`` cxcywh default boxes.
        iou_threshold: the overlap from which a default box is a positive.
        variances: the encoding's scale (see :func:`ssdlib.boxes.encode`).
        return_details: also return a :class:`MatchDetails` with the IoU matrix and the matches.

    Returns:
        loc_targets ``(B, P, 4)`` offsets (zero for background) and labels ``(B, P)`` long
        (0 = background), plus the details when asked.
    """
    _check_priors(priors)
    _check_threshold(iou_threshold)
    gt_boxes, gt_labels, counts = stack_targets(gt_boxes_list, gt_labels_list)  # (N, 4), (N,)
    gt_boxes = gt_boxes.to(device=priors.device, dtype=priors.dtype)
    gt_labels = gt_labels.to(priors.device)
    b, p = len(counts), priors.shape[0]
    image = torch.repeat_interleave(torch.arange(b), torch.tensor(counts)).to(priors.device)

    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # (N, P)
    matched, positive = _match_stacked(iou, image, b, iou_threshold)  # (B, P), (N_pos,)

    # Encode only the positives (a few hundred of B·P boxes), then scatter them into place.
    obj, prior = matched.view(-1)[positive], positive % p  # (N_pos,) each
    labels = torch.zeros_like(matched)  # (B, P), 0 = background
    labels.view(-1)[positive] = gt_labels[obj]
    loc_targets = priors.new_zeros(b, p, 4)
    loc_targets.view(-1, 4)[positive] = encode(gt_boxes[obj], priors[prior], variances)
    if not return_details:
        return loc_targets, labels

    # The same matches in the padded (B, G, ...) layout the figures index by image and object.
    counts_t = torch.tensor(counts, device=priors.device)
    first = counts_t.cumsum(0) - counts_t  # (B,) row of each image's first object
    g = max(counts)
    row_in_image = torch.arange(len(image), device=priors.device) - first[image]  # (N,)
    padded_iou = iou.new_zeros(b, g, p)
    padded_iou[image, row_in_image] = iou
    valid = torch.zeros(b, g, dtype=torch.bool, device=priors.device)
    valid[image, row_in_image] = True
    masked_iou = padded_iou.masked_fill(~valid[:, :, None], -1.0)
    best_iou = masked_iou.max(dim=1).values if g else iou.new_zeros(b, p)
    above = best_iou >= iou_threshold
    details = MatchDetails(
        iou=padded_iou,
        valid=valid,
        matched_gt=torch.where(matched >= 0, matched - first[:, None], -1),
        above_threshold=above & (matched >= 0),
        forced=(matched >= 0) & ~above,
        best_prior=masked_iou.argmax(dim=2),
    )
    return loc_targets, labels, details
