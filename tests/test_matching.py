"""Matching: hand-sized cases, torchvision's SSDMatcher, and the batched assign_targets."""

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import SSDMatcher

from ssdlib.boxes import cxcywh_to_xyxy, encode
from ssdlib.matching import assign_targets, match
from ssdlib.priors import SSD300_VOC, default_boxes

# Four default boxes (cxcywh): the quarters of the image.
QUARTERS = torch.tensor(
    [[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]
)


def random_gt(n, generator=None):
    xy = torch.rand(n, 2, generator=generator) * 0.7
    wh = torch.rand(n, 2, generator=generator) * 0.3 + 0.02
    return torch.cat([xy, xy + wh], dim=1)


def test_iou_exactly_at_the_threshold_is_a_positive():
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.25]])  # half of the top-left quarter: IoU = 0.5
    assert match(gt, QUARTERS).tolist() == [0, -1, -1, -1]
    assert match(gt, QUARTERS, iou_threshold=0.51).tolist() == [0, -1, -1, -1]  # forced


def test_a_small_object_is_forced_onto_its_best_box():
    gt = torch.tensor([[0.6, 0.6, 0.7, 0.7]])  # IoU 0.04 with the bottom-right quarter
    assert match(gt, QUARTERS).tolist() == [-1, -1, -1, 0]


def test_two_objects_sharing_a_best_box_the_later_wins():
    gt = torch.tensor([[0.0, 0.0, 0.1, 0.1], [0.05, 0.05, 0.15, 0.15]])
    assert match(gt, QUARTERS).tolist() == [1, -1, -1, -1]


def test_threshold_rule_takes_the_best_object():
    priors = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.3, 0.5, 0.6, 1.0], [0.7, 0.5, 0.6, 1.0]])
    gt = torch.tensor([[0.0, 0.0, 0.6, 1.0], [0.35, 0.0, 1.0, 1.0]])
    # prior 0 overlaps object 0 by 0.6 and object 1 by 0.65: it takes object 1; each object's
    # best box is its own (1 and 2)
    assert match(gt, priors).tolist() == [1, 0, 1]


def test_image_without_objects_is_all_background():
    assert match(torch.zeros(0, 4), QUARTERS).tolist() == [-1, -1, -1, -1]


def _same_up_to_ties(ours, theirs, iou):
    """Equal, except where a forced match chose another box with exactly the same IoU."""
    differ = (ours != theirs).nonzero().flatten()
    for p in differ.tolist():
        for g in {int(ours[p]), int(theirs[p])} - {-1}:
            best = iou[g].max()
            ours_best = (ours == g) & (iou[g] == best)
            theirs_best = (theirs == g) & (iou[g] == best)
            assert ours_best.any() and theirs_best.any(), f"prior {p}, object {g}: not a tie"
    return True


def test_match_equals_torchvision_ssd_matcher(device):
    priors = default_boxes(SSD300_VOC, device=device)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        gt = random_gt(int(torch.randint(1, 12, (1,), generator=generator)), generator).to(device)
        iou = torchvision.ops.box_iou(gt, cxcywh_to_xyxy(priors))
        theirs = SSDMatcher(0.5)(iou)
        ours = match(gt, priors)
        assert _same_up_to_ties(ours.cpu(), theirs.cpu(), iou.cpu())


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 15))
def test_every_object_gets_a_positive(seed, n):
    gt = random_gt(n, torch.Generator().manual_seed(seed))
    matched = match(gt, default_boxes(SSD300_VOC))
    assert set(matched[matched >= 0].tolist()) == set(range(n)) or _objects_share_best_box(gt)


def _objects_share_best_box(gt):
    iou = torchvision.ops.box_iou(gt, cxcywh_to_xyxy(default_boxes(SSD300_VOC)))
    best = iou.argmax(dim=1)
    return len(set(best.tolist())) < len(best)


