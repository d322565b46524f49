"""ssdlib: the SSD object detector (Liu et al. 2016), one paper idea per module.

boxes       box conventions, IoU, the offset encoding (§2.1)
priors      default boxes: scales and aspect ratios (§2.2)
matching    default boxes <-> ground truth, training targets (§2.2)
loss        MultiBox loss with hard negative mining (§2.2)
nms         non-maximum suppression and detections (§3)
fast        the same results as box_iou, assign_targets, MultiBoxLoss and postprocess, faster
model       the network and its ModelConfig, the heads (§2.1, §3); backbone: VGG16, extras
weights     ImageNet VGG16, torchvision's COCO SSD300, the shipped models
checkpoint  model files and training checkpoints: one format each, one load_model
data        ShapesDataset, VOC, COCO, photos, SSD augmentation, loaders
train       the training loop (presets: TrainConfig and the presets; distributed: DDP)
evaluate    running a detector over a dataset; voc_metric: VOC AP, precision-recall;
            coco_metric: COCO mAP (pycocotools); detections: their common input
report      reading a trained detector: error kinds, recall by size, confusion
speed       inference time (network and NMS) and multiply-adds
viz         the lessons' figures, one module per lesson in ssdlib/viz/; widgets: their explorers
experiments measured experiments, cached on the code and config that made them
"""

# No name here hides a module: the functions train.train, evaluate.evaluate and nms.nms are not
# re-exported (ssdlib.nms is the module; call ssdlib.nms.nms(...), ssdlib.train.train(...)).
from . import (
    checkpoint,
    coco_metric,
    data,
    detections,
    evaluate,
    experiments,
    fast,
    nms,
    report,
    speed,
    train,
    voc_metric,
)
from .boxes import (
    VARIANCES,
    box_area,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    decode,
    encode,
    pixels_to_unit,
    unit_to_pixels,
    xyxy_to_cxcywh,
)
from .checkpoint import load_model, load_weights, save_model
from .coco_metric import coco_map
from .data import (
    CocoDataset,
    PhotoDataset,
    ShapesDataset,
    VOCDataset,
    collate,
    eval_transform,
    load_photo,
    train_transform,
)
from .loss import MultiBoxLoss, background_loss, hard_negative_mining
from .matching import MatchDetails, assign_targets, match, match_iou
from .model import SSD, ModelConfig, build_ssd
from .nms import nms_steps, postprocess
from .priors import (
    SSD300_COCO,
    SSD300_VOC,
    SSD512_VOC,
    PriorConfig,
    config_from_scales,
    default_boxes,
    linear_scales,
)
from .train import PRESETS, NonFiniteLossError, TrainConfig, TrainResult, preset
from .utils import default_device, seed_everything
from .voc_metric import PRCurve, average_precision, precision_recall, voc_map, voc_match
from .weights import WeightsUnavailableError, from_torchvision, load_vgg16_backbone

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "SSD",
    "SSD300_COCO",
    "SSD300_VOC",
    "SSD512_VOC",
    "VARIANCES",
    "CocoDataset",
    "MatchDetails",
    "ModelConfig",
    "MultiBoxLoss",
    "NonFiniteLossError",
    "PRCurve",
    "PhotoDataset",
    "PriorConfig",
    "ShapesDataset",
    "TrainConfig",
    "TrainResult",
    "VOCDataset",
    "WeightsUnavailableError",
    "assign_targets",
    "average_precision",
    "background_loss",
    "box_area",
    "box_iou",
    "build_ssd",
    "checkpoint",
    "clip_boxes",
    "coco_map",
    "coco_metric",
    "collate",
    "config_from_scales",
    "cxcywh_to_xyxy",
    "data",
    "decode",
    "default_boxes",
    "default_device",
    "detections",
    "encode",
    "eval_transform",
    "evaluate",
    "experiments",
    "fast",
    "from_torchvision",
    "hard_negative_mining",
    "linear_scales",
    "load_model",
    "load_photo",
    "load_vgg16_backbone",
    "load_weights",
    "match",
    "match_iou",
    "nms",
    "nms_steps",
    "pixels_to_unit",
    "postprocess",
    "precision_recall",
    "preset",
    "report",
    "save_model",
    "seed_everything",
    "speed",
    "train",
    "train_transform",
    "unit_to_pixels",
    "voc_map",
    "voc_match",
    "voc_metric",
    "xyxy_to_cxcywh",
]
