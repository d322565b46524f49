"""collate and make_loader: shapes, seeding (also across workers), distributed splits."""

import _socket
import itertools
import socket

import numpy as np
import pytest
import torch

from ssdlib.data import ShapesDataset, collate, make_loader, train_transform


class NumpyNoise(torch.utils.data.Dataset):
    """Returns draws from the global NumPy and torch RNGs, to see how workers are seeded."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        target = {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "numpy": float(np.random.random()),  # noqa: NPY002 - the global RNG is the point
            "torch": float(torch.rand(1)),
            "worker": torch.utils.data.get_worker_info().id,
        }
        return torch.full((3, 2, 2), float(index)), target


@pytest.fixture
def unix_sockets(monkeypatch):
    """Let DataLoader workers hand tensors over local (AF_UNIX) sockets; the network stays shut.

    conftest's guard treats a socket path like a host name and refuses it.
    """
    guarded = socket.socket.connect

    def connect(self, address):
        if self.family == socket.AF_UNIX:
            return _socket.socket.connect(self, address)
        return guarded(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def flat(batches: list[list[int]]) -> list[int]:
    return list(itertools.chain.from_iterable(batches))


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


def ids(loader) -> list[list[int]]:
    return [[t["image_id"] for t in targets] for _, targets in loader]


def test_same_seed_same_order_and_other_seed_another():
    ds = ShapesDataset(12, image_size=32)
    first = ids(make_loader(ds, batch_size=4, seed=3))
    assert first == ids(make_loader(ds, batch_size=4, seed=3))
    assert first != ids(make_loader(ds, batch_size=4, seed=4))
    assert sorted(flat(first)) == list(range(12))
    assert ids(make_loader(ds, batch_size=5, shuffle=False)) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9],
                                                                 [10, 11]]  # fmt: skip
    assert len(make_loader(ds, batch_size=5, drop_last=True)) == 2


def test_workers_repeat_augmentation_and_draw_distinct_numpy_seeds(unix_sockets):
    ds = ShapesDataset(8, image_size=48, seed=2, transforms=train_transform(48))
    runs = []
    for _ in range(2):
        loader = make_loader(ds, batch_size=2, num_workers=2, seed=5)
        assert loader.persistent_workers
        runs.append(list(loader))
    for (img_a, t_a), (img_b, t_b) in zip(*runs, strict=True):
        assert torch.equal(img_a, img_b)  # augmentations repeat with the seed
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(t_a, t_b, strict=True))
    noise = [t for _, targets in make_loader(NumpyNoise(), 1, num_workers=2) for t in targets]
    by_worker = {w: [t["numpy"] for t in noise if t["worker"] == w] for w in (0, 1)}
    assert by_worker[0][0] != by_worker[1][0]  # workers do not share a NumPy stream
    again = [t for _, targets in make_loader(NumpyNoise(), 1, num_workers=2) for t in targets]
    assert [t["numpy"] for t in noise] == [t["numpy"] for t in again]
    assert [t["torch"] for t in noise] == [t["torch"] for t in again]


def test_distributed_ranks_split_the_dataset():
    ds = ShapesDataset(10, image_size=32)
    parts = [
        flat(ids(make_loader(ds, 2, distributed=True, num_replicas=2, rank=r, seed=1)))
        for r in (0, 1)
    ]
    assert len(parts[0]) == len(parts[1]) == 5
    assert sorted(parts[0] + parts[1]) == list(range(10))
    loader = make_loader(ds, 2, distributed=True, num_replicas=2, rank=0, seed=1)
    loader.sampler.set_epoch(1)
    assert flat(ids(loader)) != parts[0]  # a new epoch, a new shuffle


def test_bad_arguments():
    ds = ShapesDataset(2, image_size=32)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0)
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(ds, 1, num_workers=-1)
