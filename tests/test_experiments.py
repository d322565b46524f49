"""The experiment cache re-runs exactly when the code or the config changes."""

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


def test_code_hash_sees_every_source_file(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    before = ex.code_hash(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    after_new_file = ex.code_hash(tmp_path)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert len({before, after_new_file, ex.code_hash(tmp_path)}) == 3


def test_bad_input_is_named(tmp_path):
    run, _ = counting_run()
    with pytest.raises(ValueError, match="JSON-serialisable"):
        ex.cached_experiment("demo", run, {"steps": object(), "lr": 1}, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="experiment name"):
        ex.cached_experiment("../escape", run, {"steps": 1, "lr": 1}, cache_dir=tmp_path)
    (tmp_path / "demo.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"demo\.json: the cached experiment is not valid JSON"):
        ex.cached_experiment("demo", run, {"steps": 1, "lr": 1}, cache_dir=tmp_path)
