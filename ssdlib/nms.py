"""Non-maximum suppression and turning raw outputs into detections (SSD §3, "Inference time").

"Given the large number of boxes generated from our method, it is essential to perform
non-maximum suppression (nms) efficiently during inference. By using a confidence threshold of
0.01, we can filter out most boxes. We then apply nms with jaccard overlap of 0.45 per class and
keep the top 200 detections per image."

:func:`nms` is the greedy algorithm written out to be read; :func:`nms_steps` records every step
for the notebook's slider; :func:`postprocess` turns raw outputs into detections, with
``torchvision.ops.batched_nms`` for the per-class NMS (the tests check it against loops over
images and classes with :func:`nms`). ``SSD.detect`` uses :func:`ssdlib.fast.postprocess`,
which gives the same detections and does less work to get there.

Letters: ``B`` images, ``P`` default boxes, ``K`` classes including background 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from .boxes import VARIANCES, _as_boxes, box_iou, clip_boxes, decode, unit_to_pixels
from .loss import _check_predictions
from .matching import _check_threshold

SCORE_THRESHOLD = 0.01  # "a confidence threshold of 0.01" (SSD §3)
NMS_IOU_THRESHOLD = 0.45  # "nms with jaccard overlap of 0.45 per class" (SSD §3)
TOP_K = 200  # "keep the top 200 detections per image" (SSD §3)
CANDIDATES_PER_CLASS = 400  # the released code keeps the 400 best boxes of a class before NMS


def _check_nms_input(boxes: Tensor, scores: Tensor, iou_threshold: float) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"expected boxes of shape (N, 4), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"expected scores of shape ({boxes.shape[0]},), got {tuple(scores.shape)}")
    _check_threshold(iou_threshold)


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
    _check_predictions(loc_pred, conf_pred)
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
        det["boxes"] = unit_to_pixels(det["boxes"], w, h)
    return det


def _check_postprocess_call(
    loc_pred: Tensor,
    conf_pred: Tensor,
    priors: Tensor,
    score_threshold: float,
    iou_threshold: float,
    top_k: int,
    candidates_per_class: int,
    image_sizes: list[tuple[int, int]] | None,
) -> None:
    """postprocess's arguments (both tiers'), checked."""
    _check_outputs(loc_pred, conf_pred, priors)
    if not 0 <= score_threshold <= 1:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    _check_threshold(iou_threshold)
    if top_k < 0 or candidates_per_class < 0:
        raise ValueError(
            f"top_k and candidates_per_class must be >= 0, got {top_k} and {candidates_per_class}"
        )
    if image_sizes is not None and len(image_sizes) != len(conf_pred):
        raise ValueError(f"got {len(image_sizes)} image sizes for {len(conf_pred)} images")


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
    """Raw network outputs -> detections: per image, softmax; per class the
    ``candidates_per_class`` best scores above ``score_threshold``; per-class NMS; the ``top_k``
    best survivors (SSD §3). :func:`ssdlib.fast.postprocess` gives the same detections faster.

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
    _check_postprocess_call(
        loc_pred, conf_pred, priors, score_threshold, iou_threshold, top_k, candidates_per_class,
        image_sizes,
    )  # fmt: skip
    b = len(conf_pred)
    with torch.no_grad():
        scores = F.softmax(conf_pred.float(), dim=-1)  # (B, P, K)
        boxes = clip_boxes(decode(loc_pred.float(), priors.float(), variances))  # (B, P, 4)
        detections = []
        n = min(max(candidates_per_class, 1), conf_pred.shape[1])
        for i in range(b):
            image_scores = scores[i, :, 1:]  # (P, K-1): background is never a detection
            above = image_scores > score_threshold  # (P, K-1)
            if (above.sum(dim=0) > candidates_per_class).any():
                # A class has more candidates than it keeps: none below its n-th best score can
                # make the cut (a top-k finds that score, cheaper than a sort).
                cutoff = image_scores.topk(n, dim=0).values[-1]  # (K-1,)
                above &= image_scores >= cutoff
            box, cls = above.nonzero(as_tuple=True)  # (M,) each, box by box
            s, cls = image_scores[box, cls], cls + 1
            # Sorted best first, then by class (stable sorts: of equal scores the lower box stays
            # first); each class keeps its first candidates_per_class.
            order = s.argsort(descending=True, stable=True)
            order = order[cls[order].argsort(stable=True)]
            first_of_its_class = torch.searchsorted(cls[order], cls[order])
            rank = torch.arange(len(order), device=order.device) - first_of_its_class
            order = order[rank < candidates_per_class]
            box, cls, s = box[order], cls[order], s[order]
            # Per-class NMS in one call. batched_nms keeps classes apart by shifting each
            # class's boxes by its number: in float64, the shift loses none of a box's bits.
            keep = batched_nms(boxes[i, box].double(), s.double(), cls, iou_threshold)
            # Best first; of equal scores the lower class, then the better-ranked box (as a loop
            # over classes would give); then the top_k.
            keep = keep.sort().values
            keep = keep[s[keep].argsort(descending=True, stable=True)][:top_k]
            size = image_sizes[i] if image_sizes is not None else None
            det = {"boxes": boxes[i, box[keep]], "scores": s[keep], "labels": cls[keep]}
            detections.append(_to_pixels(det, size))
    return detections


