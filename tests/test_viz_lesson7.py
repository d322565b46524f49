"""Lesson 7's figure additions: the seeds' range drawn as a band under the recall-by-size lines."""

from __future__ import annotations

import numpy as np

from ssdlib.viz import experiments as vx
from tests.figure_checks import legend_texts


def _result(recall):
    return {
        "recall_by_size": {
            "bin_edges": [0.0, 0.1, 0.3, 1.0],
            "num_objects": [10, 20, 30],
            "recall": recall,
        }
    }


def _run_lines(ax):
    """The labels of the runs' lines (the bin edges are unlabelled vertical lines)."""
    return [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]


def test_recall_band_spans_the_seeds_lowest_to_highest():
    seeds = {
        "seed 0": _result([0.5, 0.8, 0.9]),
        "seed 1": _result([0.3, 0.9, None]),  # an empty bin is left out of the range
        "seed 2": _result([0.4, 0.7, 0.95]),
    }
    ax = vx.plot_recall_by_size_runs({"variant": _result([0.1, 0.6, 1.0])}, band=seeds)
    (band,) = ax.collections  # fill_between's polygon
    ys = band.get_paths()[0].vertices[:, 1]
    assert np.isclose(ys.min(), 0.3) and np.isclose(ys.max(), 0.95)
    assert _run_lines(ax) == ["variant"]  # the seeds are the band, not lines
    assert legend_texts(ax) == ["baseline, range of the seeds", "variant"]
    counts = [t.get_text() for t in ax.texts]
    assert counts == ["10", "20", "30"]  # the objects per bin, at the foot


def test_without_a_band_nothing_changes():
    ax = vx.plot_recall_by_size_runs({"a": _result([0.5, 0.8, 0.9]), "b": _result([0.4, 0.7, 1])})
    assert _run_lines(ax) == ["a", "b"] and not ax.collections
