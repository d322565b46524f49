"""The benchmark rows stay runnable and keep comparing equal computations.

No timing here (speed lives in ``make bench``): each CPU row is built on a small batch, its own
check that ssdlib and the peer agree is run, and ssdlib's side is called once.
"""

import pytest
import torch

from benchmarks.rows import ROWS, Settings
from benchmarks.run import run_row

SMALL = Settings(batch=4)
CPU_ROWS = [row for row in ROWS if row.device == "cpu"]


@pytest.mark.parametrize("row", CPU_ROWS, ids=lambda row: row.name)
def test_cpu_row_builds_and_agrees_with_its_peer(row):
    reason = row.unavailable()
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    case = row.build(SMALL, "cpu")
    if case.check is not None:
        case.check()
    case.ours()
    assert case.items >= 1


def test_run_row_reports_a_speed_up_for_a_row_with_a_peer():
    row = next(r for r in ROWS if r.name == "cpu-background-loss")
    result = run_row(row, SMALL, repeats=3, warmup=1)
    assert result["status"] == "ok", result
    assert result["speedup"] > 0 and result["ours"]["median_s"] > 0


def test_a_check_that_fails_is_reported_not_timed(monkeypatch):
    row = next(r for r in ROWS if r.name == "cpu-background-loss")
    import benchmarks.rows as rows

    monkeypatch.setattr(rows.fast, "background_loss", lambda conf: torch.zeros(conf.shape[:2]))
    result = run_row(row, SMALL, repeats=3, warmup=1)
    assert result["status"] == "error" and "speedup" not in result


def test_a_row_with_a_rate_target_says_whether_it_is_met():
    from benchmarks.run import markdown
    from benchmarks.timing import machine_info

    row = {
        "name": "cpu-loader-x", "what": "w", "target": None, "min_rate": 150, "peer_name": "",
        "status": "ok", "items": 32, "throughput": True,
        "ours": {"median_s": 0.4, "spread": 0.0, "peak_bytes": None},
    }  # fmt: skip
    machine = machine_info() | {"load_average": [0, 0, 0]}
    slow = markdown([row], machine, 3, SMALL)
    assert "80.0 img/s" in slow and "≥ 150 img/s ✗" in slow
    fast = markdown([row | {"ours": row["ours"] | {"median_s": 0.2}}], machine, 3, SMALL)
    assert "≥ 150 img/s ✓" in fast
