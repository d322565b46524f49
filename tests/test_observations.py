"""The measured-experiment tools: recall by size, prior variants (one source map, learned shapes,
s_min), the network's ``sources``, train_and_evaluate, and the augmentation explorer."""

import dataclasses
import json
import math

import matplotlib
import pytest
import torch

import ssdlib.experiments as ex
from ssdlib import build_ssd, config_from_scales
from ssdlib.data import ShapesDataset, train_transform
from ssdlib.model import config_to_dict
from ssdlib.priors import (
    PriorConfig,
    config_from_box_shapes,
    config_on_one_map,
    default_boxes,
    with_scales,
)
from ssdlib.train import CPU_TINY_PRIORS

matplotlib.use("Agg")

SMALL = config_from_scales(0.2, 0.9, ((2,), (2, 3), (2,)), (8, 4, 2), 64, name="small")  # 64 px


def det(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels),
    }


def gt(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels)}  # fmt: skip


# -- recall_by_size ------------------------------------------------------------------------------

NAMES = ["background", "a", "b"]


def test_recall_by_size_hand_sized():
    # Image side 100. Objects of side 10 (size 0.1), 30 (0.3) and 60 (0.6), all class 1.
    targets = [gt([[0, 0, 10, 10], [20, 20, 50, 50], [40, 40, 100, 100]], [1, 1, 1])]
    preds = [det([[0, 0, 10, 10], [20, 20, 50, 50], [40, 40, 100, 100]], [0.9, 0.8, 0.1],
                 [1, 2, 1])]  # fmt: skip
    out = ex.recall_by_size(preds, targets, NAMES, 100, bin_edges=(0, 0.2, 0.5, 1.0))
    assert out == {
        "bin_edges": [0.0, 0.2, 0.5, 1.0],
        "num_objects": [1, 1, 1],
        "recall": [1.0, 0.0, 1.0],  # the middle one is found only by the wrong class
    }
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_a_duplicate_does_not_fall_back_to_another_object():
    # VOC's rule: the second detection's best object is already claimed, so it is a duplicate,
    # even though an identical unclaimed object lies under it.
    targets = [gt([[0, 0, 20, 20], [0, 0, 20, 20]], [1, 1])]
    one = ex.recall_by_size([det([[0, 0, 20, 20]], [0.5], [1])], targets, NAMES, 100, (0, 1))
    two = ex.recall_by_size(
        [det([[0, 0, 20, 20], [1, 1, 20, 20]], [0.5, 0.4], [1, 1])], targets, NAMES, 100, (0, 1)
    )
    assert one["recall"] == two["recall"] == [0.5]


def test_iou_exactly_at_the_threshold_counts():
    targets = [gt([[0, 0, 10, 10]], [1])]
    preds = [det([[0, 0, 10, 5]], [1.0], [1])]  # IoU 0.5 exactly
    assert ex.recall_by_size(preds, targets, NAMES, 100, (0, 1))["recall"] == [1.0]
    strict = ex.recall_by_size(preds, targets, NAMES, 100, (0, 1), iou_threshold=0.51)
    assert strict["recall"] == [0.0]


def test_edges_empty_bins_and_images_without_objects():
    targets = [gt([[0, 0, 10, 10], [0, 0, 100, 100]], [1, 2]), gt([], [])]
    preds = [det([], [], []), det([[0, 0, 5, 5]], [0.9], [1])]
    out = ex.recall_by_size(preds, targets, NAMES, 100, bin_edges=(0, 0.1, 0.2, 0.5))
    # 0.1 sits on an edge: the upper bin; 1.0 is past the last edge: the last bin.
    assert out["num_objects"] == [0, 1, 1]
    assert out["recall"] == [None, 0.0, 0.0]


