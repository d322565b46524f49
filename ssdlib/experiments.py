"""Measured experiments whose results are cached, keyed on the code and the config.

The observation notebooks train small models to measure a claim (hard negative mining helps,
augmentation helps, more default boxes cost speed…). Training takes minutes, a notebook should
take seconds, and a cached number must never outlive the code that produced it. So a result is
stored under ``data/experiments/`` with a key made of

* the experiment's name and its config (everything the run depends on, as JSON), and
* a hash of every source file of ``ssdlib`` that can change a measured number (all but the
  figures, widgets and command line, :data:`NOT_MEASURED`): a change there invalidates every
  result,

and :func:`cached_experiment` re-runs the experiment whenever the key differs.

The experiments themselves: :func:`train_and_evaluate` trains a variant of a preset on
ShapesDataset for a fixed number of steps (never minutes, so a run repeats) and measures it:
COCO mAP overall and by object size, AP per class, :func:`recall_by_size`, the loss curve and
the speed; :func:`short_run` is the lessons' one way to call it, so that they share records.
:func:`object_sizes` measures what augmentation does to the objects' sizes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .boxes import box_area
from .data import ShapesDataset, augmentation
from .evaluate import evaluate
from .model import SSD, config_from_dict
from .nms import SCORE_THRESHOLD
from .presets import TrainConfig
from .presets import preset as make_preset
from .report import BACKGROUND_IOU, diagnose
from .speed import measure_inference
from .train import train
from .utils import atomic_write, default_device

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CACHE_DIR = PACKAGE_DIR.parent / "data" / "experiments"


NOT_MEASURED = (
    "viz/",
    "widgets.py",
    "exercises/",
    "cli.py",
    "__main__.py",
)  # they draw, check exercises or parse a command line: no training or evaluation calls them,
# so editing a figure does not throw away minutes of measured runs (a name ending in / is a folder)


def code_hash(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 of the package's ``.py`` files (path and content, in sorted order), leaving out
    :data:`NOT_MEASURED`."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        name = path.relative_to(package_dir).as_posix()
        if any(name == n or (n.endswith("/") and name.startswith(n)) for n in NOT_MEASURED):
            continue
        digest.update(str(path.relative_to(package_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def experiment_key(name: str, config: dict[str, Any], code: str | None = None) -> str:
    """The cache key of one experiment: name, canonical JSON of the config, and the code hash."""
    try:
        canonical = json.dumps(config, sort_keys=True)
    except TypeError as err:
        raise ValueError(
            f"experiment {name!r}: the config must be JSON-serialisable ({err})"
        ) from err
    digest = hashlib.sha256()
    for part in (name, canonical, code or code_hash()):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def cached_experiment(
    name: str,
    run: Callable[..., Any],
    config: dict[str, Any],
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """``run(**config)``, or its stored result if the same code already ran the same config.

    Args:
        name: a file-name-safe identifier, e.g. ``"hnm_vs_all_negatives"``.
        run: called as ``run(**config)``; must return something JSON-serialisable.
        config: everything the result depends on besides the library's code.
        cache_dir: where results live (default ``data/experiments`` of the repository).
        force: ignore a stored result and run again.

    Returns:
        A dict with ``result``, ``config``, ``cached`` (True if read from disk), ``seconds`` (how
        long the run took when it ran) and ``machine`` (where it ran).
    """
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"experiment name must be letters, digits, '-' or '_', got {name!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    key = experiment_key(name, config)
    path = cache_dir / f"{name}.json"
    if path.exists() and not force:
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: the cached experiment is not valid JSON ({err})") from err
        if stored.get("key") == key:
            return {**stored, "cached": True}
    start = time.perf_counter()
    result = run(**config)
    record = {
        "name": name,
        "key": key,
        "config": config,
        "result": result,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
    }
    # Keys in the order the run gave them (a result's ap50_per_class in class order); ASCII:
    # json escapes the rest. The fresh record is returned as a later read will give it back.
    try:
        text = json.dumps(record, indent=1) + "\n"
    except TypeError as err:
        raise ValueError(
            f"experiment {name!r}: the result must be JSON-serialisable ({err})"
        ) from err
    atomic_write(path, lambda f: f.write(text.encode()))
    return {**json.loads(text), "cached": False}


# -- Training and evaluating one variant of a preset (the lessons' measured comparisons) --------

TRAIN_IMAGES = 1000  # a fixed training set, as a real dataset is: the network sees each image
# several times, so that augmentation and overfitting matter as they do in practice
VAL_IMAGES = 200  # held-out images: ~600 objects, enough to tell AP differences of a few points
REFERENCE_SIZE = 300  # COCO's small / medium / large are pixel areas (32², 96²); we state each
# object's area as if its image were SSD300's 300×300 input, so they mean what they mean there
RECALL_SIZE_EDGES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 1.0)  # fractions of the image side
# (the experiments' square shapes images): finer at the small end, where recall changes
# fastest; one last bin from 0.45, since an eighth of the shapes are larger (76 of the 592
# validation objects; edges at 0.6 and 0.8 would leave 3 in the top bin)
RECALL_IOU = 0.5  # a ground-truth box counts as found by a detection of its class from this IoU
LOSS_CURVE_POINTS = 12  # rows of the loss curve kept in a result (it is plotted, not analysed)
SPEED_BATCH = 16  # images per timed call of the network and NMS (the presets' batch)


class _Samples(torch.utils.data.Dataset):
    """A list of ``(image, target)`` samples with the ``.classes`` of the dataset it came from."""

    def __init__(self, samples: list[tuple[Tensor, dict[str, Any]]], classes: list[str]) -> None:
        self.samples, self.classes = samples, classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        return self.samples[index]


@functools.lru_cache(maxsize=4)
def _evaluation_set(num_images: int, image_size: int, seed: int, split: str) -> _Samples:
    """Shapes images drawn once per process, each box with its area at REFERENCE_SIZE."""
    dataset = ShapesDataset(num_images, image_size, seed=seed, split=split)
    scale = (REFERENCE_SIZE / image_size) ** 2
    samples = []
    for image, target in dataset:
        area = box_area(target["boxes"]) * scale  # (G,) as if the image were 300×300 px
        samples.append((image, {**target, "area": area}))
    return _Samples(samples, dataset.classes)


def recall_by_size(
    predictions: Sequence[dict[str, Tensor]],
    targets: Sequence[dict[str, Tensor]],
    class_names: Sequence[str],
    image_size: float,
    bin_edges: Sequence[float] = RECALL_SIZE_EDGES,
    iou_threshold: float = RECALL_IOU,
) -> dict[str, list]:
    """The share of ground-truth objects some detection finds, by object size relative to the
    image (SSD Fig. 4), as plain lists for a JSON result.

    Matching is :func:`ssdlib.report.diagnose`'s (VOC's rule: in falling score order a detection
    claims the object of its class it overlaps most, if that IoU reaches ``iou_threshold`` and
    no one claimed it before; a duplicate does not fall back to another object). Every
    detection counts, whatever its score: the recall at the end of the precision-recall curve.

    Args:
        predictions: per image ``boxes`` ``(D, 4)`` xyxy pixels, ``scores`` ``(D,)``, ``labels``.
        targets: per image ``boxes`` ``(G, 4)`` xyxy pixels, ``labels`` ``(G,)``.
        class_names: index 0 background.
        image_size: side of the (square) images in pixels: sizes are ``√(w·h) / image_size``.
        bin_edges: ``S + 1`` increasing edges, fractions of the image side; sizes at or above
            the last edge count in the last bin (:func:`ssdlib.utils.share_by_size`).
        iou_threshold: the overlap that counts as found.

    Returns:
        ``bin_edges``, ``num_objects`` (S counts) and ``recall`` (S shares, None where empty).
    """
    edges = [float(e) for e in bin_edges]
    diagnosis = diagnose(
        predictions,
        targets,
        class_names,
        iou_threshold=iou_threshold,
        background_iou=min(BACKGROUND_IOU, iou_threshold),
    )
    pixels = [e * image_size for e in edges]
    counts, recall = diagnosis.recall_by_size(SCORE_THRESHOLD, pixels)
    return {
        "bin_edges": edges,
        "num_objects": [int(n) for n in counts],
        "recall": [_json_number(float(r)) for r in recall],
    }


def _json_number(x: float) -> float | None:
    """JSON has no nan: a metric without ground truth becomes None (null)."""
    return None if x is None or not math.isfinite(x) else float(x)


def _make_config(preset_name: str, overrides: dict[str, Any], seed: int) -> TrainConfig:
    """The TrainConfig of a run: the preset with ``overrides`` (plain JSON values) and a step
    budget."""
    overrides = dict(overrides)
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ValueError(f"overrides {unknown} are not TrainConfig fields")
    if "seed" in overrides:
        raise ValueError("give the seed as train_and_evaluate(seed=...), not in overrides")
    if isinstance(overrides.get("priors"), dict):
        overrides["priors"] = config_from_dict(overrides["priors"])
    if "milestones" in overrides:
        overrides["milestones"] = tuple(overrides["milestones"])
    # The budget is steps, never minutes, so that a run repeats; validation happens after.
    budget = {"max_minutes": None, "eval_every": 0}
    config = make_preset(preset_name, **{**budget, **overrides, "seed": seed})
    if config.max_steps is None and config.epochs is None:
        raise ValueError(f"preset {preset_name!r} has no step budget: give overrides['max_steps']")
    return config


def train_and_evaluate(
    preset: str = "cpu-tiny",
    overrides: dict[str, Any] | None = None,
    train_images: int = TRAIN_IMAGES,
    val_images: int = VAL_IMAGES,
    seen_images: int = 0,
    augment: bool = True,
    seed: int = 0,
    data_seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Train a variant of a preset on ShapesDataset and evaluate it; JSON-able results.

    The variant is ``preset(preset, **overrides)`` with a step budget (``max_minutes`` is
    switched off, so a run repeats; the overrides must give ``max_steps`` if the preset has no
    step or epoch budget). ``overrides["priors"]`` may be a PriorConfig as a dict
    (:func:`ssdlib.model.config_to_dict`), and ``overrides["sources"]`` says which backbone map
    each prior layer reads (:attr:`ssdlib.presets.TrainConfig.sources`), e.g. ``[1, 1, 1, 1, 1]``.

    Data: ``train_images`` shapes images of the "train" split (drawn at the preset's input size,
    augmented as the config's ``augment`` names if ``augment``, else used as they are),
    and ``val_images`` of the "val" split, both from ``data_seed``. Evaluated on the val images
    and, if ``seen_images`` > 0, on that many training images without augmentation (the gap
    between seen and unseen images shows overfitting).

    Args:
        preset: a name in :data:`ssdlib.presets.PRESETS`.
        overrides: TrainConfig fields to replace (plain JSON values).
        train_images, val_images: sizes of the training set and the held-out set.
        seen_images: how many training images to evaluate on as well (0: none).
        augment: augment the training images (False: none, whatever the config says).
        seed: the weights' initialisation, the data order and the augmentation draws.
        data_seed: which shapes images make up the two sets.
        device: default CUDA if present, else the CPU.

    Returns:
        A dict: the run (``preset``, ``priors``, ``num_priors``, ``boxes_per_cell``,
        ``feature_maps``, ``sources``, ``steps``, ``epochs``), COCO metrics on the val set
        (``map``, ``map_50``, ``map_75``, ``map_small/medium/large``, ``mar_100``,
        ``ap50_per_class``), ``voc07_map``, ``train_map`` and ``train_map_50`` (on seen
        images; None if ``seen_images`` is 0), ``recall_by_size`` (:func:`recall_by_size`),
        ``loss_curve`` (``step`` and ``loss`` lists), ``train_seconds``,
        ``train_images_per_s`` and ``images_per_s`` (network + NMS on a batch of val images,
        :func:`ssdlib.speed.measure_inference`).
        Metrics without ground truth are None.
    """
    config = _make_config(preset, overrides or {}, seed)
    size = config.priors.image_size
    device = torch.device(device) if device is not None else default_device()
    transform = augmentation(config.augment, size) if augment else None
    train_set = ShapesDataset(
        train_images, size, seed=data_seed, split="train", transforms=transform
    )
    val_set = _evaluation_set(val_images, size, data_seed, "val")
    if not 0 <= seen_images <= train_images:
        raise ValueError(
            f"seen_images must be in [0, train_images={train_images}], got {seen_images}"
        )
    start = time.perf_counter()
    result = train(config, train_set, None, device=device, progress=False)
    train_seconds = time.perf_counter() - start
    model = result.model.eval()
    seen_set = _evaluation_set(seen_images, size, data_seed, "train") if seen_images else None
    return {
        **_describe_run(config, model, result.step, train_images),
        "val_images": val_images,
        "augment": augment,
        **_accuracy(model, val_set, seen_set, config.batch_size, device),
        "loss_curve": _loss_curve(result.history),
        "train_seconds": train_seconds,
        "train_images_per_s": result.step * config.batch_size / max(train_seconds, 1e-9),
        "images_per_s": _images_per_s(model, val_set),
    }


