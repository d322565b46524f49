"""``python -m benchmarks.gpu_check``: the one prepared check of the GPU recipe (make gpu-check).

    python3 -m benchmarks.gpu_check --out gpu-out --wheels gpu-wheels   # on a CUDA machine
    python -m benchmarks.gpu_check --out /tmp/dry --dry-run              # the same code, CPU

On a CUDA machine it trains the ``ssd300-gpu`` preset (the full-width SSD300, 8732 default
boxes, five minutes) on the shapes, scores the 500 val images, runs the GPU rows of
``make bench``, and writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out``: all within
nine minutes of wall time. It runs on whatever Python, torch and torchvision the machine has
(no virtualenv, no network, none of this project's pins): a package it lacks (pycocotools,
tqdm, matplotlib ...) is installed from the wheels in ``--wheels`` into a temporary folder
that goes at the end of ``sys.path``, so the machine's own packages keep precedence. Prepare
that folder on a machine with the package index: ``make gpu-wheels``.

``--dry-run`` runs the same steps on the CPU, small: a slim network for a few steps, 8 val
images, one benchmark row. CI runs it (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# import name -> the distribution that provides it: what ssdlib needs beyond torch/torchvision
NEEDED = {
    "numpy": "numpy",
    "PIL": "pillow",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "pycocotools": "pycocotools",
}
TARGET_MAP50 = 0.9  # the GPU recipe's goal on the 500 shapes val images (README, "GPU")
TRAIN_MINUTES = 5.0  # the ssd300-gpu preset's budget
WALL_LIMIT_MINUTES = 9.0  # what the whole check may take: one 10-minute command on a lent GPU
SPARE_CORES = 2  # loader processes = cores less the main process and one to spare
DRY_RUN = {  # the CPU rehearsal: same preset and code, sized to seconds
    "width": 0.0625,
    "batch_size": 4,
    "max_steps": 3,
    "max_minutes": None,
    "num_workers": 1,
    "amp": "bf16",  # autocast runs on the CPU too
    "eval_every": 2,
    "eval_images": 4,
}
DRY_RUN_VAL_IMAGES = 8
DRY_RUN_BENCH = ("--only", "gpu-targets-loss", "--gpu-rows-on", "cpu", "--batch", "2")


def install_missing(wheels: Path | None) -> list[str]:
    """Install the distributions of :data:`NEEDED` that this Python lacks, from ``wheels``
    only, into a temporary folder appended to ``sys.path``. Returns what was installed."""
    missing = [dist for module, dist in NEEDED.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return []
    if wheels is None or not wheels.is_dir():
        raise SystemExit(
            f"this Python lacks {', '.join(missing)} and --wheels {wheels} is not a folder: "
            "prepare one with `make gpu-wheels` where the package index is reachable"
        )
    site = Path(tempfile.mkdtemp(prefix="ssdlib-gpu-check-site-"))
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
        "--find-links", str(wheels), "--target", str(site), *missing,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"installing {', '.join(missing)} from {wheels} failed:\n{done.stderr.strip()}"
        )
    sys.path.append(str(site))  # after the machine's own packages
    importlib.invalidate_caches()
    return missing


def _versions() -> dict[str, str]:
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_cores": os.cpu_count(),
    }


def train_and_score(dry_run: bool, device: str) -> dict:
    """Train the ``ssd300-gpu`` preset on the shapes, then score the val images."""
    import torch

    from ssdlib.cli import SHAPES_DATA_SEED, SHAPES_TRAIN_IMAGES, SHAPES_VAL_IMAGES
    from ssdlib.data import ShapesDataset, augmentation
    from ssdlib.evaluate import evaluate
    from ssdlib.train import preset, train

    workers = max(1, (os.cpu_count() or 1) - SPARE_CORES)
    config = preset("ssd300-gpu", num_workers=min(workers, preset("ssd300-gpu").num_workers))
    if dry_run:
        config = preset("ssd300-gpu", **DRY_RUN)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size: cuDNN times its kernels once
    size = config.priors.image_size
    train_set = ShapesDataset(
        SHAPES_TRAIN_IMAGES, size, SHAPES_DATA_SEED, "train",
        transforms=augmentation(config.augment, size),
    )  # fmt: skip
    val_images = DRY_RUN_VAL_IMAGES if dry_run else SHAPES_VAL_IMAGES
    val_set = ShapesDataset(val_images, size, SHAPES_DATA_SEED, "val")
    start = time.perf_counter()
    result = train(config, train_set, val_set, device=device, progress=False)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate(result.model, val_set, batch_size=64, device=device, progress=False)
    eval_s = time.perf_counter() - start
    curve = [
        {"step": r["step"], "minutes": round(r["elapsed_s"] / 60, 2), "map_50": r["val_map_50"]}
        for r in result.history
        if "val_map_50" in r
    ]
    last = result.history[-1]
    return {
        "preset": config.name,
        "config": {k: v for k, v in config.to_dict().items() if k != "priors"},
        "default_boxes": config.priors.num_priors,
        "steps": result.step,
        "stopped_by": result.stopped_by,
        "train_minutes": round(train_s / 60, 2),
        "images_per_s_at_end": round(last["images_per_s"], 1),
        "eval_seconds": round(eval_s, 1),
        "val_images": len(val_set),
        "map_50": metrics["map_50"],
        "map": metrics["map"],
        "curve": curve,
        "target_map_50": TARGET_MAP50,
        "target_reached": metrics["map_50"] >= TARGET_MAP50 and train_s <= 60 * TRAIN_MINUTES + 30,
    }


def run_bench(out: Path, dry_run: bool) -> dict:
    """The GPU rows of ``make bench`` (``benchmarks.run --only gpu``), into ``out/bench``."""
    from benchmarks import run as bench

    args = ["--only", "gpu", "--out", str(out / "bench")]
    if dry_run:
        args = [*DRY_RUN_BENCH, "--repeats", "1", "--out", str(out / "bench")]
    status = bench.main(args)
    rows = json.loads((out / "bench" / "latest.json").read_text())["rows"]
    return {"status": status, "rows": rows}


def summary(report: dict) -> str:
    """The short markdown the README's GPU section takes its numbers from."""
    t = report["training"]
    v = report["versions"]
    dry = " (dry run on the CPU: the numbers mean nothing)" if report["dry_run"] else ""
    lines = [
        "# GPU check" + dry,
        "",
        f"- machine: {v['gpu'] or 'no GPU'}, {v['cpu_cores']} cores; Python {v['python']}, "
        f"torch {v['torch']}, torchvision {v['torchvision']}; installed from wheels: "
        f"{', '.join(report['installed']) or 'nothing'}",
        f"- {t['preset']}: {t['default_boxes']} default boxes, {t['steps']} steps in "
        f"{t['train_minutes']} min (stopped by {t['stopped_by']}), "
        f"{t['images_per_s_at_end']} images/s at the end",
        f"- mAP@0.5 on {t['val_images']} val images: **{t['map_50']:.3f}** (COCO mAP "
        f"{t['map']:.3f}); target ≥ {t['target_map_50']} in {TRAIN_MINUTES:g} min: "
        + ("reached" if t["target_reached"] else "NOT reached"),
        f"- wall time of the whole check: {report['wall_minutes']} min "
        f"(limit {WALL_LIMIT_MINUTES:g})",
        "",
        "| minutes | steps | mAP@0.5 (val subset) |",
        "|---|---|---|",
        *[f"| {p['minutes']} | {p['step']} | {p['map_50']:.3f} |" for p in t["curve"]],
        "",
        "| bench row | status | ours | peer | speed-up |",
        "|---|---|---|---|---|",
    ]
    for r in report["bench"]["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['status']}: {r.get('reason', '')} | | | |")
            continue
        ours = r["ours"]["median_s"] * 1e3
        peer = f"{r['peer']['median_s'] * 1e3:.2f} ms" if "peer" in r else "—"
        speedup = f"{r['speedup']:.2f}×" if "speedup" in r else ""
        lines.append(f"| {r['name']} | ok | {ours:.2f} ms | {peer} | {speedup} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and summary")
    parser.add_argument("--wheels", type=Path, help="folder of wheels for missing packages")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, small")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    installed = install_missing(args.wheels)

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: `--dry-run` rehearses the check on the CPU")
    device = "cpu" if args.dry_run else "cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"dry_run": args.dry_run, "installed": installed, "versions": _versions()}
    report["training"] = train_and_score(args.dry_run, device)
    report["bench"] = run_bench(args.out, args.dry_run)
    report["wall_minutes"] = round((time.perf_counter() - start) / 60, 2)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = summary(report)
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    failed = report["bench"]["status"] != 0 or not math.isfinite(report["training"]["map_50"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
