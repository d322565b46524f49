"""The explorers without a browser: build each one, move a control by setting ``.value``, and
check that the figure and the numbers changed the way they should."""

from __future__ import annotations

import ipywidgets as widgets
import pytest
import torch
from matplotlib.patches import Rectangle

from ssdlib import widgets as W
from ssdlib.matching import assign_targets
from ssdlib.nms import jittered_detections, nms_steps
from ssdlib.priors import SSD300_VOC, default_boxes
from tests.figure_checks import legend_texts

IMAGE = torch.rand(3, 40, 40)
GT = torch.tensor([[0.1, 0.05, 0.7, 0.95], [0.72, 0.6, 0.8, 0.7]])  # a large and a small object
LABELS = torch.tensor([1, 2])


def all_widgets(root: widgets.Widget) -> list[widgets.Widget]:
    out = [root]
    for child in getattr(root, "children", ()):
        out += all_widgets(child)
    return out


def with_class(root: widgets.Widget, name: str) -> list[widgets.Widget]:
    return [w for w in all_widgets(root) if name in getattr(w, "_dom_classes", ())]


def rectangles(ax) -> list[tuple[float, ...]]:
    return [
        (round(p.get_x(), 4), round(p.get_y(), 4), round(p.get_width(), 4))
        for p in ax.patches
        if isinstance(p, Rectangle)
    ]


def sliders(root: widgets.Widget) -> list[widgets.Widget]:
    kinds = (widgets.FloatSlider, widgets.IntSlider, widgets.SelectionSlider)
    return [w for w in all_widgets(root) if isinstance(w, kinds)]


# -- default boxes: the browser test's contract ----------------------------------------------------


def test_default_box_explorer_keeps_the_browser_contract():
    ex = W.default_box_explorer(IMAGE, GT)
    assert isinstance(ex, widgets.Box)  # one container
    (s_min,) = with_class(ex, "ssd-s-min")
    (s_max,) = with_class(ex, "ssd-s-max")
    assert isinstance(s_min, widgets.FloatSlider) and s_min.description == "s_min"
    assert isinstance(s_max, widgets.FloatSlider) and s_max.description == "s_max"
    (figure,) = with_class(ex, "ssd-figure")
    assert isinstance(figure, widgets.Output)
    (count,) = with_class(ex, "ssd-box-count")
    assert isinstance(count, widgets.HTML)
    assert all(s.continuous_update is False for s in sliders(ex))
    assert len(sliders(ex)) == 5  # s_min, s_max, layer, cell x, cell y
    # Without a kernel a reader sees the text/plain output: one line that says what to do.
    text = ex._repr_mimebundle_()["text/plain"]
    assert text == (
        "Interactive explorer (6 controls): it needs a kernel, so run the lesson in JupyterLab "
        "(make lab)"
    )


def test_default_box_explorer_starts_at_the_papers_scales_and_count():
    ex = W.default_box_explorer(IMAGE, GT)
    assert (ex.controls["s_min"].value, ex.controls["s_max"].value) == (0.2, 0.9)
    cfg, report = ex.result
    assert cfg.num_priors == SSD300_VOC.num_priors == 8732
    assert "<b>8732</b> default boxes" in ex.info.value
    assert f"<b>{int(report.num_matches.sum())}</b> (object, default box) pairs" in ex.info.value


def test_moving_s_min_changes_the_count_the_scales_and_the_figure():
    ex = W.default_box_explorer(IMAGE, GT)
    before_text, before_fig = ex.info.value, ex.figure
    before_boxes = rectangles(ex.figure.axes[0])
    ex.controls["s_min"].value = 0.1
    assert ex.figure is not before_fig
    assert ex.info.value != before_text
    cfg, report = ex.result
    assert cfg.scales[0] == pytest.approx(0.1)
    assert "scales s_k: 0.10" in ex.info.value
    assert f"<b>{int(report.num_matches.sum())}</b>" in ex.info.value
    assert rectangles(ex.figure.axes[0]) != before_boxes  # the cell's boxes shrank


def test_ratio_set_and_layer_change_the_boxes_per_cell():
    ex = W.default_box_explorer(IMAGE, GT)
    ex.controls["ratios"].value = "squares only"
    assert "<b>3880</b> default boxes" in ex.info.value  # 2 × (38² + 19² + 10² + 5² + 3² + 1²)
    assert len(rectangles(ex.figure.axes[0])) == len(GT) + 2
    ex.controls["ratios"].value = "{1, 2, 3, 1/2, 1/3} everywhere"
    ex.controls["layer"].value = 5
    assert len(rectangles(ex.figure.axes[0])) == len(GT) + 6
    assert ex.figure.axes[0].get_title().startswith("layer 5: 1×1")


