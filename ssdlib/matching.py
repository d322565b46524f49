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


def match_iou(
    iou: Tensor, iou_threshold: float = IOU_THRESHOLD, valid: Tensor | None = None
) -> Tensor:
    """Both matching rules on an IoU matrix, of one image or of a padded batch.

    Args:
        iou: ``(G, P)`` IoU of each ground truth with each default box, or ``(B, G, P)``.
        iou_threshold: the overlap from which a default box is a positive (rule 1).
        valid: ``(G,)`` or ``(B, G)`` bool, False for padding rows (which never match).

    Returns:
        ``(P,)`` or ``(B, P)`` long: index of the matched ground truth, -1 for background.
    """
    *batch, g, p = iou.shape
    matched = torch.full((*batch, p), -1, dtype=torch.long, device=iou.device)
    if g == 0:
        return matched
    if valid is None:
        valid = torch.ones(iou.shape[:-1], dtype=torch.bool, device=iou.device)
    iou = iou.masked_fill(~valid[..., None], -1.0)  # padding never wins
    # Rule 1: each default box takes its best ground truth if the overlap reaches the threshold.
    best_iou, best_gt = iou.max(dim=-2)  # (..., P)
    matched = torch.where(best_iou >= iou_threshold, best_gt, matched)
    # Rule 2: each ground truth takes its best default box, whatever the overlap. Of objects
    # sharing a best box the highest index wins (scatter_reduce "amax": the same on every device).
    best_prior = iou.argmax(dim=-1)  # (..., G)
    gt_index = torch.arange(g, device=iou.device).expand_as(best_prior)
    forced = torch.full_like(matched, -1)
    forced.scatter_reduce_(-1, best_prior, torch.where(valid, gt_index, -1), reduce="amax")
    return torch.where(forced >= 0, forced, matched)


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
    return match_iou(iou, iou_threshold)


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
    gt_boxes, gt_labels, valid = pad_targets(gt_boxes_list, gt_labels_list)  # (B, G, ...) each
    gt_boxes = gt_boxes.to(device=priors.device, dtype=priors.dtype)
    gt_labels, valid = gt_labels.to(priors.device), valid.to(priors.device)
    b, g = valid.shape

    # IoU of each image's objects with every default box (padding rows are masked by valid).
    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors).expand(b, -1, -1))  # (B, G, P)
    matched = match_iou(iou, iou_threshold, valid)  # (B, P), -1 = background
    positive = matched >= 0

    # Each default box's matched object (background boxes read object 0, then are zeroed).
    obj = matched.clamp(min=0)  # (B, P)
    if g == 0:  # no image has an object: every box is background
        labels, loc_targets = torch.zeros_like(matched), priors.new_zeros(b, len(priors), 4)
    else:
        labels = torch.where(positive, gt_labels.gather(1, obj), 0)  # (B, P), 0 = background
        matched_boxes = gt_boxes.gather(1, obj[..., None].expand(-1, -1, 4))  # (B, P, 4)
        offsets = encode(matched_boxes, priors, variances)  # (B, P, 4)
        loc_targets = torch.where(positive[..., None], offsets, 0.0)
    if not return_details:
        return loc_targets, labels

    masked_iou = iou.masked_fill(~valid[:, :, None], -1.0)
    best_iou = masked_iou.max(dim=1).values if g else iou.new_zeros(matched.shape)
    above = best_iou >= iou_threshold
    details = MatchDetails(
        iou=iou,
        valid=valid,
        matched_gt=matched,
        above_threshold=above & positive,
        forced=positive & ~above,
        best_prior=masked_iou.argmax(dim=2),
    )
    return loc_targets, labels, details
