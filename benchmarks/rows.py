"""What ``make bench`` times: each row runs ssdlib and its reference ("peer") on the same inputs.

A row's ``build`` makes the inputs and returns a :class:`Case`: two functions of no arguments
(ours and the peer's), and a ``check`` that runs both once and fails if they disagree, so that
a row can never compare two computations that do different work.

Peers, each the code path a torchvision / pycocotools user actually runs:

* target assignment + loss: ``SSD.forward``'s training branch, i.e. per image the degenerate-box
  check, ``box_iou`` and ``SSDMatcher``, then ``SSD.compute_loss``;
* postprocess: ``SSD.postprocess_detections`` on the same raw outputs and default boxes;
* COCO mAP: ground truth and detections handed to ``pycocotools`` by hand, then ``COCOeval``;
* GPU training and inference: ``torchvision.models.detection.ssd300_vgg16`` (same 8732 default
  boxes, same classes, random weights), called the way its documentation shows.

The slim model's rows (the notebooks' CPU model) have no peer: torchvision has no such model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.models.detection import ssd300_vgg16
from torchvision.ops import box_iou as tv_box_iou

from ssdlib import fast, loss, matching, nms
from ssdlib.boxes import cxcywh_to_xyxy
from ssdlib.priors import SSD300_COCO, default_boxes

from .inputs import ground_truth, raw_outputs

BATCH = 32  # the paper's training batch size (SSD §3: "batch size 32")
NUM_CLASSES = 21  # PASCAL VOC: 20 classes + background
IMAGE_SIZE = 300  # SSD300; SSD300_COCO's 8732 default boxes equal torchvision's anchors
LOSS_RTOL = 1e-4  # float32 sums over thousands of boxes, in a different order on each side
EVAL_IMAGES = 100  # images in the COCO mAP row (pycocotools' time grows with detections)
EVAL_DETECTIONS = 100  # detections per image there: COCO's maxDets
SLIM_BATCH = 16  # the cpu-tiny preset's batch size
LOADER_MIN_RATE = 150  # images/s per loader process: 14 of them must feed ≥ 2000 images/s to a GPU
GPU_WARMUP = 5  # cuDNN tries its algorithms on the first calls of each shape
SGD = {"lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4}  # the paper's optimiser (§3)


@dataclass
class Settings:
    """Knobs that ``benchmarks.run`` passes to every row."""

    batch: int = BATCH
    num_classes: int = NUM_CLASSES
    seed: int = 0


@dataclass
class Case:
    """One row, ready to time."""

    ours: Callable[[], object]  # ssdlib's computation, inputs bound
    peer: Callable[[], object] | None  # the reference on the same inputs (None: no peer)
    check: Callable[[], None] | None = None  # raises AssertionError if ours and peer disagree
    items: int = 1  # images per call, for throughput (images/s)


def _missing_modules(*names: str) -> str | None:
    missing = [m for m in names if importlib.util.find_spec(m) is None]
    return f"needs {', '.join(missing)} (not in this checkout yet)" if missing else None


@dataclass(frozen=True)
class Row:
    name: str  # what --only matches
    device: str  # "cpu" or "cuda"
    what: str  # what one call does, for the table
    peer_name: str  # what the peer is ("" for none)
    build: Callable[[Settings, str], Case]  # (settings, device) -> the case
    target: float | None = None  # the speed-up over the peer that issue 3 asks for
    min_rate: float | None = None  # for rows without a peer: the images/s an issue asks for
    throughput: bool = False  # report images/s rather than ms per call
    latency: bool = False  # one synchronised call per sample (else calls back to back)
    warmup: int = 2  # untimed calls per side first
    needs: Callable[[], str | None] = lambda: None  # why the row cannot run yet, or None

    def unavailable(self, device: str | None = None) -> str | None:
        """Why this row cannot run on this machine (on ``device``, default its own), or None."""
        device = device or self.device
        if device == "cuda" and not torch.cuda.is_available():
            return "no CUDA device on this machine"
        return self.needs()


# -- shared pieces ---------------------------------------------------------------------------


def _torchvision_ssd(num_classes: int, device: str) -> torch.nn.Module:
    """torchvision's SSD300 (random weights: its loss and postprocess do not depend on them)."""
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes)
    return model.to(device)


