"""The MultiBox loss with hard negative mining (SSD §2.2, "Training objective" and
"Hard negative mining").

``L = (L_conf + α · L_loc) / N`` with ``N`` the number of matched default boxes (positives):

* ``L_loc``: Smooth L1 between predicted and target offsets, over positives only;
* ``L_conf``: softmax cross-entropy over positives and a few negatives (class 0, background).

"After the matching step, most of the default boxes are negatives ... Instead of using all the
negative examples, we sort them using the highest confidence loss for each default box and pick
the top ones so that the ratio between the negatives and positives is at most 3:1."

Letters: ``B`` images, ``P`` default boxes, ``K`` classes including background 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEG_POS_RATIO = 3  # "the ratio between the negatives and positives is at most 3:1" (SSD §2.2)
SMOOTH_L1_BETA = 1.0  # Fast R-CNN's Smooth L1: quadratic below 1, linear above


def _check_labels(labels: Tensor, p: int | None = None) -> None:
    if labels.dim() != 2 or labels.dtype != torch.long:
        raise ValueError(
            f"expected labels of shape (B, P) and dtype long, got {tuple(labels.shape)} "
            f"{labels.dtype}"
        )
    if p is not None and labels.shape[1] != p:
        raise ValueError(f"labels have {labels.shape[1]} default boxes, predictions have {p}")


def _check_label_range(labels: Tensor, num_classes: int) -> None:
    lo, hi = labels.aminmax() if labels.numel() else (0, 0)
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"labels must be classes 0 (background) to {num_classes - 1}, the columns of "
            f"conf_pred; got labels from {int(lo)} to {int(hi)}"
        )


def _check_predictions(loc_pred: Tensor, conf_pred: Tensor) -> None:
    """The network's outputs (the loss's and postprocess's): ``(B, P, 4)`` and ``(B, P, K)``."""
    if loc_pred.dim() != 3 or loc_pred.shape[-1] != 4:
        raise ValueError(f"expected loc_pred of shape (B, P, 4), got {tuple(loc_pred.shape)}")
    if conf_pred.dim() != 3 or conf_pred.shape[:2] != loc_pred.shape[:2]:
        raise ValueError(
            f"expected conf_pred of shape (B, P, K) with (B, P) = {tuple(loc_pred.shape[:2])}, "
            f"got {tuple(conf_pred.shape)}"
        )


def _check_loss_inputs(
    loc_pred: Tensor, conf_pred: Tensor, loc_targets: Tensor, labels: Tensor
) -> None:
    """MultiBoxLoss's arguments (both tiers'), checked."""
    _check_predictions(loc_pred, conf_pred)
    if loc_targets.shape != loc_pred.shape:
        raise ValueError(
            f"loc_targets {tuple(loc_targets.shape)} do not match loc_pred {tuple(loc_pred.shape)}"
        )
    _check_labels(labels, loc_pred.shape[1])
    _check_label_range(labels, conf_pred.shape[-1])


def hard_negative_mining(
    conf_loss: Tensor, labels: Tensor, neg_pos_ratio: float = NEG_POS_RATIO
) -> Tensor:
    """Which default boxes enter the confidence loss: every positive, plus per image the
    ``neg_pos_ratio × positives`` negatives with the highest loss (fewer if there are fewer).

    An image without objects contributes no negatives, as in the paper's ratio (and torchvision).

    Args:
        conf_loss: ``(B, P)`` per-box cross-entropy (only its order matters; no gradient flows).
        labels: ``(B, P)`` long, 0 = background.
        neg_pos_ratio: negatives per positive.

    Returns:
        ``(B, P)`` bool mask: positives and chosen negatives.
    """
    _check_labels(labels)
    if conf_loss.shape != labels.shape:
        raise ValueError(
            f"conf_loss {tuple(conf_loss.shape)} and labels {tuple(labels.shape)} differ in shape"
        )
    if neg_pos_ratio < 0:
        raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
    positive = labels > 0  # (B, P)
    num_neg = (neg_pos_ratio * positive.sum(dim=1, keepdim=True)).long()  # (B, 1)
    # Each image's negatives sorted by loss, hardest first (positives sort last), and the first
    # num_neg of them taken. A top-k is the sort cut short at the most any image may take.
    negative_loss = conf_loss.detach().masked_fill(positive, -float("inf"))
    k = min(int(num_neg.max()), labels.shape[1]) if labels.numel() else 0
    hardest = negative_loss.topk(k, dim=1).indices  # (B, k)
    taken = torch.arange(k, device=labels.device) < num_neg  # (B, k): image i takes num_neg[i]
    return positive | torch.zeros_like(positive).scatter_(1, hardest, taken)


