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

from .rows import ROWS, Row, Settings
from .timing import machine_info, time_interleaved

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPEATS = 21  # samples per side; odd, so the median is one of them
QUICK_REPEATS = 5
WARMUP = 2


def _select(rows: list[Row], only: str | None) -> list[Row]:
    if not only:
        return rows
    words = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [r for r in rows if any(w in r.name for w in words)]
    if not chosen:
        names = ", ".join(r.name for r in rows)
        raise SystemExit(f"--only {only!r} matches no row; the rows are: {names}")
    return chosen


def run_row(row: Row, settings: Settings, repeats: int, warmup: int) -> dict:
    """Build, check and time one row; a row that cannot run says why instead."""
    result: dict = {"name": row.name, "device": row.device, "what": row.what, "target": row.target}
    result["peer_name"] = row.peer_name
    reason = row.unavailable()
    if reason:
        return result | {"status": "skipped", "reason": reason}
    try:
        torch.manual_seed(settings.seed)
        case = row.build(settings)
        if case.check is not None:
            case.check()  # never time two computations that disagree
        fns = {"ours": case.ours} | ({"peer": case.peer} if case.peer is not None else {})
        times = time_interleaved(fns, row.device, repeats=repeats, warmup=warmup)
    except Exception as err:  # one broken row must not hide the others' numbers
        traceback.print_exc()
        return result | {"status": "error", "reason": f"{type(err).__name__}: {err}"}
    result |= {"status": "ok", "items": case.items, "throughput": row.throughput}
    result |= {side: m.to_json() for side, m in times.items()}
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
    return text + (f" ±{spread * 50:.0f}%" if not math.isnan(spread) else "")


def markdown(results: list[dict], machine: dict, repeats: int) -> str:
    gpu = machine["gpu"] or "none"
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
        f"- median of {repeats} interleaved samples per side (± half the interquartile range); "
        "speed-up = peer / ours, measured in the same run",
        "",
        "| row | what ssdlib does | ssdlib | peer | peer | speed-up | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        target = f"≥ {r['target']:g}×" if r.get("target") else ""
        if r["status"] != "ok":
            lines.append(
                f"| {r['name']} | {r['what']} | {r['status']}: {r['reason']} | | "
                f"{r['peer_name']} | | {target} |"
            )
            continue
        speedup = f"{r['speedup']:.2f}×" if "speedup" in r else ""
        if target and "speedup" in r:
            target += " ✓" if r["speedup"] >= r["target"] else " ✗"
        lines.append(
            f"| {r['name']} | {r['what']} | {_fmt_side(r, 'ours')} | {_fmt_side(r, 'peer')} | "
            f"{r['peer_name']} | {speedup} | {target} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--only", help="comma-separated parts of row names to run")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} repeats per side")
    parser.add_argument("--repeats", type=int, help=f"samples per side (default {REPEATS})")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for latest.*")
    args = parser.parse_args(argv)

    rows = _select(ROWS, args.only)
    if args.list:
        for row in rows:
            print(f"{row.name:32s} {row.unavailable() or 'runs here'}")
        return 0
    repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
    machine = machine_info() | {"load_average": [round(x, 2) for x in os.getloadavg()]}
    settings = Settings()
    results = []
    for row in rows:
        print(f"{row.name} ...", end=" ", flush=True, file=sys.stderr)
        results.append(run_row(row, settings, repeats, WARMUP))
        r = results[-1]
        summary = f"{_fmt_side(r, 'ours')} vs {_fmt_side(r, 'peer')}" if r["status"] == "ok" else ""
        print(r["status"], summary, r.get("reason", ""), file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    report = markdown(results, machine, repeats)
    (args.out / "latest.md").write_text(report)
    payload = {"machine": machine, "repeats": repeats, "settings": vars(settings)}
    (args.out / "latest.json").write_text(json.dumps(payload | {"rows": results}, indent=1) + "\n")
    print(report)
    return 1 if any(r["status"] == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
