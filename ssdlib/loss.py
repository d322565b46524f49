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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEG_POS_RATIO = 3  # "the ratio between the negatives and positives is at most 3:1" (SSD §2.2)
SMOOTH_L1_BETA = 1.0  # Fast R-CNN's Smooth L1: quadratic below 1, linear above
IMAGES_PER_CHUNK = 8  # background_loss's working set on a CPU: 8 SSD300 images × 21 classes is
# 6 MB, which stays in the last-level cache between its four sweeps (on the benchmark machine
# 4 images were a third slower, 16 no faster)
LOG2_E = 1 / math.log(2)  # exp(d) = exp2(d · log2 e)


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
    negative_loss = conf_loss.detach().masked_fill(positive, -float("inf"))
    image, box = _hardest_negatives(negative_loss, positive.sum(dim=1), neg_pos_ratio)
    chosen = positive.clone()
    chosen[image, box] = True
    return chosen


def _hardest_negatives(
    negative_loss: Tensor, num_pos: Tensor, neg_pos_ratio: float
) -> tuple[Tensor, Tensor]:
    """The negatives :func:`hard_negative_mining` chooses, as ``(image, box)`` index pairs
    (``(M,)`` each): the loss gathers these few boxes without a pass over a ``(B, P)`` mask.

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


def background_loss(conf_pred: Tensor) -> Tensor:
    """``-log p_0``, the cross-entropy each box would have as a negative (no gradient).

    Equals ``-F.log_softmax(conf_pred, -1)[..., 0]`` to float32 rounding: against a float64
    reference both are off by the same few 1e-6 at most, far below any gap the mining's ranking
    could act on.

    On a CPU it is computed as ``log Σ_k exp(x_k - x_0)``. Shifting every logit by the
    background's own ``x_0`` makes that class's term ``exp(0) = 1``, so the sum is at least 1 and
    no row needs its maximum first: over 21 classes a row maximum costs as much as the whole
    softmax, while a shift, an ``exp`` and a sum each sweep the block once, fully vectorised.
    ``exp(d)`` is taken as ``exp2(d · log2 e)``: with the multiplication, still about 3× faster
    than ``exp`` on the benchmark machine's CPU.
    A box whose background trails another class by more than about 88 (``p_0 < e^-88``)
    overflows float32; such rows, if any, are recomputed with ``log_softmax``.

    Args:
        conf_pred: ``(B, P, K)`` logits.

    Returns:
        ``(B, P)`` float32.
    """
    if conf_pred.dim() != 3:
        raise ValueError(f"expected conf_pred of shape (B, P, K), got {tuple(conf_pred.shape)}")
    ranking = conf_pred.new_empty(conf_pred.shape[:2], dtype=torch.float32)
    with torch.no_grad():
        if conf_pred.device.type != "cpu":
            # One kernel over the whole batch; a GPU has no cache to fit and no check to wait for.
            return torch.neg(F.log_softmax(conf_pred.float(), dim=-1)[..., 0], out=ranking)
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
        if loc_pred.dim() != 3 or loc_pred.shape[-1] != 4:
            raise ValueError(f"expected loc_pred of shape (B, P, 4), got {tuple(loc_pred.shape)}")
        if conf_pred.dim() != 3 or conf_pred.shape[:2] != loc_pred.shape[:2]:
            raise ValueError(
                f"expected conf_pred of shape (B, P, K) with (B, P) = {tuple(loc_pred.shape[:2])}, "
                f"got {tuple(conf_pred.shape)}"
            )
        if loc_targets.shape != loc_pred.shape:
            raise ValueError(
                f"loc_targets {tuple(loc_targets.shape)} do not match loc_pred "
                f"{tuple(loc_pred.shape)}"
            )
        _check_labels(labels, loc_pred.shape[1])
        _check_label_range(labels, conf_pred.shape[-1])
        positive = labels > 0  # (B, P)
        num_pos = positive.sum(dim=1)  # (B,)
        if normalizer is None:
            normalizer = num_pos.sum().clamp(min=1).to(torch.float32)  # N (1 when there are none)

        # Rank every box by its background loss -log p_0 (no gradient: only the order is used)
        # and keep the positives and the hardest negatives.
        pos_img, pos_prior = positive.nonzero(as_tuple=True)  # (N_pos,) each
        negative_loss = background_loss(conf_pred).masked_fill_(positive, -float("inf"))
        neg_img, neg_prior = _hardest_negatives(negative_loss, num_pos, self.neg_pos_ratio)
        img, prior = torch.cat([pos_img, neg_img]), torch.cat([pos_prior, neg_prior])  # (M,)
        # Cross-entropy over the chosen boxes; Smooth L1 over the positives.
        conf_loss = F.cross_entropy(
            conf_pred[img, prior].float(), labels[img, prior], reduction="sum"
        )
        loc_loss = F.smooth_l1_loss(
            loc_pred[pos_img, pos_prior].float(),
            loc_targets[pos_img, pos_prior].float(),
            reduction="sum",
            beta=SMOOTH_L1_BETA,
        )
        return self.alpha * loc_loss / normalizer, conf_loss / normalizer

    def extra_repr(self) -> str:
        return f"neg_pos_ratio={self.neg_pos_ratio}, alpha={self.alpha}"