def test_recall_by_size_bad_input():
    with pytest.raises(ValueError, match="got 1 prediction dicts for 2 target dicts"):
        ex.recall_by_size([det([], [], [])], [gt([], []), gt([], [])], NAMES, 100)
    with pytest.raises(ValueError, match="increasing"):
        ex.recall_by_size([], [], NAMES, 100, bin_edges=(0, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"labels \[3\] are outside the 3 class names"):
        ex.recall_by_size([det([[0, 0, 1, 1]], [0.1], [3])], [gt([], [])], NAMES, 100)


# -- prior variants ------------------------------------------------------------------------------


def test_with_scales_is_the_paper_formula_on_the_same_maps():
    cfg = with_scales(SMALL, 0.1)
    assert cfg == config_from_scales(0.1, 0.9, SMALL.aspect_ratios, SMALL.feature_maps, 64)
    assert cfg.scales[:-1] == pytest.approx([0.1, 0.5, 0.9])
    assert with_scales(SMALL, 0.2) == SMALL  # the same numbers give the same boxes
    assert with_scales(CPU_TINY_PRIORS, 0.1).scales[-2] == pytest.approx(0.9)


def test_config_on_one_map_keeps_scales_and_ratios():
    one = config_on_one_map(SMALL, 1)
    assert one.feature_maps == (4, 4, 4) and one.steps == (16, 16, 16)
    assert one.min_sizes == SMALL.min_sizes and one.aspect_ratios == SMALL.aspect_ratios
    assert one.num_priors == 16 * sum(SMALL.boxes_per_cell)  # 4×4 cells × (4 + 6 + 4)
    centres = default_boxes(one)[:, :2].unique(dim=0)
    assert len(centres) == 16  # every box sits on one of the 4×4 cells
    with pytest.raises(ValueError, match=r"layer must be in \[0, 3\), got 3"):
        config_on_one_map(SMALL, 3)


def test_config_from_box_shapes_hand_sized():
    # Six shapes, three layers: sizes 0.1, 0.1 | 0.2, 0.4×0.1 (size 0.2, 4:1) | 0.5, 0.6×0.3.
    wh = torch.tensor(
        [[0.1, 0.1], [0.2, 0.05], [0.2, 0.2], [0.4, 0.1], [0.5, 0.5], [0.6, 0.3]]
    )  # sizes 0.1, 0.1, 0.2, 0.2, 0.5, 0.424
    cfg = config_from_box_shapes(wh, SMALL, name="learned")
    assert cfg.name == "learned" and cfg.feature_maps == SMALL.feature_maps
    expected = [0.1, 0.2, math.sqrt(0.5 * math.sqrt(0.18))]
    assert cfg.scales[:-1] == pytest.approx(expected)
    assert cfg.scales[-1] == pytest.approx(expected[2] ** 2 / expected[1])
    # 0.2×0.05 is 4:1, 0.4×0.1 4:1, 0.6×0.3 2:1; squares add nothing
    assert cfg.aspect_ratios == ((4.0,), (4.0,), (2.0,))
    assert cfg.boxes_per_cell == [4, 4, 4]


def test_config_from_box_shapes_rounds_and_merges_ratios():
    wh = torch.tensor([[0.30, 0.10], [0.1, 0.29], [0.2, 0.15], [0.5, 0.5]])  # 3, 2.9, 1.33
    cfg = config_from_box_shapes(wh, dataclasses.replace(SMALL, name="two"), name="x")
    assert cfg.aspect_ratios == ((3.0,), (), ())  # 3 and 2.9 round to one ratio; 4:3 is square


def test_config_from_box_shapes_bad_input():
    with pytest.raises(ValueError, match="at least one shape per layer"):
        config_from_box_shapes(torch.rand(2, 2) * 0.5 + 0.1, SMALL)
    with pytest.raises(ValueError, match=r"shape 1 = \[0.0, 0.2\] is not in \(0, 1\]"):
        config_from_box_shapes(torch.tensor([[0.1, 0.1], [0.0, 0.2], [0.3, 0.3]]), SMALL)
    with pytest.raises(ValueError, match=r"expected shapes of shape \(k, 2\)"):
        config_from_box_shapes(torch.rand(4), SMALL)


# -- the network reads chosen maps ---------------------------------------------------------------


def test_default_sources_change_nothing():
    torch.manual_seed(0)
    a = build_ssd(SMALL, 3, width=0.125)
    torch.manual_seed(0)
    b = build_ssd(SMALL, 3, width=0.125, sources=(0, 1, 2))
    assert a.sources == b.sources == (0, 1, 2)
    assert a.config == b.config and b.config.sources is None  # one spelling of the paper's
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if isinstance(sa[k], torch.Tensor))


