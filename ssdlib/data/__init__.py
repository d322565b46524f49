"""Datasets, augmentation and loading, all in one sample format (SSD §2.2, §3).

Every dataset yields ``(image, target)``: ``image`` float32 ``(3, H, W)`` in [0, 1] (not
normalised; the model carries mean/std), ``target["boxes"]`` float32 ``(G, 4)`` xyxy pixels,
``target["labels"]`` int64 ``(G,)`` >= 1, and has ``.classes`` with ``"__background__"`` first.

shapes      ShapesDataset: scenes drawn on the fly, no download; writes COCO / VOC files
voc         VOCDataset: PASCAL VOC (the paper's benchmark)
coco        CocoDataset: any COCO-format instances file
photos      PhotoDataset: real photographs from scikit-image with hand-drawn boxes
transforms  train_transform (SSD's augmentation), eval_transform
loader      collate (samples -> a batch)
order       the data order of a run: epoch_order, RunBatches, SeededSamples (exact resume)
"""

from .coco import CocoDataset
from .common import BACKGROUND_NAME, DatasetError, check_sample, make_target, read_image
from .loader import collate
from .photos import PHOTOS_JSON, PhotoDataset, load_photo
from .shapes import CLASSES as SHAPES_CLASSES
from .shapes import ShapeObject, ShapesDataset, ShapesScene
from .transforms import (
    AUGMENTATIONS,
    DetectionTransform,
    augmentation,
    eval_transform,
    train_transform,
)
from .voc import VOC_CLASSES, VOCDataset, parse_voc_xml

__all__ = [
    "AUGMENTATIONS",
    "BACKGROUND_NAME",
    "PHOTOS_JSON",
    "SHAPES_CLASSES",
    "VOC_CLASSES",
    "CocoDataset",
    "DatasetError",
    "DetectionTransform",
    "PhotoDataset",
    "ShapeObject",
    "ShapesDataset",
    "ShapesScene",
    "VOCDataset",
    "augmentation",
    "check_sample",
    "collate",
    "eval_transform",
    "load_photo",
    "make_target",
    "parse_voc_xml",
    "read_image",
    "train_transform",
]
