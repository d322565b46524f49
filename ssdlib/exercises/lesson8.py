"""Lesson 8's exercises: their solutions and hints (see :mod:`ssdlib.exercises`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..boxes import box_iou
from ..coco_metric import coco_map
from ..report import Diagnosis
from ..speed import InferenceTiming
from ..voc_metric import precision_recall
from . import solution

SMALL_PX = 32  # COCO's "small": under 32 × 32 pixels


@solution(
    "08.small_recall",
    hint="diagnosis.obj_size < 32 selects the small objects and diagnosis.found(0.5) says which "
    "objects are found; the share found is the mean of the found flags over the small ones.",
)
def small_recall(diagnosis: Diagnosis) -> float:
    return float(diagnosis.found(0.5)[diagnosis.obj_size < SMALL_PX].mean())


@solution(
    "08.background_03",
    hint="diagnosis.counts(threshold) counts every kind of detection scoring at least the "
    "threshold; the threshold here is lower than the one the lesson printed.",
)
def background_03(diagnosis: Diagnosis) -> int:
    return diagnosis.counts(0.3)["background"]


@solution(
    "08.network_images_per_s",
    hint="take the network's milliseconds for the whole batch (not the total with NMS), and "
    "divide the batch's images by that time in seconds.",
    rtol=0.01,  # three significant digits read off the table pass; the total's rate does not
)
def network_images_per_s(timing: InferenceTiming) -> float:
    return timing.batch_size / (timing.network_ms / 1000)


@solution(
    "08.most_missed",
    hint="the missed column counts each class's unfound objects, and each row sums to that "
    "class's objects: divide first, as a class with many objects also has many misses.",
)
def most_missed(matrix: np.ndarray, class_names: Sequence[str]) -> str:
    matrix = np.asarray(matrix)
    objects = matrix[1:].sum(axis=1)  # (K-1,) objects per class
    share = np.divide(matrix[1:, 0], objects, out=np.zeros(len(objects)), where=objects > 0)
    return class_names[1 + int(share.argmax())]


@solution(
    "08.iou_20px",
    hint="the overlap is a square: each side loses the shift. The union is the two boxes' areas "
    "minus the overlap.",
)
def iou_20px() -> float:
    box = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    return float(box_iou(box, box + 2))


def shifted_detections(
    num_images: int = 10, side: float = 20.0, shift: float = 2.0
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    """Exercise 6's detector: one ``side``-pixel object per image, found by one detection shifted
    ``shift`` pixels right and down. Returns ``(predictions, targets)`` as :func:`coco_map` reads
    them (xyxy pixels)."""
    predictions, targets = [], []
    for i in range(num_images):
        x = 10.0 + 7 * i  # the objects sit at different places; it changes nothing
        box = torch.tensor([[x, x, x + side, x + side]])
        targets.append({"boxes": box, "labels": torch.tensor([1])})
        predictions.append(
            {"boxes": box + shift, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
        )
    return predictions, targets


@solution(
    "08.shifted_map",
    hint="every detection has the IoU of exercise 5. At each IoU threshold a detection either "
    "counts as correct for every object or for none, so the AP at one threshold is all or "
    "nothing; COCO's mAP averages the thresholds 0.5, 0.55, ..., 0.95.",
)
def shifted_map() -> list[float]:
    metrics = coco_map(*shifted_detections(), class_names=["background", "square"])
    return [metrics["map_50"], metrics["map_75"], metrics["map"]]


def _boxes_for(correct: Tensor, num_objects: int) -> tuple[list[dict], list[dict]]:
    """One image whose objects are 10-pixel squares in a row; a correct detection lies on the
    next unclaimed object, a wrong one on empty background far from all of them."""
    flags = [bool(ok) for ok in correct.tolist()]
    if sum(flags) > num_objects:
        raise ValueError(f"{sum(flags)} correct detections but only {num_objects} objects")
    objects = torch.tensor([[20.0 * j, 0.0, 20.0 * j + 10, 10.0] for j in range(num_objects)])
    boxes, claimed = [], 0
    for ok in flags:
        if ok:
            boxes.append(objects[claimed])
            claimed += 1
        else:
            boxes.append(torch.tensor([0.0, 500.0, 10.0, 510.0]))
    return boxes, [{"boxes": objects, "labels": torch.ones(num_objects, dtype=torch.int64)}]


@solution(
    "08.pr_at_05",
    hint="keep the detections scoring at least the threshold. Precision divides the correct "
    "ones among them by how many you kept; recall divides them by all the objects, found or "
    "not.",
)
def pr_at_threshold(
    scores: Tensor, correct: Tensor, num_objects: int, threshold: float
) -> list[float]:
    boxes, targets = _boxes_for(correct, num_objects)
    predictions = [
        {
            "boxes": torch.stack(boxes),
            "scores": scores.float(),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
        }
    ]
    curve = precision_recall(predictions, targets, ["background", "object"])[1]
    kept = int((curve.scores >= threshold).sum())  # the curve's scores fall
    if kept == 0:
        raise ValueError(f"no detection scores at least {threshold}")
    return [float(curve.precision[kept - 1]), float(curve.recall[kept - 1])]