def test_one_source_map(device):
    one = config_on_one_map(SMALL, 1)
    model = build_ssd(one, 3, width=0.125, sources=(1, 1, 1)).to(device).eval()
    assert model.source_names == ["fc7"] * 3 and len(model.backbone.extras) == 0
    images = torch.rand(2, 3, 64, 64, device=device)
    maps = model.source_maps(images)
    assert [m.shape[-1] for m in maps] == [4, 4, 4] and maps[0] is maps[1]
    loc, conf = model(images)
    assert loc.shape == (2, one.num_priors, 4) and conf.shape == (2, one.num_priors, 3)
    assert model.config.sources == (1, 1, 1) and model.config.to_dict()["sources"] == [1, 1, 1]
    assert "fc7" in repr(model) and model.summary().count("fc7") == 3


def test_sources_on_extra_layers_and_state_dicts():
    cfg = PriorConfig(64, (8, 4, 4, 2), None, (12, 20, 28, 40), (20, 28, 40, 60),
                      ((2,),) * 4, name="mixed")  # fmt: skip
    model = build_ssd(cfg, 3, width=0.125, sources=(0, 1, 1, 2))
    assert model.source_names == ["conv4_3", "fc7", "fc7", "conv8_2"]
    again = build_ssd(cfg, 3, width=0.125, sources=(0, 1, 1, 2))
    again.load_state_dict(model.state_dict())
    paper_layout = build_ssd(dataclasses.replace(cfg, feature_maps=(8, 4, 2, 1)), 3, width=0.125)
    with pytest.raises(ValueError, match="feature_maps"):  # a different config, named
        paper_layout.load_state_dict(model.state_dict())


def test_bad_sources_are_named():
    with pytest.raises(ValueError, match="one backbone map index >= 0"):
        build_ssd(SMALL, 3, width=0.125, sources=(0, 1))
    with pytest.raises(ValueError, match="one backbone map index >= 0"):
        build_ssd(SMALL, 3, width=0.125, sources=(0, -1, 1))
    skip = PriorConfig(64, (8, 1), None, (12, 40), (20, 60), ((2,),) * 2, name="skip")
    with pytest.raises(ValueError, match=r"skip backbone map\(s\) \[2\]"):
        build_ssd(skip, 3, width=0.125, sources=(0, 3))
    with pytest.raises(ValueError, match=r"its layers read maps \[1, 1, 1\]"):
        build_ssd(SMALL, 3, width=0.125, sources=(1, 1, 1))  # fc7 is 4×4, not 8, 4, 2


# -- train_and_evaluate --------------------------------------------------------------------------


def tiny_overrides(**more):
    return {"max_steps": 2, "batch_size": 4, "warmup_steps": 0, "width": 0.125,
            "priors": config_to_dict(SMALL), "log_every": 1, **more}  # fmt: skip