def _priors_and_anchors(device: str) -> tuple[Tensor, Tensor]:
    """Our default boxes ``(P, 4)`` cxcywh normalised, and the same boxes as torchvision's
    anchors ``(P, 4)`` xyxy in pixels of the 300 × 300 input."""
    priors = default_boxes(SSD300_COCO, device=device)
    return priors, cxcywh_to_xyxy(priors) * IMAGE_SIZE


def _torchvision_targets_and_loss(model, targets, head_outputs, anchors) -> dict[str, Tensor]:
    """``SSD.forward``'s training branch after the network: check, match, compute_loss."""
    matched_idxs = []
    for target in targets:
        boxes = target["boxes"]
        if (boxes[:, 2:] <= boxes[:, :2]).any():  # its degenerate-box check
            raise ValueError("degenerate box")
        if boxes.numel() == 0:
            matched_idxs.append(
                torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device)
            )
            continue
        matched_idxs.append(model.proposal_matcher(tv_box_iou(boxes, anchors)))
    return model.compute_loss(targets, head_outputs, [anchors] * len(targets), matched_idxs)


# -- target assignment + loss -----------------------------------------------------------------


# Each hot path has two tiers: the readable functions the lessons teach, and ssdlib.fast.
TIERS = {
    "fast": (fast.assign_targets, fast.MultiBoxLoss, fast.postprocess),
    "readable": (matching.assign_targets, loss.MultiBoxLoss, nms.postprocess),
}


def _loss_case(settings: Settings, device: str, backward: bool, tier: str = "fast") -> Case:
    priors, anchors = _priors_and_anchors(device)
    gt_boxes, gt_labels = ground_truth(settings.batch, settings.num_classes, settings.seed)
    gt_boxes = [b.to(device) for b in gt_boxes]
    gt_labels = [lab.to(device) for lab in gt_labels]
    loc, conf = raw_outputs("random", priors, settings.num_classes, gt_boxes, gt_labels)
    loc.requires_grad_(backward)
    conf.requires_grad_(backward)
    model = _torchvision_ssd(settings.num_classes, device)
    assign_targets, multibox_loss, _ = TIERS[tier]
    criterion = multibox_loss()
    # torchvision's transform hands targets to the loss in pixels of the resized input
    targets = [
        {"boxes": b * IMAGE_SIZE, "labels": lab} for b, lab in zip(gt_boxes, gt_labels, strict=True)
    ]
    head_outputs = {"bbox_regression": loc, "cls_logits": conf}

    def ours() -> tuple[Tensor, ...]:
        loc_targets, labels = assign_targets(gt_boxes, gt_labels, priors)
        loc_loss, conf_loss = criterion(loc, conf, loc_targets, labels)
        if backward:
            return torch.autograd.grad(loc_loss + conf_loss, (loc, conf))
        return loc_loss, conf_loss

    def peer() -> tuple[Tensor, ...]:
        losses = _torchvision_targets_and_loss(model, targets, head_outputs, anchors)
        if backward:
            total = losses["bbox_regression"] + losses["classification"]
            return torch.autograd.grad(total, (loc, conf))
        return losses["bbox_regression"], losses["classification"]

    def check() -> None:
        for a, b in zip(ours(), peer(), strict=True):
            torch.testing.assert_close(a, b, rtol=LOSS_RTOL, atol=LOSS_RTOL)

    return Case(ours, peer, check, items=settings.batch)


def _background_loss_case(settings: Settings, device: str) -> Case:
    """The ranking of the negatives alone: about 40% of the targets-loss row's forward."""
    priors, _ = _priors_and_anchors(device)
    gt_boxes, gt_labels = ground_truth(settings.batch, settings.num_classes, settings.seed)
    _, conf = raw_outputs("random", priors, settings.num_classes, gt_boxes, gt_labels)

    def ours() -> Tensor:
        return fast.background_loss(conf)

    def peer() -> Tensor:
        return -torch.nn.functional.log_softmax(conf, dim=-1)[..., 0]

    def check() -> None:
        torch.testing.assert_close(ours(), peer(), rtol=2e-6, atol=2e-6)

    return Case(ours, peer, check, items=settings.batch)


