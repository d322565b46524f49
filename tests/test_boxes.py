"""ssdlib.boxes against torchvision.ops and hand-computed values."""

import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdlib.boxes import (
    MAX_LOG_SCALE,
    box_area,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    decode,
    encode,
    pixels_to_unit,
    unit_to_pixels,
    xyxy_to_cxcywh,
)


def random_boxes(n: int, generator=None) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator)
    wh = torch.rand(n, 2, generator=generator) * 0.5
    return torch.cat([xy, xy + wh], dim=1)


def test_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    # overlap 1×1 of areas 4 and 4: 1 / 7; touching edges: 0; identical: 1
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0]]))


def test_iou_equals_torchvision_on_random_boxes(device):
    a, b = random_boxes(50).to(device), random_boxes(70).to(device)
    torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b))


def test_iou_adversarial_cases_equal_torchvision():
    boxes = torch.tensor(
        [
            [0.1, 0.1, 0.5, 0.5],
            [0.1, 0.1, 0.5, 0.5],  # identical to the first
            [0.3, 0.3, 0.3, 0.7],  # zero width
            [0.2, 0.2, 0.2, 0.2],  # a point
            [0.5, 0.1, 0.9, 0.5],  # shares an edge with the first
            [0.0, 0.0, 1.0, 1.0],  # contains everything
        ]
    )
    ours = box_iou(boxes, boxes)
    theirs = torchvision.ops.box_iou(boxes, boxes)
    # torchvision gives nan where both boxes have zero area (0 / 0); we define that IoU as 0.
    both_empty = (box_area(boxes)[:, None] == 0) & (box_area(boxes)[None, :] == 0)
    assert torch.isnan(theirs[both_empty]).all()
    assert (ours[both_empty] == 0).all()
    torch.testing.assert_close(ours[~both_empty], theirs[~both_empty])
    assert not torch.isnan(ours).any()


def test_iou_batched_equals_per_image():
    a, b = random_boxes(3 * 4).reshape(3, 4, 4), random_boxes(3 * 5).reshape(3, 5, 4)
    batched = box_iou(a, b)
    for i in range(3):
        torch.testing.assert_close(batched[i], box_iou(a[i], b[i]))


def test_iou_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\), got \(3, 5\)"):
        box_iou(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="same leading dims"):
        box_iou(torch.zeros(2, 3, 4), torch.zeros(3, 4))


def test_conversions_by_hand():
    xyxy = torch.tensor([[0.1, 0.2, 0.5, 0.8]])
    cxcywh = torch.tensor([[0.3, 0.5, 0.4, 0.6]])
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), cxcywh)
    torch.testing.assert_close(cxcywh_to_xyxy(cxcywh), xyxy)


def test_encode_by_hand():
    # A default box at (0.5, 0.5) of size 0.2, ground truth shifted by 0.02 and twice as wide.
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    gt = cxcywh_to_xyxy(torch.tensor([[0.52, 0.5, 0.4, 0.2]]))
    expected = torch.tensor([[0.02 / (0.2 * 0.1), 0.0, math.log(2) / 0.2, 0.0]])
    torch.testing.assert_close(encode(gt, prior), expected)


def test_encode_equals_torchvision_box_coder():
    from torchvision.models.detection._utils import BoxCoder

    priors_xyxy = random_boxes(100) * 300
    gt = random_boxes(100) * 300
    theirs = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).encode_single(gt, priors_xyxy)
    ours = encode(gt / 300, xyxy_to_cxcywh(priors_xyxy / 300))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@settings(max_examples=200, deadline=None)
@given(
    cx=st.floats(0.0, 1.0),
    cy=st.floats(0.0, 1.0),
    w=st.floats(0.01, 1.0),
    h=st.floats(0.01, 1.0),
    pw=st.floats(0.02, 1.0),
    ph=st.floats(0.02, 1.0),
    v0=st.sampled_from([0.1, 0.2, 1.0]),
    v1=st.sampled_from([0.2, 0.5, 1.0]),
)
def test_encode_decode_round_trip(cx, cy, w, h, pw, ph, v0, v1):
    gt = cxcywh_to_xyxy(torch.tensor([[cx, cy, w, h]], dtype=torch.float64))
    prior = torch.tensor([[0.5, 0.5, pw, ph]], dtype=torch.float64)
    back = decode(encode(gt, prior, (v0, v1)), prior, (v0, v1))
    torch.testing.assert_close(back, gt)


