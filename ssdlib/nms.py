"""Non-maximum suppression and turning raw outputs into detections (SSD §3, "Inference time").

"Given the large number of boxes generated from our method, it is essential to perform
non-maximum suppression (nms) efficiently during inference. By using a confidence threshold of
0.01, we can filter out most boxes. We then apply nms with jaccard overlap of 0.45 per class and
keep the top 200 detections per image."

:func:`nms` is the greedy algorithm written out to be read; :func:`nms_steps` records every step
for the notebook's slider; :func:`postprocess` is the fast, batched path (torchvision.ops'
compiled NMS kernel); :func:`postprocess_reference` is the same computation as loops.

Letters: ``B`` images, ``P`` default boxes, ``K`` classes including background 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms
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


def _to_pixels(det: dict[str, Tensor], image_size: tuple[int, int] | None) -> dict[str, Tensor]:
    if image_size is not None:
        h, w = image_size
        det["boxes"] = det["boxes"] * det["boxes"].new_tensor([w, h, w, h])
    return det


BATCHED_NMS_MAX_BOXES = 1000  # up to here torchvision's batched_nms runs all groups in one
# kernel call (its CPU threshold is 4000 coordinates); above it, it scans all boxes once per group.


def _per_class_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """NMS inside each group, for candidates already sorted by group (as ``nonzero`` returns).

    Returns the kept indices, best score first (across groups). On CUDA, or for few boxes,
    one ``torchvision.ops.batched_nms`` call does it all. Many boxes on the CPU would make
    batched_nms compare every box's group with every group id; there the groups are contiguous
    slices, so we call ``torchvision.ops.nms`` once per non-empty slice instead.
    """
    if boxes.device.type == "cuda" or len(boxes) <= BATCHED_NMS_MAX_BOXES:
        return batched_nms(boxes, scores, groups, iou_threshold)
    counts = torch.unique_consecutive(groups, return_counts=True)[1].tolist()
    kept, start = [], 0
    for box_g, score_g in zip(boxes.split(counts), scores.split(counts), strict=True):
        kept.append(tv_nms(box_g, score_g, iou_threshold) + start)
        start += len(box_g)
    keep = torch.cat(kept)
    return keep[scores[keep].argsort(descending=True, stable=True)]


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

    Per image: softmax, drop the background column, decode and clip the boxes; per class keep the
    ``candidates_per_class`` best scores above ``score_threshold``; per-class NMS; keep ``top_k``.
    Candidate selection is vectorised over images and classes; NMS runs per (image, class)
    group with torchvision's compiled kernel (see :func:`_per_class_nms`).

    Args:
        loc_pred: ``(B, P, 4)`` offsets.
        conf_pred: ``(B, P, K)`` logits, class 0 = background.
        priors: ``(P, 4)`` cxcywh default boxes.
        image_sizes: optional ``(height, width)`` per image; boxes come back in those pixels.

    Returns:
        B dicts with ``boxes`` ``(D, 4)`` xyxy clipped to the image (normalised, or pixels),
        ``scores`` ``(D,)`` descending, ``labels`` ``(D,)`` long in 1..K-1.
    """
    _check_outputs(loc_pred, conf_pred, priors)
    b, p, k = conf_pred.shape
    if image_sizes is not None and len(image_sizes) != b:
        raise ValueError(f"got {len(image_sizes)} image sizes for {b} images")
    scores = F.softmax(conf_pred.float(), dim=-1)[..., 1:]  # (B, P, K-1): background dropped
    boxes = clip_boxes(decode(loc_pred.float(), priors.float(), variances))  # (B, P, 4)

    # The best candidates of each (image, class), then the threshold. (B, K-1, P) -> (B, K-1, n)
    n = min(candidates_per_class, p)
    top_scores, top_prior = scores.transpose(1, 2).topk(n, dim=2)
    img, cls, j = (top_scores > score_threshold).nonzero(as_tuple=True)  # (M,) each
    cand_prior = top_prior[img, cls, j]
    cand_scores = top_scores[img, cls, j]
    cand_boxes = boxes[img, cand_prior]  # (M, 4)

    keep = _per_class_nms(cand_boxes, cand_scores, img * (k - 1) + cls, iou_threshold)
    img_kept = img[keep]
    # Stable sort by image keeps the score order inside each image; then the first top_k.
    by_image = img_kept.argsort(stable=True)
    keep, img_kept = keep[by_image], img_kept[by_image]
    counts = torch.bincount(img_kept, minlength=b)  # (B,)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(keep), device=keep.device) - starts[img_kept]
    keep, img_kept = keep[rank < top_k], img_kept[rank < top_k]
    per_image = torch.bincount(img_kept, minlength=b).tolist()

    out_boxes = cand_boxes[keep].split(per_image)
    out_scores = cand_scores[keep].split(per_image)
    out_labels = (cls[keep] + 1).split(per_image)
    return [
        _to_pixels(
            {"boxes": bx, "scores": sc, "labels": lb},
            image_sizes[i] if image_sizes is not None else None,
        )
        for i, (bx, sc, lb) in enumerate(zip(out_boxes, out_scores, out_labels, strict=True))
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
            s, idx = s.topk(min(candidates_per_class, len(s)))
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