def background_loss(conf_pred: Tensor) -> Tensor:
    """``-log p_0``: the cross-entropy each box would have as a negative, the loss by which
    :func:`hard_negative_mining` ranks them (no gradient: only the order is used).

    Args:
        conf_pred: ``(B, P, K)`` logits.

    Returns:
        ``(B, P)`` float32.
    """
    if conf_pred.dim() != 3:
        raise ValueError(f"expected conf_pred of shape (B, P, K), got {tuple(conf_pred.shape)}")
    with torch.no_grad():
        return -F.log_softmax(conf_pred.float(), dim=-1)[..., 0]


class MultiBoxLoss(nn.Module):
    """SSD's training objective.

    ``forward(loc_pred, conf_pred, loc_targets, labels) -> (loc_loss, conf_loss)``, both summed
    over the batch and divided by the number of positives in the batch (by 1 if there are none).
    Their sum (with ``alpha = 1``, as in the paper) is what training minimises.
    """

    def __init__(self, neg_pos_ratio: float = NEG_POS_RATIO, alpha: float = 1.0):
        super().__init__()
        if neg_pos_ratio < 0:
            raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        self.neg_pos_ratio = neg_pos_ratio
        self.alpha = alpha  # weight of the localisation term; "set to 1 by cross validation"

    def forward(
        self,
        loc_pred: Tensor,
        conf_pred: Tensor,
        loc_targets: Tensor,
        labels: Tensor,
        normalizer: Tensor | float | None = None,
    ) -> tuple[Tensor, Tensor]:
        """
        Args:
            loc_pred: ``(B, P, 4)`` predicted offsets.
            conf_pred: ``(B, P, K)`` class logits.
            loc_targets: ``(B, P, 4)`` target offsets (from ``assign_targets``).
            labels: ``(B, P)`` long, 0 = background.
            normalizer: divide by this instead of this batch's number of positives. Data-parallel
                training passes (positives over all processes) / (number of processes), so that
                the averaged gradients equal those of one process with the whole batch.

        Returns:
            ``(loc_loss, conf_loss)``, scalars: ``alpha · L_loc / N`` and ``L_conf / N``.
        """
        _check_loss_inputs(loc_pred, conf_pred, loc_targets, labels)
        positive = labels > 0  # (B, P)
        if normalizer is None:
            normalizer = positive.sum().clamp(min=1).to(torch.float32)  # N (1 when there are none)

        # L_conf: cross-entropy over the positives and the hardest negatives.
        chosen = hard_negative_mining(background_loss(conf_pred), labels, self.neg_pos_ratio)
        conf_loss = F.cross_entropy(conf_pred[chosen].float(), labels[chosen], reduction="sum")
        # L_loc: Smooth L1 over the positives only.
        loc_loss = F.smooth_l1_loss(
            loc_pred[positive].float(),
            loc_targets[positive].float(),
            reduction="sum",
            beta=SMOOTH_L1_BETA,
        )
        return self.alpha * loc_loss / normalizer, conf_loss / normalizer

    def extra_repr(self) -> str:
        return f"neg_pos_ratio={self.neg_pos_ratio}, alpha={self.alpha}"