# -- postprocess ------------------------------------------------------------------------------


def _postprocess_case(settings: Settings, device: str, regime: str, tier: str = "fast") -> Case:
    priors, anchors = _priors_and_anchors(device)
    gt_boxes, gt_labels = ground_truth(settings.batch, settings.num_classes, settings.seed)
    loc, conf = raw_outputs(regime, priors, settings.num_classes, gt_boxes, gt_labels)
    model = _torchvision_ssd(settings.num_classes, device).eval()
    sizes = [(IMAGE_SIZE, IMAGE_SIZE)] * settings.batch
    head_outputs = {"bbox_regression": loc, "cls_logits": conf}

    postprocess = TIERS[tier][2]

    def ours() -> list[dict[str, Tensor]]:
        return postprocess(loc, conf, priors, image_sizes=sizes)

    def peer() -> list[dict[str, Tensor]]:
        return model.postprocess_detections(head_outputs, [anchors] * settings.batch, sizes)

    return Case(ours, peer, _same_detections(ours, peer), items=settings.batch)


def _tiny_model_case(settings: Settings, device: str) -> Case:
    """Postprocess on the real outputs of the trained slim model (``make checkpoint``) for
    ``settings.batch`` validation images of its shapes dataset."""
    from ssdlib.data.shapes import ShapesDataset
    from ssdlib.weights import load_shipped_model

    model = load_shipped_model(device)
    size = model.cfg.image_size
    images = torch.stack(
        [ShapesDataset(settings.batch, size, split="val")[i][0] for i in range(settings.batch)]
    ).to(device)
    with torch.no_grad():
        loc, conf = model(images)  # (B, P, 4), (B, P, K)
    anchors = cxcywh_to_xyxy(model.priors) * size
    peer_model = _torchvision_ssd(model.num_classes, device).eval()
    sizes = [(size, size)] * settings.batch
    head_outputs = {"bbox_regression": loc, "cls_logits": conf}

    def ours() -> list[dict[str, Tensor]]:
        return fast.postprocess(loc, conf, model.priors, image_sizes=sizes)

    def peer() -> list[dict[str, Tensor]]:
        return peer_model.postprocess_detections(head_outputs, [anchors] * settings.batch, sizes)

    return Case(ours, peer, _same_detections(ours, peer), items=settings.batch)


def _same_detections(ours, peer) -> Callable[[], None]:
    def check() -> None:
        for i, (a, b) in enumerate(zip(ours(), peer(), strict=True)):
            assert len(a["scores"]) == len(b["scores"]), (
                f"image {i}: {len(a['scores'])} detections, torchvision {len(b['scores'])}"
            )
            torch.testing.assert_close(a["scores"], b["scores"])
            torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-3)

    return check


# -- evaluation -------------------------------------------------------------------------------


