"""What a training run is: :class:`TrainConfig` holds every choice, :data:`PRESETS` are the named
configurations (from the CPU presets the lessons train to the paper's SSD300 and SSD512), and
:func:`preset` copies one with some fields replaced. :func:`ssdlib.train.train` runs them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .data.transforms import AUGMENTATIONS
from .loss import NEG_POS_RATIO
from .matching import IOU_THRESHOLD
from .model import ModelConfig, config_from_dict, config_to_dict
from .priors import SSD300_COCO, SSD300_VOC, SSD512_VOC, PriorConfig, config_from_scales


@dataclass
class TrainConfig:
    """Everything a training run depends on besides the data. ``print(cfg)`` shows one per line."""

    name: str = "custom"  # a label: the preset it came from
    # The network.
    priors: PriorConfig = SSD300_VOC  # where the default boxes go; fixes the input size
    width: float = 1.0  # channel multiplier of the VGG16 base and extras (1.0 = the paper's)
    batch_norm: bool = False  # BatchNorm after every conv: lets a slim net train from scratch
    # (under DDP each process normalises with its own share of the batch)
    sources: tuple[int, ...] | None = None  # the backbone map each prior layer reads (0 conv4_3,
    # 1 fc7, 2 the first extra layer's, ...), as ModelConfig.sources; None: the paper's, layer k
    # on map k (lesson 7 puts every layer on fc7, SSD Table 3)
    # The objective (§2.2).
    augment: str = "ssd"  # the data augmentation, by name: ssdlib.data.AUGMENTATIONS (the
    # training set is built with it by the command line and the experiments)
    neg_pos_ratio: float = NEG_POS_RATIO  # hard negatives per positive: "at most 3:1"
    match_iou: float = IOU_THRESHOLD  # a default box is positive from this IoU (0.5)
    # The optimiser.
    optimizer: str = "sgd"  # "sgd" (the paper's) or "adamw"
    lr: float = 1e-3  # peak learning rate (the paper's SGD: 1e-3)
    momentum: float = 0.9  # SGD momentum; AdamW's beta1
    weight_decay: float = 5e-4  # on conv weights only; biases and norms are not decayed, as Caffe
    warmup_steps: int = 0  # linear ramp from warmup_start·lr up to lr over these steps
    warmup_start: float = 1e-3  # the ramp's first factor (torchvision's detection recipe)
    schedule: str = "step"  # after warmup: "step" (×gamma at milestones) or "cosine" (to 0)
    milestones: tuple[float, ...] = (2 / 3, 5 / 6)  # fractions of the budget where "step" decays:
    # the paper's 40k and 50k of 60k iterations on VOC07+12
    gamma: float = 0.1  # "step" multiplies the lr by this at each milestone
    grad_clip: float | None = None  # clip the gradients' global L2 norm to this (None: never)
    # The budget: training stops at whichever limit comes first; at least one is needed.
    batch_size: int = 32  # global batch: split evenly over the processes under DDP
    epochs: int | None = None  # passes over the training set
    max_steps: int | None = None  # optimiser steps
    max_minutes: float | None = None  # wall-clock minutes (evaluation included)
    # Speed.
    amp: str = "auto"  # "auto": bf16 on CUDA with bf16 (else fp16 + GradScaler), off on CPU;
    # or "off", "bf16", "fp16"
    channels_last: bool = False  # NHWC memory layout, on any device: faster convs on CUDA (the
    # GPU presets turn it on); the CPU presets leave it off
    compile: bool = False  # torch.compile the network (slow first steps, faster later)
    num_workers: int = 0  # DataLoader worker processes; they live for the whole run
    # Evaluation, logging, checkpoints.
    eval_every: int = 0  # steps between validations (0: only at the end)
    eval_images: int | None = None  # validate on the first N images (None: all)
    best_metric: str = "map"  # key of evaluate()'s result that picks best.pt
    log_every: int = 10  # steps per row of metrics.csv (losses are averaged over the row)
    checkpoint_every: int = 500  # steps between writes of last.pt (also at evals and the end)
    seed: int = 0  # weights, data order and augmentation all follow from it

    def __post_init__(self) -> None:
        choices = {
            "optimizer": ("sgd", "adamw"),
            "schedule": ("step", "cosine"),
            "amp": ("auto", "off", "bf16", "fp16"),
            "augment": AUGMENTATIONS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        positive = ("lr", "batch_size", "log_every", "checkpoint_every", "width")
        for key in positive:
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        for key in ("epochs", "max_steps", "max_minutes", "grad_clip", "eval_images"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"{key} must be positive or None, got {value}")
        for key in ("warmup_steps", "eval_every"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones are fractions of the budget in (0, 1): {self.milestones}")
        self.milestones = tuple(sorted(self.milestones))
        if self.sources is not None:  # ModelConfig's check, and its one spelling (None) of the
            # paper's choice; the class names do not matter here
            network = ModelConfig(self.priors, ("background", "object"), sources=self.sources)
            self.sources = network.sources

    def __repr__(self) -> str:
        lines = [f"    {f.name}={getattr(self, f.name)!r}," for f in dataclasses.fields(self)]
        return "TrainConfig(\n" + "\n".join(lines) + "\n)"

    def model_config(self, class_names: Sequence[str]) -> ModelConfig:
        """The network this config trains on a dataset of ``class_names`` (background first)."""
        return ModelConfig(
            self.priors, tuple(class_names), self.width, self.batch_norm, self.sources
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the priors as a dict), for checkpoints and JSON."""
        d = dataclasses.asdict(self)
        d["priors"] = config_to_dict(self.priors)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; also reads the dicts of older checkpoints (without
        ``sources``: the paper's maps)."""
        d = dict(d)
        d.pop("assign_in_workers", None)  # retired: training always matches on its device
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        d["priors"] = config_from_dict(d["priors"])
        d["milestones"] = tuple(d["milestones"])
        return cls(**d)


# A small input and five maps (16, 8, 4, 2, 1 cells for 128 px): still multi-scale, with
# default boxes of several shapes, matching and hard negatives, but ~1.5k boxes instead of 8732.
CPU_TINY_PRIORS = config_from_scales(
    s_min=0.1,
    s_max=0.9,
    aspect_ratios=((2,), (2, 3), (2, 3), (2,), (2,)),
    feature_maps=(16, 8, 4, 2, 1),
    image_size=128,
    name="CPU_TINY",
)

# The smallest SSD that still shows every idea, trainable on 2 CPU cores in minutes. Slim (an
# eighth of VGG16's channels) with BatchNorm, AdamW and a short warmup, because it starts from
# scratch; light augmentation, because every shapes image is new anyway. The README's "The CPU
# preset" gives the runs that chose these settings.
CPU_TINY = TrainConfig(
    name="cpu-tiny",
    priors=CPU_TINY_PRIORS,
    width=0.125,
    batch_norm=True,
    augment="light",
    optimizer="adamw",
    lr=4e-3,
    weight_decay=0.05,
    warmup_steps=100,
    schedule="cosine",
    batch_size=16,
    max_minutes=15.0,
    eval_every=500,
    eval_images=200,
    log_every=10,
    checkpoint_every=200,
)

PRESETS: dict[str, TrainConfig] = {
    "cpu-tiny": CPU_TINY,
    # SSD300 itself on 2 CPU cores: 300-pixel input, the six source maps 38/19/10/5/3/1 and
    # all 8732 default boxes, in COCO's sizes (21 px up: the shapes are as small as COCO's
    # objects, §3.4). cpu-tiny's slim layers, optimiser and light augmentation otherwise. A step
    # budget, not minutes, so the shipped model (`make checkpoint-ssd300`, about an hour) is the
    # same whatever else the machine does.
    "ssd300-cpu": dataclasses.replace(
        CPU_TINY,
        name="ssd300-cpu",
        priors=SSD300_COCO,
        max_minutes=None,
        max_steps=3000,
        num_workers=1,  # draws the next batch while the step runs
        eval_every=250,
        checkpoint_every=250,
    ),
    # The full-width SSD300 on one GPU in five minutes from scratch (lesson 8, `make gpu-check`):
    # BatchNorm and AdamW so it trains from random weights at a high learning rate, a short
    # warmup and a cosine that ends with the clock, bf16 and channels-last, and loader
    # processes that live for the whole run. SSD's augmentation, as on VOC and COCO.
    "ssd300-gpu": TrainConfig(
        name="ssd300-gpu",
        priors=SSD300_COCO,
        batch_norm=True,
        augment="ssd",
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        warmup_steps=300,
        schedule="cosine",
        batch_size=32,
        max_minutes=5.0,
        amp="auto",
        channels_last=True,
        num_workers=14,  # a 16-core GPU machine, less the main process and one to spare
        eval_every=1500,
        eval_images=250,
        log_every=20,
        checkpoint_every=1000,
    ),
    # The paper's SSD300 (§3): VGG16 at full width, SGD 1e-3, momentum 0.9, weight decay 5e-4,
    # batch 32, lr ×0.1 after 40k and 50k of 60k iterations. The warmup is torchvision's
    # recipe (the paper starts from ImageNet weights, which nothing here downloads).
    "ssd300": TrainConfig(
        name="ssd300",
        priors=SSD300_VOC,
        max_steps=60_000,
        warmup_steps=1000,
        channels_last=True,
        eval_every=5000,
        eval_images=None,
        log_every=50,
        checkpoint_every=1000,
    ),
    # SSD512: the same recipe on the 512-pixel geometry (7 source maps, 24564 default boxes).
    "ssd512": TrainConfig(
        name="ssd512",
        priors=SSD512_VOC,
        max_steps=60_000,
        warmup_steps=1000,
        channels_last=True,
        eval_every=5000,
        log_every=50,
        checkpoint_every=1000,
    ),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A copy of ``PRESETS[name]`` with some fields replaced: ``preset("cpu-tiny", lr=1e-3)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