def test_cell_sliders_move_the_drawn_cell():
    ex = W.default_box_explorer(IMAGE, GT, layer_names=["a", "b", "c", "d", "e", "f"])
    ex.controls["layer"].value = 4  # 3×3 cells of 100 px
    ex.controls["cell_x"].value = 0.1
    ex.controls["cell_y"].value = 0.9
    assert ex.figure.axes[0].get_title() == "layer 4: 3×3, cell (2, 0)"


def test_default_box_explorer_measures_coverage_on_the_objects_given():
    objects = torch.tensor([[0.0, 0.0, 0.02, 0.02], [0.3, 0.3, 0.7, 0.7]])
    ex = W.default_box_explorer(IMAGE, GT, objects=objects)
    assert ex.result[1].num_objects == 2
    assert ex.result[1].coverage == 0.5  # the 6-pixel speck has no default box near its size
    with pytest.raises(ValueError, match=r"objects of shape \(G, 4\).*\(4,\)"):
        W.default_box_explorer(IMAGE, GT, objects=torch.zeros(4))
    with pytest.raises(ValueError, match="2 layer names for 6"):
        W.default_box_explorer(IMAGE, GT, layer_names=["a", "b"])


# -- matching --------------------------------------------------------------------------------------


def test_matching_explorer_threshold_and_object():
    ex = W.matching_explorer(IMAGE, GT, LABELS, object_names=["person", "cup"])
    priors = default_boxes(SSD300_VOC)
    _, labels = assign_targets([GT], [LABELS], priors)
    assert int((ex.result.matched_gt[0] >= 0).sum()) == int((labels > 0).sum())
    assert f"all objects: {int((labels > 0).sum())} positives" in ex.info.value
    first = ex.figure
    ex.controls["threshold"].value = 0.3
    _, labels_03 = assign_targets([GT], [LABELS], priors, iou_threshold=0.3)
    assert f"all objects: {int((labels_03 > 0).sum())} positives" in ex.info.value
    assert ex.figure is not first
    ex.controls["obj"].value = 1
    assert ex.info.value.startswith("<b>cup</b> at IoU ≥ 0.30")
    ex.controls["threshold"].value = 0.9  # nothing reaches 0.9: only the forced match is left
    assert "<b>1</b> positives (1 forced)" in ex.info.value


def test_matching_explorer_names_the_layers_in_its_legend():
    names = ["conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]
    ex = W.matching_explorer(IMAGE, GT, LABELS, layer_names=names)
    assert [t.split(" ")[0] for t in legend_texts(ex.figure.axes[0])] == names
    with pytest.raises(ValueError, match="2 layer names for 6 layers"):
        W.matching_explorer(IMAGE, GT, LABELS, layer_names=names[:2])


def test_matching_explorer_rejects_an_image_without_objects():
    with pytest.raises(ValueError, match="at least one object"):
        W.matching_explorer(IMAGE, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))


# -- NMS -------------------------------------------------------------------------------------------


def test_nms_explorer_steps_and_threshold():
    boxes, scores, _ = jittered_detections(GT, LABELS, per_object=6, num_decoys=3)
    ex = W.nms_explorer(IMAGE, boxes, scores)
    step = ex.controls["step"]
    assert step.max == len(nms_steps(boxes, scores, 0.45))
    assert ex.figure.axes[0].get_title().startswith(f"step 0/{step.max}: 0 kept")
    step.value = 1
    first = nms_steps(boxes, scores, 0.45)[0]
    assert f"keeps box {first.kept}" in ex.info.value
    assert ex.figure.axes[0].get_title().startswith(f"step 1/{step.max}: 1 kept")
    step.value = step.max
    ex.controls["threshold"].value = 0.95  # almost nothing overlaps that much: more steps
    assert step.max == len(nms_steps(boxes, scores, 0.95)) > len(nms_steps(boxes, scores, 0.45))
    ex.controls["threshold"].value = 0.05  # back: the step slider clamps to the fewer steps
    assert step.value == step.max == len(nms_steps(boxes, scores, 0.05))
    assert f"keeps <b>{step.max}</b> of {len(boxes)} boxes" in ex.info.value