# -- Reading the mining: what the figures of lesson 4 draw -----------------------------------------
# Counts and loss shares of hard negative mining, per image (MiningReport) and for any weighting
# of the negatives (cumulative_loss_share); the figures are in ssdlib.viz.loss.


@dataclass
class MiningReport:
    """The numbers behind one image's hard negative mining (what the figures draw)."""

    positives: int  # matched default boxes
    negatives: int  # all the others: background
    mined: int  # negatives that enter the confidence loss
    negative_loss: float  # Σ -log p_0 over all negatives
    mined_loss: float  # Σ -log p_0 over the mined ones

    @property
    def mined_share(self) -> float:
        """Share of all negatives' confidence loss that the mined ones carry."""
        return self.mined_loss / self.negative_loss if self.negative_loss > 0 else float("nan")


def mining_report(bg_loss: Tensor, labels: Tensor, chosen: Tensor) -> MiningReport:
    """Count positives, negatives and mined negatives of one image, and their loss.

    Args:
        bg_loss: ``(P,)`` each default box's loss as a negative, ``-log p_0``
            (:func:`ssdlib.loss.background_loss`).
        labels: ``(P,)`` long, 0 = background.
        chosen: ``(P,)`` bool, from :func:`ssdlib.loss.hard_negative_mining`.
    """
    bg_loss, labels, chosen = (torch.as_tensor(t).detach().cpu() for t in (bg_loss, labels, chosen))
    if not bg_loss.shape == labels.shape == chosen.shape or bg_loss.dim() != 1:
        raise ValueError(
            f"expected bg_loss, labels and chosen of one shape (P,), got {tuple(bg_loss.shape)}, "
            f"{tuple(labels.shape)}, {tuple(chosen.shape)}"
        )
    negative = labels == 0
    mined = negative & chosen
    return MiningReport(
        positives=int((~negative).sum()),
        negatives=int(negative.sum()),
        mined=int(mined.sum()),
        negative_loss=float(bg_loss[negative].double().sum()),
        mined_loss=float(bg_loss[mined].double().sum()),
    )


def cumulative_loss_share(bg_loss: Tensor, labels: Tensor, weight: Tensor) -> Tensor:
    """How a weighted confidence loss spreads over the negatives: the share of it that the ``n``
    hardest negatives carry, for every ``n``.

    The negatives of all the images given are ranked by ``-log p_0``, hardest first; each
    contributes ``weight × (-log p_0)``: a weight of 1 is plain cross-entropy, the mining mask
    (1 for a mined negative, 0 otherwise) is hard negative mining, ``(1 - p_0)^γ`` is focal loss.

    Args:
        bg_loss: ``(B, P)`` or ``(P,)``, ``-log p_0`` of each box.
        labels: same shape, long, 0 = background.
        weight: same shape, each box's weight (>= 0).

    Returns:
        ``(N,)`` float64 over the ``N`` negatives, non-decreasing, ending at 1 (all nan when the
        weighted loss is 0).
    """
    bg_loss, labels, weight = (torch.as_tensor(t).detach().cpu() for t in (bg_loss, labels, weight))
    if not bg_loss.shape == labels.shape == weight.shape:
        raise ValueError(
            f"expected bg_loss, labels and weight of one shape, got {tuple(bg_loss.shape)}, "
            f"{tuple(labels.shape)}, {tuple(weight.shape)}"
        )
    if bool((weight < 0).any()):
        raise ValueError(f"weights must be >= 0, got a minimum of {float(weight.min())}")
    negative = labels == 0
    loss = bg_loss[negative].double()  # (N,)
    order = loss.argsort(descending=True, stable=True)
    weighted = (weight[negative].double() * loss)[order]
    total = weighted.sum()
    return weighted.cumsum(0) / total if total > 0 else torch.full_like(weighted, math.nan)
