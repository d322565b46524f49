"""ssdlib.fast against its readable twins: each fast function must give what the function the
lessons teach gives, on random, tie-heavy and edge-case inputs."""

import pytest
import torch

from ssdlib import boxes, fast, loss, matching, nms
from ssdlib.priors import SSD300_COCO, SSD300_VOC, default_boxes
from tests.test_matching import random_gt
from tests.test_nms import assert_same_detections, raw_outputs, reference_loops


def batch_with_ties(generator, counts):
    """Ground truth on a coarse grid (many equal IoUs), with one object repeated (every IoU
    of the two ties) in the crowded images."""
    gts = []
    for n in counts:
        g = (random_gt(n, generator) * 10).round() / 10
        g[:, 2:] = torch.maximum(g[:, 2:], g[:, :2] + 0.1)
        if n > 2:
            g[-1] = g[0]
        gts.append(g)
    return gts


# -- box_iou ------------------------------------------------------------------------------------


def test_box_iou_equals_the_readable_one_bit_for_bit(device):
    g = torch.Generator().manual_seed(0)
    a = random_gt(80, g).to(device)
    b = boxes.cxcywh_to_xyxy(default_boxes(SSD300_COCO, device=device))
    assert torch.equal(fast.box_iou(a, b), boxes.box_iou(a, b))
    batched = a.view(4, 20, 4), b.expand(4, -1, -1)
    assert torch.equal(fast.box_iou(*batched), boxes.box_iou(*batched))


def test_box_iou_edge_cases_equal_the_readable_one():
    edge = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0],
            [0.5, 0.5, 0.5, 0.5],  # zero area
            [0.5, 0.5, 0.5, 0.5],  # the same point
            [0.2, 0.2, 0.1, 0.1],  # x2 < x1
            [1.0, 1.0, 2.0, 2.0],  # touches the first at a corner
            [0.0, 0.0, float("nan"), 1.0],  # nan stays nan
        ]
    )
    ours, readable = fast.box_iou(edge, edge), boxes.box_iou(edge, edge)
    assert torch.equal(ours.isnan(), readable.isnan())
    assert torch.equal(ours.nan_to_num(-1), readable.nan_to_num(-1))
    empty = torch.zeros(0, 4)
    assert fast.box_iou(empty, edge).shape == boxes.box_iou(empty, edge).shape == (0, 6)


def test_box_iou_blocks_of_any_size_give_the_same(monkeypatch):
    g = torch.Generator().manual_seed(1)
    a, b = random_gt(37, g), random_gt(300, g)
    expected = boxes.box_iou(a, b)
    for block in (1, 300, 301, 10**9):
        monkeypatch.setattr(fast, "IOU_BLOCK_ELEMENTS", block)
        assert torch.equal(fast.box_iou(a, b), expected), block


# -- matching and targets -----------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_stacked_matching_equals_the_rules_on_the_padded_batch(threshold, device):
    priors_xyxy = boxes.cxcywh_to_xyxy(default_boxes(SSD300_VOC, device=device))
    generator = torch.Generator().manual_seed(int(threshold * 10))
    counts = [3, 0, 7, 1, 12, 2]
    gts = [g.to(device) for g in batch_with_ties(generator, counts)]
    labels = [torch.ones(n, dtype=torch.long, device=device) for n in counts]

    padded, _, valid = matching.pad_targets(gts, labels)
    iou = boxes.box_iou(padded, priors_xyxy.expand(6, -1, -1))
    reference = matching.match_iou(iou, threshold, valid)

    image = torch.repeat_interleave(torch.arange(6), torch.tensor(counts)).to(device)
    rows, positive = fast.match_stacked(
        fast.box_iou(torch.cat(gts), priors_xyxy), image, 6, threshold
    )
    assert torch.equal(positive, (rows.view(-1) >= 0).nonzero().squeeze(1))
    first = torch.tensor([0, *counts[:-1]], device=device).cumsum(0)  # each image's first row
    stacked = torch.where(rows >= 0, rows - first[:, None], -1)
    assert torch.equal(stacked, reference)
    assert (stacked[1] == -1).all()  # the image without objects


