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


def _check_priors(priors: Tensor) -> None:
    if priors.dim() != 2 or priors.shape[-1] != 4:
        raise ValueError(f"expected priors of shape (P, 4) cxcywh, got {tuple(priors.shape)}")


def _check_gt(gt_boxes: Tensor, where: str) -> None:
    if gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"{where}: expected boxes of shape (G, 4), got {tuple(gt_boxes.shape)}")
    if gt_boxes.numel():
        wh = gt_boxes[:, 2:] - gt_boxes[:, :2]
        bad = (wh <= 0).any(dim=1) | ~torch.isfinite(gt_boxes).all(dim=1)
        if bad.any():
            i = int(bad.nonzero()[0])
            box = [round(v, 4) for v in gt_boxes[i].tolist()]
            raise ValueError(
                f"{where}: box {i} = {box} is degenerate or not finite; "
                "expected xyxy with x2 > x1 and y2 > y1"
            )


def _match_padded(iou: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Both matching rules on a padded batch.

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
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # (G, P)
    valid = torch.ones(1, gt_boxes.shape[0], dtype=torch.bool, device=gt_boxes.device)
    return _match_padded(iou[None], valid, iou_threshold)[0]


def pad_targets(
    gt_boxes_list: list[Tensor], gt_labels_list: list[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image ground truth into padded tensors.

    Returns:
        boxes ``(B, G, 4)``, labels ``(B, G)`` long, valid ``(B, G)`` bool, with ``G`` the most
        objects in any image (padding rows are zero boxes with label 0 and valid False).
    """
    if len(gt_boxes_list) != len(gt_labels_list):
        raise ValueError(
            f"got {len(gt_boxes_list)} box tensors but {len(gt_labels_list)} label tensors"
        )
    if not gt_boxes_list:
        raise ValueError("expected at least one image")
    for i, (boxes, labels) in enumerate(zip(gt_boxes_list, gt_labels_list, strict=True)):
        _check_gt(boxes, f"image {i}")
        if labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"image {i}: {boxes.shape[0]} boxes but labels of shape {tuple(labels.shape)}"
            )
        if labels.numel() and int(labels.min()) < 1:
            raise ValueError(
                f"image {i}: labels must be >= 1 (0 is background), got {labels.tolist()}"
            )
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
    gt_boxes, gt_labels, valid = pad_targets(gt_boxes_list, gt_labels_list)
    gt_boxes = gt_boxes.to(device=priors.device, dtype=priors.dtype)
    gt_labels, valid = gt_labels.to(priors.device), valid.to(priors.device)
    b = gt_boxes.shape[0]

    prior_xyxy = cxcywh_to_xyxy(priors)  # (P, 4)
    iou = box_iou(gt_boxes, prior_xyxy.expand(b, -1, -1))  # (B, G, P)
    matched = _match_padded(iou, valid, iou_threshold)  # (B, P)

    # Encode only the positives (a few hundred of B·P boxes), then scatter them into place.
    img, prior = (matched >= 0).nonzero(as_tuple=True)  # (N_pos,) each
    gt = matched[img, prior]
    labels = torch.zeros_like(matched)  # (B, P), 0 = background
    labels[img, prior] = gt_labels[img, gt]
    loc_targets = priors.new_zeros(b, priors.shape[0], 4)
    loc_targets[img, prior] = encode(gt_boxes[img, gt], priors[prior], variances)
    if not return_details:
        return loc_targets, labels
    masked_iou = iou.masked_fill(~valid[:, :, None], -1.0)
    best_iou = masked_iou.max(dim=1).values if iou.shape[1] else torch.zeros_like(labels)
    above = best_iou >= iou_threshold
    details = MatchDetails(
        iou=iou,
        valid=valid,
        matched_gt=matched,
        above_threshold=above & (matched >= 0),
        forced=(matched >= 0) & ~above,
        best_prior=masked_iou.argmax(dim=2),
    )
    return loc_targets, labels, details
