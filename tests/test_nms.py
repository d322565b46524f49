"""NMS and postprocess against torchvision.ops.nms and torchvision's SSD.postprocess_detections."""

import pytest
import torch
import torchvision
from torchvision.models.detection import ssd300_vgg16

from ssdlib.boxes import cxcywh_to_xyxy
from ssdlib.nms import nms, nms_steps, postprocess, postprocess_reference
from ssdlib.priors import SSD300_COCO, default_boxes


def random_boxes(n, generator=None):
    xy = torch.rand(n, 2, generator=generator)
    wh = torch.rand(n, 2, generator=generator) * 0.3
    return torch.cat([xy, xy + wh], 1)


def test_nms_by_hand():
    boxes = torch.tensor(
        [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9], [2.0, 2.0, 3.0, 3.0], [0.0, 0.1, 1.0, 1.0]]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 wins, suppresses 0 (IoU 0.9) and 1 (IoU 0.8/1.0); box 2 is far away
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.45, 0.7, 1.0])
def test_nms_equals_torchvision_on_random_boxes(threshold, device):
    g = torch.Generator().manual_seed(int(threshold * 100))
    boxes, scores = random_boxes(300, g).to(device), torch.rand(300, generator=g).to(device)
    assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


def test_nms_adversarial_cases_equal_torchvision():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0],
            [0.0, 0.0, 1.0, 1.0],  # identical box, tied score
            [0.0, 0.0, 1.0, 0.5],  # IoU exactly 0.5 with the first
            [0.5, 0.5, 0.5, 0.5],  # zero area
            [0.5, 0.5, 0.5, 0.5],  # the same point again
            [0.2, 0.2, 0.6, 0.6],
        ]
    )
    scores = torch.tensor([0.5, 0.5, 0.4, 0.9, 0.9, 0.5])
    for threshold in (0.5, 0.49, 0.0):
        ours = nms(boxes, scores, threshold)
        assert torch.equal(ours, torchvision.ops.nms(boxes, scores, threshold)), threshold
    # IoU exactly at the threshold is kept (suppression needs IoU > threshold)
    assert 2 in nms(boxes, scores, 0.5).tolist()
    assert 2 not in nms(boxes, scores, 0.49).tolist()


def test_nms_of_nothing():
    assert nms(torch.zeros(0, 4), torch.zeros(0)).tolist() == []


def test_nms_steps_replay_nms():
    boxes, scores = random_boxes(60), torch.rand(60)
    steps = nms_steps(boxes, scores, 0.45)
    assert [s.kept for s in steps] == nms(boxes, scores, 0.45).tolist()
    suppressed = [i for s in steps for i in s.suppressed]
    assert sorted(suppressed + [s.kept for s in steps]) == list(range(60))
    assert all(iou > 0.45 for s in steps for iou in s.ious)


def test_nms_rejects_bad_input():
    with pytest.raises(ValueError, match=r"scores of shape \(3,\)"):
        nms(torch.zeros(3, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        nms(torch.zeros(3, 4), torch.zeros(3), 1.5)


def raw_outputs(b, p, k, device, peaked=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(b, p, 4, generator=g) * 0.5
    conf = torch.randn(b, p, k, generator=g) * 2
    if peaked:  # like a trained network: background wins almost everywhere
        conf[..., 0] += 6
    return loc.to(device), conf.to(device)


@pytest.mark.parametrize("peaked", [False, True])
def test_postprocess_equals_torchvision(peaked, device):
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)
    priors = default_boxes(SSD300_COCO, device=device)
    anchors = cxcywh_to_xyxy(priors) * 300
    loc, conf = raw_outputs(3, priors.shape[0], 21, device, peaked)
    theirs = model.postprocess_detections(
        {"bbox_regression": loc, "cls_logits": conf}, [anchors] * 3, [(300, 300)] * 3
    )
    ours = postprocess(loc, conf, priors, image_sizes=[(300, 300)] * 3)
    for o, t in zip(ours, theirs, strict=True):
        assert len(o["boxes"]) == len(t["boxes"]) > 0
        torch.testing.assert_close(o["scores"], t["scores"])
        assert torch.equal(o["labels"], t["labels"])
        torch.testing.assert_close(o["boxes"], t["boxes"], rtol=0, atol=1e-3)


def test_postprocess_fast_path_equals_reference_loops():
    priors = default_boxes(SSD300_COCO)
    loc, conf = raw_outputs(2, priors.shape[0], 6, "cpu", seed=3)
    for fast, ref in zip(
        postprocess(loc, conf, priors), postprocess_reference(loc, conf, priors), strict=True
    ):
        assert torch.equal(fast["labels"], ref["labels"])
        torch.testing.assert_close(fast["scores"], ref["scores"])
        torch.testing.assert_close(fast["boxes"], ref["boxes"])


def test_postprocess_limits_and_thresholds():
    priors = default_boxes(SSD300_COCO)
    loc, conf = raw_outputs(2, priors.shape[0], 21, "cpu")
    out = postprocess(loc, conf, priors, top_k=50, score_threshold=0.2)
    for det in out:
        assert len(det["boxes"]) == 50
        assert (det["scores"] > 0.2).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        assert det["boxes"].min() >= 0 and det["boxes"].max() <= 1
        assert det["labels"].min() >= 1


def test_postprocess_with_nothing_above_threshold():
    priors = default_boxes(SSD300_COCO)
    loc, conf = raw_outputs(2, priors.shape[0], 21, "cpu")
    out = postprocess(loc, conf, priors, score_threshold=1.0)
    assert [len(d["boxes"]) for d in out] == [0, 0]
    assert out[0]["boxes"].shape == (0, 4)


def test_postprocess_rejects_misaligned_priors():
    with pytest.raises(ValueError, match=r"priors of shape \(10, 4\)"):
        postprocess(torch.zeros(1, 10, 4), torch.zeros(1, 10, 3), torch.zeros(9, 4))
