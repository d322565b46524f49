"""Lesson 4's exercises: their solutions and hints (see :mod:`ssdlib.exercises`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..loss import NEG_POS_RATIO, SMOOTH_L1_BETA, hard_negative_mining
from . import solution


@solution(
    "04.smooth_l1",
    hint="each of the four offsets is scored on its own and the four are added: 0.5·x² where "
    "|x| < 1, |x| − 0.5 from 1 on. Check on which side of 1 each miss falls, sign aside.",
)
def smooth_l1(miss: Tensor) -> float:
    miss = torch.as_tensor(miss, dtype=torch.float32)
    return float(
        F.smooth_l1_loss(miss, torch.zeros_like(miss), reduction="sum", beta=SMOOTH_L1_BETA)
    )


@solution(
    "04.mined_at_ratios",
    hint="mining takes (ratio × this image's positives) negatives, but never more negatives "
    "than the image has: when the product is larger, it takes every negative. Section 4's "
    "printout counts the image's negatives; its figure's legend, the positives.",
)
def mined_at_ratios(bg_loss: Tensor, labels: Tensor, ratios: Sequence[float]) -> list[int]:
    negative = labels == 0
    return [
        int((hard_negative_mining(bg_loss[None], labels[None], r)[0] & negative).sum())
        for r in ratios
    ]


@solution(
    "04.positive_share",
    hint="the share is (all positives) / (all default boxes) over the 500 images, which is the "
    "mean number of positives per image over the default boxes per image.",
    rtol=0.02,
)
def positive_share(labels: Tensor) -> float:
    return float((labels > 0).float().mean())


def mine_over_the_batch(
    bg_loss: Tensor, labels: Tensor, neg_pos_ratio: float = NEG_POS_RATIO
) -> Tensor:
    """Hard negative mining with one quota for the whole batch: every positive, and the
    ``neg_pos_ratio × N`` hardest negatives of all images together (``N`` the batch's positives).

    The library's per-image rule on the batch flattened into one long "image" is exactly that.

    Args:
        bg_loss: ``(B, P)`` ``-log p_0``.
        labels: ``(B, P)`` long, 0 = background.

    Returns:
        ``(B, P)`` bool.
    """
    flat = hard_negative_mining(bg_loss.reshape(1, -1), labels.reshape(1, -1), neg_pos_ratio)
    return flat.reshape(labels.shape)


@solution(
    "04.mine_batch",
    hint="rank the negatives of all the images together, hardest first, and keep the first "
    "3 × N, N the positives of the whole batch; every positive stays in the mask. Nothing is "
    "per image any more: an image's own positives no longer limit its negatives.",
)
def mine_batch(bg_loss: Tensor, labels: Tensor) -> Tensor:
    return mine_over_the_batch(bg_loss, labels)


@solution(
    "04.mined_in_empty_images",
    hint="take your batch-wide mask, keep only its negatives (label 0), and count those that lie "
    "in the images whose labels hold no positive at all.",
)
def mined_in_empty_images(bg_loss: Tensor, labels: Tensor) -> int:
    mined = mine_over_the_batch(bg_loss, labels) & (labels == 0)  # (B, P)
    empty = ~(labels > 0).any(dim=1)  # (B,) images without a positive
    return int(mined[empty].sum())
