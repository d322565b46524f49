"""The data order of a training run, a function of (seed, epoch) alone, and each sample's
augmentation a function of (seed, epoch, index): so a resumed run sees the very batches, and the
very augmented views, that an uninterrupted one would have (exact resume), in one process or
split over several.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


def epoch_order(num_samples: int, seed: int, epoch: int) -> Tensor:
    """``(num_samples,)`` long: the order of the training set in ``epoch``, a function of
    ``(seed, epoch)`` alone, so that a resumed run can skip what it already consumed."""
    generator = torch.Generator().manual_seed(_mix(seed, epoch))
    return torch.randperm(num_samples, generator=generator)


def _mix(*numbers: int) -> int:
    """One 63-bit seed from several integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(2, np.uint64)[0] >> 1)


def epoch_batches(
    num_samples: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
) -> list[list[tuple[int, int]]]:
    """This process's batches of one epoch, from batch ``start`` on.

    Global batch ``b`` is ``epoch_order(...)[b·B : (b+1)·B]``; process ``rank`` takes its
    ``rank``-th contiguous share of ``B / world_size``. The last incomplete batch is dropped
    (every step then has the same batch size). Items are ``(epoch, index)``, so each sample
    can seed its own augmentation.
    """
    order = epoch_order(num_samples, seed, epoch).tolist()
    share = batch_size // world_size
    batches = []
    for b in range(start, num_samples // batch_size):
        mine = order[b * batch_size + rank * share : b * batch_size + (rank + 1) * share]
        batches.append([(epoch, i) for i in mine])
    return batches


class RunBatches:
    """The batch sampler of a whole run: :func:`epoch_batches` of epoch ``epoch`` from batch
    ``start`` on, then of every following epoch, without end.

    One DataLoader iterates it once, so its worker processes live for the whole run instead of
    starting again every epoch; the batches are the same as epoch by epoch.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        epoch: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        per_epoch = num_samples // batch_size
        if not 0 <= start < per_epoch:
            raise ValueError(
                f"batch {start} of an epoch of {per_epoch} batches ({num_samples} images, batch "
                f"{batch_size}) does not exist: was the run started on a larger training set?"
            )
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.epoch, self.start, self.rank, self.world_size = epoch, start, rank, world_size

    def __iter__(self):
        epoch, start = self.epoch, self.start
        while True:
            yield from epoch_batches(
                self.num_samples, self.batch_size, self.seed, epoch, self.rank, self.world_size,
                start,
            )  # fmt: skip
            epoch, start = epoch + 1, 0


class SeededSamples(Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` draws its augmentation from a seed made
    of ``(seed, epoch, index)``: the same in any worker, any process, and after a resume.

    The global RNGs are restored afterwards, so the wrapper leaves no trace on them.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        epoch, index = item
        seed = _mix(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(seed)
                np.random.seed(seed % 2**32)  # noqa: NPY002 - transforms may use the global RNG
                torch.manual_seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002