@pytest.mark.slow
def test_train_and_evaluate_runs_a_cached_experiment(tmp_path):
    config = {"overrides": tiny_overrides(), "train_images": 8, "val_images": 4, "seen_images": 4}
    record = ex.cached_experiment("tiny", ex.train_and_evaluate, config, cache_dir=tmp_path)
    r = record["result"]
    assert (r["steps"], r["num_priors"], r["feature_maps"]) == (2, SMALL.num_priors, [8, 4, 2])
    assert r["epochs"] == pytest.approx(1.0) and r["preset"] == "cpu-tiny"
    assert r["loss_curve"]["step"] == [1, 2] and all(
        math.isfinite(v) for v in r["loss_curve"]["loss"]
    )
    assert list(r["ap50_per_class"]) == ShapesDataset(1).classes[1:]  # in class order
    assert r["images_per_s"] > 0 and r["train_seconds"] > 0
    assert sum(r["recall_by_size"]["num_objects"]) > 0
    for key in ("map", "map_50", "train_map_50"):
        assert r[key] is None or 0 <= r[key] <= 1
    assert json.loads(json.dumps(r, allow_nan=False)) == r  # strict JSON: no nan
    again = ex.cached_experiment("tiny", ex.train_and_evaluate, config, cache_dir=tmp_path)
    assert again["cached"] and again["result"] == r
    assert list(again["result"]["ap50_per_class"]) == list(r["ap50_per_class"])


@pytest.mark.slow
def test_train_and_evaluate_repeats_and_takes_sources():
    one = config_on_one_map(SMALL, 1)
    config = {"overrides": tiny_overrides(priors=config_to_dict(one), sources=[1, 1, 1]),
              "train_images": 8, "val_images": 4, "augment": False}  # fmt: skip
    a = ex.train_and_evaluate(**config)
    b = ex.train_and_evaluate(**config)
    assert a["source_names"] == ["fc7"] * 3 and a["train_map"] is None
    for key in ("loss_curve", "map", "recall_by_size", "ap50_per_class"):
        assert a[key] == b[key]


def test_train_and_evaluate_bad_config():
    with pytest.raises(ValueError, match=r"overrides \['lerning_rate'\] are not TrainConfig"):
        ex.train_and_evaluate(overrides={"lerning_rate": 1.0})
    with pytest.raises(ValueError, match="give the seed as train_and_evaluate"):
        ex.train_and_evaluate(overrides={"seed": 1, "max_steps": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        ex.train_and_evaluate(preset="nope", overrides={"max_steps": 1})
    with pytest.raises(ValueError, match=r"seen_images must be in \[0, train_images=8\]"):
        ex.train_and_evaluate(overrides=tiny_overrides(), train_images=8, seen_images=9)


# -- object sizes under augmentation ---------------------------------------------------------------


def test_object_sizes():
    data = ShapesDataset(6, image_size=64, seed=1)
    raw = ex.object_sizes(data)
    by_hand = torch.cat([
        ((t["boxes"][:, 2] - t["boxes"][:, 0]) * (t["boxes"][:, 3] - t["boxes"][:, 1])).sqrt() / 64
        for _, t in data
    ])  # fmt: skip
    assert torch.allclose(raw, by_hand)
    torch.manual_seed(5)
    before = torch.rand(1)
    zoomed = ex.object_sizes(data, train_transform(64), draws=3, seed=0)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), before)  # the global RNG is untouched
    assert torch.equal(zoomed, ex.object_sizes(data, train_transform(64), draws=3, seed=0))
    assert not torch.equal(zoomed, ex.object_sizes(data, train_transform(64), draws=3, seed=1))
    with pytest.raises(ValueError, match="draws must be >= 1"):
        ex.object_sizes(data, draws=0)


# -- figures and the explorer --------------------------------------------------------------------


def fake_result(num_priors=100, map_50=0.3, speed=50.0):
    return {
        "num_priors": num_priors, "map_50": map_50, "map_small": None, "map_large": 0.5,
        "images_per_s": speed, "loss_curve": {"step": [1, 2], "loss": [3.0, 2.0]},
        "recall_by_size": {"bin_edges": [0, 0.1, 1.0], "num_objects": [3, 0],
                           "recall": [0.5, None]},
        "ap50_per_class": {"circle": 0.2, "bar": None},
    }  # fmt: skip


