"""Evaluation: run a detector over a dataset and score it (SSD §3, "Experimental Results").

The paper reports two kinds of mean average precision (mAP): PASCAL VOC's (Tables 1-4,
:mod:`ssdlib.voc_metric`) and COCO's (Table 5, :mod:`ssdlib.coco_metric`, through pycocotools).
:func:`evaluate` detects on every image of a dataset and computes both;
:func:`check_same_classes` makes sure the model's classes are the dataset's.

Boxes are xyxy in pixels throughout.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from .coco_metric import coco_map
from .nms import NMS_IOU_THRESHOLD, SCORE_THRESHOLD, TOP_K
from .voc_metric import voc_map


def check_same_classes(model_classes: list[str], data_classes: list[str] | None, what: str) -> None:
    """Raise a ValueError unless ``data_classes`` are the model's classes, in the same order
    (index 0, the background, may be named differently). A model built without names
    (``class_1``, ``class_2`` ...) is checked by count only. ``None``: nothing to compare."""
    if data_classes is None:
        return
    if len(data_classes) != len(model_classes):
        raise ValueError(
            f"the model has {len(model_classes)} classes {model_classes}, {what} "
            f"{len(data_classes)} {data_classes}"
        )
    unnamed = [f"class_{i}" for i in range(1, len(model_classes))]
    if model_classes[1:] == unnamed:
        return
    for i, (ours, theirs) in enumerate(zip(model_classes, data_classes, strict=True)):
        if i > 0 and ours != theirs:
            raise ValueError(
                f"class {i} is {ours!r} for the model but {theirs!r} in {what}: the labels would "
                f"be scored against the wrong classes (model {model_classes[1:]}, "
                f"{what} {data_classes[1:]})"
            )


def classes_of(dataset: Any) -> list[str] | None:
    """A dataset's ``.classes`` (looking through Subset-like wrappers), or None."""
    while not hasattr(dataset, "classes") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset  # torch.utils.data.Subset and other wrappers
    classes = getattr(dataset, "classes", None)
    return list(classes) if classes is not None else None


def _as_lists(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict]]:
    """Keep a batch as lists: evaluation images may differ in size."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def evaluate(
    model: Any,
    dataset: Any,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    progress: bool = True,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU_THRESHOLD,
    top_k: int = TOP_K,
    return_predictions: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], list[dict[str, Tensor]], list[dict[str, Any]]]:
    """Detect on every image of ``dataset`` and score the detections, COCO- and VOC-style.

    Images may have any size (``model.detect`` resizes them); boxes are compared in each image's
    own pixels, so a dataset without a resizing transform gives COCO's size ranges (small,
    medium, large) in the original pixels. IoU itself is unchanged by resizing.

    Args:
        model: an :class:`ssdlib.model.SSD` (anything with ``detect`` and ``class_names``).
        dataset: items ``(image (3, H, W) in [0, 1], target dict)`` as for :func:`coco_map`.
        batch_size: images per forward pass.
        device: where to run; moves the model there. None: where the model is.
        num_workers: DataLoader worker processes.
        progress: show a tqdm progress bar.
        score_threshold, iou_threshold, top_k: passed to ``model.detect`` (the paper's 0.01,
            0.45, 200 by default).
        return_predictions: also return the per-image predictions and targets (on the CPU),
            e.g. for a gallery of misses.

    Returns:
        ``metrics``: :func:`coco_map`'s and :func:`voc_map`'s keys plus ``num_images`` and
        ``images_per_s``; or ``(metrics, predictions, targets)``.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    class_names = list(model.class_names)
    check_same_classes(class_names, classes_of(dataset), "the dataset")
    if device is not None:
        model.to(device)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size, shuffle=False, num_workers=num_workers, collate_fn=_as_lists
    )
    predictions: list[dict[str, Tensor]] = []
    targets: list[dict[str, Any]] = []
    start = time.perf_counter()
    for images, batch_targets in tqdm(loader, desc="evaluate", disable=not progress):
        detections = model.detect(images, score_threshold, iou_threshold, top_k)
        predictions += [{k: v.cpu() for k, v in det.items()} for det in detections]
        targets += batch_targets
    seconds = time.perf_counter() - start
    metrics = {
        **coco_map(predictions, targets, class_names),
        **voc_map(predictions, targets, class_names),
        "num_images": len(targets),
        "images_per_s": len(targets) / max(seconds, 1e-9),
    }
    return (metrics, predictions, targets) if return_predictions else metrics
