"""What a detector costs to run: its time per batch and its multiply-adds (SSD §3.7, Table 7).

§3.7 times the network and the NMS apart: the NMS "costs about 1.7 msec per image for SSD300
and 20 VOC classes, which is close to the total time (2.4 msec) spent on all newly added
layers", so both are measured.
:func:`measure_inference` gives the median times per batch size on one device; a timing
depends on the machine, so :func:`count_macs` adds the count every machine agrees on, the
multiply-adds of every convolution.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import fast
from .nms import NMS_IOU_THRESHOLD, SCORE_THRESHOLD, TOP_K

# -- Time: network and NMS per batch -----------------------------------------------------------

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
INFERENCE_WARMUP = 3  # untimed calls first: memory allocation, cuDNN's kernel choice
INFERENCE_REPEATS = 10  # timed calls per batch size; the median ignores a few slow ones


@dataclass
class InferenceTiming:
    """Median times of one batch, on one device, at one precision."""

    batch_size: int
    device: str
    precision: str  # "fp32", "bf16" or "fp16" (autocast around the network)
    network_ms: float  # the forward pass: images (B, 3, S, S) -> loc, conf
    postprocess_ms: float  # decode + per-class NMS + top-k (ssdlib.fast.postprocess)
    total_ms: float  # median over the calls of network + postprocess (each call timed as a
    # whole): model.detect's cost per batch, less its resizing

    @property
    def images_per_s(self) -> float:
        return self.batch_size / (self.total_ms / 1000)

    @property
    def ms_per_image(self) -> float:
        return self.total_ms / self.batch_size

    def __repr__(self) -> str:
        return (
            f"InferenceTiming(batch {self.batch_size}, {self.device}, {self.precision}: "
            f"{self.total_ms:.1f} ms per batch = network {self.network_ms:.1f} + "
            f"postprocess {self.postprocess_ms:.1f}; {self.images_per_s:.1f} images/s)"
        )


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that the clock measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type != "cpu":  # mps, xpu ...
        torch.accelerator.synchronize(device)


def _timing_batch(
    images: Tensor | None, batch_size: int, size: int, device: torch.device, seed: int
) -> Tensor:
    if images is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(batch_size, 3, size, size, generator=generator).to(device)
    index = torch.arange(batch_size) % len(images)  # cycle through the given images
    return images[index].to(device)


def measure_inference(
    model: Any,
    batch_sizes: Sequence[int] = (1, 32),
    device: torch.device | str | None = None,
    images: Tensor | None = None,
    precision: str = "fp32",
    repeats: int = INFERENCE_REPEATS,
    warmup: int = INFERENCE_WARMUP,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU_THRESHOLD,
    top_k: int = TOP_K,
    seed: int = 0,
) -> list[InferenceTiming]:
    """Time the network and the post-processing per batch size (SSD §3.7, Table 7).

    Each call runs the forward pass (in inference mode, under autocast for bf16/fp16), waits
    for the device, runs :func:`ssdlib.fast.postprocess` with the paper's settings and waits
    again; the median of ``repeats`` calls is reported, after ``warmup`` untimed ones. Images
    are already ``S × S`` on the device: resizing and copying are not timed. The NMS time
    depends on how many boxes pass ``score_threshold``, so real images (``images``) give a
    truer number than the default random ones.

    Args:
        model: an :class:`ssdlib.model.SSD`. Its train/eval mode is restored afterwards.
        batch_sizes: images per call, e.g. ``(1, 32)``: latency and throughput.
        device: where to run; moves the model there (None: where the model is).
        images: optional ``(M, 3, S, S)`` in [0, 1]; batches cycle through them.
        precision: "fp32", "bf16" or "fp16" (fp16 needs CUDA).
        repeats, warmup: timed and untimed calls per batch size.
        score_threshold, iou_threshold, top_k: the post-processing's (paper: 0.01, 0.45, 200).
        seed: of the random images.

    Returns:
        One :class:`InferenceTiming` per batch size, in the given order.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if len(batch_sizes) == 0 or any(int(b) != b or b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if device is not None:
        model.to(device)
    device = model.priors.device
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs CUDA, the model is on {device}; try 'bf16'")
    size = model.cfg.image_size
    if images is not None and (
        images.dim() != 4 or images.shape[1:] != (3, size, size) or len(images) == 0
    ):
        raise ValueError(
            f"images must be (M, 3, {size}, {size}) for {model.cfg.name}, got "
            f"{tuple(images.shape)}; resize them with eval_transform({size})"
        )
    dtype = PRECISIONS[precision]
    channels_last = next(model.parameters()).is_contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    timings = []
    try:
        for batch_size in batch_sizes:
            batch = _timing_batch(images, int(batch_size), size, device, seed)
            if channels_last:  # as the model's weights: no layout change inside the convs
                batch = batch.contiguous(memory_format=torch.channels_last)
            samples: list[tuple[float, float]] = []
            for call in range(warmup + repeats):
                with torch.inference_mode():
                    _synchronize(device)
                    start = time.perf_counter()
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        loc, conf = model(batch)  # (B, P, 4), (B, P, K)
                    _synchronize(device)
                    middle = time.perf_counter()
                    fast.postprocess(loc, conf, model.priors, score_threshold, iou_threshold, top_k)
                    _synchronize(device)
                    end = time.perf_counter()
                if call >= warmup:
                    samples.append((middle - start, end - middle))
            timings.append(
                InferenceTiming(
                    batch_size=int(batch_size),
                    device=str(device),
                    precision=precision,
                    network_ms=1000 * statistics.median(s[0] for s in samples),
                    postprocess_ms=1000 * statistics.median(s[1] for s in samples),
                    total_ms=1000 * statistics.median(s[0] + s[1] for s in samples),
                )
            )
    finally:
        model.train(was_training)
    return timings


# -- Multiply-adds: the same on every machine --------------------------------------------------


def count_macs(model: torch.nn.Module, image_size: int) -> dict[str, int]:
    """Multiply-adds of every convolution for one ``image_size`` × ``image_size`` image, counted
    with forward hooks during one pass: ``{"total": …, "head": …}`` (``head``: the modules under
    ``model.head``, the predictors whose size grows with the default boxes per cell).

    A convolution producing ``C_out × H × W`` from ``C_in / groups`` channels with a ``k × k``
    kernel costs ``C_out · H · W · (C_in / groups) · k²``. Unlike a timing, the count is the same
    on every machine.
    """
    counts: dict[str, int] = {"total": 0, "head": 0}
    head = getattr(model, "head", None)
    in_head = {id(m) for m in head.modules()} if isinstance(head, torch.nn.Module) else set()

    def hook(module: torch.nn.Conv2d, inputs: Any, output: Tensor) -> None:
        kh, kw = module.kernel_size
        macs = output[0].numel() * (module.in_channels // module.groups) * kh * kw
        counts["total"] += macs
        if id(module) in in_head:
            counts["head"] += macs

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return counts
