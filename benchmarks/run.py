"""``python -m benchmarks.run``: time every row this machine can run, write the report.

    python -m benchmarks.run                      # everything (make bench)
    python -m benchmarks.run --quick              # 5 repeats: a first look in a minute
    python -m benchmarks.run --only postprocess   # rows whose name contains "postprocess"
    python -m benchmarks.run --list               # the rows, and why any would be skipped

Writes ``benchmarks/results/latest.md`` (a table to read) and ``latest.json`` (every sample).
A row's speed-up is the peer's median time over ours, both measured in the same run with their
repeats interleaved; above 1 means ssdlib is faster.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from pathlib import Path

import torch

from .rows import BATCH, ROWS, Row, Settings
from .timing import machine_info, time_interleaved

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPEATS = 21  # samples per side; odd, so the median is one of them
QUICK_REPEATS = 5


def _select(rows: list[Row], only: str | None) -> list[Row]:
    if not only:
        return rows
    words = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [r for r in rows if any(w in r.name for w in words)]
    if not chosen:
        names = ", ".join(r.name for r in rows)
        raise SystemExit(f"--only {only!r} matches no row; the rows are: {names}")
    return chosen


def _peak_memory(fn, device: str) -> int | None:
    """Bytes a call allocates on a CUDA device at its peak, beyond what was allocated before."""
    if torch.device(device).type != "cuda":
        return None  # the CPU allocator keeps no such statistics
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def run_row(
    row: Row, settings: Settings, repeats: int, warmup: int | None, device: str | None = None
) -> dict:
    """Build, check and time one row; a row that cannot run says why instead.

    ``device`` runs the row somewhere else than its own device (a check of the GPU rows' code
    on a machine without one; those numbers mean nothing).
    """
    device = device or row.device
    result: dict = {"name": row.name, "device": device, "what": row.what, "target": row.target}
    result["min_rate"] = row.min_rate
    result["peer_name"] = row.peer_name
    reason = row.unavailable(device)
    if reason:
        return result | {"status": "skipped", "reason": reason}
    try:
        torch.manual_seed(settings.seed)
        case = row.build(settings, device)
        if case.check is not None:
            case.check()  # never time two computations that disagree
        fns = {"ours": case.ours} | ({"peer": case.peer} if case.peer is not None else {})
        warmup = row.warmup if warmup is None else warmup
        times = time_interleaved(fns, device, repeats, warmup, latency=row.latency)
        memory = {side: _peak_memory(fn, device) for side, fn in fns.items()}
    except Exception as err:  # one broken row must not hide the others' numbers
        traceback.print_exc()
        return result | {"status": "error", "reason": f"{type(err).__name__}: {err}"}
    result |= {"status": "ok", "items": case.items, "throughput": row.throughput}
    result |= {side: m.to_json() | {"peak_bytes": memory[side]} for side, m in times.items()}
    if "peer" in times:
        result["speedup"] = times["peer"].median / times["ours"].median
    return result


def _fmt_time(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"


def _fmt_side(r: dict, side: str) -> str:
    if side not in r:
        return "—"
    median, spread = r[side]["median_s"], r[side]["spread"]
    if r["throughput"]:
        text = f"{r['items'] / median:.1f} img/s"
    else:
        text = _fmt_time(median)
    text += f" ±{spread * 50:.0f}%" if not math.isnan(spread) else ""
    peak = r[side].get("peak_bytes")
    return text + (f", {peak / 2**20:.0f} MiB" if peak is not None else "")


def markdown(results: list[dict], machine: dict, repeats: int, settings: Settings) -> str:
    gpu = machine["gpu"] or "none"
    moved = {r["device"] for r in results if r["name"].startswith("gpu") and r["device"] != "cuda"}
    lines = [
        "# ssdlib benchmarks",
        "",
        f"- date: {machine['date']}, commit {machine['commit']}",
        f"- CPU: {machine['cpu']}, {machine['cpu_cores']} cores, "
        f"torch threads {machine['torch_threads']}, load average at start "
        f"{machine['load_average']}",
        f"- GPU: {gpu}" + (f" (CUDA {machine['cuda']})" if machine["gpu"] else ""),
        f"- torch {machine['torch']}, torchvision {machine['torchvision']}, "
        f"pycocotools {machine['pycocotools']}, Python {machine['python']}",
        f"- median of {repeats} interleaved samples per side (± half the interquartile range; "
        "on CUDA also the peak memory a call allocates); speed-up = peer / ours, measured in "
        "the same run",
        f"- settings: {vars(settings)} (the row texts describe the defaults)",
        *(
            [f"- GPU rows ran on {', '.join(moved)}: a check of their code, not a benchmark"]
            if moved
            else []
        ),
        "",
        "| row | what ssdlib does | ssdlib | peer | peer | speed-up | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        target = f"≥ {r['target']:g}×" if r.get("target") else ""
        if r["status"] != "ok":
            lines.append(
                f"| {r['name']} | {r['what']} | {r['status']}: {r['reason']} | | "
                f"{r['peer_name'] or '—'} | | {target} |"
            )
            continue
        speedup = f"{r['speedup']:.2f}×" if "speedup" in r else ""
        if target and "speedup" in r:
            target += " ✓" if r["speedup"] >= r["target"] else " ✗"
        if r.get("min_rate"):
            rate = r["items"] / r["ours"]["median_s"]
            target = f"≥ {r['min_rate']:g} img/s " + ("✓" if rate >= r["min_rate"] else "✗")
        lines.append(
            f"| {r['name']} | {r['what']} | {_fmt_side(r, 'ours')} | {_fmt_side(r, 'peer')} | "
            f"{r['peer_name'] or '—'} | {speedup} | {target} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--only", help="comma-separated parts of row names to run")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} repeats per side")
    parser.add_argument("--repeats", type=int, help=f"samples per side (default {REPEATS})")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for latest.*")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--gpu-rows-on",
        metavar="DEVICE",
        help="run the GPU rows on DEVICE (e.g. cpu, with --batch 2: checks their code runs; "
        "the numbers mean nothing)",
    )
    parser.add_argument("--batch", type=int, help=f"images per batch (default {BATCH})")
    args = parser.parse_args(argv)

    rows = _select(ROWS, args.only)
    gpu_device = args.gpu_rows_on

    def device_of(row: Row) -> str:
        return gpu_device if gpu_device and row.device == "cuda" else row.device

    if args.list:
        for row in rows:
            print(f"{row.name:32s} {row.unavailable(device_of(row)) or 'runs here'}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
    warmup = 1 if args.quick else None  # None: each row's own
    machine = machine_info() | {"load_average": [round(x, 2) for x in os.getloadavg()]}
    settings = Settings(batch=args.batch or BATCH)
    results = []
    for row in rows:
        print(f"{row.name} ...", end=" ", flush=True, file=sys.stderr)
        results.append(run_row(row, settings, repeats, warmup, device_of(row)))
        r = results[-1]
        summary = f"{_fmt_side(r, 'ours')} vs {_fmt_side(r, 'peer')}" if r["status"] == "ok" else ""
        print(r["status"], summary, r.get("reason", ""), file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    report = markdown(results, machine, repeats, settings)
    (args.out / "latest.md").write_text(report)
    payload = {"machine": machine, "repeats": repeats, "settings": vars(settings)}
    (args.out / "latest.json").write_text(json.dumps(payload | {"rows": results}, indent=1) + "\n")
    print(report)
    return 1 if any(r["status"] == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
