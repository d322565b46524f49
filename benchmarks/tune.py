"""``python -m benchmarks.tune NAME --steps N [--preset P] [--width W] [--lr LR] [--augment A]``:
one run of the README's tuning tables (the ``cpu-tiny`` and ``ssd300-cpu`` presets).

Trains the preset with the given changes for a fixed number of steps (the cosine schedule spans
them) and prints mAP@0.5 on 300 val images at each quarter of the run. cpu-tiny's scenes are
drawn at 160 px and augmented down to its 128 px; ssd300-cpu's are drawn at its 300 px, as
its shipped run. Two runs side by side on a 2-core machine: ``--threads 1`` each.

    python -m benchmarks.tune F --steps 600 --width 0.25 --lr 4e-3 --augment light
    python -m benchmarks.tune G --steps 1800 --width 0.125 --lr 4e-3 --augment light
    python -m benchmarks.tune S2 --preset ssd300-cpu --steps 600 --augment ssd --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ssdlib.data import AUGMENTATIONS, ShapesDataset, augmentation
from ssdlib.train import preset, train

RENDER_SIZE = {"cpu-tiny": 160}  # cpu-tiny's scenes are drawn larger than its input, then
# resized; other presets draw at their input size
TRAIN_IMAGES = 100_000  # more than any run sees: every step draws new scenes
VAL_IMAGES = 300


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the run's label; its files go to --out/NAME")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--preset", default="cpu-tiny", choices=("cpu-tiny", "ssd300-cpu"))
    parser.add_argument("--width", type=float)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--augment", choices=AUGMENTATIONS)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("runs") / "tune")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    changes = {k: getattr(args, k) for k in ("width", "lr", "batch_size", "augment")}
    config = preset(
        args.preset,
        max_minutes=None,
        max_steps=args.steps,
        eval_every=max(args.steps // 4, 1),
        eval_images=VAL_IMAGES,
        **{k: v for k, v in changes.items() if v is not None},
    )
    size = config.priors.image_size
    render = RENDER_SIZE.get(args.preset, size)
    train_set = ShapesDataset(
        TRAIN_IMAGES, render, 0, "train", transforms=augmentation(config.augment, size)
    )
    val_set = ShapesDataset(VAL_IMAGES, 300, 0, "val")
    start = time.perf_counter()
    result = train(
        config, train_set, val_set, out_dir=args.out / args.name, overwrite=True, progress=False
    )
    print(f"{args.name}: {result.step} steps in {(time.perf_counter() - start) / 60:.1f} min")
    for row in result.history:
        if "val_map_50" in row:
            print(f"  step {row['step']:5d}: mAP@0.5 {row['val_map_50']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
