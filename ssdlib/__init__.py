"""ssdlib: the SSD object detector (Liu et al. 2016), one paper idea per module.

boxes     box conventions, IoU, the offset encoding (§2.1)
priors    default boxes: scales and aspect ratios (§2.2)
matching  default boxes <-> ground truth, training targets (§2.2)
loss      MultiBox loss with hard negative mining (§2.2)
nms       non-maximum suppression and detections (§3)
"""

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
from .loss import MultiBoxLoss, hard_negative_mining
from .matching import MatchDetails, assign_targets, match
from .nms import nms, nms_steps, postprocess, postprocess_reference
from .priors import (
    SSD300_COCO,
    SSD300_VOC,
    SSD512_VOC,
    PriorConfig,
    config_from_scales,
    default_boxes,
    linear_scales,
)
from .utils import default_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "SSD300_COCO",
    "SSD300_VOC",
    "SSD512_VOC",
    "VARIANCES",
    "MatchDetails",
    "MultiBoxLoss",
    "PriorConfig",
    "assign_targets",
    "box_area",
    "box_iou",
    "clip_boxes",
    "config_from_scales",
    "cxcywh_to_xyxy",
    "decode",
    "default_boxes",
    "default_device",
    "encode",
    "hard_negative_mining",
    "linear_scales",
    "match",
    "nms",
    "nms_steps",
    "postprocess",
    "postprocess_reference",
    "seed_everything",
    "xyxy_to_cxcywh",
]
