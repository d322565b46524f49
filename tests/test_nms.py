"""NMS and postprocess against torchvision.ops.nms, torchvision's SSD.postprocess_detections and
plain loops over images and classes. Every postprocess test runs the readable function and its
fast twin (ssdlib.fast.postprocess); tests/test_fast.py covers what only the fast path has."""

import pytest
import torch
import torchvision
from torchvision.models.detection import ssd300_vgg16

from ssdlib import fast
from ssdlib.boxes import clip_boxes, cxcywh_to_xyxy, decode
from ssdlib.nms import jittered_detections, nms, nms_steps, postprocess
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


POSTPROCESS = [
    pytest.param(postprocess, id="readable"),
    pytest.param(fast.postprocess, id="fast"),
]


@pytest.mark.parametrize("postprocess", POSTPROCESS)
@pytest.mark.parametrize("peaked", [False, True])
def test_postprocess_equals_torchvision(postprocess, peaked, device):
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


@pytest.mark.parametrize("postprocess", POSTPROCESS)
def test_postprocess_equals_reference_loops(postprocess):
    priors = default_boxes(SSD300_COCO)
    loc, conf = raw_outputs(2, priors.shape[0], 6, "cpu", seed=3)
    assert_same_detections(postprocess(loc, conf, priors), reference_loops(loc, conf, priors))


@pytest.mark.parametrize("postprocess", POSTPROCESS)
def test_postprocess_limits_and_thresholds(postprocess):
    priors = default_boxes(SSD300_COCO)
    loc, conf = raw_outputs(2, priors.shape[0], 21, "cpu")
    out = postprocess(loc, conf, priors, top_k=50, score_threshold=0.2)
    for det in out:
        assert len(det["boxes"]) == 50
        assert (det["scores"] > 0.2).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        assert det["boxes"].min() >= 0 and det["boxes"].max() <= 1
        assert det["labels"].min() >= 1


@pytest.mark.parametrize("postprocess", POSTPROCESS)
def test_postprocess_with_nothing_above_threshold(postprocess):
    priors = default_boxes(SSD300_COCO)
    loc, conf = raw_outputs(2, priors.shape[0], 21, "cpu")
    out = postprocess(loc, conf, priors, score_threshold=1.0)
    assert [len(d["boxes"]) for d in out] == [0, 0]
    assert out[0]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("postprocess", POSTPROCESS)
def test_postprocess_rejects_misaligned_priors(postprocess):
    with pytest.raises(ValueError, match=r"priors of shape \(10, 4\)"):
        postprocess(torch.zeros(1, 10, 4), torch.zeros(1, 10, 3), torch.zeros(9, 4))


def assert_same_detections(fast, ref):
    for i, (f, r) in enumerate(zip(fast, ref, strict=True)):
        assert torch.equal(f["labels"], r["labels"]), f"image {i}"
        torch.testing.assert_close(f["scores"], r["scores"], rtol=0, atol=0)
        torch.testing.assert_close(f["boxes"], r["boxes"])


@pytest.mark.parametrize("postprocess", POSTPROCESS)
def test_postprocess_breaks_score_ties_like_the_reference(postprocess):
    """Integer logits: thousands of exactly equal scores, within and across classes."""
    priors = default_boxes(SSD300_COCO)
    g = torch.Generator().manual_seed(5)
    loc = torch.randn(2, priors.shape[0], 4, generator=g) * 0.5
    conf = torch.randint(0, 4, (2, priors.shape[0], 4), generator=g).float()
    conf[..., 0] += 2
    for top_k in (10, 200):
        ours = postprocess(loc, conf, priors, top_k=top_k, candidates_per_class=50)
        ref = reference_loops(loc, conf, priors, top_k=top_k, candidates_per_class=50)
        assert_same_detections(ours, ref)