@pytest.mark.parametrize("counts", [[3, 0, 7, 1, 12, 2], [0, 0], [1], [5, 5, 5]])
def test_assign_targets_equals_the_readable_one(counts, device):
    priors = default_boxes(SSD300_VOC, device=device)
    generator = torch.Generator().manual_seed(len(counts))
    gts = [g.to(device) for g in batch_with_ties(generator, counts)]
    labels = [torch.randint(1, 21, (n,), generator=generator).to(device) for n in counts]
    loc_fast, labels_fast = fast.assign_targets(gts, labels, priors)
    loc_readable, labels_readable = matching.assign_targets(gts, labels, priors)
    assert torch.equal(labels_fast, labels_readable)
    # the same elementwise formula, but a CPU's vectorised log may round the last bit apart
    torch.testing.assert_close(loc_fast, loc_readable, rtol=1e-6, atol=1e-6)


def test_assign_targets_refuses_what_the_readable_one_refuses():
    priors = default_boxes(SSD300_VOC)
    pixels = [torch.tensor([[20.0, 30.0, 120.0, 150.0]])]
    for assign in (fast.assign_targets, matching.assign_targets):
        with pytest.raises(ValueError, match=r"image 0: box 0 .* must be normalised"):
            assign(pixels, [torch.tensor([1])], priors)


# -- loss ---------------------------------------------------------------------------------------


def test_background_loss_equals_the_readable_one(device):
    g = torch.Generator().manual_seed(2)
    conf = (torch.randn(11, 500, 21, generator=g) * 4).to(device)  # 11: a partial last chunk
    torch.testing.assert_close(
        fast.background_loss(conf), loss.background_loss(conf), rtol=2e-6, atol=2e-6
    )


def test_background_loss_recovers_logits_that_overflow_exp():
    conf = torch.zeros(2, 3, 4)
    conf[0, 1, 2] = 200.0  # p0 = e^-200: exp(200) is inf in float32
    conf[1, 2, 0] = -150.0
    expected = loss.background_loss(conf)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(fast.background_loss(conf), expected)


def targets_and_outputs(seed, num_classes=21, batch=6, ties=False):
    priors = default_boxes(SSD300_VOC)
    g = torch.Generator().manual_seed(seed)
    counts = [4, 0, 9, 1, 2, 6][:batch]
    gts = batch_with_ties(g, counts)
    labels = [torch.randint(1, num_classes, (n,), generator=g) for n in counts]
    loc_targets, labels = matching.assign_targets(gts, labels, priors)
    loc = torch.randn(batch, len(priors), 4, generator=g)
    conf = torch.randn(batch, len(priors), num_classes, generator=g) * 3
    if ties:
        conf = conf.round()  # many negatives of exactly equal loss
    return loc, conf, loc_targets, labels


@pytest.mark.parametrize("ratio", [0, 1, 3, 2.5, 1000])
def test_fast_mining_chooses_the_readable_negatives(ratio):
    _, conf, _, labels = targets_and_outputs(3)
    ranking = loss.background_loss(conf)
    chosen = loss.hard_negative_mining(ranking, labels, ratio)
    image, box = fast.hardest_negatives(
        ranking.masked_fill(labels > 0, -float("inf")), (labels > 0).sum(1), ratio
    )
    mask = labels > 0
    mask[image, box] = True
    assert torch.equal(mask, chosen)


@pytest.mark.parametrize("ties", [False, True])
def test_fast_loss_and_gradients_equal_the_readable_ones(ties):
    loc, conf, loc_targets, labels = targets_and_outputs(4, ties=ties)
    results = []
    for criterion in (loss.MultiBoxLoss(), fast.MultiBoxLoss()):
        loc_, conf_ = loc.clone().requires_grad_(), conf.clone().requires_grad_()
        loc_loss, conf_loss = criterion(loc_, conf_, loc_targets, labels)
        (loc_loss + conf_loss).backward()
        results.append((loc_loss, conf_loss, loc_.grad, conf_.grad))
    readable, ours = results
    torch.testing.assert_close(ours[0], readable[0])
    torch.testing.assert_close(ours[1], readable[1])  # ties: another equal negative, same loss
    torch.testing.assert_close(ours[2], readable[2])
    if not ties:  # with ties the gradient may sit on another of the equal boxes
        torch.testing.assert_close(ours[3], readable[3])


def test_fast_loss_refuses_what_the_readable_one_refuses():
    loc, conf, loc_targets, labels = targets_and_outputs(5)
    labels[0, 0] = 21
    for criterion in (loss.MultiBoxLoss(), fast.MultiBoxLoss()):
        with pytest.raises(ValueError, match="labels must be classes 0"):
            criterion(loc, conf, loc_targets, labels)


