"""Data-parallel training: one process per device under ``torchrun`` (DistributedDataParallel),
and the random generators a checkpoint saves so that a resumed run draws what it would have.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .utils import default_device


@dataclass
class Dist:
    """This process's place in the run: its rank among ``world_size`` processes, its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # whether train() started the process group (and ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device | str | None) -> Dist:
    """One process per device under ``torchrun`` (it sets RANK, WORLD_SIZE, LOCAL_RANK), or an
    already initialised process group; else a single process."""
    if not dist.is_available() or (
        not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) <= 1
    ):
        return Dist(device=torch.device(device) if device is not None else default_device())
    owns = False
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                f"device {str(device)!r} under torchrun would put every process on one GPU: "
                "give device='cuda' (each process takes the GPU of its LOCAL_RANK)"
            )
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = device if device.index is not None else torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), device, owns)


def all_reduce_sum(t: Tensor, d: Dist) -> Tensor:
    """``t`` summed over the processes, in place (``t`` itself in a single process)."""
    if d.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(value: float, d: Dist) -> float:
    """The largest ``value`` of all processes (``value`` itself in a single process)."""
    if d.world_size > 1:
        t = torch.tensor(value, dtype=torch.float64, device=d.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        value = float(t)
    return value


# -- the random generators, for exact resume ------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every RNG's state, as types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