def _pycocotools_map(predictions: list[dict], targets: list[dict]) -> list[float]:
    """COCO mAP the way a pycocotools user writes it: ground truth as a dataset dict,
    detections as an ``(N, 7)`` array ``[image, x, y, w, h, score, class]``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, results = [], []
    for i, (p, t) in enumerate(zip(predictions, targets, strict=True)):
        boxes = t["boxes"].double()
        wh = boxes[:, 2:] - boxes[:, :2]
        for box, size, label in zip(boxes.tolist(), wh.tolist(), t["labels"].tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label,
                    "bbox": [box[0], box[1], *size],
                    "area": size[0] * size[1],
                    "iscrowd": 0,
                }
            )
        xywh = torch.cat([p["boxes"][:, :2], p["boxes"][:, 2:] - p["boxes"][:, :2]], dim=1)
        image = torch.full((len(xywh), 1), i + 1.0)
        results.append(torch.cat([image, xywh, p["scores"][:, None], p["labels"][:, None]], 1))
    classes = sorted({a["category_id"] for a in annotations})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i + 1} for i in range(len(targets))],
            "categories": [{"id": c, "name": str(c)} for c in classes],
            "annotations": annotations,
        }
        gt.createIndex()
        dt = gt.loadRes(torch.cat(results).double().numpy())
        coco_eval = COCOeval(gt, dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return [float(x) for x in coco_eval.stats]


def _coco_map_case(settings: Settings, device: str) -> Case:
    from ssdlib.coco_metric import COCO_STAT_NAMES, coco_map

    priors = default_boxes(SSD300_COCO)
    gt_boxes, gt_labels = ground_truth(EVAL_IMAGES, settings.num_classes, settings.seed)
    predictions = []
    for start in range(0, EVAL_IMAGES, settings.batch):  # trained-like detections of the objects
        part = slice(start, start + settings.batch)
        loc, conf = raw_outputs("trained", priors, settings.num_classes, gt_boxes[part],
                                gt_labels[part], seed=start)  # fmt: skip
        sizes = [(IMAGE_SIZE, IMAGE_SIZE)] * len(loc)
        predictions += fast.postprocess(loc, conf, priors, top_k=EVAL_DETECTIONS, image_sizes=sizes)
    targets = [
        {"boxes": b * IMAGE_SIZE, "labels": lab} for b, lab in zip(gt_boxes, gt_labels, strict=True)
    ]

    def ours() -> list[float]:
        result = coco_map(predictions, targets)
        return [result[name] for name in COCO_STAT_NAMES]

    def peer() -> list[float]:
        return _pycocotools_map(predictions, targets)

    def check() -> None:
        np.testing.assert_allclose(ours(), peer(), rtol=0, atol=1e-9)

    return Case(ours, peer, check, items=EVAL_IMAGES)


# -- the slim model on the CPU ---------------------------------------------------------------


def _shapes_batch(batch: int, image_size: int, device: str) -> tuple[Tensor, list[dict]]:
    from ssdlib.data.shapes import ShapesDataset

    data = ShapesDataset(batch, image_size)
    samples = [data[i] for i in range(batch)]
    images = torch.stack([img for img, _ in samples]).to(device)  # (B, 3, S, S)
    return images, [{k: v.to(device) for k, v in t.items() if k != "image_id"} for _, t in samples]


def _slim_model(device: str, preset_name: str = "cpu-tiny"):
    from ssdlib.data.shapes import CLASSES
    from ssdlib.model import build_ssd
    from ssdlib.train import preset

    cfg = preset(preset_name)
    torch.manual_seed(0)
    model = build_ssd(cfg.priors, len(CLASSES), cfg.width, cfg.batch_norm).to(device)
    return model, cfg


def _train_step_case(preset_name: str) -> Callable[[Settings, str], Case]:
    """One AdamW step of a CPU preset on a batch of its size: targets, forward, loss, backward."""

    def build(settings: Settings, device: str) -> Case:
        model, cfg = _slim_model(device, preset_name)
        images, targets = _shapes_batch(cfg.batch_size, cfg.priors.image_size, device)
        boxes = [t["boxes"] / cfg.priors.image_size for t in targets]  # normalised
        labels = [t["labels"] for t in targets]
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        criterion = fast.MultiBoxLoss(cfg.neg_pos_ratio)
        model.train()

        def ours() -> None:
            loc_targets, gt_labels = fast.assign_targets(boxes, labels, model.priors, cfg.match_iou)
            loc, conf = model(images)
            loc_loss, conf_loss = criterion(loc, conf, loc_targets, gt_labels)
            optimizer.zero_grad(set_to_none=True)
            (loc_loss + conf_loss).backward()
            optimizer.step()

        return Case(ours, None, items=cfg.batch_size)

    return build


def _slim_detect_case(batch: int) -> Callable[[Settings, str], Case]:
    def build(settings: Settings, device: str) -> Case:
        model, cfg = _slim_model(device)
        model.eval()
        images, _ = _shapes_batch(batch, cfg.priors.image_size, device)
        return Case(lambda: model.detect(images), None, items=batch)

    return build


def _loader_case(preset_name: str) -> Callable[[Settings, str], Case]:
    """One batch of a preset's training data as one DataLoader process makes it: draw the shapes
    at the preset's size, augment each (seeded as in training), collate; one torch thread, as
    DataLoader gives each worker. The run's batches in order, so each call is a new batch."""

    def build(settings: Settings, device: str) -> Case:
        from ssdlib.cli import SHAPES_DATA_SEED, SHAPES_TRAIN_IMAGES
        from ssdlib.data import ShapesDataset, augmentation
        from ssdlib.data.loader import collate
        from ssdlib.train import RunBatches, SeededSamples, preset

        cfg = preset(preset_name)
        size = cfg.priors.image_size
        data = ShapesDataset(
            SHAPES_TRAIN_IMAGES, size, SHAPES_DATA_SEED, "train",
            transforms=augmentation(cfg.augment, size),
        )  # fmt: skip
        samples = SeededSamples(data, cfg.seed)
        batches = iter(RunBatches(len(data), cfg.batch_size, cfg.seed))

        def ours() -> None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                collate([samples[item] for item in next(batches)])
            finally:
                torch.set_num_threads(threads)

        return Case(ours, None, items=cfg.batch_size)

    return build