# -- postprocess --------------------------------------------------------------------------------


def cxcywh_offsets_onto(priors, box_cxcywh):
    """Offsets (v = 0.1, 0.2) that decode every default box to the same ``box_cxcywh``."""
    centre = (box_cxcywh[:2] - priors[:, :2]) / (priors[:, 2:] * 0.1)
    size = torch.log(box_cxcywh[2:] / priors[:, 2:]) / 0.2
    return torch.cat([centre, size], dim=1)


@pytest.mark.parametrize("peaked", [False, True])
@pytest.mark.parametrize("num_classes", [2, 8, 21])
def test_fast_postprocess_equals_the_readable_one(peaked, num_classes, device):
    priors = default_boxes(SSD300_COCO, device=device)
    loc, conf = raw_outputs(4, len(priors), num_classes, device, peaked, seed=num_classes)
    sizes = [(300, 400)] * 4
    assert_same_detections(
        fast.postprocess(loc, conf, priors, image_sizes=sizes),
        nms.postprocess(loc, conf, priors, image_sizes=sizes),
    )


def test_fast_postprocess_grows_the_prefix_when_nms_removes_too_much(monkeypatch):
    """Every box regresses onto the same spot: NMS keeps one box per class, far fewer than
    top_k, so the fast path must look past its first candidates (and still equal the loops)."""
    rounds = []
    detect = fast._detect
    monkeypatch.setattr(
        fast, "_detect", lambda *a, **kw: rounds.append(len(a[0])) or detect(*a, **kw)
    )
    monkeypatch.setattr(fast, "PREFIX_GROWTH", 2)
    priors = default_boxes(SSD300_COCO)
    loc, conf = raw_outputs(2, priors.shape[0], 5, "cpu", seed=4)
    loc = cxcywh_offsets_onto(priors, torch.tensor([0.5, 0.5, 0.3, 0.3]))[None].repeat(2, 1, 1)
    ours = fast.postprocess(loc, conf, priors, top_k=20)
    assert len(rounds) > 2, "the prefix never grew: the test does not reach that path"
    assert_same_detections(ours, nms.postprocess(loc, conf, priors, top_k=20))


def test_fast_postprocess_grouping_images_per_nms_call_changes_nothing(monkeypatch):
    """What CUDA does (several images per NMS call), on the CPU."""
    priors = default_boxes(SSD300_COCO)
    loc, conf = raw_outputs(3, priors.shape[0], 6, "cpu", seed=6)
    one_by_one = fast.postprocess(loc, conf, priors)
    monkeypatch.setitem(fast.NMS_CALL_MAX_BOXES, "cpu", 5000)
    assert_same_detections(fast.postprocess(loc, conf, priors), one_by_one)


def test_image_chunks_by_hand():
    assert fast._image_chunks([3, 0, 5, 2], 6) == [(0, 2), (2, 3), (3, 4)]
    assert fast._image_chunks([3, 0, 5], 0) == [(0, 1), (1, 2), (2, 3)]  # one image per call
    assert fast._image_chunks([7, 1, 1], 5) == [(0, 1), (1, 3)]  # too many for one call: alone
    assert fast._image_chunks([0, 0], 10) == [(0, 2)]


@pytest.mark.parametrize("shared_call", [False, True])
def test_postprocess_keeps_float32_precision_when_groups_are_shifted(shared_call, monkeypatch):
    """NMS of many (image, class) groups in one call shifts each far from [0, 1] (both
    batched_nms and the fast path do); the overlaps must still be decided as precisely as
    between unshifted boxes. Pairs of boxes overlap by 0.45 ± 1e-5: above the threshold the
    second box goes, below it stays."""
    if shared_call:
        monkeypatch.setitem(fast.NMS_CALL_MAX_BOXES, "cpu", 5000)
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
    conf[:, :, k - 2] = torch.tensor([4.5, 3.5, 4.5, 3.5])  # another class shifted far
    loc = torch.zeros(b, 4, 4)
    expected = reference_loops(loc, conf, priors)
    for postprocess in (fast.postprocess, nms.postprocess):
        ours = postprocess(loc, conf, priors)
        assert_same_detections(ours, expected)
        assert all(len(det["scores"]) == 6 for det in ours)  # boxes 0, 2 and 3 of both classes
