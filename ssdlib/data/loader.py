"""Batches: stacking samples and a seeded, worker-safe DataLoader.

Images of one batch share a size (the transforms resize them), so they stack into ``(B, 3, H,
W)``; the number of objects differs per image, so targets stay a list of dicts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

RANK_SEED_STRIDE = 1_000_003  # a prime: rank r's workers start from seed + r * stride, so ranks
# augment differently yet repeatably


def collate(batch: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, list[dict]]:
    """Stack a list of ``(image (3, H, W), target)`` into ``(images (B, 3, H, W), targets)``.

    Raises ``ValueError`` naming the sizes when the images differ in size (resize them first,
    e.g. with :func:`~ssdlib.data.eval_transform`) or the batch is empty.
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    images, targets = zip(*batch, strict=True)
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) > 1:
        raise ValueError(
            f"images in a batch must share a size, got {sorted(sizes)}; resize them with a "
            "transform such as ssdlib.data.eval_transform(300)"
        )
    return torch.stack(images), list(targets)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed NumPy and ``random`` from the seed torch gave this worker.

    The DataLoader seeds each worker's torch RNG with ``base_seed + worker_id``, ``base_seed``
    drawn from the loader's generator; code that uses NumPy or ``random`` gets the same.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - seeds the global RNG that third-party code uses
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    distributed: bool = False,
    pin_memory: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> DataLoader:
    """A DataLoader that gives the same batches, in the same order, every run with ``seed``.

    Args:
        dataset: yields ``(image, target)`` samples in the common format.
        batch_size: images per batch (per process when ``distributed``).
        shuffle: reshuffle each epoch (from a generator seeded with ``seed``).
        num_workers: worker processes; with > 0 they persist between epochs.
        seed: seeds the shuffle and each worker's torch, NumPy and ``random`` RNGs.
        drop_last: drop the last incomplete batch.
        distributed: split the dataset across processes with a ``DistributedSampler``
            (call ``loader.sampler.set_epoch(epoch)`` each epoch so that the shuffle changes).
        pin_memory: page-locked batches, for faster copies to a CUDA device.
        num_replicas, rank: for ``distributed``; default from the initialised process group.

    Returns:
        a ``DataLoader`` yielding ``(images (B, 3, H, W), list of B target dicts)``.

    With ``num_workers=0`` the transforms draw from the main process's torch RNG: seed it
    (``ssdlib.seed_everything``) for repeatable augmentation.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    sampler = None
    if distributed:
        sampler = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
            drop_last=drop_last,
        )  # fmt: skip
        seed += sampler.rank * RANK_SEED_STRIDE
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker,
        persistent_workers=num_workers > 0,
    )
