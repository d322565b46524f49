"""NMS and postprocess against torchvision.ops.nms and torchvision's SSD.postprocess_detections."""

import sys

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


def _assert_same_detections(fast, ref):
    for i, (f, r) in enumerate(zip(fast, ref, strict=True)):
        assert torch.equal(f["labels"], r["labels"]), f"image {i}"
        torch.testing.assert_close(f["scores"], r["scores"], rtol=0, atol=0)
        torch.testing.assert_close(f["boxes"], r["boxes"])


def test_postprocess_grows_the_prefix_when_nms_removes_too_much(monkeypatch):
    """Every box regresses onto the same spot: NMS keeps one box per class, far fewer than
    top_k, so the fast path must look past its first candidates (and still equal the loops)."""
    nms_module = sys.modules["ssdlib.nms"]
    rounds = []
    detect = nms_module._detect
    monkeypatch.setattr(
        nms_module, "_detect", lambda *a, **kw: rounds.append(len(a[0])) or detect(*a, **kw)
    )
    monkeypatch.setattr(nms_module, "PREFIX_GROWTH", 2)
    priors = default_boxes(SSD300_COCO)
    loc, conf = raw_outputs(2, priors.shape[0], 5, "cpu", seed=4)
    loc = cxcywh_offsets_onto(priors, torch.tensor([0.5, 0.5, 0.3, 0.3]))[None].repeat(2, 1, 1)
    fast = postprocess(loc, conf, priors, top_k=20)
    assert len(rounds) > 2, "the prefix never grew: the test does not reach that path"
    _assert_same_detections(fast, postprocess_reference(loc, conf, priors, top_k=20))


def cxcywh_offsets_onto(priors, box_cxcywh):
    """Offsets (v = 0.1, 0.2) that decode every default box to the same ``box_cxcywh``."""
    centre = (box_cxcywh[:2] - priors[:, :2]) / (priors[:, 2:] * 0.1)
    size = torch.log(box_cxcywh[2:] / priors[:, 2:]) / 0.2
    return torch.cat([centre, size], dim=1)


def test_postprocess_breaks_score_ties_like_the_reference():
    """Integer logits: thousands of exactly equal scores, within and across classes."""
    priors = default_boxes(SSD300_COCO)
    g = torch.Generator().manual_seed(5)
    loc = torch.randn(2, priors.shape[0], 4, generator=g) * 0.5
    conf = torch.randint(0, 4, (2, priors.shape[0], 4), generator=g).float()
    conf[..., 0] += 2
    for top_k in (10, 200):
        fast = postprocess(loc, conf, priors, top_k=top_k, candidates_per_class=50)
        ref = postprocess_reference(loc, conf, priors, top_k=top_k, candidates_per_class=50)
        _assert_same_detections(fast, ref)


def test_postprocess_grouping_images_per_nms_call_changes_nothing(monkeypatch):
    """What CUDA does (several images per NMS call), on the CPU."""
    priors = default_boxes(SSD300_COCO)
    loc, conf = raw_outputs(3, priors.shape[0], 6, "cpu", seed=6)
    one_by_one = postprocess(loc, conf, priors)
    monkeypatch.setitem(sys.modules["ssdlib.nms"].NMS_CALL_MAX_BOXES, "cpu", 5000)
    _assert_same_detections(postprocess(loc, conf, priors), one_by_one)


def test_image_chunks_by_hand():
    from ssdlib.nms import _image_chunks

    assert _image_chunks([3, 0, 5, 2], 6) == [(0, 2), (2, 3), (3, 4)]
    assert _image_chunks([3, 0, 5], 0) == [(0, 1), (1, 2), (2, 3)]  # one image per call
    assert _image_chunks([7, 1, 1], 5) == [(0, 1), (1, 3)]  # too many for one call: alone
    assert _image_chunks([0, 0], 10) == [(0, 2)]


def test_postprocess_rejects_bad_thresholds():
    loc, conf, priors = torch.zeros(1, 4, 4), torch.zeros(1, 4, 3), QUARTER_PRIORS
    with pytest.raises(ValueError, match="score_threshold must be in"):
        postprocess(loc, conf, priors, score_threshold=-0.1)
    with pytest.raises(ValueError, match=r"top_k and candidates_per_class must be >= 0"):
        postprocess(loc, conf, priors, top_k=-1)


QUARTER_PRIORS = torch.tensor(
    [[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]
)


def test_postprocess_keeps_float32_precision_when_many_images_share_an_nms_call(monkeypatch):
    """One NMS call takes many (image, class) groups, each shifted far from [0, 1]; the overlaps
    must still be decided as precisely as between unshifted boxes. Pairs of boxes overlap by
    0.45 ± 1e-5: above the threshold the second box goes, below it stays."""
    monkeypatch.setitem(sys.modules["ssdlib.nms"].NMS_CALL_MAX_BOXES, "cpu", 5000)
    shift = [0.1 * (1 - t) / (1 + t) for t in (0.45 + 1e-5, 0.45 - 1e-5)]  # same-size boxes
    priors = torch.tensor(  # cxcywh: two pairs, side 0.1, the second box of each pair shifted
        [
            [0.2, 0.2, 0.1, 0.1],
            [0.2 + shift[0], 0.2, 0.1, 0.1],
            [0.6, 0.6, 0.1, 0.1],
            [0.6 + shift[1], 0.6, 0.1, 0.1],
        ]
    )
    b, k = 24, 21
    conf = torch.full((b, 4, k), -10.0)
    conf[:, :, k - 1] = torch.tensor([5.0, 4.0, 5.0, 4.0])  # the last class: most shift
    loc = torch.zeros(b, 4, 4)
    fast = postprocess(loc, conf, priors)
    _assert_same_detections(fast, postprocess_reference(loc, conf, priors))
    assert all(len(det["scores"]) == 3 for det in fast)  # boxes 0, 2 and 3


def test_non_finite_outputs_are_refused_not_turned_into_detections():
    priors = default_boxes(SSD300_COCO)[:10]
    loc, conf = torch.zeros(2, 10, 4), torch.zeros(2, 10, 3)
    loc[1, 4, 2] = float("nan")
    with pytest.raises(ValueError, match="image 1: loc_pred holds nan or inf"):
        postprocess(loc, conf, priors)
    conf[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="image 0: conf_pred holds nan or inf"):
        postprocess(torch.zeros(2, 10, 4), conf, priors)
