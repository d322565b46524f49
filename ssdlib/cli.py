"""The command line: ``python -m ssdlib {train,evaluate,detect,export} ...``.

    python -m ssdlib train --preset cpu-tiny --dataset shapes --max-minutes 15 --out runs/tiny
    python -m ssdlib evaluate --checkpoint runs/tiny/best.pt --dataset shapes --split val
    python -m ssdlib detect --checkpoint data/model.pt photo.jpg --out detections/
    python -m ssdlib export --checkpoint runs/tiny/best.pt --out data/model.pt

Each command is a thin shell over the library (:func:`ssdlib.train.train`,
:func:`ssdlib.evaluate.evaluate`, ``SSD.detect``, :func:`ssdlib.checkpoint.save_model`). Expected
failures (a missing dataset, a checkpoint that does not fit, a bad option) end with one line on
stderr and a non-zero exit; ``--traceback`` shows the whole story.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from .checkpoint import load_model, read_training_checkpoint, save_model
from .data.common import read_every_annotation
from .data.transforms import AUGMENTATIONS
from .model import SSD
from .priors import SSD300_COCO
from .train import PRESETS, preset, train
from .utils import TAB10, atomic_write

DATASETS = ("shapes", "voc", "coco")
SHAPES_TRAIN_IMAGES = 20_000  # scenes per epoch; drawn on the fly, so the size costs no disk
SHAPES_VAL_IMAGES = 500  # the shapes validation split: enough for a stable mAP, ~10 s to score
SHAPES_DATA_SEED = 0  # which shapes world; --seed varies the training, not the data
VOC_TRAIN_YEARS = ("2007", "2012")  # the paper's "07+12" trainval (SSD §3.1)
DETECT_SCORE_THRESHOLD = 0.4  # for pictures: the paper's 0.01 suits mAP, but draws clutter
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # 2 as argparse; 130 = 128 + SIGINT


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# -- datasets ----------------------------------------------------------------------------------


def _with_classes(dataset: Dataset, classes: Sequence[str]) -> Dataset:
    dataset.classes = list(classes)  # type: ignore[attr-defined]
    return dataset


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` items (for quick checks), keeping ``.classes``."""
    if limit is None or limit >= len(dataset):
        return dataset
    return _with_classes(Subset(dataset, range(limit)), dataset.classes)


def _coco_paths(root: Path, split: str) -> tuple[Path, Path]:
    """``root/{split}2017`` and ``root/annotations/instances_{split}2017.json``."""
    return root / f"{split}2017", root / "annotations" / f"instances_{split}2017.json"


