"""What ``make bench`` times: each row runs ssdlib and its reference ("peer") on the same inputs.

A row's ``build`` makes the inputs and returns a :class:`Case`: two functions of no arguments
(ours and the peer's), and a ``check`` that runs both once and fails if they disagree, so that
a row can never compare two computations that do different work.

Peers, each the code path a torchvision user actually runs:

* target assignment + loss: ``SSD.forward``'s training branch, i.e. per image the degenerate-box
  check, ``box_iou`` and ``SSDMatcher``, then ``SSD.compute_loss``;
* postprocess: ``SSD.postprocess_detections`` on the same raw outputs and default boxes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchvision.models.detection import ssd300_vgg16
from torchvision.ops import box_iou as tv_box_iou

from ssdlib.boxes import cxcywh_to_xyxy
from ssdlib.loss import MultiBoxLoss
from ssdlib.matching import assign_targets
from ssdlib.nms import postprocess
from ssdlib.priors import SSD300_COCO, default_boxes

from .inputs import ground_truth, raw_outputs

BATCH = 32  # the paper's training batch size (SSD §3: "batch size 32")
NUM_CLASSES = 21  # PASCAL VOC: 20 classes + background
IMAGE_SIZE = 300  # SSD300; SSD300_COCO's 8732 default boxes equal torchvision's anchors
LOSS_RTOL = 1e-4  # float32 sums over thousands of boxes, in a different order on each side


@dataclass
class Settings:
    """Knobs that ``benchmarks.run`` passes to every row."""

    batch: int = BATCH
    num_classes: int = NUM_CLASSES
    seed: int = 0


@dataclass
class Case:
    """One row, ready to time."""

    ours: Callable[[], object]  # ssdlib's computation, inputs bound
    peer: Callable[[], object] | None  # the reference on the same inputs (None: no peer)
    check: Callable[[], None] | None = None  # raises AssertionError if ours and peer disagree
    items: int = 1  # images per call, for throughput (images/s)


@dataclass(frozen=True)
class Row:
    name: str  # what --only matches
    device: str  # "cpu" or "cuda"
    what: str  # what one call does, for the table
    peer_name: str  # what the peer is
    build: Callable[[Settings], Case]
    target: float | None = None  # the speed-up over the peer that issue 3 asks for
    throughput: bool = False  # report images/s rather than ms per call
    requires: tuple[str, ...] = field(default=())  # modules that must exist (others' work)

    def unavailable(self) -> str | None:
        """Why this row cannot run on this machine, or None if it can."""
        if self.device == "cuda" and not torch.cuda.is_available():
            return "no CUDA device on this machine"
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return f"needs {', '.join(missing)} (not in this checkout yet)"
        return None


# -- shared pieces ---------------------------------------------------------------------------


def _torchvision_ssd(num_classes: int, device: str) -> torch.nn.Module:
    """torchvision's SSD300 (random weights: its loss and postprocess do not depend on them)."""
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes)
    return model.to(device)


def _priors_and_anchors(device: str) -> tuple[Tensor, Tensor]:
    """Our default boxes ``(P, 4)`` cxcywh normalised, and the same boxes as torchvision's
    anchors ``(P, 4)`` xyxy in pixels of the 300 × 300 input."""
    priors = default_boxes(SSD300_COCO, device=device)
    return priors, cxcywh_to_xyxy(priors) * IMAGE_SIZE


def _torchvision_targets_and_loss(model, targets, head_outputs, anchors) -> dict[str, Tensor]:
    """``SSD.forward``'s training branch after the network: check, match, compute_loss."""
    matched_idxs = []
    for target in targets:
        boxes = target["boxes"]
        if (boxes[:, 2:] <= boxes[:, :2]).any():  # its degenerate-box check
            raise ValueError("degenerate box")
        if boxes.numel() == 0:
            matched_idxs.append(
                torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device)
            )
            continue
        matched_idxs.append(model.proposal_matcher(tv_box_iou(boxes, anchors)))
    return model.compute_loss(targets, head_outputs, [anchors] * len(targets), matched_idxs)


# -- target assignment + loss -----------------------------------------------------------------


