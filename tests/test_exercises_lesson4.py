"""Lesson 4's exercises: each solution, on the lesson's inputs (rebuilt small), accepts the right
answer, rejects a wrong one, and its hint does not give the value away."""

from __future__ import annotations

import pytest
import torch

from ssdlib import SSD300_VOC, assign_targets, background_loss, build_ssd, default_boxes
from ssdlib.data import ShapesDataset, eval_transform
from ssdlib.exercises.lesson4 import mine_over_the_batch
from ssdlib.loss import NEG_POS_RATIO, hard_negative_mining
from ssdlib.weights import load_shipped_model
from tests.exercise_checks import assert_exercise

IMAGE = 4  # section 4's image of the batch: the one with the most positives


@pytest.fixture(scope="module")
def batch():
    """Section 1's batch: eight validation images at the shipped model's input size, their
    targets, and the untrained network's -log p0 (section 3's ``bg``); plus the trained
    network's -log p0 on section 4's image."""
    trained = load_shipped_model()
    torch.manual_seed(0)
    untrained = build_ssd(
        trained.cfg, trained.num_classes, width=trained.width, batch_norm=trained.batch_norm
    ).eval()
    size = trained.cfg.image_size
    val = ShapesDataset(8, image_size=300, split="val", transforms=eval_transform(size))
    images = torch.stack([img for img, _ in val])
    gt_boxes = [t["boxes"] / size for _, t in val]
    _, labels = assign_targets(gt_boxes, [t["labels"] for _, t in val], default_boxes(trained.cfg))
    with torch.no_grad():
        bg = background_loss(untrained(images)[1])  # (8, P)
        bg_trained_one = background_loss(trained(images[IMAGE][None])[1])[0]  # (P,)
    return bg, labels, bg_trained_one


def test_smooth_l1_by_hand():
    # 0.5·0.5² + (2 − 0.5) + 0.5·0.1² + (1.5 − 0.5) = 0.125 + 1.5 + 0.005 + 1
    miss = torch.tensor([0.5, -2.0, 0.1, 1.5])
    expected = assert_exercise("04.smooth_l1", 2.63, 3.13, miss)
    assert expected == pytest.approx(2.63)


def test_mined_at_ratios_are_capped_by_the_images_negatives(batch):
    _, labels, bg_trained_one = batch
    positives, negatives = int((labels[IMAGE] > 0).sum()), int((labels[IMAGE] == 0).sum())
    assert 200 * positives > negatives > 5 * positives  # the lesson's image: the cap binds at 200
    right = [5 * positives, negatives]
    wrong = [5 * positives, 200 * positives]  # the cap forgotten
    assert_exercise("04.mined_at_ratios", right, wrong, bg_trained_one, labels[IMAGE], [5, 200])


def test_positive_share_is_positives_over_all_boxes():
    data = ShapesDataset(20, image_size=300, split="val")  # the lesson uses 500
    priors = default_boxes(SSD300_VOC)
    _, labels = assign_targets(
        [t["boxes"] / 300 for _, t in data], [t["labels"] for _, t in data], priors
    )
    mean_positives = float((labels > 0).sum(dim=1).float().mean())
    right = mean_positives / len(priors)
    expected = assert_exercise("04.positive_share", right, mean_positives / 100, labels)
    assert 0 < expected < 0.01


def _mine_batch_by_loop(bg, labels, ratio=NEG_POS_RATIO):
    """The batch-wide rule as a plain loop: sort every negative of the batch, take ratio × N."""
    chosen = labels > 0
    negatives = [(float(bg[b, p]), b, p) for b, p in (labels == 0).nonzero().tolist()]
    negatives.sort(key=lambda n: -n[0])
    for _, b, p in negatives[: int(ratio * int((labels > 0).sum()))]:
        chosen[b, p] = True
    return chosen


def test_mine_batch_is_one_quota_for_the_batch(batch):
    bg, labels, _ = batch
    right = _mine_batch_by_loop(bg, labels)
    assert torch.equal(mine_over_the_batch(bg, labels), right)
    per_image = hard_negative_mining(bg, labels)  # the paper's rule: a different mask
    assert not torch.equal(per_image, right)
    assert_exercise("04.mine_batch", right, per_image, bg, labels)


def test_mined_in_empty_images(batch):
    bg, labels, _ = batch
    empty = ~(labels > 0).any(dim=1)
    assert empty.tolist()[:4] == [True, False, False, True]  # images 0 and 3, as the lesson says
    right = int((_mine_batch_by_loop(bg, labels) & (labels == 0))[empty].sum())
    assert right > 0
    assert_exercise("04.mined_in_empty_images", right, 0, bg, labels)  # 0: the per-image rule