def _data_root(args: argparse.Namespace) -> Path:
    if args.data_root is None:
        raise ValueError(f"--dataset {args.dataset} needs --data-root DIR (where it is on disk)")
    root = Path(args.data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data-root {root} is not a directory")
    return root


def train_dataset(args: argparse.Namespace, image_size: int, augment: str = "ssd") -> Dataset:
    """The training set of ``--dataset``, ``image_size`` square, augmented as ``augment`` names
    (:data:`ssdlib.data.AUGMENTATIONS`)."""
    from .data.coco import CocoDataset
    from .data.shapes import ShapesDataset
    from .data.transforms import augmentation
    from .data.voc import VOCDataset

    transform = augmentation(augment, image_size)
    if args.dataset == "shapes":
        n = args.limit or SHAPES_TRAIN_IMAGES
        return ShapesDataset(n, image_size, SHAPES_DATA_SEED, "train", transforms=transform)
    root = _data_root(args)
    if args.dataset == "voc":  # difficult objects are left out of training, as in the paper
        parts = [
            VOCDataset(root, y, "trainval", transform, keep_difficult=False) for y in args.voc_years
        ]
        data = _with_classes(ConcatDataset(parts), parts[0].classes)
    else:
        images, annotations = _coco_paths(root, "train")
        data = CocoDataset(images, annotations, transform)
    return _limit(data, args.limit)


def eval_dataset(args: argparse.Namespace, split: str, image_size: int) -> Dataset:
    """The evaluation set: original image sizes (``detect`` resizes), difficult boxes kept."""
    from .data.coco import CocoDataset
    from .data.shapes import ShapesDataset
    from .data.voc import VOCDataset

    if args.dataset == "shapes":
        n = args.limit or SHAPES_VAL_IMAGES
        return ShapesDataset(n, image_size, SHAPES_DATA_SEED, split)
    root = _data_root(args)
    if args.dataset == "voc":  # the paper's numbers are on VOC2007 test
        data = VOCDataset(root, "2007", split, keep_difficult=True)
    else:
        data = CocoDataset(*_coco_paths(root, split))
    return _limit(data, args.limit)


# -- commands ----------------------------------------------------------------------------------


def _jsonable(x: Any) -> Any:
    """nan -> null (JSON has no nan), tensors and NumPy scalars -> numbers."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if hasattr(x, "item") and not isinstance(x, str):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def _print_json(obj: Any) -> None:
    print(json.dumps(_jsonable(obj), indent=2))


def cmd_train(args: argparse.Namespace) -> int:
    config = preset(args.preset)
    overrides: dict[str, Any] = {"seed": args.seed}
    if args.dataset == "coco" and config.priors.name == "SSD300_VOC":
        overrides["priors"] = SSD300_COCO  # COCO's smaller objects get smaller boxes (§3.4)
    if args.epochs or args.max_minutes or args.max_steps:  # replaces the preset's budget
        overrides.update(epochs=args.epochs, max_minutes=args.max_minutes, max_steps=args.max_steps)
    for key in (
        "batch_size", "width", "lr", "eval_every", "num_workers", "augment", "warmup_steps",
        "grad_clip", "amp", "checkpoint_every",
    ):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    config = dataclasses.replace(config, **overrides)
    size = config.priors.image_size
    train_set = train_dataset(args, size, config.augment)
    val_set = None if args.no_val else eval_dataset(args, _default_val_split(args.dataset), size)
    for data in (train_set, val_set):  # a bad annotation fails now, not after training
        read_every_annotation(data)
    result = train(
        config,
        train_set,
        val_set,
        out_dir=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.quiet,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        _print_json(
            {
                "out_dir": result.out_dir,
                "steps": result.step,
                "stopped_by": result.stopped_by,
                "best": result.best,
                "last_row": result.history[-1] if result.history else None,
            }
        )
    return 0


def _default_val_split(dataset: str) -> str:
    return "test" if dataset == "voc" else "val"  # VOC: 2007 test, the paper's benchmark


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    device = torch.device(args.device) if args.device else _default_device()
    model = load_model(args.checkpoint, device)
    data = eval_dataset(args, args.split, model.cfg.image_size)
    metrics = evaluate(
        model, data, batch_size=args.batch_size, device=device, num_workers=args.workers,
        progress=not args.quiet,
    )  # fmt: skip
    summary = metrics.pop("summary")  # pycocotools' table, for a person: stdout stays JSON
    if not args.quiet:
        print(summary, file=sys.stderr)
    _print_json(metrics)
    return 0


def _default_device() -> torch.device:
    from .utils import default_device

    return default_device()


def cmd_detect(args: argparse.Namespace) -> int:
    from PIL import Image

    from .data.common import read_image, tensor_to_uint8

    device = torch.device(args.device) if args.device else _default_device()
    out_dir = Path(args.out)
    targets = detection_outputs([Path(p) for p in args.images], out_dir, args.overwrite)
    model = load_model(args.checkpoint, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    report, failed = [], []
    for path, target in targets.items():
        try:
            image = read_image(path, exif_upright=True)  # (3, H, W) in [0, 1], upright
        except (OSError, ValueError) as err:  # one bad file does not lose the others
            failed.append(path)
            report.append({"image": str(path), "error": " ".join(str(err).split())})
            continue
        det = model.detect([image], score_threshold=args.score_threshold)[0]
        pixels = torch.from_numpy(tensor_to_uint8(image)).permute(2, 0, 1)  # (3, H, W) uint8
        drawn = draw_detections(pixels, det, model.class_names).permute(1, 2, 0)  # (H, W, 3)
        picture = Image.fromarray(drawn.numpy())
        atomic_write(target, lambda f: picture.save(f, format="PNG"))  # noqa: B023 - called at once
        report.append(
            {
                "image": str(path),
                "output": str(target),
                "detections": [
                    {"label": model.class_names[int(c)], "score": round(float(s), 4),
                     "box": [round(float(v), 1) for v in b]}
                    for b, s, c in zip(det["boxes"], det["scores"], det["labels"], strict=True)
                ],
            }
        )  # fmt: skip
    _print_json(report)
    if failed:
        names = ", ".join(str(p) for p in failed)
        print(f"detect: {len(failed)} of {len(targets)} images could not be read: {names}",
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
    return 0


def detection_outputs(images: list[Path], out_dir: Path, overwrite: bool) -> dict[Path, Path]:
    """Each input image's drawn copy in ``out_dir``: ``NAME.png``, or ``NAME_EXT.png`` where two
    inputs share a name. Refuses to replace an input, a file twice, or (without ``overwrite``)
    an existing file."""
    stems = [p.stem for p in images]
    outputs: dict[Path, Path] = {}
    for path in images:
        if path.is_dir():
            raise ValueError(f"{path} is a folder; detect takes image files (e.g. {path}/*.jpg)")
        shared = stems.count(path.stem) > 1
        name = f"{path.stem}_{path.suffix.lstrip('.')}.png" if shared else f"{path.stem}.png"
        target = out_dir / name
        if target in outputs.values():
            raise ValueError(f"{path} is given twice")
        if target.exists() and target.resolve() in {p.resolve() for p in images if p.exists()}:
            raise ValueError(
                f"{target} is one of the input images: choose another --out than its folder"
            )
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
        outputs[path] = target
    return outputs


LINE_FRACTION = 1 / 150  # box outline width as a fraction of the image's shorter side
FONT_PER_LINE = 5  # label text height in outline widths (at least MIN_FONT_SIZE px)
MIN_FONT_SIZE = 10  # PIL's default font size: smaller labels are hard to read
LABEL_FONT = "DejaVuSans.ttf"  # matplotlib's bundled font (a dependency): a TrueType font
# scales with the image, PIL's built-in one would not


def _label_font() -> str:
    import matplotlib  # the package, for where its data lives; not pyplot

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / LABEL_FONT)


def draw_detections(
    image: torch.Tensor, detections: dict[str, torch.Tensor], class_names: Sequence[str]
) -> torch.Tensor:
    """``image`` with each detection outlined and labelled "name score", one colour per class
    (:data:`ssdlib.utils.TAB10`, the notebooks' colours): ``torchvision.utils.draw_bounding_boxes``.

    Args:
        image: ``(3, H, W)`` uint8.
        detections: ``boxes`` ``(N, 4)`` xyxy pixels of ``image``, ``scores`` ``(N,)``,
            ``labels`` ``(N,)`` indices into ``class_names``.
        class_names: the model's class names, index 0 the background.

    Returns:
        A drawn copy, ``(3, H, W)`` uint8 (``image`` itself where there is nothing to draw).
    """
    from torchvision.utils import draw_bounding_boxes

    if len(detections["boxes"]) == 0:  # torchvision would warn "No box was drawn"
        return image
    labels = detections["labels"].tolist()
    scores = detections["scores"].tolist()
    texts = [f"{class_names[c]} {s:.2f}" for c, s in zip(labels, scores, strict=True)]
    line = max(1, round(min(image.shape[-2:]) * LINE_FRACTION))
    return draw_bounding_boxes(
        image, detections["boxes"], texts, colors=[TAB10[c % len(TAB10)] for c in labels],
        width=line, font=_label_font(), font_size=max(MIN_FONT_SIZE, FONT_PER_LINE * line),
        fill_labels=True, label_colors="white",
    )  # fmt: skip


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(
            f"--out {out} is a folder; give the model file's path, e.g. {out}/model.pt"
        )
    if out.exists() and out.resolve() == Path(args.checkpoint).resolve():
        raise ValueError(f"--out {out} is the checkpoint being exported; choose another path")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    ckpt = read_training_checkpoint(args.checkpoint)
    model = SSD(ckpt["model"])
    model.load_state_dict(ckpt["state_dict"])
    extra = {
        "step": ckpt["state"]["step"],
        "preset": ckpt["config"]["name"],
        "best": ckpt["state"]["best"],
        "history": ckpt["state"]["history"],  # metrics.csv's rows: the run's curves travel along
    }
    path = save_model(model, args.out, extra=extra)  # fp32: the model file stays exact
    _print_json(
        {
            "output": path,
            "megabytes": round(path.stat().st_size / 2**20, 2),
            "model": repr(model),
            "step": ckpt["state"]["step"],
        }
    )
    return 0


# -- the parser ----------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _voc_years(text: str) -> list[str]:
    years = [y.strip() for y in text.split(",")]
    if not all(years) or not set(years) <= set(VOC_TRAIN_YEARS):
        raise argparse.ArgumentTypeError(
            f"expected years from {','.join(VOC_TRAIN_YEARS)}, comma-separated, got {text!r}"
        )
    return years


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**63 - 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--data-root", help="folder holding VOCdevkit (voc) or train2017/ (coco)")
    p.add_argument("--limit", type=_positive_int, help="use only the first N images (a quick run)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA if present)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ssdlib`` parser: one sub-command per ``cmd_*`` function."""
    parser = _Parser(prog="python -m ssdlib", description=__doc__.split("\n\n")[0])
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in (_add_train, _add_evaluate, _add_detect, _add_export):
        add_command(sub)
    return parser


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (ssdlib.train)")
    p.add_argument("--preset", choices=sorted(PRESETS), required=True)
    _add_data_options(p)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=_positive_int)
    budget.add_argument("--max-minutes", type=_positive_float)
    budget.add_argument("--max-steps", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int, help="global batch (split over GPUs)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--width", type=_positive_float, help="override the preset's channel width")
    p.add_argument("--lr", type=_positive_float, help="override the preset's learning rate")
    p.add_argument(
        "--augment", choices=AUGMENTATIONS, help="override the preset's data augmentation"
    )
    p.add_argument("--eval-every", type=int, help="steps between validations (0: at the end)")
    p.add_argument("--workers", dest="num_workers", type=int, help="DataLoader processes")
    p.add_argument("--no-val", action="store_true", help="skip validation (best.pt = last)")
    p.add_argument(
        "--voc-years", type=_voc_years, default=list(VOC_TRAIN_YEARS),
        help="VOC trainval years to train on, comma-separated (default 2007,2012)",
    )  # fmt: skip
    p.add_argument("--warmup-steps", type=int, help="override the preset's warmup")
    p.add_argument("--grad-clip", type=_positive_float, help="clip the gradient norm to this")
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), help="mixed precision")
    p.add_argument("--checkpoint-every", type=_positive_int, help="steps between last.pt writes")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue the run in --out")
    start.add_argument(
        "--overwrite", action="store_true", help="start again even if --out has a run"
    )
    p.add_argument("--out", required=True, help="run directory: last.pt, best.pt, metrics.csv")
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="print a checkpoint's mAP as JSON")
    p.add_argument("--checkpoint", required=True, help="last.pt / best.pt, or an exported model")
    _add_data_options(p)
    p.add_argument("--split", default="val", help="shapes: val|test; voc: test|val; coco: val")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=cmd_evaluate)