# -- Candidates for the lesson: detections made from the ground truth ------------------------------
# Lesson 5 runs NMS on boxes that look like a detector's raw output without needing a network.

JITTER_SCALE = 0.08  # box jitter as a fraction of the box size: overlaps mostly above 0.45
DECOY_SCORE_MAX = 0.5  # boxes placed away from any object score below this


def jittered_detections(
    gt_boxes: Tensor,
    gt_labels: Tensor,
    per_object: int = 8,
    num_decoys: int = 4,
    jitter: float = JITTER_SCALE,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Candidate detections for the NMS lesson, made from the ground truth instead of a network.

    Each object gets ``per_object`` copies whose corners move by a Gaussian of standard deviation
    ``jitter × (w, h)``; a copy's score falls with its distance from the object (score ∝ IoU with
    noise), as a detector's would. ``num_decoys`` random boxes with low scores are added.

    Args:
        gt_boxes: ``(G, 4)`` xyxy normalised.
        gt_labels: ``(G,)`` long classes >= 1.

    Returns:
        boxes ``(N, 4)`` xyxy normalised and clipped, scores ``(N,)`` in (0, 1), labels ``(N,)``,
        with ``N = G · per_object + num_decoys``.
    """
    gt_boxes = _as_boxes(gt_boxes, "gt_boxes")
    gt_labels = torch.as_tensor(gt_labels, dtype=torch.long).cpu()
    if gt_labels.shape != gt_boxes.shape[:1]:
        raise ValueError(f"got {len(gt_boxes)} boxes but labels of shape {tuple(gt_labels.shape)}")
    if per_object < 1 or num_decoys < 0:
        raise ValueError(
            f"need per_object >= 1 and num_decoys >= 0, got {per_object}, {num_decoys}"
        )
    if len(gt_boxes) == 0:
        raise ValueError("need at least one ground-truth box to make detections from")
    gen = torch.Generator().manual_seed(seed)
    g = len(gt_boxes)
    wh = (gt_boxes[:, 2:] - gt_boxes[:, :2]).repeat(1, 2)  # (G, 4): w, h, w, h
    noise = torch.randn(g, per_object, 4, generator=gen) * jitter  # (G, n, 4)
    boxes = (gt_boxes[:, None, :] + noise * wh[:, None, :]).reshape(-1, 4).clamp(0, 1)
    iou = box_iou(boxes, gt_boxes).reshape(g, per_object, g)
    fit = iou[torch.arange(g), :, torch.arange(g)]  # (G, n): each copy's IoU with its object
    scores = (fit * (0.6 + 0.4 * torch.rand(g, per_object, generator=gen))).reshape(-1)
    labels = gt_labels.repeat_interleave(per_object)
    if num_decoys:
        centre = torch.rand(num_decoys, 2, generator=gen) * 0.8 + 0.1
        size = torch.rand(num_decoys, 2, generator=gen) * 0.2 + 0.05
        decoys = torch.cat([centre - size / 2, centre + size / 2], dim=1).clamp(0, 1)
        boxes = torch.cat([boxes, decoys])
        scores = torch.cat([scores, torch.rand(num_decoys, generator=gen) * DECOY_SCORE_MAX])
        pick = torch.randint(g, (num_decoys,), generator=gen)
        labels = torch.cat([labels, gt_labels[pick]])
    return boxes, scores.clamp(1e-3, 1 - 1e-3), labels