def test_encode_broadcasts_over_the_batch():
    priors = xyxy_to_cxcywh(random_boxes(10))
    gt = random_boxes(3 * 10).reshape(3, 10, 4)
    batched = encode(gt, priors)
    assert batched.shape == (3, 10, 4)
    torch.testing.assert_close(batched[1], encode(gt[1], priors))


def test_decode_keeps_wild_predictions_finite():
    prior = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    boxes = decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), prior)
    assert torch.isfinite(boxes).all()
    w = boxes[0, 2] - boxes[0, 0]
    torch.testing.assert_close(w, torch.tensor(0.1 * math.exp(MAX_LOG_SCALE)))


def test_clip_boxes():
    boxes = torch.tensor([[-0.1, 0.2, 1.3, 0.9], [10.0, -5.0, 20.0, 400.0]])
    torch.testing.assert_close(clip_boxes(boxes[:1]), torch.tensor([[0.0, 0.2, 1.0, 0.9]]))
    torch.testing.assert_close(
        clip_boxes(boxes[1:], width=15, height=300), torch.tensor([[10.0, 0.0, 15.0, 300.0]])
    )


def test_pixels_to_unit_by_hand():
    # a 200 x 100 image: x is divided by 200, y by 100
    pixels = torch.tensor([[20.0, 10.0, 200.0, 50.0], [0.0, 0.0, 100.0, 100.0]])
    unit = torch.tensor([[0.1, 0.1, 1.0, 0.5], [0.0, 0.0, 0.5, 1.0]])
    torch.testing.assert_close(pixels_to_unit(pixels, width=200, height=100), unit)
    torch.testing.assert_close(unit_to_pixels(unit, width=200, height=100), pixels)
    # the same division as the notebooks' `boxes / torch.tensor([w, h, w, h])`, bit for bit
    assert torch.equal(
        pixels_to_unit(pixels, 200, 100), pixels / torch.tensor([200, 100, 200, 100])
    )


def test_pixel_conversions_keep_shape_dtype_and_convention():
    cxcywh = torch.tensor([[[150.0, 30.0, 60.0, 20.0]]], dtype=torch.float64)  # (1, 1, 4)
    unit = pixels_to_unit(cxcywh, 300, 60)
    assert unit.shape == (1, 1, 4) and unit.dtype == torch.float64
    torch.testing.assert_close(unit, torch.tensor([[[0.5, 0.5, 0.2, 1 / 3]]], dtype=torch.float64))
    assert pixels_to_unit(torch.zeros(0, 4), 10, 10).shape == (0, 4)  # an image without objects


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=4, max_size=4),
    st.integers(1, 4000),
    st.integers(1, 4000),
)
def test_pixel_conversions_round_trip(box, width, height):
    unit = torch.tensor([box], dtype=torch.float64)
    back = pixels_to_unit(unit_to_pixels(unit, width, height), width, height)
    torch.testing.assert_close(back, unit)


def test_pixel_conversions_reject_bad_input():
    with pytest.raises(ValueError, match="positive, finite image width and height, got 0x100"):
        pixels_to_unit(torch.zeros(1, 4), 0, 100)
    with pytest.raises(ValueError, match="got 100xinf"):
        unit_to_pixels(torch.zeros(1, 4), 100, math.inf)
    with pytest.raises(ValueError, match=r"shape \(..., 4\), got \(2, 2\)"):
        pixels_to_unit(torch.zeros(2, 2), 10, 10)
    with pytest.raises(ValueError, match="floating-point"):
        unit_to_pixels(torch.zeros(1, 4, dtype=torch.int64), 10, 10)