def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="draw a model's detections on images")
    p.add_argument("--checkpoint", required=True, help="last.pt / best.pt, or an exported model")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", default="detections", help="folder for the drawn images")
    p.add_argument("--score-threshold", type=float, default=DETECT_SCORE_THRESHOLD)
    p.add_argument("--device", help="cpu, cuda ... (default: CUDA if present)")
    p.add_argument("--overwrite", action="store_true", help="replace drawn images in --out")
    p.set_defaults(func=cmd_detect)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="training checkpoint -> small model file (save_model)")
    p.add_argument("--checkpoint", required=True, help="a training checkpoint (best.pt)")
    p.add_argument("--out", required=True, help="the model file to write, e.g. data/model.pt")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_export)


def _check_device(device: str | None) -> None:
    """--device cuda on a machine without CUDA: say so, before any file is blamed."""
    if device and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no CUDA device (use --device cpu)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    traceback = "--traceback" in argv  # anywhere on the line, before or after the command
    args = parser.parse_args([a for a in argv if a != "--traceback"])
    args.traceback = traceback
    try:
        _check_device(getattr(args, "device", None))
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError, RuntimeError) as err:
        if args.traceback:
            raise
        message = " ".join(str(err).split())  # one line, whatever the message's layout
        print(f"{parser.prog} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
