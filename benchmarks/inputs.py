"""The synthetic inputs every benchmark row shares, seeded so that every run times the same work.

Ground truth looks like PASCAL VOC: about 2.4 objects per image on average, a few images with
many, boxes from a tenth to most of the image side. Raw network outputs come in two regimes:

* ``trained``: what a trained SSD produces. Background wins almost everywhere; around each
  object a few dozen default boxes score its class high. A few thousand (box, class) pairs pass
  the 0.01 score threshold per image, and NMS is cheap.
* ``random``: i.i.d. logits, as from an untrained network. Every class scores about 1/K > 0.01
  on every box, so every (image, class) brings the full 400 candidates: the NMS-bound worst case.

Letters: ``B`` images, ``P`` default boxes, ``K`` classes including background 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssdlib.boxes import box_iou, cxcywh_to_xyxy, encode

MEAN_OBJECTS = 2.4  # VOC07+12 trainval: 40,058 objects in 16,551 images
MAX_OBJECTS = 40  # the most objects in one VOC image is in the 40s; caps the geometric tail
SIDE_RANGE = (0.1, 0.8)  # sqrt(area) of an object as a fraction of the image side
MAX_ASPECT = 3.0  # width / height drawn log-uniformly from [1/3, 3]

BACKGROUND_MARGIN = 8.0  # trained regime: the background logit's lead over the others; with unit
# noise about 1% of (box, class) pairs still pass the 0.01 threshold, as in a real detector
OBJECT_IOU = 0.4  # trained regime: default boxes overlapping an object this much score its class
OBJECT_LEAD = 12.0  # ... with a logit this far above the noise at IoU 1 (scaled by the IoU)
TRAINED_OFFSET_STD = 0.1  # trained regime: predicted offsets stay close to the default box
RANDOM_OFFSET_STD = 0.5  # random regime: an untrained head's offsets


def object_counts(batch: int, generator: torch.Generator) -> list[int]:
    """Objects per image: 1 + geometric, mean ``MEAN_OBJECTS``, capped at ``MAX_OBJECTS``."""
    p = 1 / MEAN_OBJECTS  # success probability of a geometric with mean 1/p counting from 1
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    counts = torch.ceil(torch.log1p(-u) / math.log1p(-p)).clamp(1, MAX_OBJECTS)
    return [int(c) for c in counts]


def ground_truth(batch: int, num_classes: int, seed: int = 0) -> tuple[list[Tensor], list[Tensor]]:
    """VOC-like targets for ``batch`` images.

    Returns:
        boxes: B tensors ``(G_i, 4)`` xyxy normalised to [0, 1], every box inside the image.
        labels: B tensors ``(G_i,)`` long in 1..K-1.
    """
    generator = torch.Generator().manual_seed(seed)
    boxes, labels = [], []
    for n in object_counts(batch, generator):
        lo, hi = SIDE_RANGE
        side = lo + (hi - lo) * torch.rand(n, generator=generator)
        log_aspect = (2 * torch.rand(n, generator=generator) - 1) * math.log(MAX_ASPECT)
        w = (side * torch.exp(log_aspect / 2)).clamp(max=0.99)
        h = (side * torch.exp(-log_aspect / 2)).clamp(max=0.99)
        x1 = torch.rand(n, generator=generator) * (1 - w)
        y1 = torch.rand(n, generator=generator) * (1 - h)
        boxes.append(torch.stack([x1, y1, x1 + w, y1 + h], dim=1))
        labels.append(torch.randint(1, num_classes, (n,), generator=generator))
    return boxes, labels


def raw_outputs(
    regime: str,
    priors: Tensor,
    num_classes: int,
    gt_boxes: list[Tensor],
    gt_labels: list[Tensor],
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Network outputs for the images of ``gt_boxes``, in one of the two regimes above.

    Args:
        regime: ``"trained"`` or ``"random"``.
        priors: ``(P, 4)`` cxcywh default boxes.
        gt_boxes, gt_labels: from :func:`ground_truth`; the trained regime detects these objects.

    Returns:
        loc ``(B, P, 4)`` offsets and conf ``(B, P, K)`` logits, float32 on the priors' device.
    """
    if regime not in ("trained", "random"):
        raise ValueError(f"regime must be 'trained' or 'random', got {regime!r}")
    generator = torch.Generator().manual_seed(seed)
    b, p = len(gt_boxes), priors.shape[0]
    priors_cpu = priors.cpu().float()
    conf = torch.randn(b, p, num_classes, generator=generator)
    if regime == "random":
        loc = torch.randn(b, p, 4, generator=generator) * RANDOM_OFFSET_STD
        return loc.to(priors.device), conf.to(priors.device)

    conf[..., 0] += BACKGROUND_MARGIN
    loc = torch.randn(b, p, 4, generator=generator) * TRAINED_OFFSET_STD
    prior_xyxy = cxcywh_to_xyxy(priors_cpu)
    for i, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels, strict=True)):
        iou = box_iou(boxes.cpu(), prior_xyxy)  # (G, P)
        best_iou, best_gt = iou.max(dim=0)  # (P,)
        near = best_iou >= OBJECT_IOU
        cls = labels.cpu()[best_gt[near]]
        conf[i, near, cls] += BACKGROUND_MARGIN + OBJECT_LEAD * best_iou[near]
        # the boxes that see an object regress onto it, with the trained noise on top
        loc[i, near] += encode(boxes.cpu()[best_gt[near]], priors_cpu[near])
    return loc.to(priors.device), conf.to(priors.device)