@pytest.mark.parametrize("postprocess", POSTPROCESS)
def test_postprocess_rejects_bad_thresholds(postprocess):
    loc, conf, priors = torch.zeros(1, 4, 4), torch.zeros(1, 4, 3), QUARTER_PRIORS
    with pytest.raises(ValueError, match="score_threshold must be in"):
        postprocess(loc, conf, priors, score_threshold=-0.1)
    with pytest.raises(ValueError, match=r"top_k and candidates_per_class must be >= 0"):
        postprocess(loc, conf, priors, top_k=-1)


QUARTER_PRIORS = torch.tensor(
    [[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]
)


@pytest.mark.parametrize("postprocess", POSTPROCESS)
def test_non_finite_outputs_are_refused_not_turned_into_detections(postprocess):
    priors = default_boxes(SSD300_COCO)[:10]
    loc, conf = torch.zeros(2, 10, 4), torch.zeros(2, 10, 3)
    loc[1, 4, 2] = float("nan")
    with pytest.raises(ValueError, match="image 1: loc_pred holds nan or inf"):
        postprocess(loc, conf, priors)
    conf[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="image 0: conf_pred holds nan or inf"):
        postprocess(torch.zeros(2, 10, 4), conf, priors)


def reference_loops(
    loc_pred,
    conf_pred,
    priors,
    score_threshold=0.01,
    iou_threshold=0.45,
    top_k=200,
    candidates_per_class=400,
    variances=(0.1, 0.2),
):
    """postprocess as plain loops over images and classes, with the readable ``nms``: the
    oracle for both postprocess functions. Normalised boxes only."""
    detections = []
    for loc, conf in zip(loc_pred.float(), conf_pred.float(), strict=True):
        scores = torch.softmax(conf, dim=-1)  # (P, K)
        boxes = clip_boxes(decode(loc, priors.float(), variances))  # (P, 4)
        all_boxes, all_scores, all_labels = [], [], []
        for c in range(1, conf.shape[-1]):
            s = scores[:, c]
            s, idx = s.sort(descending=True, stable=True)  # ties: the lower box first
            s, idx = s[:candidates_per_class], idx[:candidates_per_class]
            above = s > score_threshold
            s, idx = s[above], idx[above]
            kept = nms(boxes[idx], s, iou_threshold)
            all_boxes.append(boxes[idx][kept])
            all_scores.append(s[kept])
            all_labels.append(torch.full((len(kept),), c, dtype=torch.long))
        s = torch.cat(all_scores)
        order = s.argsort(descending=True, stable=True)[:top_k]
        detections.append(
            {
                "boxes": torch.cat(all_boxes)[order],
                "scores": s[order],
                "labels": torch.cat(all_labels)[order],
            }
        )
    return detections


# -- candidates for the lesson --------------------------------------------------------------------


def test_jittered_detections_are_seeded_clipped_and_scored_by_fit():
    gt = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.6, 0.5, 0.95, 0.9]])
    boxes, scores, labels = jittered_detections(gt, torch.tensor([3, 5]), 6, num_decoys=2)
    assert boxes.shape == (14, 4) and scores.shape == (14,) and labels.shape == (14,)
    assert labels[:12].tolist() == [3] * 6 + [5] * 6
    assert set(labels[12:].tolist()) <= {3, 5}
    assert boxes.min() >= 0 and boxes.max() <= 1
    assert ((scores > 0) & (scores < 1)).all()
    fit = torchvision.ops.box_iou(boxes[:6], gt[:1])[:, 0]
    assert (scores[:6] <= fit + 1e-6).all()  # score = IoU × a factor in [0.6, 1)
    again = jittered_detections(gt, torch.tensor([3, 5]), 6, num_decoys=2)
    assert all(torch.equal(a, b) for a, b in zip((boxes, scores, labels), again, strict=True))
    with pytest.raises(ValueError, match="at least one"):
        jittered_detections(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels of shape \(1,\)"):
        jittered_detections(gt, torch.tensor([1]))
