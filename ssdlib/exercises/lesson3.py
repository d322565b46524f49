"""Lesson 3's exercises: their solutions and hints (see :mod:`ssdlib.exercises`)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..boxes import VARIANCES, box_iou, cxcywh_to_xyxy, decode, encode
from ..matching import assign_targets, match
from ..priors import PriorConfig, layer_of_prior
from . import solution


@solution(
    "03.tripod_positives_035",
    hint="A default box above the threshold goes to the object it overlaps most, so another "
    "object can take some of the tripod's; compare, box by box, the tripod's IoU with the "
    "other objects'.",
)
def tripod_positives_035(gt: Tensor, priors: Tensor, obj: int, threshold: float) -> int:
    return int((match(gt, priors, threshold) == obj).sum())


@solution(
    "03.person_layer",
    hint="Take the column of the person's highest IoU and look up its layer with "
    "layer_of_prior; the layers are named in layer_names.",
)
def person_layer(
    gt: Tensor, priors: Tensor, obj: int, cfg: PriorConfig, layer_names: Sequence[str]
) -> str:
    best = box_iou(gt[obj : obj + 1], cxcywh_to_xyxy(priors)).argmax()  # its best default box
    return layer_names[int(layer_of_prior(cfg)[best])]


@solution(
    "03.offsets",
    hint="Turn the object into (cx, cy, w, h) first; the centre shift is divided by the "
    "default box's size and by 0.1, the log of the size ratio by 0.2.",
)
def offsets(box: Tensor, prior: Tensor) -> Tensor:
    return encode(box, prior)[0]


def _matching_at(gt: Tensor, labels: Tensor, priors: Tensor, threshold: float):
    _, cls, details = assign_targets(
        [gt], [labels], priors, iou_threshold=threshold, return_details=True
    )
    return cls, details


@solution(
    "03.positives_07",
    hint="Every object keeps at least one positive, its best box; on top of that, count the "
    "boxes that reach 0.7. The best IoUs in the table say which objects have any.",
)
def positives_07(gt: Tensor, labels: Tensor, priors: Tensor) -> int:
    cls, _ = _matching_at(gt, labels, priors, 0.7)
    return int((cls > 0).sum())


@solution(
    "03.forced_07",
    hint="A positive counts as forced only when its object has no box at the threshold: "
    "compare each object's best IoU with 0.7.",
)
def forced_07(gt: Tensor, labels: Tensor, priors: Tensor) -> int:
    _, details = _matching_at(gt, labels, priors, 0.7)
    return int(details.forced.sum())


@solution(
    "03.decode",
    hint="Centre: d_cx + v0 · Δcx · d_w (and the same for y with d_h); size: d_w · exp(v1 · Δw) "
    "(and h); then the corners are the centre ∓ half the size. Check the order of the "
    "four columns you return: x1, y1, x2, y2.",
)
def decoded(offsets: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    return decode(offsets, priors, variances)
