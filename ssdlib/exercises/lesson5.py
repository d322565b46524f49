"""Lesson 5's exercises: their solutions and hints (see :mod:`ssdlib.exercises`)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torchvision.ops import batched_nms

from ..boxes import box_iou
from ..nms import nms
from . import solution

COFFEE_THRESHOLD = 0.3  # exercises 2 to 4: low enough that the coffee photo's objects collide


@solution(
    "05.kept_at_08",
    hint="NMS removes a box only when its IoU with a better box already kept is *above* the "
    "threshold. Run `nms` on the rocket's boxes and scores alone, with the threshold the "
    "question names.",
)
def kept_at_08(boxes: Tensor, scores: Tensor) -> int:
    return len(nms(boxes, scores, 0.8))


@solution(
    "05.agnostic_removes",
    hint="greedy NMS takes the boxes best score first, and the best is always kept. Go down the "
    "scores: a box goes when its IoU with a box *already kept* is above 0.3 (a removed box "
    "removes nothing). Read the IoU matrix row by row in that order.",
)
def agnostic_removes(boxes: Tensor, scores: Tensor, names: Sequence[str]) -> list[str]:
    kept = set(nms(boxes, scores, COFFEE_THRESHOLD).tolist())
    return [name for i, name in enumerate(names) if i not in kept]


@solution(
    "05.agnostic",
    hint="class-agnostic NMS is plain `nms` on every box at once, labels ignored, at the "
    "threshold the question names; give its indices as a list, best score first.",
)
def agnostic(boxes: Tensor, scores: Tensor) -> list[int]:
    return nms(boxes, scores, COFFEE_THRESHOLD).tolist()


@solution(
    "05.per_class",
    hint="two boxes can only suppress each other if they overlap. Add to every coordinate of a "
    "box an offset that grows with its class, larger than the image (the boxes span [0, 1]), "
    "so that boxes of different classes never overlap; then one `nms` call does every class.",
)
def per_class(boxes: Tensor, scores: Tensor, labels: Tensor) -> list[int]:
    return batched_nms(boxes, scores, labels, COFFEE_THRESHOLD).tolist()


@solution(
    "05.soft_score",
    hint="linear Soft-NMS multiplies the box's score by (1 − IoU), its IoU with the kept box, "
    "instead of setting it to 0. Read the box's own score from `t_scores`.",
)
def soft_score(boxes: Tensor, scores: Tensor, kept: int, victim: int) -> float:
    iou = float(box_iou(boxes[kept : kept + 1], boxes[victim : victim + 1])[0, 0])
    return float(scores[victim]) * (1 - iou)