def _iou_crop_case(settings: Settings, device: str) -> Case:
    """SSD's augmentation of 32 shapes images at 300 px with ssdlib's ``RandomIoUCrop`` (its
    trials drawn as one batch) against the same pipeline with torchvision's (trials one by
    one); one torch thread, as in a loader process. The drawing of the images is left out."""
    from torchvision.transforms import v2

    import ssdlib.data.transforms as transforms
    from ssdlib.data import ShapesDataset

    data = ShapesDataset(settings.batch, IMAGE_SIZE, settings.seed, "train")
    samples = [data[i] for i in range(settings.batch)]
    ours_tf = transforms.train_transform(IMAGE_SIZE)
    original = transforms.RandomIoUCrop
    try:
        transforms.RandomIoUCrop = v2.RandomIoUCrop  # the pipeline as torchvision's crop builds it
        peer_tf = transforms.train_transform(IMAGE_SIZE)
    finally:
        transforms.RandomIoUCrop = original

    def run(tf: Callable) -> Callable[[], list]:
        def augment() -> list:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return [tf(image, target) for image, target in samples]
            finally:
                torch.set_num_threads(threads)

        return augment

    def check() -> None:
        for (a, _), (b, _) in zip(run(ours_tf)(), run(peer_tf)(), strict=True):
            assert a.shape == b.shape == (3, IMAGE_SIZE, IMAGE_SIZE)

    return Case(run(ours_tf), run(peer_tf), check, items=settings.batch)


# -- SSD300 on a GPU ---------------------------------------------------------------------------


def _ssd300_pair(num_classes: int, device: str):
    """ssdlib's SSD300 and torchvision's ssd300_vgg16, same default boxes and classes."""
    from ssdlib.model import build_ssd

    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    torch.manual_seed(0)
    ours = build_ssd(SSD300_COCO, num_classes).to(device)
    return ours, _torchvision_ssd(num_classes, device)


def _gpu_train_case(amp: torch.dtype | None) -> Callable[[Settings, str], Case]:
    """One SGD step of each SSD300 on the same synthetic batch (already on the device):
    ours = assign_targets + forward + MultiBoxLoss + backward + step, as ``ssdlib.train``;
    torchvision = ``model(images, targets)`` (its transform, matching and loss) + the same."""

    def build(settings: Settings, device: str) -> Case:
        model, tv_model = _ssd300_pair(settings.num_classes, device)
        gt_boxes, gt_labels = ground_truth(settings.batch, settings.num_classes, settings.seed)
        gt_boxes = [b.to(device) for b in gt_boxes]
        gt_labels = [lab.to(device) for lab in gt_labels]
        generator = torch.Generator().manual_seed(settings.seed)
        images = torch.rand(settings.batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        images = images.to(device)
        image_list = list(images)
        targets = [
            {"boxes": b * IMAGE_SIZE, "labels": lab}
            for b, lab in zip(gt_boxes, gt_labels, strict=True)
        ]
        criterion = fast.MultiBoxLoss()
        opt = torch.optim.SGD(model.parameters(), **SGD)
        tv_opt = torch.optim.SGD(tv_model.parameters(), **SGD)
        model.train()
        tv_model.train()

        def autocast() -> contextlib.AbstractContextManager:
            return torch.autocast(device, dtype=amp) if amp else contextlib.nullcontext()

        def ours() -> None:
            loc_targets, labels = fast.assign_targets(gt_boxes, gt_labels, model.priors)
            with autocast():
                loc, conf = model(images)
            loc_loss, conf_loss = criterion(loc, conf, loc_targets, labels)
            opt.zero_grad(set_to_none=True)
            (loc_loss + conf_loss).backward()
            opt.step()

        def peer() -> None:
            with autocast():
                losses = tv_model(image_list, targets)
            tv_opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            tv_opt.step()

        return Case(ours, peer, items=settings.batch)

    return build


def _gpu_detect_case(batch: int) -> Callable[[Settings, str], Case]:
    """Images in, detections out: ssdlib's ``model.detect`` (normalise, network, postprocess)
    against torchvision's ``model(images)`` in eval mode (its transform, network, postprocess)."""

    def build(settings: Settings, device: str) -> Case:
        model, tv_model = _ssd300_pair(settings.num_classes, device)
        model.eval()
        tv_model.eval()
        generator = torch.Generator().manual_seed(settings.seed)
        images = torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator).to(device)
        image_list = list(images)

        def peer() -> list[dict[str, Tensor]]:
            with torch.no_grad():
                return tv_model(image_list)

        return Case(lambda: model.detect(images), peer, items=batch)

    return build


