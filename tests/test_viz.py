"""Figures: hand-sized inputs, what was drawn read back from the artists. The computations behind
them are tested beside their concepts (test_priors, test_backbone, test_loss, test_nms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle
from torchvision.ops import box_iou as tv_box_iou

from ssdlib import viz
from ssdlib.backbone import layer_geometry
from ssdlib.boxes import cxcywh_to_xyxy
from ssdlib.matching import assign_targets
from ssdlib.nms import NMSStep, jittered_detections, nms_steps
from ssdlib.priors import (
    SSD300_VOC,
    PriorConfig,
    default_box_coverage,
    default_boxes,
    kmeans_box_shapes,
    layer_of_prior,
    prior_index,
)
from tests.figure_checks import legend_texts

IMAGE = torch.rand(3, 30, 40)  # a small wide "photo"


def one_cell(min_size: float = 30, max_size: float = 60, ratios=(2,)) -> PriorConfig:
    """One 1×1 map on a 100-pixel image: 4 boxes centred at (0.5, 0.5)."""
    return PriorConfig(100, (1,), None, (min_size,), (max_size,), (ratios,))


def rectangles(ax) -> list[list[float]]:
    """The xyxy corners of every rectangle on ``ax``, rounded for literal comparison."""
    out = []
    for p in ax.patches:
        if isinstance(p, Rectangle):
            x, y, w, h = p.get_x(), p.get_y(), p.get_width(), p.get_height()
            out.append([round(v, 4) for v in (x, y, x + w, y + h)])
    return out


# -- drawing primitives ----------------------------------------------------------------------------


def test_image_to_numpy_accepts_tensor_and_uint8_array():
    arr = viz.image_to_numpy(IMAGE)
    assert arr.shape == (30, 40, 3)
    np.testing.assert_allclose(arr[2, 5], IMAGE[:, 2, 5].numpy())
    u8 = np.full((4, 5, 3), 255, dtype=np.uint8)
    assert viz.image_to_numpy(u8).max() == 1.0


@pytest.mark.parametrize("bad", [torch.rand(30, 40), torch.rand(1, 30, 40), np.zeros((4, 5))])
def test_image_to_numpy_names_the_bad_shape(bad):
    with pytest.raises(ValueError, match="shape"):
        viz.image_to_numpy(bad)


def test_show_image_uses_unit_coordinates_with_the_photos_proportions():
    ax = viz.show_image(IMAGE)
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (1, 0)  # y points down
    assert ax.get_aspect() == pytest.approx(30 / 40)


def test_draw_boxes_places_normalised_boxes_where_they_are():
    ax = viz.show_image(IMAGE)
    patches = viz.draw_boxes(ax, torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]]))
    assert len(patches) == 2
    assert rectangles(ax) == [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]]
    assert patches[0].get_edgecolor() != patches[1].get_edgecolor()  # own colour each


def test_draw_boxes_rejects_bad_shapes_and_label_counts():
    ax = viz.show_image(IMAGE)
    with pytest.raises(ValueError, match=r"\(N, 4\).*\(2, 3\)"):
        viz.draw_boxes(ax, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="1 labels for 2 boxes"):
        viz.draw_boxes(ax, torch.zeros(2, 4), labels=["a"])


def test_draw_boxes_accepts_no_boxes():
    ax = viz.show_image(IMAGE)
    assert viz.draw_boxes(ax, torch.zeros(0, 4)) == []


# -- feature maps ----------------------------------------------------------------------------------


def test_plot_feature_map_overlays_the_min_max_scaled_map():
    fmap = torch.tensor([[0.0, 2.0], [4.0, 8.0]])
    ax = viz.plot_feature_map(IMAGE, fmap)
    overlay = ax.images[-1].get_array()
    np.testing.assert_allclose(overlay, [[0.0, 0.25], [0.5, 1.0]])
    assert ax.images[-1].get_extent() == [0, 1, 1, 0]  # stretched over the whole photo


def test_plot_feature_map_of_a_constant_map_is_zero_not_nan_or_noise():
    ax = viz.plot_feature_map(IMAGE, torch.full((3, 3), 7.0))
    assert np.all(ax.images[-1].get_array() == 0)
    rounding = torch.tensor([[1.0, 1.0 - 6e-8], [1.0 + 1e-7, 1.0]])  # float32 rounding only
    ax = viz.plot_feature_map(IMAGE, rounding)
    assert np.all(ax.images[-1].get_array() == 0)


def test_plot_source_maps_titles_give_each_maps_shape():
    fig = viz.plot_source_maps(IMAGE, [torch.rand(8, 4, 4), torch.rand(1, 16, 2, 2)], ["a", "b"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["a: 8×4×4", "b: 16×2×2"]
    with pytest.raises(ValueError, match="2 names for 1"):
        viz.plot_source_maps(IMAGE, [torch.rand(8, 4, 4)], ["a", "b"])
    with pytest.raises(ValueError, match="'median'"):
        viz.plot_source_maps(IMAGE, [torch.rand(8, 4, 4)], summary="median")


@pytest.mark.parametrize(
    ("summary", "expected"),
    [("mean", [[1.0, 0.0], [0.5, 0.0]]), ("max", [[1.0, 0.0], [0.5, 0.0]]), ("norm", None)],
)
def test_plot_source_maps_summaries(summary, expected):
    fmap = torch.zeros(2, 2, 2)
    fmap[0] = torch.tensor([[4.0, 0.0], [2.0, 0.0]])
    fmap[1] = torch.tensor([[4.0, 0.0], [2.0, 0.0]])
    fig = viz.plot_source_maps(IMAGE, [fmap], summary=summary)
    shown = fig.axes[0].images[-1].get_array()
    if expected is not None:
        np.testing.assert_allclose(shown, expected)
    # an L2-normalised map has the same norm at every cell: the "norm" picture is flat
    unit = torch.nn.functional.normalize(torch.rand(5, 3, 3), dim=0)
    flat = viz.plot_source_maps(IMAGE, [unit], summary="norm").axes[0].images[-1].get_array()
    assert np.ptp(flat) == 0


# -- default boxes ---------------------------------------------------------------------------------


def test_plot_cell_boxes_draws_that_cells_default_boxes():
    cfg = SSD300_VOC
    ax = viz.plot_cell_boxes(IMAGE, cfg, layer=3, row=1, col=2, grid=False)
    expected = cxcywh_to_xyxy(default_boxes(cfg)[prior_index(cfg, 3, 1, 2)])
    drawn = torch.tensor(rectangles(ax))
    assert drawn.shape == (6, 4)  # conv9_2's cells hold 6 boxes
    torch.testing.assert_close(drawn, expected, atol=1e-4, rtol=0)


def test_plot_cell_boxes_shows_boxes_that_reach_past_the_border():
    ax = viz.plot_cell_boxes(IMAGE, SSD300_VOC, layer=5, row=0, col=0)  # 1×1 map, big boxes
    lo, hi = ax.get_xlim()
    assert lo < 0 and hi > 1


def test_plot_coverage_bars_show_the_per_bin_shares():
    objects = torch.tensor([[0.35, 0.35, 0.65, 0.65], [0.45, 0.45, 0.55, 0.55]])
    report = default_box_coverage(objects, one_cell())
    ax = viz.plot_coverage(report, scales=[0.3])
    heights = [p.get_height() for p in ax.patches]
    assert heights == report.coverage_per_bin.nan_to_num(0).tolist()


def test_explorer_figure_draws_the_cell_under_the_point():
    gt = torch.tensor([[0.2, 0.2, 0.6, 0.7]])
    fig, report = viz.plot_default_box_explorer(IMAGE, SSD300_VOC, 4, (0.5, 0.5), gt_boxes=gt)
    cell = cxcywh_to_xyxy(default_boxes(SSD300_VOC)[prior_index(SSD300_VOC, 4, 1, 1)])
    drawn = torch.tensor(rectangles(fig.axes[0])[1:])  # the first rectangle is the object
    torch.testing.assert_close(drawn, cell, atol=1e-4, rtol=0)
    assert report.num_objects == 1
    with pytest.raises(ValueError, match="objects"):
        viz.plot_default_box_explorer(IMAGE, SSD300_VOC, 4, (0.5, 0.5))


def test_plot_box_shape_clusters_marks_each_centroid():
    wh = torch.rand(20, 2) * 0.5 + 0.01
    result = kmeans_box_shapes(wh, k=3)
    ax = viz.plot_box_shape_clusters(wh, result.centroids, torch.rand(4, 2), result.assignment)
    stars = ax.collections[1].get_offsets()
    np.testing.assert_allclose(stars, result.centroids.numpy())


# -- matching --------------------------------------------------------------------------------------


def test_plot_iou_maps_show_the_best_iou_per_cell():
    gt = torch.tensor([[0.3, 0.3, 0.7, 0.8]])
    priors = default_boxes(SSD300_VOC)
    iou = tv_box_iou(gt, cxcywh_to_xyxy(priors))[0]
    fig = viz.plot_iou_maps(iou, SSD300_VOC)
    cell = prior_index(SSD300_VOC, 3, 2, 1)  # layer 3 is 5×5
    shown = fig.axes[3].images[0].get_array()
    assert shown.shape == (5, 5)
    assert shown[2, 1] == pytest.approx(float(iou[cell].max()))
    with pytest.raises(ValueError, match="8732"):
        viz.plot_iou_maps(iou[:10], SSD300_VOC)


def test_plot_iou_matrix_writes_every_value():
    ax = viz.plot_iou_matrix(torch.tensor([[0.1, 0.5], [0.9, 0.0]]))
    texts = [t for t in ax.texts]
    assert [t.get_text() for t in texts] == ["0.10", "0.50", "0.90", "0.00"]
    assert [t.get_fontweight() for t in texts] == ["normal", "bold", "bold", "normal"]


def test_plot_matches_and_positives_draw_every_positive_once():
    gt = torch.tensor([[0.1, 0.1, 0.9, 0.95], [0.6, 0.6, 0.7, 0.72]])
    priors = default_boxes(SSD300_VOC)
    _, _, details = assign_targets([gt], [torch.tensor([1, 2])], priors, return_details=True)
    matched = details.matched_gt[0]
    fig = viz.plot_matches(IMAGE, priors, matched, SSD300_VOC, gt_boxes=gt)
    per_layer = torch.bincount(layer_of_prior(SSD300_VOC)[matched >= 0], minlength=6)
    for k, ax in enumerate(fig.axes):
        assert len(rectangles(ax)) == 2 + int(per_layer[k])
        assert ax.get_title().endswith(f"{int(per_layer[k])} positives")
    ax = viz.plot_positives(IMAGE, priors, matched, SSD300_VOC, gt_boxes=gt, obj=1)
    assert len(rectangles(ax)) == 2 + int((matched == 1).sum())
    with pytest.raises(ValueError, match="matched_gt"):
        viz.plot_positives(IMAGE, priors, matched[:5], SSD300_VOC)


def test_plot_iou_histogram_title_counts_boxes_at_the_threshold():
    iou = torch.tensor([0.0, 0.2, 0.5, 0.7, 0.49])
    ax = viz.plot_iou_histogram(iou, threshold=0.5)
    assert ax.get_title().startswith("2 of 5 default boxes at IoU ≥ 0.50")


def test_plot_encoding_titles_the_four_offsets():
    ax = viz.plot_encoding(
        IMAGE,
        torch.tensor([0.2, 0.2, 0.6, 0.6]),
        torch.tensor([0.4, 0.4, 0.3, 0.3]),
        torch.tensor([0.0, -1.234, 2.0, 0.5]),
    )
    assert ax.get_title() == "Δcx=0.00  Δcy=-1.23  Δw=2.00  Δh=0.50"


# -- NMS -------------------------------------------------------------------------------------------

BOXES = torch.tensor(
    [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9], [0.11, 0.12, 0.5, 0.5]]
)
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6])


def test_nms_state_literal():
    steps = [NMSStep(kept=0, suppressed=[1, 3], ious=[0.9, 0.9]), NMSStep(2, [], [])]
    assert viz.nms_state(4, steps, 0).tolist() == [0, 0, 0, 0]
    assert viz.nms_state(4, steps, 1).tolist() == [1, 2, 0, 2]
    assert viz.nms_state(4, steps, 2).tolist() == [1, 2, 1, 2]
    with pytest.raises(ValueError, match=r"\[0, 2\], got 3"):
        viz.nms_state(4, steps, 3)


def test_plot_nms_step_titles_and_colours():
    steps = nms_steps(BOXES, SCORES, 0.45)
    assert [s.kept for s in steps] == [0, 2]
    ax = viz.plot_nms_step(IMAGE, BOXES, SCORES, steps, 1)
    assert ax.get_title().startswith("step 1/2: 1 kept, 2 suppressed, 1 pending")
    red = [p for p in ax.patches if p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)]
    assert len(red) == 2  # the two boxes this step removes
    ax = viz.plot_nms_step(IMAGE, BOXES, SCORES, steps, 0)
    assert ax.get_title() == "step 0/2: 0 kept, 0 suppressed, 4 pending"


def test_plot_detections_labels_class_and_score():
    ax = viz.plot_detections(
        IMAGE, BOXES[:2], SCORES[:2], torch.tensor([1, 2]), class_names=["bg", "cat", "cup"]
    )
    assert [t.get_text() for t in ax.texts] == ["cat 0.90", "cup 0.80"]
    with pytest.raises(ValueError, match="2 boxes, 2 scores, 1 labels"):
        viz.plot_detections(IMAGE, BOXES[:2], SCORES[:2], torch.tensor([1]))


# -- receptive fields ------------------------------------------------------------------------------


def test_plot_receptive_fields_draws_three_squares_per_layer():
    from torch import nn

    cfg = PriorConfig(8, (4, 2), None, (2, 4), (4, 8), ((), ()))
    stages = [nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)), nn.Conv2d(4, 4, 3, 2, 1)]
    fig = viz.plot_receptive_fields(IMAGE, layer_geometry(stages, ["a", "b"], cfg))
    assert len(rectangles(fig.axes[0])) == 3  # receptive field, default box, cell
    assert fig.axes[1].get_title() == "b (2×2): RF 7 px"


def test_plot_offset_histograms_one_series_per_entry_in_each_panel():
    a, b = torch.randn(50, 4), torch.randn(30, 4) * 3
    fig = viz.plot_offset_histograms({"scaled": a, "raw": b}, bins=10)
    assert [ax.get_title() for ax in fig.axes] == ["Δcx", "Δcy", "Δw", "Δh"]
    for k, ax in enumerate(fig.axes):
        assert len(ax.patches) == 20  # 10 bars per series
        assert legend_texts(ax) == [
            f"scaled (std {a[:, k].std():.2f})",
            f"raw (std {b[:, k].std():.2f})",
        ]
    with pytest.raises(ValueError, match=r"raw: .*\(5, 3\)"):
        viz.plot_offset_histograms({"raw": torch.zeros(5, 3)})


# -- devices ---------------------------------------------------------------------------------------


def test_analysis_and_figures_take_tensors_on_any_device(device):
    gt = torch.tensor([[0.1, 0.1, 0.9, 0.95], [0.6, 0.6, 0.7, 0.72]], device=device)
    priors = default_boxes(SSD300_VOC, device=device)
    on_cpu = default_box_coverage(gt.cpu(), SSD300_VOC)
    here = default_box_coverage(gt, priors)
    torch.testing.assert_close(here.best_iou, on_cpu.best_iou)
    assert torch.equal(here.num_matches, on_cpu.num_matches)
    _, _, details = assign_targets(
        [gt], [torch.tensor([1, 2], device=device)], priors, return_details=True
    )
    matched, forced = details.matched_gt[0], details.forced[0]
    viz.plot_matches(IMAGE.to(device), priors, matched, SSD300_VOC, gt_boxes=gt, forced=forced)
    viz.plot_positives(IMAGE, priors, matched, SSD300_VOC, gt_boxes=gt, forced=forced, obj=0)
    viz.plot_iou_maps(details.iou[0, 0], SSD300_VOC)
    boxes, _, _ = jittered_detections(gt, torch.tensor([1, 2], device=device))
    assert boxes.device.type == "cpu"  # made on the CPU from a seeded generator
    wh = (gt[:, 2:] - gt[:, :2]).repeat(3, 1)
    result = kmeans_box_shapes(wh, k=2)
    assert result.centroids.device.type == "cpu"


def test_mining_figures_on_a_hand_made_case():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 6)
    labels = torch.tensor([1, 0, 0, 0, 0, 0])
    bg = torch.tensor([9.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    chosen = torch.tensor([True, True, True, False, False, False])  # 2 hardest negatives
    ax = viz.plot_hard_negatives(torch.rand(3, 8, 8), priors, labels, chosen, bg)
    assert len([p for p in ax.patches if isinstance(p, Rectangle)]) == 3
    ax = viz.plot_negative_losses(bg, labels, chosen, label="m")
    assert "the 2 mined carry 70%" in legend_texts(ax)[0]