def _loss_case(settings: Settings, device: str, backward: bool) -> Case:
    priors, anchors = _priors_and_anchors(device)
    gt_boxes, gt_labels = ground_truth(settings.batch, settings.num_classes, settings.seed)
    gt_boxes = [b.to(device) for b in gt_boxes]
    gt_labels = [lab.to(device) for lab in gt_labels]
    loc, conf = raw_outputs("random", priors, settings.num_classes, gt_boxes, gt_labels)
    loc.requires_grad_(backward)
    conf.requires_grad_(backward)
    model = _torchvision_ssd(settings.num_classes, device)
    criterion = MultiBoxLoss()
    # torchvision's transform hands targets to the loss in pixels of the resized input
    targets = [
        {"boxes": b * IMAGE_SIZE, "labels": lab} for b, lab in zip(gt_boxes, gt_labels, strict=True)
    ]
    head_outputs = {"bbox_regression": loc, "cls_logits": conf}

    def ours() -> tuple[Tensor, ...]:
        loc_targets, labels = assign_targets(gt_boxes, gt_labels, priors)
        loc_loss, conf_loss = criterion(loc, conf, loc_targets, labels)
        if backward:
            return torch.autograd.grad(loc_loss + conf_loss, (loc, conf))
        return loc_loss, conf_loss

    def peer() -> tuple[Tensor, ...]:
        losses = _torchvision_targets_and_loss(model, targets, head_outputs, anchors)
        if backward:
            total = losses["bbox_regression"] + losses["classification"]
            return torch.autograd.grad(total, (loc, conf))
        return losses["bbox_regression"], losses["classification"]

    def check() -> None:
        for a, b in zip(ours(), peer(), strict=True):
            torch.testing.assert_close(a, b, rtol=LOSS_RTOL, atol=LOSS_RTOL)

    return Case(ours, peer, check, items=settings.batch)


# -- postprocess ------------------------------------------------------------------------------


def _postprocess_case(settings: Settings, device: str, regime: str) -> Case:
    priors, anchors = _priors_and_anchors(device)
    gt_boxes, gt_labels = ground_truth(settings.batch, settings.num_classes, settings.seed)
    loc, conf = raw_outputs(regime, priors, settings.num_classes, gt_boxes, gt_labels)
    model = _torchvision_ssd(settings.num_classes, device).eval()
    sizes = [(IMAGE_SIZE, IMAGE_SIZE)] * settings.batch
    head_outputs = {"bbox_regression": loc, "cls_logits": conf}

    def ours() -> list[dict[str, Tensor]]:
        return postprocess(loc, conf, priors, image_sizes=sizes)

    def peer() -> list[dict[str, Tensor]]:
        return model.postprocess_detections(head_outputs, [anchors] * settings.batch, sizes)

    def check() -> None:
        for i, (a, b) in enumerate(zip(ours(), peer(), strict=True)):
            assert len(a["scores"]) == len(b["scores"]), (
                f"image {i}: {len(a['scores'])} detections, torchvision {len(b['scores'])}"
            )
            torch.testing.assert_close(a["scores"], b["scores"])
            torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-3)

    return Case(ours, peer, check, items=settings.batch)


ROWS: list[Row] = [
    Row(
        "cpu-targets-loss",
        "cpu",
        "assign_targets + MultiBoxLoss forward (B=32, P=8732, K=21)",
        "torchvision SSD: box_iou + SSDMatcher per image, compute_loss",
        lambda s: _loss_case(s, "cpu", backward=False),
        target=4.0,
    ),
    Row(
        "cpu-targets-loss-backward",
        "cpu",
        "the same, forward + backward to the head outputs",
        "the same, forward + backward",
        lambda s: _loss_case(s, "cpu", backward=True),
        target=4.0,
    ),
    Row(
        "cpu-postprocess-trained",
        "cpu",
        "postprocess, trained-like outputs (background dominates; ~1.2k candidates/image)",
        "torchvision SSD.postprocess_detections",
        lambda s: _postprocess_case(s, "cpu", "trained"),
        target=2.5,
    ),
    Row(
        "cpu-postprocess-random",
        "cpu",
        "postprocess, random logits (400 candidates × 20 classes per image: NMS-bound)",
        "torchvision SSD.postprocess_detections",
        lambda s: _postprocess_case(s, "cpu", "random"),
        target=2.5,
    ),
]