# -- feature maps ----------------------------------------------------------------------------------


def test_feature_map_explorer_layer_and_channel():
    fmaps = [torch.rand(1, 8, 6, 6), torch.rand(1, 3, 2, 2)]
    ex = W.feature_map_explorer(IMAGE, fmaps, ["conv4_3", "fc7"])
    assert torch.equal(ex.result, fmaps[0][0, 0])
    ex.controls["channel"].value = 5
    assert torch.equal(ex.result, fmaps[0][0, 5])
    assert ex.figure.axes[0].images[0].get_array().shape == (6, 6)
    ex.controls["layer"].value = 1
    assert ex.controls["channel"].max == 2 and ex.controls["channel"].value == 2  # clamped
    assert torch.equal(ex.result, fmaps[1][0, 2])
    assert ex.info.value.startswith("<b>fc7</b>: 3 channels of 2×2")
    with pytest.raises(ValueError, match="1 names for 2"):
        W.feature_map_explorer(IMAGE, fmaps, ["conv4_3"])


def test_explorers_take_tensors_on_any_device(device):
    gt, labels = GT.to(device), LABELS.to(device)
    ex = W.default_box_explorer(IMAGE.to(device), gt)
    ex.controls["s_min"].value = 0.15
    assert ex.result[1].num_objects == 2
    ex = W.matching_explorer(IMAGE, gt, labels)
    ex.controls["threshold"].value = 0.4
    assert "positives" in ex.info.value
    boxes, scores, _ = jittered_detections(GT, LABELS)
    ex = W.nms_explorer(IMAGE, boxes.to(device), scores.to(device))
    ex.controls["step"].value = 1
    assert "keeps box" in ex.info.value


# -- hard negative mining --------------------------------------------------------------------------


def _mining_case():
    priors = default_boxes(SSD300_VOC)
    _, labels = assign_targets([GT], [LABELS], priors)
    g = torch.Generator().manual_seed(0)
    trained = torch.zeros(len(priors), 3)
    trained[:, 0] = 8.0  # sure of background almost everywhere...
    trained[torch.randperm(len(priors), generator=g)[:40], 0] = -4.0  # ...but for 40 boxes
    logits = {"untrained": torch.randn(len(priors), 3, generator=g) * 0.01, "trained": trained}
    return priors, labels[0], logits


def test_hard_negative_explorer_ratio_sets_the_number_mined():
    priors, labels, logits = _mining_case()
    ex = W.hard_negative_explorer(IMAGE, priors, labels, logits, gt_boxes=GT)
    positives = int((labels > 0).sum())
    assert ex.result.positives == positives and ex.result.mined == 3 * positives
    assert ex.result.negatives == len(priors) - positives
    drawn = len(rectangles(ex.figure.axes[0]))
    assert drawn == positives + 3 * positives + len(GT)  # mined, positives, ground truth
    ex.controls["ratio"].value = 0.0
    assert ex.result.mined == 0 and ex.result.mined_share == 0.0
    assert len(rectangles(ex.figure.axes[0])) == positives + len(GT)
    assert "0 : 1" in ex.info.value


def test_hard_negative_explorer_model_picks_that_models_losses():
    priors, labels, logits = _mining_case()
    ex = W.hard_negative_explorer(IMAGE, priors, labels, logits)
    near_uniform = ex.result.mined_share
    ex.controls["model"].value = "trained"
    # nearly equal logits give every negative about the same loss: the mined few carry a share
    # near their count's share; a confident model's loss sits in few boxes
    share_by_count = ex.result.mined / ex.result.negatives
    assert near_uniform == pytest.approx(share_by_count, rel=0.05)
    assert ex.result.mined_share > 5 * share_by_count
    assert "trained" in ex.info.value


def test_hard_negative_explorer_names_bad_input():
    priors, labels, logits = _mining_case()
    with pytest.raises(ValueError, match="at least one model"):
        W.hard_negative_explorer(IMAGE, priors, labels, {})
    with pytest.raises(ValueError, match=r"conf_logits\['x'\]"):
        W.hard_negative_explorer(IMAGE, priors, labels, {"x": torch.zeros(5, 3)})
    with pytest.raises(ValueError, match="labels of shape"):
        W.hard_negative_explorer(IMAGE, priors, labels[:-1], logits)
