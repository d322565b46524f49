"""Weights: ImageNet VGG16 into the base network (from a local file, never the network), the
offline error, torchvision's ssd300_vgg16 ported with equal outputs (model files and
checkpoints: tests/test_checkpoint.py)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torchvision.models.detection import SSD300_VGG16_Weights, ssd300_vgg16

from ssdlib.model import build_ssd
from ssdlib.nms import postprocess
from ssdlib.priors import SSD300_COCO, SSD300_VOC, config_from_scales
from ssdlib.utils import IMAGENET_MEAN, IMAGENET_STD
from ssdlib.weights import WeightsUnavailableError, from_torchvision, load_vgg16_backbone

SMALL = config_from_scales(0.2, 0.9, [(2,), (2, 3), (2, 3), (2,), (2,)], (20, 10, 5, 3, 1), 160)
SLIM = 0.125
VGG16_GROUP = pytest.mark.xdist_group("vgg16")  # one worker writes the 550 MB file, once


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A randomly initialised VGG16 in torchvision's format, saved like vgg16-397923af.pth."""
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
    return path


# -- ImageNet VGG16 -> base network ---------------------------------------------------------------
@VGG16_GROUP
def test_vgg16_backbone_from_a_local_file(vgg16_file):
    state = torch.load(vgg16_file, weights_only=True)
    model = build_ssd(SSD300_VOC, 21, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    extras_before = model.backbone.extras[0].conv8_1.weight.clone()
    assert load_vgg16_backbone(model, vgg16_file) is model
    base = {
        **dict(model.backbone.to_conv4_3.named_children()),
        **dict(model.backbone.to_fc7.named_children()),
    }

    assert torch.equal(base["conv1_1"].weight, state["features.0.weight"])
    assert torch.equal(base["conv4_3"].bias, state["features.21.bias"])
    assert torch.equal(base["conv5_3"].weight, state["features.28.weight"])
    assert torch.equal(model.backbone.extras[0].conv8_1.weight, extras_before)  # untouched
    assert torch.equal(model.mean, torch.tensor(IMAGENET_MEAN))
    assert torch.equal(model.std, torch.tensor(IMAGENET_STD))

    # fc6 and fc7, subsampled: checked entry by entry against the flat Linear weights
    fc6, fc7 = state["classifier.0.weight"], state["classifier.3.weight"]
    for o, i, a, b in [(0, 0, 0, 0), (5, 17, 1, 2), (1023, 511, 2, 2), (300, 400, 2, 0)]:
        flat = i * 49 + (3 * a) * 7 + (3 * b)  # input index of (channel i, row 3a, column 3b)
        assert base["fc6"].weight[o, i, a, b] == fc6[4 * o, flat]
    for o, i in [(0, 0), (7, 900), (1023, 1023)]:
        assert base["fc7"].weight[o, i, 0, 0] == fc7[4 * o, 4 * i]
    assert torch.equal(base["fc6"].bias, state["classifier.0.bias"][::4])
    assert torch.equal(base["fc7"].bias, state["classifier.3.bias"][::4])

    # conv4_3 equals torchvision's VGG16 truncated there, with pool3 in ceil mode
    with torch.device("meta"):
        vgg = torchvision.models.vgg16(weights=None)
    vgg.load_state_dict(state, assign=True)
    vgg.features[16].ceil_mode = True
    x = torch.randn(1, 3, 76, 76)  # 76 -> 38 -> 19 -> 10 (ceil) at conv4_3
    with torch.no_grad():
        torch.testing.assert_close(model.backbone.to_conv4_3(x), vgg.features[:23](x))


def test_vgg16_bn_backbone():
    state = torchvision.models.vgg16_bn(weights=None).state_dict()
    state["features.1.running_mean"].normal_()  # make the statistics worth checking
    model = build_ssd(SMALL, 3, batch_norm=True)
    load_vgg16_backbone(model, state)
    base = dict(model.backbone.to_conv4_3.named_children())
    assert torch.equal(base["conv1_1"].weight, state["features.0.weight"])
    assert torch.equal(base["bn1_1"].running_mean, state["features.1.running_mean"])
    assert torch.equal(base["conv4_3"].weight, state["features.30.weight"])
    with pytest.raises(ValueError, match=r"VGG16-BN weights.*no batch norm"):
        load_vgg16_backbone(build_ssd(SMALL, 3), state)


@VGG16_GROUP
def test_vgg16_needs_full_width_and_matching_norm(vgg16_file):
    with pytest.raises(ValueError, match=r"only width 1\.0.*width 0\.5"):
        load_vgg16_backbone(build_ssd(SMALL, 3, width=0.5), vgg16_file)
    with pytest.raises(ValueError, match=r"the model has batch norm.*vgg16_bn-6c64b313.pth"):
        load_vgg16_backbone(build_ssd(SMALL, 3, batch_norm=True), vgg16_file)


def test_vgg16_bad_files(tmp_path):
    model = build_ssd(SMALL, 3)
    with pytest.raises(FileNotFoundError, match=r"missing.pth"):
        load_vgg16_backbone(model, tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"garbage.pth is not a readable"):
        load_vgg16_backbone(model, garbage)
    with pytest.raises(ValueError, match=r"13 convolutions of VGG16.*found 0"):
        load_vgg16_backbone(model, {"weight": torch.zeros(1)})


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache, and every download fails as it would without a network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def fail(url, *args, **kwargs):
        raise urllib.error.URLError(f"no network for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return tmp_path / "hub" / "checkpoints"


def test_offline_error_says_what_to_fetch_and_where(offline):
    model = build_ssd(SMALL, 3)
    with pytest.raises(WeightsUnavailableError) as info:
        load_vgg16_backbone(model, "torchvision")
    message = str(info.value)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert f"{offline}/" in message and "$TORCH_HOME/hub/checkpoints/" in message
    assert "load_vgg16_backbone(model, '/path/to/vgg16-397923af.pth')" in message
    with pytest.raises(WeightsUnavailableError, match=r"ssd300_vgg16_coco-b556d3b4.pth"):
        from_torchvision("torchvision")


# -- torchvision's ssd300_vgg16 -------------------------------------------------------------------
def _canonical(det: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detections in a fixed order (label, score, x1, y1): equal scores may come in any order."""
    keys = [
        (label, round(score, 5), round(box[0], 2), round(box[1], 2))
        for label, score, box in zip(
            det["labels"].tolist(), det["scores"].tolist(), det["boxes"].tolist(), strict=True
        )
    ]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return {k: v[order] for k, v in det.items()}


def test_torchvision_port_gives_the_same_outputs():
    tv = ssd300_vgg16(weights=None, weights_backbone=None).eval()  # random weights, 91 classes
    model = from_torchvision(tv.state_dict())
    assert not model.training and model.cfg == SSD300_COCO and model.num_classes == 91
    assert model.class_names == SSD300_VGG16_Weights.COCO_V1.meta["categories"]
    assert (
        sum(p.numel() for p in model.parameters())
        == SSD300_VGG16_Weights.COCO_V1.meta["num_params"]
    )

    images = torch.rand(2, 3, 300, 300)
    sizes = [(300, 300)] * 2
    with torch.no_grad():
        image_list = tv.transform(list(images))[0]
        normalised = image_list.tensors  # (2, 3, 300, 300)
        features = list(tv.backbone(normalised).values())
        out = tv.head(features)
        loc, conf = model(images)  # [0, 1] images, normalised inside: head(backbone(normalised))
        # torchvision's own postprocessing, as its eval-mode forward runs it
        anchors = tv.anchor_generator(image_list, features)
        tv_dets = tv.postprocess_detections(out, anchors, image_list.image_sizes)
        tv_dets = tv.transform.postprocess(tv_dets, image_list.image_sizes, sizes)
    torch.testing.assert_close(model.normalize(images), normalised, atol=1e-6, rtol=0)
    torch.testing.assert_close(loc, out["bbox_regression"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conf, out["cls_logits"], atol=1e-5, rtol=1e-5)

    ours = postprocess(loc, conf, model.priors, image_sizes=sizes)
    theirs = postprocess(out["bbox_regression"], out["cls_logits"], model.priors, image_sizes=sizes)
    for a, b, c in zip(ours, theirs, tv_dets, strict=True):
        assert len(a["boxes"]) == len(c["boxes"]) > 0
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key])
        a, c = _canonical(a), _canonical(c)
        torch.testing.assert_close(a["boxes"], c["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(a["scores"], c["scores"])
        assert torch.equal(a["labels"], c["labels"])


def test_torchvision_port_rejects_foreign_state_dicts():
    state = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=5).state_dict()
    model = from_torchvision(state)
    assert model.num_classes == 5 and model.class_names[1] == "class_1"
    state["head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"keys no ssdlib layer takes: \['head.extra.weight'\]"):
        from_torchvision(state)
    del state["head.extra.weight"], state["backbone.scale_weight"]
    with pytest.raises(ValueError, match=r"no 'backbone.scale_weight'"):
        from_torchvision(state)
