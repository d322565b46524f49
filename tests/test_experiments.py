"""The experiment cache re-runs exactly when the code or the config changes."""

import json

import pytest

import ssdlib.experiments as ex


def counting_run():
    calls = []

    def run(steps, lr):
        calls.append((steps, lr))
        return {"map": steps * lr}

    return run, calls


def test_second_call_reads_the_cache(tmp_path):
    run, calls = counting_run()
    first = ex.cached_experiment("demo", run, {"steps": 3, "lr": 0.5}, cache_dir=tmp_path)
    second = ex.cached_experiment("demo", run, {"steps": 3, "lr": 0.5}, cache_dir=tmp_path)
    assert calls == [(3, 0.5)]
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["result"] == {"map": 1.5}


def test_fresh_and_cached_records_keep_the_runs_key_order(tmp_path):
    """A result's dicts come back in the order the run made them (e.g. AP per class in class
    order), whether the run just happened or was read from disk."""

    def run(classes):
        return {"ap50_per_class": {name: 0.5 for name in classes}, "tuple": (1, 2)}

    config = {"classes": ["square", "circle", "bar"]}
    fresh = ex.cached_experiment("order", run, config, cache_dir=tmp_path)
    cached = ex.cached_experiment("order", run, config, cache_dir=tmp_path)
    assert not fresh["cached"] and cached["cached"]
    for record in (fresh, cached):
        assert list(record["result"]["ap50_per_class"]) == ["square", "circle", "bar"]
        assert record["result"]["tuple"] == [1, 2]  # JSON's list, fresh or not
    assert {**fresh, "cached": True} == cached


def test_a_changed_config_runs_again(tmp_path):
    run, calls = counting_run()
    ex.cached_experiment("demo", run, {"steps": 3, "lr": 0.5}, cache_dir=tmp_path)
    again = ex.cached_experiment("demo", run, {"steps": 4, "lr": 0.5}, cache_dir=tmp_path)
    assert calls == [(3, 0.5), (4, 0.5)] and not again["cached"]


def test_changed_code_runs_again(tmp_path, monkeypatch):
    run, calls = counting_run()
    ex.cached_experiment("demo", run, {"steps": 1, "lr": 1.0}, cache_dir=tmp_path)
    monkeypatch.setattr(ex, "code_hash", lambda: "a different library")
    ex.cached_experiment("demo", run, {"steps": 1, "lr": 1.0}, cache_dir=tmp_path)
    assert len(calls) == 2


def test_a_record_is_written_whole_with_the_usual_file_mode(tmp_path):
    """The cache file is written atomically (no temp left), indented JSON in the record's key
    order, and readable by others as any file is (the umask's mode, not a temporary file's
    0600)."""
    import os

    run, _ = counting_run()
    old = os.umask(0o022)
    try:
        record = ex.cached_experiment("demo", run, {"steps": 3, "lr": 0.5}, cache_dir=tmp_path)
    finally:
        os.umask(old)
    stored = {k: v for k, v in record.items() if k != "cached"}
    path = tmp_path / "demo.json"
    assert path.read_text() == json.dumps(stored, indent=1) + "\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]


def test_code_hash_sees_every_source_file(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    before = ex.code_hash(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    after_new_file = ex.code_hash(tmp_path)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert len({before, after_new_file, ex.code_hash(tmp_path)}) == 3


def test_code_hash_ignores_the_figures_and_the_command_line(tmp_path):
    (tmp_path / "train.py").write_text("x = 1\n")
    before = ex.code_hash(tmp_path)
    (tmp_path / "viz").mkdir()
    (tmp_path / "viz" / "loss.py").write_text("def plot(): ...\n")  # the whole viz/ package
    (tmp_path / "cli.py").write_text("def main(): ...\n")
    assert ex.code_hash(tmp_path) == before
    (tmp_path / "sub" / "viz").mkdir(parents=True)
    (tmp_path / "sub" / "viz" / "loss.py").write_text("z = 3\n")  # only the package's own viz/
    assert ex.code_hash(tmp_path) != before


def test_short_run_builds_the_lessons_config_and_shares_one_record(tmp_path, monkeypatch):
    calls = []

    def fake_train_and_evaluate(**config):
        calls.append(config)
        return {"map_50": 0.5}

    monkeypatch.setattr(ex, "train_and_evaluate", fake_train_and_evaluate)
    record = ex.short_run("baseline", cache_dir=tmp_path)
    assert record["result"] == {"map_50": 0.5} and not record["cached"]
    assert calls[0] == {
        "preset": "cpu-tiny",
        "overrides": {"max_steps": 600, "warmup_steps": 60},
        "train_images": ex.TRAIN_IMAGES,
        "val_images": ex.VAL_IMAGES,
        "seed": 0,
    }
    assert ex.short_run("baseline", cache_dir=tmp_path)["cached"]  # another lesson, same run
    assert len(calls) == 1 and (tmp_path / "baseline.json").exists()

    ex.short_run(
        "variant", {"neg_pos_ratio": 1.0}, steps=300, seed=2, cache_dir=tmp_path, seen_images=5
    )
    assert calls[1]["overrides"] == {"max_steps": 300, "warmup_steps": 30, "neg_pos_ratio": 1.0}
    assert calls[1]["seed"] == 2 and calls[1]["seen_images"] == 5
    assert (tmp_path / "variant_300steps.json").exists()  # another budget, another record


def test_every_stored_experiment_was_made_by_this_code():
    """The lessons' stored results must match the library as committed: a stale one would make
    nbval retrain for minutes and compare against outputs of the old code."""
    stale = []
    for path in sorted(ex.DEFAULT_CACHE_DIR.glob("*.json")):
        record = json.loads(path.read_text())
        if record["key"] != ex.experiment_key(record["name"], record["config"]):
            stale.append(path.name)
    assert not stale, f"stale cached experiments {stale}: run `make notebooks` and commit them"


def test_bad_input_is_named(tmp_path):
    run, _ = counting_run()
    with pytest.raises(ValueError, match="JSON-serialisable"):
        ex.cached_experiment("demo", run, {"steps": object(), "lr": 1}, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="experiment name"):
        ex.cached_experiment("../escape", run, {"steps": 1, "lr": 1}, cache_dir=tmp_path)
    (tmp_path / "demo.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"demo\.json: the cached experiment is not valid JSON"):
        ex.cached_experiment("demo", run, {"steps": 1, "lr": 1}, cache_dir=tmp_path)
