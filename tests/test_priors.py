"""Default boxes: literal small cases, the paper's counts and formula, torchvision's boxes."""

import math

import pytest
import torch
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou as tv_box_iou

from ssdlib.boxes import cxcywh_to_xyxy
from ssdlib.priors import (
    COVERAGE_SIZE_EDGES,
    KMEANS_MAX_ITERS,
    SSD300_COCO,
    SSD300_VOC,
    SSD512_VOC,
    PriorConfig,
    cell_box_sizes,
    config_from_scales,
    default_box_coverage,
    default_boxes,
    kmeans_box_shapes,
    layer_of_prior,
    linear_scales,
    point_to_cell,
    prior_index,
    shape_iou,
)


def one_cell(aspect_ratios=(2,), clip=False, min_size=30, max_size=60) -> PriorConfig:
    return PriorConfig(
        image_size=100,
        feature_maps=(1,),
        steps=None,
        min_sizes=(min_size,),
        max_sizes=(max_size,),
        aspect_ratios=(aspect_ratios,),
        clip=clip,
    )


def test_a_1x1_map_gives_four_boxes_by_hand():
    boxes = default_boxes(one_cell())
    s, s_extra, r = 0.3, math.sqrt(0.3 * 0.6), math.sqrt(2)
    expected = torch.tensor(
        [
            [0.5, 0.5, s, s],
            [0.5, 0.5, s_extra, s_extra],
            [0.5, 0.5, s * r, s / r],
            [0.5, 0.5, s / r, s * r],
        ]
    )
    torch.testing.assert_close(boxes, expected)


def test_a_2x2_map_orders_cells_row_major():
    cfg = PriorConfig(100, (2,), None, (30,), (60,), ((),))  # 2 squares per cell
    centres = default_boxes(cfg)[::2, :2]
    expected = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    torch.testing.assert_close(centres, expected)


def test_clip_clamps_sizes_not_centres():
    boxes = default_boxes(one_cell(aspect_ratios=(3,), min_size=80, max_size=100, clip=True))
    assert boxes[:, 2:].max() <= 1.0
    assert boxes[2, 2] == 1.0  # 0.8 · √3 > 1 is clamped


@pytest.mark.parametrize(
    ("cfg", "total", "per_cell"),
    [
        (SSD300_VOC, 8732, [4, 6, 6, 6, 4, 4]),
        (SSD300_COCO, 8732, [4, 6, 6, 6, 4, 4]),
        (SSD512_VOC, 24564, [4, 6, 6, 6, 6, 4, 4]),
    ],
)
def test_counts(cfg, total, per_cell):
    assert cfg.num_priors == total
    assert cfg.boxes_per_cell == per_cell
    assert default_boxes(cfg).shape == (total, 4)
    assert layer_of_prior(cfg).shape == (total,)


def test_repr_teaches():
    assert repr(SSD300_VOC) == (
        "PriorConfig(name='SSD300_VOC', image=300, fmaps=[38, 19, 10, 5, 3, 1], "
        "per_cell=[4, 6, 6, 6, 4, 4], total=8732)"
    )


def test_ssd300_coco_equals_torchvision_default_boxes():
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91)
    maps = [torch.zeros(1, 1, f, f) for f in SSD300_COCO.feature_maps]
    images = ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)])
    theirs = model.anchor_generator(images, maps)[0]  # xyxy pixels
    ours = cxcywh_to_xyxy(default_boxes(SSD300_COCO)) * 300
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


def test_paper_scale_formula():
    # "the lowest layer has a scale of 0.2 and the highest layer has a scale of 0.9"
    torch.testing.assert_close(
        torch.tensor(linear_scales(0.2, 0.9, 6)),
        torch.tensor([0.2, 0.34, 0.48, 0.62, 0.76, 0.9]),
    )
    assert linear_scales(0.3, 0.3, 1) == [0.3]
    with pytest.raises(ValueError, match="s_min"):
        linear_scales(0.9, 0.2, 6)


