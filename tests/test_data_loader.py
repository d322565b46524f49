"""collate: samples of one size stacked into a batch, targets kept as a list."""

import pytest
import torch

from ssdlib.data import ShapesDataset, collate


def test_collate_stacks_images_and_keeps_targets_as_a_list():
    ds = ShapesDataset(3, image_size=32, seed=1)
    images, targets = collate([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 3, 32, 32)
    assert [t["image_id"] for t in targets] == [0, 1, 2]
    assert torch.equal(images[1], ds[1][0])


def test_collate_refuses_mixed_sizes_and_empty_batches():
    a = (torch.zeros(3, 10, 10), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)})
    b = (torch.zeros(3, 12, 10), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)})
    with pytest.raises(ValueError, match=r"\(3, 10, 10\), \(3, 12, 10\).*eval_transform"):
        collate([a, b])
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