# -- the table ---------------------------------------------------------------------------------

_TV_LOSS = "torchvision SSD: box_iou + SSDMatcher per image, compute_loss"
_TV_POST = "torchvision SSD.postprocess_detections"
_SHAPE = f"B={BATCH}, P=8732, K={NUM_CLASSES}"


def _hot_path_rows(device: str, tier: str = "fast") -> list[Row]:
    """Target assignment + loss and postprocess on one device, for one tier: the fast paths
    keep issue 3's targets (4× and 2.5× torchvision on the CPU), the readable functions must be
    at least as fast as torchvision (1×)."""
    d = device.replace("cuda", "gpu")
    suffix = "" if tier == "fast" else "-readable"
    where = "fast." if tier == "fast" else ""
    on_cpu = device == "cpu"
    loss_target, post_target = (4.0, 2.5) if tier == "fast" else (1.0, 1.0)
    return [
        Row(
            f"{d}-targets-loss{suffix}",
            device,
            f"{where}assign_targets + {where}MultiBoxLoss forward ({_SHAPE})",
            _TV_LOSS,
            lambda s, dev: _loss_case(s, dev, backward=False, tier=tier),
            target=loss_target if on_cpu else None,
        ),
        Row(
            f"{d}-targets-loss-backward{suffix}",
            device,
            "the same, forward + backward to the head outputs",
            "the same, forward + backward",
            lambda s, dev: _loss_case(s, dev, backward=True, tier=tier),
            target=loss_target if on_cpu else None,
        ),
        Row(
            f"{d}-postprocess-trained{suffix}",
            device,
            f"{where}postprocess, trained-like synthetic outputs: background dominates, "
            "~1.2k candidates per image",
            _TV_POST,
            lambda s, dev: _postprocess_case(s, dev, "trained", tier),
            target=post_target if on_cpu else None,
        ),
        Row(
            f"{d}-postprocess-random{suffix}",
            device,
            f"{where}postprocess, random logits: 400 candidates × 20 classes per image (NMS-bound)",
            _TV_POST,
            lambda s, dev: _postprocess_case(s, dev, "random", tier),
            target=post_target if on_cpu else None,
        ),
    ]


def _no_trained_model() -> str | None:
    missing = _missing_modules("ssdlib.weights", "ssdlib.data")
    if missing:
        return missing
    from ssdlib.weights import SHIPPED_MODEL

    if not SHIPPED_MODEL.exists():
        return f"needs {SHIPPED_MODEL.name} (make checkpoint)"
    return None


