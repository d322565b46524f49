"""The prepared GPU check (``make gpu-check``): its CPU dry run is the same code, small, and a
package the GPU machine lacks is installed from the wheels folder, never from the network."""

from __future__ import annotations

import json
import sys
import zipfile

import pytest

from benchmarks import gpu_check


@pytest.mark.slow
def test_the_dry_run_trains_scores_benchmarks_and_writes_its_report(tmp_path):
    assert gpu_check.main(["--out", str(tmp_path), "--dry-run"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    training = report["training"]
    assert training["preset"] == "ssd300-gpu" and training["default_boxes"] == 8732
    assert training["steps"] == gpu_check.DRY_RUN["max_steps"]
    assert 0 <= training["map_50"] <= 1 and training["val_images"] == gpu_check.DRY_RUN_VAL_IMAGES
    assert [p["step"] for p in training["curve"]] == [2, 3]  # eval_every 2, and the end
    assert report["bench"]["status"] == 0
    assert {r["name"] for r in report["bench"]["rows"]} >= {"gpu-targets-loss"}
    summary = (tmp_path / "gpu_check.md").read_text()
    assert "dry run on the CPU" in summary and "mAP@0.5 on 8 val images" in summary


def _wheel(folder, name: str) -> None:
    """A minimal pure-Python wheel that provides module ``name``."""
    dist = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{name}/__init__.py", "ANSWER = 42\n")
        whl.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        wheel = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        whl.writestr(f"{dist}/WHEEL", wheel)
        whl.writestr(f"{dist}/RECORD", "")


def test_a_missing_package_comes_from_the_wheels_folder(tmp_path, monkeypatch):
    name = "ssdlib_gpu_check_probe"
    _wheel(tmp_path, name)
    monkeypatch.setattr(gpu_check, "NEEDED", {name: name, "torch": "torch"})
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert gpu_check.install_missing(tmp_path) == [name]  # torch is there: left alone
    module = __import__(name)
    assert module.ANSWER == 42 and sys.path[-1] != str(tmp_path)
    sys.modules.pop(name)


def test_no_wheels_folder_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "NEEDED", {"ssdlib_not_installed_anywhere": "nothing"})
    with pytest.raises(SystemExit, match="make gpu-wheels"):
        gpu_check.install_missing(tmp_path / "absent")
