"""The SSD network: the paper's shapes and parameter count, torchvision's count, the head's
order against the default boxes, the slim variant training on the CPU, detect(), autocast,
channels_last and torch.compile."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection import ssd300_vgg16

from ssdlib.backbone import L2Norm, plan_extras, scale_channels
from ssdlib.loss import MultiBoxLoss
from ssdlib.matching import assign_targets
from ssdlib.model import SSDHead, build_ssd, flatten_predictions
from ssdlib.nms import postprocess
from ssdlib.priors import (
    SSD300_COCO,
    SSD300_VOC,
    SSD512_VOC,
    PriorConfig,
    config_from_scales,
    default_boxes,
    prior_index,
)

# A CPU-sized configuration: 160-pixel inputs, five maps (20, 10, 5, 3, 1).
SMALL = config_from_scales(0.2, 0.9, [(2,), (2, 3), (2, 3), (2,), (2,)], (20, 10, 5, 3, 1), 160)
SLIM = 0.125  # every channel count / 8 (at least 8): fast enough for many tests on two cores


def slim_model(cfg: PriorConfig = SMALL, num_classes: int = 4, **kwargs):
    return build_ssd(cfg, num_classes, width=SLIM, **kwargs)


# -- shapes and parameters of the paper's networks ----------------------------------------------
def _map_shapes(cfg: PriorConfig) -> tuple[list[tuple[int, ...]], tuple[int, ...], tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = build_ssd(cfg, 21)
        images = torch.empty(2, 3, cfg.image_size, cfg.image_size)
        maps = model.source_maps(images)
        loc, conf = model(images)
    return [tuple(m.shape) for m in maps], tuple(loc.shape), tuple(conf.shape)


def test_ssd300_source_maps():
    maps, loc, conf = _map_shapes(SSD300_VOC)
    assert maps == [
        (2, 512, 38, 38),  # conv4_3
        (2, 1024, 19, 19),  # fc7
        (2, 512, 10, 10),  # conv8_2
        (2, 256, 5, 5),  # conv9_2
        (2, 256, 3, 3),  # conv10_2
        (2, 256, 1, 1),  # conv11_2
    ]
    assert loc == (2, 8732, 4) and conf == (2, 8732, 21)


def test_ssd512_source_maps():
    maps, loc, conf = _map_shapes(SSD512_VOC)
    assert maps == [
        (2, 512, 64, 64),
        (2, 1024, 32, 32),
        (2, 512, 16, 16),
        (2, 256, 8, 8),
        (2, 256, 4, 4),
        (2, 256, 2, 2),
        (2, 256, 1, 1),  # conv12_2: the released 4×4 kernel with pad 1
    ]
    assert loc == (2, 24564, 4) and conf == (2, 24564, 21)
    assert plan_extras(SSD512_VOC)[-1].kernel == 4


def test_parameter_count_equals_paper_and_torchvision():
    with torch.device("meta"):
        ours = build_ssd(SSD300_VOC, 21)
        theirs = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)
    count = sum(p.numel() for p in ours.parameters())
    assert count == 26_285_486
    assert count == sum(p.numel() for p in theirs.parameters())


def test_repr_and_attributes():
    with torch.device("meta"):
        model = build_ssd(SSD300_VOC, 21)
    assert repr(model) == (
        "SSD(SSD300_VOC: maps [38, 19, 10, 5, 3, 1] × boxes [4, 6, 6, 6, 4, 4] = 8732 default "
        "boxes, 21 classes, width 1.0, 26,285,486 parameters)"
    )
    assert model.source_names == ["conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]
    assert model.class_names[0] == "background" and len(model.class_names) == 21
    assert model.cfg is SSD300_VOC and model.num_classes == 21 and model.num_priors == 8732
    assert model.summary().splitlines()[5].split() == ["conv10_2", "256", "3×3", "4", "36"]
    slim = slim_model(batch_norm=True)
    assert "width 0.125, batch norm" in repr(slim)


def test_extra_layers_of_the_paper():
    convs = [(e.kernel, e.stride, e.padding) for e in plan_extras(SSD300_VOC)]
    assert convs == [(3, 2, 1), (3, 2, 1), (3, 1, 0), (3, 1, 0)]  # Fig. 2: 10, 5, 3, 1
    assert plan_extras(SSD300_COCO) == plan_extras(SSD300_VOC)  # same geometry, other scales
    channels = [(e.mid, e.out) for e in plan_extras(SSD300_VOC)]
    assert channels == [(256, 512), (128, 256), (128, 256), (128, 256)]


def test_extra_layers_of_a_custom_config():
    # 10 -> 5 and 5 -> 3 halve (ceil), 3 -> 1 is a 3×3 without padding
    convs = [(e.kernel, e.stride, e.padding) for e in plan_extras(SMALL)]
    assert convs == [(3, 2, 1), (3, 2, 1), (3, 1, 0)]


@settings(max_examples=15, deadline=None)
@given(image_size=st.integers(64, 640), steps=st.lists(st.booleans(), max_size=5))
def test_source_maps_match_any_reachable_config(image_size, steps):
    conv4_3 = math.ceil(image_size // 2 // 2 / 2)  # pool1, pool2 floor; pool3 ceil
    sizes = [conv4_3, conv4_3 // 2]  # pool4 floors; pool5 and fc6/fc7 keep the size
    for halve in steps:
        s = sizes[-1]
        if not halve and s - 2 < 1:
            break
        sizes.append(math.ceil(s / 2) if halve else s - 2)
    cfg = config_from_scales(0.2, 0.9, [(2,)] * len(sizes), sizes, image_size)
    with torch.device("meta"):
        model = build_ssd(cfg, 3, width=SLIM)
        maps = model.source_maps(torch.empty(1, 3, image_size, image_size))
    assert [m.shape[-1] for m in maps] == sizes
    assert [m.shape[1] for m in maps] == model.backbone.out_channels


@pytest.mark.parametrize(
    ("feature_maps", "image_size", "message"),
    [
        ((37, 19, 10), 300, r"source maps are \[38, 19, 10\], but the config expects \[37, 19"),
        ((38, 18), 300, r"\[38, 19\], but the config expects \[38, 18\]"),
        ((38, 19, 7), 300, r"feature map 1 \(19×19\) to feature map 2 \(7×7\)"),
        ((38,), 300, "at least 2 feature maps"),
    ],
)
def test_configs_the_network_cannot_make(feature_maps, image_size, message):
    n = len(feature_maps)
    cfg = config_from_scales(0.2, 0.9, [(2,)] * n, feature_maps, image_size, name="bad")
    with pytest.raises(ValueError, match=message):
        build_ssd(cfg, 3, width=SLIM)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"need at least 2 classes"):
        slim_model(num_classes=1)
    with pytest.raises(ValueError, match="got 2 class names for 4 classes"):
        slim_model(class_names=["background", "cat"])
    with pytest.raises(ValueError, match="width must be positive"):
        build_ssd(SMALL, 3, width=0)


def test_scale_channels():
    assert [scale_channels(64, w) for w in (1.0, 0.5, 0.25, 0.1, 0.01)] == [64, 32, 16, 8, 8]
    assert scale_channels(1024, 0.3) == 304  # 307.2 rounds to the nearest multiple of 8


# -- the pieces -----------------------------------------------------------------------------------
def test_l2norm_scales_each_location_to_the_learned_scale():
    x = torch.tensor([[3.0, 0.0], [4.0, 0.0]]).view(1, 2, 1, 2)  # two locations: (3, 4) and (0, 0)
    out = L2Norm(2)(x)
    assert torch.allclose(out.view(2, 2), torch.tensor([[12.0, 0.0], [16.0, 0.0]]))  # 20·(.6, .8)
    assert torch.equal(L2Norm(2).weight, torch.tensor([20.0, 20.0]))


def test_flatten_predictions_literal():
    # (B=1, A*C = 2*3, H=1, W=2): channel a*C + c at column x holds 100x + 10a + c
    a, c, w = 2, 3, 2
    t = torch.tensor(
        [[100.0 * x + 10 * ai + ci for x in range(w)] for ai in range(a) for ci in range(c)]
    )
    out = flatten_predictions(t.view(1, a * c, 1, w), c)  # (1, H*W*A, C)
    expected = torch.tensor(
        [[100.0 * x + 10 * ai + ci for ci in range(c)] for x in range(w) for ai in range(a)]
    )
    assert torch.equal(out[0], expected)


def test_head_outputs_follow_default_box_order():
    """Feed each map its own cell index; the head must put cell (r, c) of layer k exactly at
    ``prior_index(cfg, k, r, c)``, and box a's outputs in the a-th row of that slice."""
    cfg, k_classes = SMALL, 3
    head = SSDHead([1] * len(cfg.feature_maps), cfg.boxes_per_cell, k_classes)
    for conv in [*head.loc, *head.conf]:
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[:, 0, 1, 1] = 1000.0  # the centre tap copies the cell's index
            conv.bias.copy_(torch.arange(conv.out_channels, dtype=torch.float32))  # channel id
    maps = [torch.arange(f * f, dtype=torch.float32).view(1, 1, f, f) for f in cfg.feature_maps]
    loc, conf = head(maps)
    assert loc.shape == (1, cfg.num_priors, 4) and conf.shape == (1, cfg.num_priors, k_classes)
    for layer, f in enumerate(cfg.feature_maps):
        a = cfg.boxes_per_cell[layer]
        for r, c in [(0, 0), (0, f - 1), (f - 1, 0), (f // 2, f // 3)]:
            cell = prior_index(cfg, layer, r, c)
            cell_id = 1000.0 * (r * f + c)
            assert torch.equal(loc[0, cell], cell_id + torch.arange(a * 4.0).view(a, 4))
            assert torch.equal(
                conf[0, cell], cell_id + torch.arange(a * k_classes * 1.0).view(a, -1)
            )


def test_priors_buffer(device):
    model = slim_model().to(device)
    assert torch.equal(model.priors.cpu(), default_boxes(SMALL))
    assert "priors" not in model.state_dict()  # rebuilt from the config, never stale
    assert set(model.state_dict()) >= {"mean", "std", "_extra_state"}


# -- forward, training ----------------------------------------------------------------------------
def test_forward_normalises_inside(device):
    model = slim_model().to(device).eval()
    images = torch.rand(2, 3, 160, 160, device=device)
    loc, conf = model(images)
    assert loc.shape == (2, SMALL.num_priors, 4) and conf.shape == (2, SMALL.num_priors, 4)
    normalised = (images - torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)) / (
        torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    )
    loc2, conf2 = model.head(model.backbone(normalised))
    torch.testing.assert_close(loc, loc2)
    torch.testing.assert_close(conf, conf2)


def test_forward_rejects_wrong_inputs():
    model = slim_model()
    with pytest.raises(
        ValueError, match=r"expected images of shape \(B, 3, 160, 160\).*got \(1, 3, 300, 300\)"
    ):
        model(torch.rand(1, 3, 300, 300))
    with pytest.raises(ValueError, match=r"got dtype torch\.uint8"):
        model(torch.zeros(1, 3, 160, 160, dtype=torch.uint8))


def test_slim_model_trains_on_the_cpu():
    """Forward, MultiBoxLoss, backward: every parameter gets a finite gradient, and a few Adam
    steps on one batch lower the loss."""
    model = slim_model(batch_norm=True)
    images = torch.rand(2, 3, 160, 160)
    boxes = [
        torch.tensor([[0.1, 0.1, 0.5, 0.6]]),
        torch.tensor([[0.3, 0.2, 0.9, 0.9], [0.0, 0.5, 0.3, 1.0]]),
    ]
    labels = [torch.tensor([1]), torch.tensor([2, 3])]
    loc_t, labels_t = assign_targets(boxes, labels, model.priors)
    criterion = MultiBoxLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loc, conf = model(images)
        loss = sum(criterion(loc, conf, loc_t, labels_t))
        optimiser.zero_grad()
        loss.backward()
        if not losses:
            for name, p in model.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


# -- detect ---------------------------------------------------------------------------------------
def test_detect_returns_pixel_boxes_for_images_of_any_size(device):
    model = slim_model().to(device)  # stays in training mode: detect() must switch and restore
    images = [torch.rand(3, 120, 200), torch.rand(3, 50, 80), torch.rand(3, 160, 160)]
    dets = model.detect(images, score_threshold=0.0, top_k=50)
    assert model.training
    assert len(dets) == 3
    for det, img in zip(dets, images, strict=True):
        h, w = img.shape[1:]
        assert det["boxes"].shape == (50, 4) and det["boxes"].device.type == device.type
        assert det["scores"].shape == (50,) and det["labels"].dtype == torch.long
        assert (det["boxes"][:, 0::2] >= 0).all() and (det["boxes"][:, 0::2] <= w).all()
        assert (det["boxes"][:, 1::2] >= 0).all() and (det["boxes"][:, 1::2] <= h).all()
        assert (det["labels"] >= 1).all() and (det["labels"] < 4).all()
    # the same as resizing by hand, one forward pass, postprocess in normalised coordinates
    model.eval()
    batch = torch.cat(
        [F.interpolate(i[None], size=(160, 160), mode="bilinear", antialias=True) for i in images]
    ).to(device)
    with torch.no_grad():
        loc, conf = model(batch)
    reference = postprocess(loc, conf, model.priors, score_threshold=0.0, top_k=50)
    for det, ref, img in zip(dets, reference, images, strict=True):
        h, w = img.shape[1:]
        scale = torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
        torch.testing.assert_close(det["boxes"], ref["boxes"] * scale)
        torch.testing.assert_close(det["scores"], ref["scores"])


def test_detect_takes_a_batch_tensor():
    model = slim_model().eval()
    images = torch.rand(2, 3, 100, 90)
    dets = model.detect(images)
    assert len(dets) == 2 and not model.training
    single = model.detect(images[1])
    torch.testing.assert_close(single[0]["boxes"], dets[1]["boxes"])


def test_detect_rejects_bad_images():
    model = slim_model()
    with pytest.raises(
        ValueError, match=r"image 1: expected RGB values in \[0, 1\].*divide by 255"
    ):
        model.detect([torch.rand(3, 20, 20), 255 * torch.rand(3, 20, 20)])
    with pytest.raises(ValueError, match="image 0: expected float RGB"):
        model.detect([torch.zeros(3, 20, 20, dtype=torch.uint8)])
    with pytest.raises(
        ValueError, match=r"image 0: expected a \(3, H, W\) RGB tensor, got \(1, 20, 20\)"
    ):
        model.detect([torch.rand(1, 20, 20)])
    with pytest.raises(ValueError, match="at least one image"):
        model.detect([])
    nan_pixel = torch.rand(3, 20, 20)
    nan_pixel[1, 5, 5] = float("nan")  # used to give no detections and no word
    with pytest.raises(ValueError, match="image 1: holds nan or inf pixel values"):
        model.detect([torch.rand(3, 20, 20), nan_pixel])


# -- the state dict carries the configuration ----------------------------------------------------
def test_state_dict_round_trip_and_mismatch():
    voc = build_ssd(SSD300_VOC, 3, width=SLIM, class_names=["background", "cat", "dog"])
    same = build_ssd(SSD300_VOC, 3, width=SLIM)
    same.load_state_dict(voc.state_dict())
    assert same.class_names == ["background", "cat", "dog"]
    # SSD300_COCO has the very same layers: only the metadata can tell the weights apart
    coco = build_ssd(SSD300_COCO, 3, width=SLIM)
    with pytest.raises(ValueError, match=r"min_sizes.*its SSD300_VOC vs this model's SSD300_COCO"):
        coco.load_state_dict(voc.state_dict())
    with pytest.raises(ValueError, match=r"another network: width: 0\.125 vs 0\.25"):
        build_ssd(SSD300_VOC, 3, width=0.25).load_state_dict(voc.state_dict())


# -- numerics: autocast, channels_last, torch.compile --------------------------------------------
def test_autocast_bfloat16_on_the_cpu():
    model = slim_model().eval()
    images = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        loc32, conf32 = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loc16, conf16 = model(images)
    assert loc16.dtype == conf16.dtype == torch.bfloat16
    for low, full in [(loc16, loc32), (conf16, conf32)]:
        low = low.float()
        assert torch.isfinite(low).all()
        assert F.cosine_similarity(low.flatten(), full.flatten(), dim=0) > 0.99
        assert (low - full).abs().max() < 0.05 * full.abs().max()


@pytest.mark.gpu
def test_autocast_float16_on_cuda():
    model = slim_model().cuda().eval()
    images = torch.rand(2, 3, 160, 160, device="cuda")
    with torch.no_grad():
        loc32, conf32 = model(images)
        with torch.autocast("cuda", dtype=torch.float16):
            loc16, conf16 = model(images)
    assert loc16.dtype == torch.float16
    torch.testing.assert_close(loc16.float(), loc32, atol=0.05, rtol=0.05)
    torch.testing.assert_close(conf16.float(), conf32, atol=0.05, rtol=0.05)


def test_channels_last_gives_the_same_outputs(device):
    model = slim_model(batch_norm=True).to(device).eval()
    images = torch.rand(2, 3, 160, 160, device=device)
    with torch.no_grad():
        loc, conf = model(images)
        model_cl = model.to(memory_format=torch.channels_last)
        loc_cl, conf_cl = model_cl(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(loc_cl, loc, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(conf_cl, conf, atol=1e-4, rtol=1e-4)


def _compile_unavailable() -> str | None:
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2))
    except Exception as err:  # no C++ compiler, unsupported Python, …
        return f"torch.compile does not work here: {type(err).__name__}: {err}"
    return None


@pytest.mark.slow
def test_torch_compile_gives_the_same_outputs():
    reason = _compile_unavailable()
    if reason:
        pytest.skip(reason)
    model = build_ssd(SMALL, 3, width=0.0625).eval()
    images = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        loc, conf = model(images)
        loc_c, conf_c = torch.compile(model)(images)
    torch.testing.assert_close(loc_c, loc, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(conf_c, conf, atol=1e-4, rtol=1e-4)
