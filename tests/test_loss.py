"""MultiBoxLoss and hard negative mining against torchvision's SSD.compute_loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import ssd300_vgg16

from ssdlib import fast
from ssdlib.boxes import cxcywh_to_xyxy
from ssdlib.loss import (
    MultiBoxLoss,
    background_loss,
    cumulative_loss_share,
    hard_negative_mining,
    mining_report,
)
from ssdlib.matching import assign_targets, match
from ssdlib.priors import SSD300_COCO, default_boxes

BACKGROUND_LOSS = [
    pytest.param(background_loss, id="readable"),
    pytest.param(fast.background_loss, id="fast"),
]
LOSSES = [pytest.param(MultiBoxLoss, id="readable"), pytest.param(fast.MultiBoxLoss, id="fast")]


def test_mining_by_hand():
    conf_loss = torch.tensor([[0.1, 5.0, 0.3, 4.0, 0.2, 3.0, 9.0, 0.0]])
    labels = torch.tensor([[0, 0, 0, 0, 0, 0, 2, 0]])  # one positive (loss 9.0, box 6)
    chosen = hard_negative_mining(conf_loss, labels, neg_pos_ratio=3)
    # the positive and the three hardest negatives (5.0, 4.0, 3.0)
    assert chosen.tolist() == [[False, True, False, True, False, True, True, False]]


def test_mining_takes_all_negatives_when_there_are_few():
    labels = torch.tensor([[1, 1, 0, 2]])
    chosen = hard_negative_mining(torch.rand(1, 4), labels, neg_pos_ratio=3)
    assert chosen.all()


def test_image_without_objects_mines_nothing():
    chosen = hard_negative_mining(torch.rand(2, 10), torch.zeros(2, 10, dtype=torch.long))
    assert not chosen.any()


def test_mining_is_per_image():
    labels = torch.zeros(2, 10, dtype=torch.long)
    labels[0, 0] = 1
    chosen = hard_negative_mining(torch.rand(2, 10), labels, neg_pos_ratio=2)
    assert chosen.sum(dim=1).tolist() == [3, 0]


def make_batch(device, b=4, generator=None):
    generator = generator or torch.Generator().manual_seed(0)
    gts, labels = [], []
    for n in [3, 0, 5, 1][:b]:
        xy = torch.rand(n, 2, generator=generator) * 0.6
        wh = torch.rand(n, 2, generator=generator) * 0.35 + 0.05
        gts.append(torch.cat([xy, xy + wh], 1).to(device))
        labels.append(torch.randint(1, 91, (n,), generator=generator).to(device))
    return gts, labels


@pytest.mark.parametrize("MultiBoxLoss", LOSSES)
def test_loss_equals_torchvision_compute_loss(MultiBoxLoss, device):
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91)
    priors = default_boxes(SSD300_COCO, device=device)
    anchors = cxcywh_to_xyxy(priors) * 300
    gts, labels = make_batch(device)
    b, p = len(gts), priors.shape[0]
    loc = torch.randn(b, p, 4, device=device)
    conf = torch.randn(b, p, 91, device=device)
    # torchvision's loss on the same matches (its matcher breaks exact ties its own way; see
    # test_matching for the matcher itself).
    matched = [match(g, priors) for g in gts]
    targets = [{"boxes": g * 300, "labels": lab} for g, lab in zip(gts, labels, strict=True)]
    theirs = model.compute_loss(
        targets, {"bbox_regression": loc, "cls_logits": conf}, [anchors] * b, matched
    )
    loc_t, lab_t = assign_targets(gts, labels, priors)
    loc_loss, conf_loss = MultiBoxLoss()(loc, conf, loc_t, lab_t)
    torch.testing.assert_close(loc_loss, theirs["bbox_regression"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conf_loss, theirs["classification"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("MultiBoxLoss", LOSSES)
def test_loss_equals_dense_reference_and_its_gradients(MultiBoxLoss):
    """Equals the obvious dense computation, gradients included."""
    priors = default_boxes(SSD300_COCO)
    gts, labels = make_batch("cpu")
    loc_t, lab_t = assign_targets(gts, labels, priors)
    loc = torch.randn(4, priors.shape[0], 4, requires_grad=True)
    conf = torch.randn(4, priors.shape[0], 91, requires_grad=True)
    loc_loss, conf_loss = MultiBoxLoss()(loc, conf, loc_t, lab_t)
    (loc_loss + conf_loss).backward()
    grads = loc.grad.clone(), conf.grad.clone()
    loc.grad, conf.grad = None, None

    pos = lab_t > 0
    n = pos.sum()
    ref_loc = (F.smooth_l1_loss(loc, loc_t, reduction="none").sum(-1) * pos).sum() / n
    ce = F.cross_entropy(conf.reshape(-1, 91), lab_t.reshape(-1), reduction="none")
    ce = ce.reshape(lab_t.shape)
    ref_conf = (ce * hard_negative_mining(ce.detach(), lab_t)).sum() / n
    (ref_loc + ref_conf).backward()
    torch.testing.assert_close(loc_loss, ref_loc)
    torch.testing.assert_close(conf_loss, ref_conf)
    torch.testing.assert_close(grads[0], loc.grad)
    torch.testing.assert_close(grads[1], conf.grad)


@pytest.mark.parametrize("MultiBoxLoss", LOSSES)
def test_batch_without_objects_gives_zero_localisation_loss(MultiBoxLoss, device):
    priors = default_boxes(SSD300_COCO, device=device)
    empty = [torch.zeros(0, 4, device=device)] * 2
    loc_t, lab_t = assign_targets(
        empty, [torch.zeros(0, dtype=torch.long, device=device)] * 2, priors
    )
    loc = torch.randn(2, priors.shape[0], 4, device=device, requires_grad=True)
    conf = torch.randn(2, priors.shape[0], 91, device=device, requires_grad=True)
    loc_loss, conf_loss = MultiBoxLoss()(loc, conf, loc_t, lab_t)
    assert loc_loss.item() == 0 and conf_loss.item() == 0
    (loc_loss + conf_loss).backward()  # no nan from a division by zero
    assert torch.isfinite(loc.grad).all()


@pytest.mark.parametrize("MultiBoxLoss", LOSSES)
def test_loss_rejects_mismatched_shapes(MultiBoxLoss):
    crit = MultiBoxLoss()
    with pytest.raises(ValueError, match=r"conf_pred of shape \(B, P, K\)"):
        crit(
            torch.zeros(2, 5, 4),
            torch.zeros(2, 6, 3),
            torch.zeros(2, 5, 4),
            torch.zeros(2, 5).long(),
        )
    with pytest.raises(ValueError, match="dtype long"):
        crit(torch.zeros(2, 5, 4), torch.zeros(2, 5, 3), torch.zeros(2, 5, 4), torch.zeros(2, 5))


@pytest.mark.parametrize("background_loss", BACKGROUND_LOSS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_background_loss_equals_the_whole_batch_log_softmax(background_loss, dtype, device):
    """Computed a few images at a time (11 images: a partial last chunk), to float32 rounding."""
    conf = (torch.randn(11, 300, 7) * 4).to(device, dtype)
    expected = -F.log_softmax(conf.float(), dim=-1)[..., 0]
    got = background_loss(conf)
    assert got.dtype == torch.float32 and got.shape == (11, 300)
    torch.testing.assert_close(got, expected, rtol=2e-6, atol=2e-6)
    with pytest.raises(ValueError, match=r"conf_pred of shape \(B, P, K\)"):
        background_loss(conf[0])


@pytest.mark.parametrize("background_loss", BACKGROUND_LOSS)
def test_background_loss_survives_logits_that_overflow_exp(background_loss, device):
    """A class 200 above the background: exp(200) is inf in float32, the loss is still ~200;
    the opposite extreme (background 200 above) underflows to p_0 = 1 and a loss of 0."""
    conf = torch.randn(3, 50, 5, device=device)
    conf[0, 7, 3] = conf[0, 7, 0] + 200
    conf[2, 0, 0] = conf[2, 0, 1:].max() + 200
    conf[1, 4] = torch.tensor([-1e4, 1e4, 0.0, 3.0, -5.0])
    got = background_loss(conf)
    expected = -F.log_softmax(conf, dim=-1)[..., 0]
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=2e-6, atol=2e-6)
    assert got[0, 7] == pytest.approx(200, abs=1e-3) and got[2, 0] == 0
    assert got[1, 4] == pytest.approx(2e4)


@pytest.mark.parametrize("background_loss", BACKGROUND_LOSS)
def test_background_loss_keeps_nan_where_log_softmax_has_it(background_loss, device):
    conf = torch.randn(2, 10, 4, device=device)
    conf[1, 3, 2] = float("nan")
    got = background_loss(conf)
    assert torch.isnan(got[1, 3]) and torch.isfinite(got[:, :3]).all()


@pytest.mark.parametrize("bad", [-1, 8])
@pytest.mark.parametrize("MultiBoxLoss", LOSSES)
def test_labels_outside_the_classes_are_refused(MultiBoxLoss, bad):
    """A label >= K used to fail deep inside cross_entropy; a negative one gave a zero loss."""
    loc, conf = torch.zeros(1, 4, 4), torch.zeros(1, 4, 8)
    labels = torch.tensor([[0, 1, bad, 0]])
    with pytest.raises(ValueError, match=r"labels must be classes 0 \(background\) to 7"):
        MultiBoxLoss()(loc, conf, torch.zeros(1, 4, 4), labels)


# -- reading the mining (lesson 4's figures) ------------------------------------------------------


def test_mining_report_on_a_hand_made_case():
    labels = torch.tensor([1, 0, 0, 0, 0, 0])
    bg = torch.tensor([9.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    chosen = torch.tensor([True, True, True, False, False, False])  # 2 hardest negatives
    r = mining_report(bg, labels, chosen)
    assert (r.positives, r.negatives, r.mined) == (1, 5, 2)
    assert r.mined_share == pytest.approx(7 / 10)
    with pytest.raises(ValueError, match="one shape"):
        mining_report(bg, labels[:3], chosen)


def test_cumulative_loss_share_literal():
    bg = torch.tensor([[9.0, 4.0, 3.0, 2.0, 1.0]])
    labels = torch.tensor([[1, 0, 0, 0, 0]])  # the positive (loss 9) never counts
    ones = torch.ones(1, 5)
    assert cumulative_loss_share(bg, labels, ones).tolist() == pytest.approx([0.4, 0.7, 0.9, 1.0])
    mined = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])  # the two hardest negatives
    assert cumulative_loss_share(bg, labels, mined).tolist() == pytest.approx(
        [4 / 7, 1.0, 1.0, 1.0]
    )
    # Ranked by loss, not by weight: a heavy weight on an easy negative comes last.
    late = torch.tensor([[1.0, 0.0, 0.0, 0.0, 3.0]])
    assert cumulative_loss_share(bg, labels, late).tolist() == pytest.approx([0, 0, 0, 1])
    assert all(math.isnan(v) for v in cumulative_loss_share(bg, labels, 0 * ones).tolist())


def test_cumulative_loss_share_rejects_bad_inputs():
    bg, labels = torch.rand(2, 5), torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="one shape"):
        cumulative_loss_share(bg, labels, torch.ones(5))
    with pytest.raises(ValueError, match=">= 0"):
        cumulative_loss_share(bg, labels, -torch.ones(2, 5))