def test_assign_targets_equals_one_image_at_a_time(device):
    priors = default_boxes(SSD300_VOC, device=device)
    gts = [random_gt(n).to(device) for n in (3, 0, 7, 1)]
    labels = [torch.randint(1, 21, (len(g),), device=device) for g in gts]
    loc_t, lab_t = assign_targets(gts, labels, priors)
    assert loc_t.shape == (4, 8732, 4) and lab_t.shape == (4, 8732)
    for i, (g, lab) in enumerate(zip(gts, labels, strict=True)):
        matched = match(g, priors)
        pos = matched >= 0
        expected_labels = torch.zeros_like(matched)
        expected_labels[pos] = lab[matched[pos]]
        assert torch.equal(lab_t[i], expected_labels)
        torch.testing.assert_close(loc_t[i][pos], encode(g[matched[pos]], priors[pos]))
        assert (loc_t[i][~pos] == 0).all()
    assert (lab_t[1] == 0).all()  # the image without objects


def test_assign_targets_for_a_batch_without_any_object(device):
    """No object anywhere: all background, zero offsets, and a loss without positives."""
    from ssdlib.loss import MultiBoxLoss

    priors = default_boxes(SSD300_VOC, device=device)
    empty = [torch.zeros(0, 4, device=device)] * 3
    loc_t, lab_t = assign_targets(
        empty, [torch.zeros(0, dtype=torch.long, device=device)] * 3, priors
    )
    assert loc_t.shape == (3, 8732, 4) and not loc_t.any() and not lab_t.any()
    loc_loss, conf_loss = MultiBoxLoss()(
        torch.randn(3, 8732, 4, device=device),
        torch.randn(3, 8732, 21, device=device),
        loc_t,
        lab_t,
    )
    assert loc_loss == 0 and conf_loss == 0  # no positives, so no mined negatives either


def test_assign_targets_details():
    gt = [torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 0.7, 0.7]])]
    _, labels, d = assign_targets(gt, [torch.tensor([3, 5])], QUARTERS, return_details=True)
    assert labels.tolist() == [[3, 0, 0, 5]]
    assert d.iou.shape == (1, 2, 4)
    assert d.above_threshold.tolist() == [[True, False, False, False]]
    assert d.forced.tolist() == [[False, False, False, True]]
    assert d.best_prior.tolist() == [[0, 3]]


def test_assign_targets_rejects_bad_input():
    priors = QUARTERS
    with pytest.raises(ValueError, match=r"image 1: box 0 = \[0.5, 0.5, 0.4, 0.9\] is degenerate"):
        assign_targets(
            [torch.rand(0, 4), torch.tensor([[0.5, 0.5, 0.4, 0.9]])],
            [torch.zeros(0, dtype=torch.long), torch.tensor([1])],
            priors,
        )
    with pytest.raises(ValueError, match=r"labels must be >= 1 \(0 is background\)"):
        assign_targets([torch.tensor([[0.1, 0.1, 0.2, 0.2]])], [torch.tensor([0])], priors)
    with pytest.raises(ValueError, match="2 boxes but labels of shape"):
        assign_targets([random_gt(2)], [torch.tensor([1])], priors)
    with pytest.raises(ValueError, match=r"priors of shape \(P, 4\)"):
        match(random_gt(2), torch.zeros(4, 3))


def test_pixel_boxes_are_refused_with_a_hint():
    """Boxes in pixels where normalised ones belong used to train silently on huge targets."""
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    pixels = [torch.tensor([[20.0, 30.0, 120.0, 150.0]])]
    with pytest.raises(ValueError, match=r"image 0: box 0 .* must be normalised"):
        assign_targets(pixels, [torch.tensor([1])], priors)
    slightly_out = [torch.tensor([[-0.05, 0.1, 1.02, 0.9]])]  # unclipped annotation: fine
    assign_targets(slightly_out, [torch.tensor([1])], priors)
