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
evaluate    COCO mAP (pycocotools), VOC AP, precision-recall
report      reading a trained detector: error kinds, recall by size, confusion, speed
viz         figures for the notebooks (viz_experiments: lessons 6-7); widgets: interactive shells
experiments measured experiments, cached on the code and config that made them
"""

# No name here hides a module: the functions train.train, evaluate.evaluate and nms.nms are not
# re-exported (ssdlib.nms is the module; call ssdlib.nms.nms(...), ssdlib.train.train(...)).
from . import checkpoint, data, evaluate, experiments, fast, nms, report, train
from .boxes import (
    VARIANCES,
    box_area,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    decode,
    encode,
    xyxy_to_cxcywh,
)
from .checkpoint import load_model, load_weights, save_model
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
from .evaluate import PRCurve, average_precision, coco_map, precision_recall, voc_map, voc_match
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
    "collate",
    "config_from_scales",
    "cxcywh_to_xyxy",
    "data",
    "decode",
    "default_boxes",
    "default_device",
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
    "postprocess",
    "precision_recall",
    "preset",
    "report",
    "save_model",
    "seed_everything",
    "train",
    "train_transform",
    "voc_map",
    "voc_match",
    "xyxy_to_cxcywh",
]