def test_result_figures():
    import matplotlib.pyplot as plt

    from ssdlib.viz import experiments as vx

    results = {"a": fake_result(), "b": fake_result(200, 0.4, 40.0)}
    ax = vx.plot_metric_bars(results, ["map_small", "map_large"], ["small", "large"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["small", "large"]
    assert "n/a" in [t.get_text() for t in ax.texts]  # the None metric is shown as missing
    assert len(vx.plot_loss_curves(results).lines) == 2
    assert len(vx.plot_recall_by_size_runs(results, marks={"box": 0.1}).lines) >= 2
    assert len(vx.plot_accuracy_vs_speed(results).axes) == 2
    fig = vx.plot_accuracy_vs_speed(results, speeds={"a": 10.0, "b": 20.0})
    assert fig.axes[1].collections[1].get_offsets()[0].tolist() == [200, 20.0]
    vx.plot_per_class_ap(results)
    sizes = {"raw": torch.tensor([0.05, 0.2]), "aug": torch.tensor([0.02, 0.1, 0.4])}
    ax = vx.plot_size_distributions(sizes, small=0.1)
    assert "raw: 50% below 0.1 (n=2)" in [t.get_text() for t in ax.get_legend().get_texts()]
    with pytest.raises(ValueError, match="got 1 labels for 2 keys"):
        vx.plot_metric_bars(results, ["map_small", "map_large"], ["small"])
    plt.close("all")


def test_augmentation_figure_and_explorer():
    import matplotlib.pyplot as plt

    from ssdlib.data.transforms import augmentation_stages
    from ssdlib.viz import experiments as vx

    data = ShapesDataset(2, image_size=64, seed=0)
    samples = {"scene 0": data[0], "scene 1": data[1]}
    transforms = {name: train_transform(64) for name in samples}
    stages = augmentation_stages(*samples["scene 0"], transforms["scene 0"], seed=0)
    fig = vx.plot_augmentation_stages(stages, data.classes, title="scene 0, seed 0")
    assert len(fig.axes) == len(stages) == 6
    assert fig.get_suptitle() == "scene 0, seed 0"
    assert fig.axes[4].get_title().startswith("4. flip\n")
    drawn = [len(ax.patches) for ax in fig.axes]
    assert drawn == [len(s.target["boxes"]) for s in stages]

    explorer = vx.augmentation_explorer(samples, transforms, {n: data.classes for n in samples})
    seed = explorer.controls["seed"]
    assert seed.continuous_update is False and seed.value == 0
    first = explorer.result
    assert [s.name for s in first][-1] == "resize" and "scene 0" in explorer.info.value
    seed.value = 3
    third = augmentation_stages(*samples["scene 0"], transforms["scene 0"], seed=3)
    assert torch.equal(explorer.result[-1].image, third[-1].image)
    explorer.controls["sample"].value = "scene 1"
    assert "<b>scene 1</b>, seed 3" in explorer.info.value
    with pytest.raises(ValueError, match=r"no transform for the samples \['scene 1'\]"):
        vx.augmentation_explorer(samples, {"scene 0": transforms["scene 0"]})
    with pytest.raises(ValueError, match=r"seed must be in \[0, 99\]"):
        vx.augmentation_explorer(samples, transforms, seed=100)
    plt.close("all")


def test_a_one_source_map_model_survives_a_model_file(tmp_path):
    from ssdlib.checkpoint import load_model, save_model

    one_map = config_on_one_map(SMALL, 1)
    m = len(one_map.feature_maps)
    model = build_ssd(one_map, 3, width=0.125, sources=(1,) * m)
    save_model(model, tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert back.sources == (1,) * m
    x = torch.rand(1, 3, one_map.image_size, one_map.image_size)
    model.eval()
    torch.testing.assert_close(back(x)[1], model(x)[1])
