"""Lesson 2's default-box figure and explorer: a legend for the box shapes and the objects, the
cell named (row, col) in the order of its sliders, the layer slider on a row of its own, and
coverage computed once per configuration, not on every layer or point move."""

from __future__ import annotations

import ipywidgets as widgets
import torch
from matplotlib.colors import same_color

from ssdlib import SSD300_VOC, viz
from ssdlib import widgets as W
from ssdlib.priors import default_box_coverage
from tests.figure_checks import legend_texts

IMAGE = torch.rand(3, 40, 40)
GT = torch.tensor([[0.1, 0.05, 0.7, 0.95], [0.72, 0.6, 0.8, 0.7]])  # a large and a small object


def test_box_shape_labels_follow_the_cells_order():
    assert viz.box_shape_labels(SSD300_VOC, 0) == ["1:1 $s_k$", "1:1 extra", "2:1", "1:2"]
    labels = viz.box_shape_labels(SSD300_VOC, 1)
    assert labels[2:] == ["2:1", "1:2", "3:1", "1:3"]
    assert len(labels) == SSD300_VOC.boxes_per_cell[1]


def test_cell_boxes_legend_names_the_shapes_and_the_objects():
    ax = viz.plot_cell_boxes(IMAGE, SSD300_VOC, 1, 9, 9, gt_boxes=GT)
    legend = ax.get_legend()
    assert legend_texts(ax) == [*viz.box_shape_labels(SSD300_VOC, 1), "objects"]
    colours = [h.get_color() for h in legend.legend_handles]
    assert colours[-1] == viz.GT_COLOR
    # each shape's legend colour is the colour its box is drawn in (after the objects' boxes)
    drawn = [p.get_edgecolor() for p in ax.patches[len(GT) :]]
    assert len(drawn) == len(colours) - 1
    assert all(same_color(a, b) for a, b in zip(colours[:-1], drawn, strict=True))
    assert viz.plot_cell_boxes(IMAGE, SSD300_VOC, 1, 9, 9, legend=False).get_legend() is None


def test_explorer_figure_takes_a_computed_report():
    report = default_box_coverage(GT, SSD300_VOC)
    fig, same = viz.plot_default_box_explorer(IMAGE, SSD300_VOC, 2, (0.5, 0.5), report=report)
    assert same is report  # drawn as given: no objects needed, nothing recomputed
    assert len(fig.axes) == 2 and fig.axes[1].get_title().startswith("coverage 100% of 2")


def test_the_cell_is_named_row_then_col_as_its_sliders():
    ex = W.default_box_explorer(IMAGE, GT, layer_names=["a", "b", "c", "d", "e", "f"])
    row_slider, col_slider = ex.controls["cell_y"], ex.controls["cell_x"]
    assert row_slider.description.endswith("row") and col_slider.description.endswith("col")
    point_row = next(
        box for box in ex.children if isinstance(box, widgets.HBox) and row_slider in box.children
    )
    assert list(point_row.children) == [row_slider, col_slider]  # (row, col), in that order
    ex.controls["layer"].value = 4  # 3×3 cells of 100 px
    col_slider.value, row_slider.value = 0.1, 0.9
    assert ex.figure.axes[0].get_title() == "layer 4: 3×3, cell (2, 0)"
    assert "e, cell (row 2, col 0)" in ex.info.value


def test_the_layer_slider_has_a_row_of_its_own():
    ex = W.default_box_explorer(IMAGE, GT)
    layer = ex.controls["layer"]
    (own_row,) = [box for box in ex.children if getattr(box, "children", ()) == (layer,)]
    assert isinstance(own_row, widgets.HBox)
    assert int(layer.layout.width.rstrip("px")) > int(W.WIDE.width.rstrip("px"))


def test_layer_and_point_moves_reuse_the_coverage(monkeypatch):
    calls = []
    real = W.default_box_coverage

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(W, "default_box_coverage", counting)
    ex = W.default_box_explorer(IMAGE, GT)
    assert len(calls) == 1
    first = ex.result[1]
    ex.controls["layer"].value = 3
    ex.controls["cell_x"].value = 0.2
    ex.controls["cell_y"].value = 0.7
    assert len(calls) == 1 and ex.result[1] is first  # redrawn, not recomputed
    assert ex.figure.axes[0].get_title().startswith("layer 3: 5×5")
    ex.controls["s_min"].value = 0.1  # a new configuration: a new coverage
    assert len(calls) == 2 and ex.result[1] is not first
    assert ex.result[1].num_objects == len(GT)
    ex.controls["layer"].value = 0
    assert len(calls) == 2