def test_config_from_scales_follows_the_paper():
    cfg = config_from_scales(
        0.2, 0.9, [[2]] * 6, feature_maps=(38, 19, 10, 5, 3, 1), image_size=300
    )
    torch.testing.assert_close(
        torch.tensor(cfg.scales), torch.tensor([0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04])
    )
    # the extra square of layer k is sqrt(s_k · s_{k+1})
    wh = cell_box_sizes(cfg, 2)
    assert wh[1, 0].item() == pytest.approx(math.sqrt(0.48 * 0.62))
    assert cfg.num_priors == sum(f * f * 4 for f in (38, 19, 10, 5, 3, 1))


def test_released_ssd300_uses_the_formula_rounded():
    # conv4_3 at 0.1; the other layers 0.2 -> 0.88 in steps of 0.17 (and 1.05 for s_{m+1})
    assert SSD300_VOC.scales == pytest.approx([0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05])


def test_step_is_the_released_stride_or_image_over_map():
    assert [SSD300_VOC.step(k) for k in range(6)] == [8, 16, 32, 64, 100, 300]
    cfg = PriorConfig(300, (38, 3), None, (30, 60), (60, 90), ((), ()))
    assert [cfg.step(0), cfg.step(1)] == [300 / 38, 100.0]


def test_prior_index_finds_a_cell():
    cfg = SSD300_VOC
    cell = prior_index(cfg, layer=1, row=3, col=4)
    boxes = default_boxes(cfg)[cell]
    assert len(boxes) == 6
    torch.testing.assert_close(boxes[:, 0], torch.full((6,), (4 + 0.5) * 16 / 300))
    torch.testing.assert_close(boxes[:, 1], torch.full((6,), (3 + 0.5) * 16 / 300))
    assert (layer_of_prior(cfg)[cell] == 1).all()


def test_bad_configs_name_the_problem():
    with pytest.raises(ValueError, match="one entry per feature map"):
        PriorConfig(300, (38, 19), None, (30,), (60,), ((2,),))
    with pytest.raises(ValueError, match="aspect ratio 1 must be > 1"):
        PriorConfig(300, (38,), None, (30,), (60,), ((1,),))
    with pytest.raises(ValueError, match="min_size <= max_size"):
        PriorConfig(300, (38,), None, (60,), (30,), ((2,),))
    with pytest.raises(ValueError, match=r"cell \(5, 0\) is outside"):
        prior_index(SSD300_VOC, layer=5, row=5, col=0)


def test_default_boxes_on_device(device):
    boxes = default_boxes(SSD300_VOC, device=device)
    assert boxes.device.type == device.type
    torch.testing.assert_close(boxes.cpu(), default_boxes(SSD300_VOC))


# -- default boxes against real objects: coverage, the cell under a point, k-means shapes ------


def test_point_to_cell_literals():
    assert point_to_cell(SSD300_VOC, 0, 0.5, 0.5) == (18, 18)  # 150 px / 8 px = 18.75
    assert point_to_cell(SSD300_VOC, 0, 1.0, 0.0) == (0, 37)  # 38 × 8 = 304 > 300
    assert point_to_cell(SSD300_VOC, 5, 0.9, 0.9) == (0, 0)
    assert point_to_cell(SSD300_VOC, 4, 0.34, 0.66) == (1, 1)  # 100-pixel cells
    with pytest.raises(ValueError, match=r"\(1.5, 0.2\)"):
        point_to_cell(SSD300_VOC, 0, 1.5, 0.2)
    with pytest.raises(ValueError, match="layer"):
        point_to_cell(SSD300_VOC, 6, 0.5, 0.5)


def test_coverage_of_hand_made_objects():
    cfg = one_cell(min_size=32, max_size=75)  # 0.32 square, 0.49 square, 0.45×0.23, 0.23×0.45
    objects = torch.tensor(
        [
            [0.34, 0.34, 0.66, 0.66],  # exactly the 0.32 square: IoU 1
            [0.44, 0.44, 0.56, 0.56],  # a 0.12 square inside it: IoU 0.0144 / 0.1024
            [0.0, 0.0, 0.12, 0.12],  # in a corner: overlaps nothing
        ]
    )
    report = default_box_coverage(objects, cfg)
    torch.testing.assert_close(report.best_iou, torch.tensor([1.0, 0.0144 / 0.1024, 0.0]))
    # the 0.32 square matches itself and the 2:1 pair (0.0724 / 0.1324 = 0.55), not the
    # 0.49 square (0.1024 / 0.24 = 0.43)
    assert report.num_matches.tolist() == [3, 0, 0]
    assert report.coverage == pytest.approx(1 / 3)
    torch.testing.assert_close(report.sizes, torch.tensor([0.32, 0.12, 0.12]))
    edges = list(COVERAGE_SIZE_EDGES)  # 0.12 falls in [0.1, 0.15), 0.32 in [0.3, 0.4)
    counts = report.count_per_bin.tolist()
    assert counts[edges.index(0.1)] == 2 and counts[edges.index(0.3)] == 1 and sum(counts) == 3
    assert report.coverage_per_bin[edges.index(0.1)] == 0
    assert report.coverage_per_bin[edges.index(0.3)] == 1
    assert math.isnan(report.coverage_per_bin[0])  # no objects: nan, not 0