ROWS: list[Row] = [
    *_hot_path_rows("cpu"),
    *_hot_path_rows("cpu", "readable"),
    Row(
        "cpu-background-loss",
        "cpu",
        f"fast.background_loss, the ranking of the negatives: -log p0 ({_SHAPE})",
        "-F.log_softmax(conf, -1)[..., 0] over the batch, as compute_loss ranks",
        _background_loss_case,
    ),
    Row(
        "cpu-postprocess-tiny-model",
        "cpu",
        f"fast.postprocess, real outputs of the trained slim model on {BATCH} shapes images",
        _TV_POST,
        _tiny_model_case,
        target=2.5,
        needs=_no_trained_model,
    ),
    Row(
        "cpu-coco-map",
        "cpu",
        f"coco_metric.coco_map, {EVAL_IMAGES} images × {EVAL_DETECTIONS} detections",
        "pycocotools by hand (COCO, loadRes, COCOeval)",
        _coco_map_case,
        needs=lambda: _missing_modules("ssdlib.coco_metric", "pycocotools"),
    ),
    Row(
        "cpu-train-step-slim",
        "cpu",
        f"slim model (cpu-tiny preset), one AdamW step on {SLIM_BATCH} shapes images",
        "",
        _train_step_case("cpu-tiny"),
        throughput=True,
        needs=lambda: _missing_modules("ssdlib.model", "ssdlib.train", "ssdlib.data"),
    ),
    Row(
        "cpu-detect-slim-b1",
        "cpu",
        "slim model, model.detect on 1 image (latency)",
        "",
        _slim_detect_case(1),
        latency=True,
        needs=lambda: _missing_modules("ssdlib.model", "ssdlib.train", "ssdlib.data"),
    ),
    Row(
        f"cpu-detect-slim-b{SLIM_BATCH}",
        "cpu",
        f"slim model, model.detect on {SLIM_BATCH} images",
        "",
        _slim_detect_case(SLIM_BATCH),
        throughput=True,
        needs=lambda: _missing_modules("ssdlib.model", "ssdlib.train", "ssdlib.data"),
    ),
    Row(
        "cpu-train-step-ssd300-cpu",
        "cpu",
        "ssd300-cpu preset (8732 default boxes, 1/8 width), one AdamW step on 16 shapes images",
        "",
        _train_step_case("ssd300-cpu"),
        throughput=True,
        needs=lambda: _missing_modules("ssdlib.model", "ssdlib.train", "ssdlib.data"),
    ),
    Row(
        "cpu-augment-ssd",
        "cpu",
        f"SSD's augmentation of {BATCH} shapes images at 300 px, RandomIoUCrop's trials batched",
        "the same pipeline with torchvision's RandomIoUCrop (trials one by one)",
        _iou_crop_case,
        needs=lambda: _missing_modules("ssdlib.data"),
    ),
    *[
        Row(
            f"cpu-loader-{name}",
            "cpu",
            f"{name} preset's training data ({what}), images/s of one loader process",
            "",
            _loader_case(name),
            throughput=True,
            min_rate=rate,
            needs=lambda: _missing_modules("ssdlib.train", "ssdlib.data"),
        )
        for name, what, rate in (
            ("ssd300-gpu", "shapes at 300 px, SSD's augmentation", LOADER_MIN_RATE),
            ("ssd300-cpu", "shapes at 300 px, light augmentation", None),
        )
    ],
    *_hot_path_rows("cuda"),
    *[
        Row(
            f"gpu-train-ssd300-{precision}",
            "cuda",
            f"SSD300 training step, batch {BATCH}, {precision} (targets, forward, loss, SGD)",
            "torchvision ssd300_vgg16, the same batch and precision",
            _gpu_train_case(amp),
            throughput=True,
            warmup=GPU_WARMUP,
            needs=lambda: _missing_modules("ssdlib.model"),
        )
        for precision, amp in (("fp32", None), ("bf16", torch.bfloat16))
    ],
    *[
        Row(
            f"gpu-detect-ssd300-b{batch}",
            "cuda",
            f"SSD300 model.detect, batch {batch}: network + postprocess"
            + (" (latency)" if batch == 1 else ""),
            "torchvision ssd300_vgg16 in eval mode, model(images)",
            _gpu_detect_case(batch),
            throughput=batch > 1,
            latency=batch == 1,
            warmup=GPU_WARMUP,
            needs=lambda: _missing_modules("ssdlib.model"),
        )
        for batch in (1, 32, 64)
    ],
]
