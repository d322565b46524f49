"""Default boxes: literal small cases, the paper's counts and formula, torchvision's boxes."""

import math

import pytest
import torch
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.image_list import ImageList

from ssdlib.boxes import cxcywh_to_xyxy
from ssdlib.priors import (
    SSD300_COCO,
    SSD300_VOC,
    SSD512_VOC,
    PriorConfig,
    cell_box_sizes,
    config_from_scales,
    default_boxes,
    layer_of_prior,
    linear_scales,
    prior_index,
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