def test_coverage_matches_a_loop_over_torchvision_iou():
    objects = torch.tensor([[0.1, 0.1, 0.3, 0.5], [0.5, 0.2, 0.9, 0.9], [0.4, 0.4, 0.45, 0.47]])
    priors = default_boxes(SSD300_VOC)
    report = default_box_coverage(objects, priors, threshold=0.4)
    iou = tv_box_iou(objects, cxcywh_to_xyxy(priors))
    for i in range(len(objects)):
        assert report.best_iou[i] == pytest.approx(float(iou[i].max()), abs=1e-6)
        assert int(report.num_matches[i]) == sum(float(v) >= 0.4 for v in iou[i])


def test_coverage_of_no_objects_is_empty_not_an_error():
    report = default_box_coverage(torch.zeros(0, 4), one_cell())
    assert report.num_objects == 0 and report.coverage == 0.0
    assert report.count_per_bin.sum() == 0


def test_shape_iou_literals_and_torchvision():
    wh1 = torch.tensor([[1.0, 1.0], [1.0, 2.0]])
    wh2 = torch.tensor([[2.0, 2.0], [2.0, 1.0]])
    torch.testing.assert_close(shape_iou(wh1, wh2), torch.tensor([[0.25, 0.5], [0.5, 1 / 3]]))
    centred = lambda wh: torch.cat([-wh / 2, wh / 2], dim=1)
    torch.testing.assert_close(shape_iou(wh1, wh2), tv_box_iou(centred(wh1), centred(wh2)))
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        shape_iou(torch.zeros(3, 4), wh2)


def test_kmeans_finds_three_separated_shape_clusters():
    gen = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.05, 0.05], [0.4, 0.1], [0.3, 0.6]])
    wh = (centres[:, None, :] * (1 + 0.03 * torch.randn(3, 40, 2, generator=gen))).reshape(-1, 2)
    result = kmeans_box_shapes(wh, k=3, seed=0)
    torch.testing.assert_close(result.centroids, centres, atol=0.01, rtol=0)  # sorted by area
    assert result.assignment.tolist() == [0] * 40 + [1] * 40 + [2] * 40
    own = shape_iou(wh.double(), result.centroids.double()).gather(1, result.assignment[:, None])
    assert result.mean_iou == pytest.approx(float(own.mean()), abs=1e-5)
    assert result.mean_iou > 0.9


def test_kmeans_converged_assignment_is_to_the_nearest_centroid():
    wh = torch.rand(200, 2, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.01
    result = kmeans_box_shapes(wh, k=5, seed=2)
    assert result.iterations < KMEANS_MAX_ITERS
    nearest = shape_iou(wh.double(), result.centroids.double()).argmax(dim=1)
    assert torch.equal(nearest, result.assignment)
    again = kmeans_box_shapes(wh, k=5, seed=2)
    assert torch.equal(again.centroids, result.centroids)  # seeded: repeats


def test_kmeans_with_one_cluster_is_the_mean_shape():
    wh = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    result = kmeans_box_shapes(wh, k=1)
    torch.testing.assert_close(result.centroids, torch.tensor([[0.2, 0.3]]))


def test_kmeans_rejects_bad_input():
    with pytest.raises(ValueError, match="k=3"):
        kmeans_box_shapes(torch.rand(2, 2) + 0.1, k=3)
    with pytest.raises(ValueError, match=r"box 1 .*\[0.0, 0.2\]"):
        kmeans_box_shapes(torch.tensor([[0.1, 0.1], [0.0, 0.2]]), k=1)