COCO_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")
# the COCO metrics a result keeps: the headline, by IoU, by object size, and the recall


def _describe_run(config: TrainConfig, model: SSD, steps: int, train_images: int) -> dict:
    """What was trained, and for how long."""
    return {
        "preset": config.name,
        "priors": config.priors.name,
        "num_priors": config.priors.num_priors,
        "boxes_per_cell": config.priors.boxes_per_cell,
        "feature_maps": list(config.priors.feature_maps),
        "sources": list(model.sources),
        "source_names": model.source_names,
        "steps": steps,
        "epochs": steps * config.batch_size / train_images,
        "train_images": train_images,
    }


def _accuracy(
    model: SSD,
    val_set: _Samples,
    seen_set: _Samples | None,
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """COCO and VOC metrics and recall by size on the val set; mAP on the seen training images
    (None without them)."""
    metrics, predictions, targets = evaluate(
        model, val_set, batch_size, device, progress=False, return_predictions=True
    )
    seen = {"map": None, "map_50": None}
    if seen_set is not None:
        seen = evaluate(model, seen_set, batch_size, device, progress=False)
    size = model.cfg.image_size
    return {
        **{k: _json_number(metrics[k]) for k in COCO_KEYS},
        "voc07_map": _json_number(metrics["voc07_map"]),
        "ap50_per_class": {k: _json_number(v) for k, v in metrics["ap50_per_class"].items()},
        "train_map": _json_number(seen["map"]),
        "train_map_50": _json_number(seen["map_50"]),
        "recall_by_size": recall_by_size(predictions, targets, val_set.classes, size),
    }


def _loss_curve(history: list[dict[str, Any]]) -> dict[str, list]:
    """:data:`LOSS_CURVE_POINTS` rows of the training history, evenly spaced, first and last
    included."""
    if not history:
        return {"step": [], "loss": []}
    last = len(history) - 1
    keep = sorted({round(i * last / (LOSS_CURVE_POINTS - 1)) for i in range(LOSS_CURVE_POINTS)})
    return {
        "step": [int(history[i]["step"]) for i in keep],
        "loss": [float(history[i]["loss"]) for i in keep],
    }


def _images_per_s(model: SSD, val_set: _Samples) -> float:
    """Network + NMS speed on one batch of :data:`SPEED_BATCH` val images."""
    batch = torch.stack([val_set[i][0] for i in range(min(SPEED_BATCH, len(val_set)))])
    return measure_inference(model, (len(batch),), images=batch)[0].images_per_s


SHORT_RUN_STEPS = 600  # the lessons' budget per compared run: ~2 minutes on two CPU cores, and
# far enough from the start that the models differ (at 150 steps every mAP@0.5 was near 0.02)


def short_run(
    name: str,
    overrides: dict[str, Any] | None = None,
    steps: int = SHORT_RUN_STEPS,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    **run_args: Any,
) -> dict[str, Any]:
    """One run of the lessons' measured comparisons, cached: the cpu-tiny preset trained for
    ``steps`` optimiser steps (warming up over the first tenth) with ``overrides``, evaluated by
    :func:`train_and_evaluate`.

    Every lesson that compares variants calls this, so a variant two lessons both need (lesson
    4's 3:1 hard negative mining is lesson 7's baseline) is trained once and stored once, as
    ``data/experiments/<name>.json``. A name stands for one configuration: asking for it with
    other overrides or seed trains again and replaces the record. A budget other than
    :data:`SHORT_RUN_STEPS` is stored as ``<name>_<steps>steps``, so that an exercise's longer
    run never replaces a lesson's record.

    Args:
        name: the record's name, e.g. ``"baseline"``.
        overrides: TrainConfig fields that make the variant.
        steps: the budget in optimiser steps.
        seed: weights, data order and augmentation draws.
        cache_dir: where records live (default ``data/experiments``).
        run_args: further arguments of :func:`train_and_evaluate` (``train_images``,
            ``val_images``, ``seen_images``, ``augment``).

    Returns:
        :func:`cached_experiment`'s record; the measurements are its ``"result"``.
    """
    config = {
        "preset": "cpu-tiny",
        "overrides": {"max_steps": steps, "warmup_steps": steps // 10, **(overrides or {})},
        "train_images": TRAIN_IMAGES,
        "val_images": VAL_IMAGES,
        **run_args,
        "seed": seed,
    }
    if steps != SHORT_RUN_STEPS:
        name = f"{name}_{steps}steps"
    return cached_experiment(name, train_and_evaluate, config, cache_dir=cache_dir)


def object_sizes(
    dataset: torch.utils.data.Dataset,
    transform: Callable[[Tensor, dict], tuple[Tensor, dict]] | None = None,
    draws: int = 1,
    seed: int = 0,
) -> Tensor:
    """Sizes √(w·h) / image side of every object in ``draws`` passes over ``dataset``.

    With a random ``transform`` each pass draws new augmentations (from a stream seeded with
    ``seed``; the global RNG is left as it was), so the result is the object-size distribution
    the network is trained on. Image sides are taken after the transform (square images are
    assumed, as SSD's are after resizing; otherwise the geometric mean of the sides is used).

    Args:
        dataset: items ``(image (3, H, W), {"boxes": (G, 4) xyxy pixels, ...})``, untransformed.
        transform: e.g. :func:`ssdlib.data.train_transform`; None: the dataset's own objects.
        draws: passes over the dataset (only useful with a random transform).
        seed: seed of the augmentation stream.

    Returns:
        ``(N,)`` float32 sizes, in dataset order, pass after pass.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    sizes = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(draws):
            for i in range(len(dataset)):
                image, target = dataset[i]
                if transform is not None:
                    image, target = transform(image, target)
                h, w = image.shape[-2:]
                wh = (target["boxes"][:, 2:] - target["boxes"][:, :2]).clamp(min=0)  # (G, 2)
                sizes.append((wh[:, 0] * wh[:, 1]).sqrt() / math.sqrt(h * w))
    return torch.cat(sizes).float() if sizes else torch.zeros(0)
