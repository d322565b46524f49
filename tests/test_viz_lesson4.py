"""Lesson 4's figures: the hard negatives on a muted image (the hardest few, coloured by loss,
with a colour bar), and how a weighting of the negatives spreads the confidence loss."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle

from ssdlib import viz
from tests.figure_checks import legend_texts

IMAGE = torch.rand(3, 16, 16)


def _one_image(num_negatives: int = 30):
    """One positive (box 0) and ``num_negatives`` negatives, each at its own place, with
    losses falling from the first negative to the last; all of them mined."""
    n = num_negatives + 1
    cx = torch.linspace(0.1, 0.9, n)
    priors = torch.stack([cx, cx, torch.full((n,), 0.05), torch.full((n,), 0.05)], dim=1)
    labels = torch.zeros(n, dtype=torch.long)
    labels[0] = 1
    bg = torch.cat([torch.tensor([9.0]), torch.linspace(5.0, 0.5, num_negatives)])
    chosen = torch.ones(n, dtype=torch.bool)
    return priors, labels, chosen, bg


def _negative_patches(ax) -> list[Rectangle]:
    positive = to_rgba(viz.POSITIVE_COLOR)[:3]
    return [
        p
        for p in ax.patches
        if isinstance(p, Rectangle) and tuple(p.get_edgecolor()[:3]) != positive
    ]


def test_only_the_hardest_are_drawn_with_a_colour_bar():
    priors, labels, chosen, bg = _one_image(30)
    ax = viz.plot_hard_negatives(IMAGE, priors, labels, chosen, bg, top=20)
    negatives = _negative_patches(ax)
    assert len(negatives) == 20
    # The hardest are boxes 1..20 (losses fall with the index): their x1 is the smallest.
    drawn_x = sorted(round(p.get_x(), 4) for p in negatives)
    hardest_x = sorted(round(float(priors[i, 0] - 0.025), 4) for i in range(1, 21))
    assert drawn_x == pytest.approx(hardest_x, abs=1e-4)
    assert all(p.get_alpha() == viz.NEGATIVE_ALPHA for p in negatives)  # translucent
    assert "mined negatives: 30 (20 hardest drawn)" in legend_texts(ax)
    assert len(ax.figure.axes) == 2  # the image and its colour bar
    bar = ax.figure.axes[1]
    assert "log p" in bar.get_ylabel()
    lo, hi = bar.get_ylim()
    assert (lo, hi) == pytest.approx((float(bg[20]), float(bg[1])), rel=1e-3)  # the drawn range


def test_the_hardest_is_red_and_drawn_on_top():
    priors, labels, chosen, bg = _one_image(5)
    ax = viz.plot_hard_negatives(IMAGE, priors, labels, chosen, bg, colorbar=False)
    negatives = _negative_patches(ax)
    hardest = negatives[-1]  # drawn last
    assert hardest.get_x() == pytest.approx(float(priors[1, 0] - 0.025))
    red = plt.get_cmap(viz.NEGATIVE_CMAP)(1.0)
    assert hardest.get_edgecolor()[:3] == pytest.approx(red[:3])
    assert len(ax.figure.axes) == 1  # no colour bar asked for


def test_all_are_drawn_on_request_and_the_image_is_muted():
    priors, labels, chosen, bg = _one_image(30)
    ax = viz.plot_hard_negatives(IMAGE, priors, labels, chosen, bg, top=None)
    assert len(_negative_patches(ax)) == 30
    assert all("hardest drawn" not in t for t in legend_texts(ax))
    shown = ax.images[0].get_array()
    assert np.allclose(shown[..., 0], shown[..., 1]) and np.allclose(shown[..., 1], shown[..., 2])
    assert shown.std() < viz.image_to_numpy(IMAGE).std()  # grey and flatter than the image
    with pytest.raises(ValueError, match="top must be >= 0"):
        viz.plot_hard_negatives(IMAGE, priors, labels, chosen, bg, top=-1)


def test_plot_negative_weighting_draws_one_curve_per_weighting():
    bg = torch.tensor([4.0, 3.0, 2.0, 1.0])
    labels = torch.zeros(4, dtype=torch.long)
    weights = {"all": torch.ones(4), "mined": torch.tensor([1.0, 1.0, 0.0, 0.0])}
    ax = viz.plot_negative_weighting(bg, labels, weights, title="t")
    assert [line.get_label() for line in ax.get_lines()[:2]] == ["all", "mined"]
    assert ax.get_lines()[1].get_ydata().tolist() == pytest.approx([4 / 7, 1, 1, 1])
    assert ax.get_xscale() == "log" and ax.get_title() == "t"
    ax = viz.plot_negative_weighting(bg, labels, weights, legend=None)
    assert ax.get_legend() is None
