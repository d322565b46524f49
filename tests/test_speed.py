"""What a detector costs: inference timing (network and NMS, per batch size) and the
multiply-adds of its convolutions (ssdlib.speed)."""

import dataclasses

import pytest
import torch

from ssdlib.model import build_ssd
from ssdlib.priors import config_from_scales
from ssdlib.speed import count_macs, measure_inference

# -- inference time ---------------------------------------------------------------------------

SMALL = config_from_scales(0.2, 0.9, ((2,),) * 4, (8, 4, 2, 1), 64, name="SMALL")


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_ssd(SMALL, 3, width=0.125, batch_norm=True)


def test_measure_inference(device):
    model = small_model().to(device).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    timings = measure_inference(model, (1, 3), device, repeats=2, warmup=1)
    assert [t.batch_size for t in timings] == [1, 3]
    for t in timings:
        assert t.device == str(device) and t.precision == "fp32"
        assert t.network_ms > 0 and t.postprocess_ms > 0 and t.total_ms > 0
        assert t.images_per_s == pytest.approx(t.batch_size * 1000 / t.total_ms)
        assert t.ms_per_image == pytest.approx(t.total_ms / t.batch_size)
        assert "images/s" in repr(t)
    assert model.training  # the mode is restored
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch-norm stats untouched
    images = torch.rand(2, 3, 64, 64)
    (t,) = measure_inference(model, (5,), images=images, repeats=1, warmup=0, precision="bf16")
    assert t.batch_size == 5 and t.precision == "bf16"


def test_measure_inference_rejects_bad_input():
    model = small_model()
    with pytest.raises(ValueError, match="precision must be one of"):
        measure_inference(model, precision="int8")
    with pytest.raises(ValueError, match="fp16' needs CUDA"):
        measure_inference(model, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="positive integers"):
        measure_inference(model, (0, 4))
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_inference(model, (1,), repeats=0)
    with pytest.raises(ValueError, match=r"images must be \(M, 3, 64, 64\) for SMALL"):
        measure_inference(model, (1,), images=torch.rand(2, 3, 32, 32))


# -- multiply-adds -----------------------------------------------------------------------------

# three maps (8, 4, 2 cells) on a 64-pixel input
THREE_MAPS = config_from_scales(0.2, 0.9, ((2,), (2, 3), (2,)), (8, 4, 2), 64, name="small")


def test_count_macs_hand_sized():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 2, 1))
    # 4·8·8 outputs × 3·3·3 + 2·8·8 outputs × 4·1·1
    assert count_macs(net, 8) == {"total": 4 * 64 * 27 + 2 * 64 * 4, "head": 0}
    model = build_ssd(THREE_MAPS, 3, width=0.125).train()
    squares = build_ssd(dataclasses.replace(THREE_MAPS, aspect_ratios=((), (), ())), 3, width=0.125)
    full, fewer = count_macs(model, 64), count_macs(squares, 64)
    assert model.training  # the mode is restored
    assert full["total"] - fewer["total"] == full["head"] - fewer["head"] > 0  # heads differ only
    # the heads by hand: 3×3 convs with (4 + 3)·A outputs per cell on 8×8, 4×4 and 2×2 maps
    channels = [model.backbone.out_channels[s] for s in model.sources]
    by_hand = sum(
        f * f * 7 * a * c * 9
        for f, a, c in zip(
            THREE_MAPS.feature_maps, THREE_MAPS.boxes_per_cell, channels, strict=True
        )
    )
    assert full["head"] == by_hand
