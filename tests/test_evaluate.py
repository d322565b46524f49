"""Evaluation: COCO mAP against pycocotools itself, VOC AP on hand-computed cases and against
a devkit-style loop, precision-recall curves, and the model-over-dataset runner."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdlib.coco_metric import COCO_STAT_NAMES, coco_map
from ssdlib.evaluate import evaluate
from ssdlib.voc_metric import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    average_precision,
    precision_recall,
    voc_map,
    voc_match,
)

# -- helpers ---------------------------------------------------------------------------------


def random_boxes(rng: np.random.Generator, n: int, size: float = 200.0) -> np.ndarray:
    """``(n, 4)`` xyxy pixel boxes of widely varying size inside a ``size``-pixel image."""
    xy = rng.uniform(0, size * 0.8, (n, 2))
    wh = rng.uniform(2, size * 0.6, (n, 2)) * rng.choice([0.1, 0.5, 1.0], (n, 1))
    return np.concatenate([xy, xy + wh], axis=1)


def random_case(seed: int, num_images: int = 12, num_classes: int = 4):
    """Targets and noisy predictions, with images lacking ground truth and images lacking
    predictions, duplicates and wrong labels: every branch of the matchers gets exercised."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for i in range(num_images):
        g = 0 if i % 5 == 3 else int(rng.integers(1, 6))
        gt_boxes = random_boxes(rng, g)
        gt_labels = rng.integers(1, num_classes, g)
        targets.append(
            {
                "boxes": torch.tensor(gt_boxes, dtype=torch.float32),
                "labels": torch.tensor(gt_labels),
                "difficult": torch.tensor(rng.random(g) < 0.2),
            }
        )
        if i % 5 == 4:
            boxes, labels = np.zeros((0, 4)), np.zeros(0, np.int64)
        else:  # jittered copies of the truth (some twice), some relabelled, plus clutter
            keep = rng.random(g) < 0.8
            copies = rng.integers(1, 3, int(keep.sum()))
            near = np.repeat(gt_boxes[keep], copies, axis=0)
            near = near + rng.normal(0, 6, near.shape)
            near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 1)
            near_labels = np.repeat(gt_labels[keep], copies)
            flip = rng.random(len(near)) < 0.15
            near_labels = np.where(flip, rng.integers(1, num_classes, len(near)), near_labels)
            clutter = random_boxes(rng, int(rng.integers(0, 4)))
            boxes = np.concatenate([near, clutter])
            labels = np.concatenate([near_labels, rng.integers(1, num_classes, len(clutter))])
        preds.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                # Rounded scores make ties, which the orderings must agree on.
                "scores": torch.tensor(np.round(rng.random(len(boxes)), 1), dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.long),
            }
        )
    return preds, targets


def pycocotools_direct(preds, targets, tmp_path, areas=None, crowd=None):
    """The reference: an annotation file on disk, ``loadRes`` with xywh results, COCOeval."""
    images, annotations, cats = [], [], set()
    for i, t in enumerate(targets):
        images.append({"id": 100 + i, "width": 200, "height": 200})
        for j, (box, label) in enumerate(
            zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True)
        ):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 100 + i,
                    "category_id": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": areas[i][j] if areas else (x2 - x1) * (y2 - y1),
                    "iscrowd": int(crowd[i][j]) if crowd else 0,
                }
            )
            cats.add(label)
    for p in preds:
        cats.update(p["labels"].tolist())
    path = tmp_path / "instances.json"
    categories = [{"id": c, "name": f"c{c}"} for c in sorted(cats)]
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    results = [
        {
            "image_id": 100 + i,
            "category_id": lab,
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": s,
        }
        for i, p in enumerate(preds)
        for b, s, lab in zip(
            p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True
        )
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


# -- COCO ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_map_equals_pycocotools(seed, tmp_path):
    preds, targets = random_case(seed)
    ours = coco_map(preds, targets)
    ref = pycocotools_direct(preds, targets, tmp_path)
    for name, value in zip(COCO_STAT_NAMES, ref.stats, strict=True):
        expected = math.nan if value == -1 else float(value)
        assert same(ours[name], expected), (name, ours[name], expected)
    precision = ref.eval["precision"]  # (T, R, K, A, M)
    for k, cat in enumerate(ref.params.catIds):
        for key, p in (
            ("ap_per_class", precision[:, :, k, 0, -1]),
            ("ap50_per_class", precision[0, :, k, 0, -1]),
        ):
            expected = float(p[p > -1].mean()) if (p > -1).any() else math.nan
            assert same(ours[key][str(cat)], expected), (key, cat)
    assert 0 < ours["map"] < 1  # the case is neither trivial nor hopeless


def test_coco_map_honours_area_and_iscrowd(tmp_path):
    preds, targets = random_case(3)
    rng = np.random.default_rng(0)
    areas = [rng.uniform(10, 20000, len(t["boxes"])).tolist() for t in targets]
    crowd = [(rng.random(len(t["boxes"])) < 0.3).tolist() for t in targets]
    for t, a, c in zip(targets, areas, crowd, strict=True):
        t["area"], t["iscrowd"] = torch.tensor(a), torch.tensor(c)
    ours = coco_map(preds, targets)
    ref = pycocotools_direct(preds, targets, tmp_path, areas, crowd)
    for name, value in zip(COCO_STAT_NAMES, ref.stats, strict=True):
        assert same(ours[name], math.nan if value == -1 else float(value)), name


def test_coco_map_perfect_and_empty_predictions():
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10, 50, 60], [100, 100, 180, 150]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # no objects
    ]
    perfect = [
        {
            "boxes": targets[0]["boxes"],
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)},
    ]
    out = coco_map(perfect, targets, class_names=["background", "cat", "dog", "bird"])
    assert out["map"] == pytest.approx(1.0)
    assert out["ap_per_class"]["cat"] == pytest.approx(1.0)
    assert math.isnan(out["ap_per_class"]["bird"])  # no ground truth: undefined, not 0
    assert math.isnan(out["map_small"])  # no box under 32² pixels

    nothing = [{"boxes": [], "scores": [], "labels": []}] * 2  # loadRes would fail on this
    out = coco_map(nothing, targets)
    assert out["map"] == 0.0 and out["mar_100"] == 0.0

    no_truth = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    out = coco_map(perfect, no_truth)
    assert all(math.isnan(out[k]) for k in COCO_STAT_NAMES)


def test_coco_map_is_quiet_unless_verbose(capsys):
    preds, targets = random_case(0, num_images=3)
    coco_map(preds, targets)
    assert capsys.readouterr().out == ""
    coco_map(preds, targets, verbose=True)
    assert "Average Precision" in capsys.readouterr().out


# -- VOC: hand-computed ----------------------------------------------------------------------


def hand_case():
    """Two images, one class. Image 0 holds g0 and a *difficult* g1; image 1 holds g2.

    Detections by falling score: d0 hits g0 (TP), d1 hits g0 again (duplicate: FP), d2 hits the
    difficult g1 (ignored), d3 misses (FP), d4 hits g2 (TP). Two boxes count (g0, g2), so
    without d2: precision 1, 1/2, 1/3, 1/2 at recall 1/2, 1/2, 1/2, 1.
    """
    targets = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]),
            "labels": torch.tensor([1, 1]),
            "difficult": torch.tensor([False, True]),
        },
        {"boxes": torch.tensor([[50.0, 50, 60, 60]]), "labels": torch.tensor([1])},
    ]
    preds = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 30]]),
            "scores": torch.tensor([0.9, 0.8, 0.7]),
            "labels": torch.tensor([1, 1, 1]),
        },
        {
            "boxes": torch.tensor([[0.0, 0, 5, 5], [50, 50, 60, 60]]),
            "scores": torch.tensor([0.6, 0.5]),
            "labels": torch.tensor([1, 1]),
        },
    ]
    return preds, targets


def test_voc_hand_computed():
    preds, targets = hand_case()
    m = voc_match(preds, targets)
    assert m["status"].tolist() == [
        TRUE_POSITIVE,
        FALSE_POSITIVE,
        IGNORED,
        FALSE_POSITIVE,
        TRUE_POSITIVE,
    ]
    assert m["num_gt"].tolist() == [0, 2]
    curve = precision_recall(preds, targets)[1]
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 1 / 3, 1 / 2])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 0.5, 1.0])
    # All-point: precision 1 over recall [0, .5], then 1/2 over [.5, 1]: 0.5 + 0.25.
    assert curve.ap == pytest.approx(0.75)
    # 11-point: recall 0, .1, ..., .5 see precision 1 (6 points), .6 ... 1 see 1/2 (5 points).
    assert curve.ap_11point == pytest.approx((6 * 1 + 5 * 0.5) / 11)
    out = voc_map(preds, targets, class_names=["background", "box", "unused"])
    assert out["voc_map"] == pytest.approx(0.75)  # "unused" has no ground truth: not averaged
    assert out["voc07_map"] == pytest.approx(8.5 / 11)
    assert math.isnan(out["voc_ap_per_class"]["unused"])


def test_voc_iou_exactly_at_threshold_is_a_hit():
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 20]]), "labels": torch.tensor([1])}]
    at = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
        }
    ]  # IoU 100 / 200 = 0.5 exactly
    assert voc_match(at, targets)["status"].tolist() == [TRUE_POSITIVE]
    below = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 9.9]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
        }
    ]
    assert voc_match(below, targets)["status"].tolist() == [FALSE_POSITIVE]


def test_voc_duplicate_does_not_fall_back_to_second_best_box():
    """Two boxes; both detections overlap the left one best. VOC: the second is a duplicate
    (FP) even though it also overlaps the right box by > 0.5. COCO would give it the right box."""
    targets = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [2, 0, 12, 10]]), "labels": torch.tensor([1, 1])}
    ]
    preds = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [0.5, 0, 10.5, 10]]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([1, 1]),
        }
    ]
    assert voc_match(preds, targets)["status"].tolist() == [TRUE_POSITIVE, FALSE_POSITIVE]


def test_wrong_class_never_matches():
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2])}]
    preds = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
        }
    ]
    m = voc_match(preds, targets)
    assert m["status"].tolist() == [FALSE_POSITIVE] and m["iou"].tolist() == [-1.0]
    per_class = voc_map(preds, targets)["voc_ap_per_class"]
    assert math.isnan(per_class["1"])  # class 1 has no ground truth: undefined
    assert per_class["2"] == 0.0  # class 2 was never found


# -- VOC: against a devkit-style loop ----------------------------------------------------------


def devkit_ap(preds, targets, cls, iou_threshold=0.5):
    """VOCevaldet.m as a plain loop: sort one class's detections, claim boxes one at a time."""
    gt = {}
    npos = 0
    for i, t in enumerate(targets):
        keep = t["labels"] == cls
        diff = t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool))[keep]
        gt[i] = {
            "boxes": t["boxes"][keep].tolist(),
            "diff": diff.tolist(),
            "det": [False] * int(keep.sum()),
        }
        npos += int((~diff).sum())
    dets = [
        (s, i, b)
        for i, p in enumerate(preds)
        for b, s, lab in zip(
            p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True
        )
        if lab == cls
    ]
    dets.sort(key=lambda d: -d[0])  # Python's sort is stable, like MATLAB's
    tp, fp = [], []
    for _, i, b in dets:
        best, jmax = -math.inf, -1
        for j, g in enumerate(gt[i]["boxes"]):
            iw = min(b[2], g[2]) - max(b[0], g[0])
            ih = min(b[3], g[3]) - max(b[1], g[1])
            if iw > 0 and ih > 0:
                inter = iw * ih
                union = (b[2] - b[0]) * (b[3] - b[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
                if inter / union > best:
                    best, jmax = inter / union, j
        if best >= iou_threshold:
            if gt[i]["diff"][jmax]:
                tp.append(0), fp.append(0)
            elif not gt[i]["det"][jmax]:
                gt[i]["det"][jmax] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    with np.errstate(invalid="ignore"):
        prec = tp / (tp + fp)
    ap11 = np.mean([np.nanmax(prec[rec >= t], initial=0) for t in np.linspace(0, 1, 11)])
    mrec = np.concatenate([[0], rec, [1]])
    mpre = np.nan_to_num(np.concatenate([[0], prec, [0]]))
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx])), float(ap11)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("iou_threshold", [0.5, 0.7])
def test_voc_equals_devkit_loop(seed, iou_threshold):
    preds, targets = random_case(seed)
    curves = precision_recall(preds, targets, iou_threshold=iou_threshold)
    for cls, curve in curves.items():
        if curve.num_gt == 0:
            continue
        ap, ap11 = devkit_ap(preds, targets, cls, iou_threshold)
        assert curve.ap == pytest.approx(ap, abs=1e-12), cls
        assert curve.ap_11point == pytest.approx(ap11, abs=1e-12), cls


# -- average precision and PR curves -----------------------------------------------------------


def test_average_precision_literals():
    # One detection, a hit, one object: perfect either way.
    assert average_precision(np.array([1.0]), np.array([1.0])) == 1.0
    assert average_precision(np.array([1.0]), np.array([1.0]), "11point") == 1.0
    # Half the objects found with perfect precision, never the rest.
    assert average_precision(np.array([1.0]), np.array([0.5])) == 0.5
    assert average_precision(np.array([1.0]), np.array([0.5]), "11point") == pytest.approx(6 / 11)
    # No detections at all.
    assert average_precision(np.zeros(0), np.zeros(0)) == 0.0
    assert average_precision(np.zeros(0), np.zeros(0), "11point") == 0.0
    # A dip is filled in by the later, higher precision (the monotone envelope).
    p, r = np.array([1.0, 0.5, 2 / 3]), np.array([1 / 3, 1 / 3, 2 / 3])
    assert average_precision(p, r) == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)


def test_average_precision_rejects_bad_input():
    with pytest.raises(ValueError, match="method"):
        average_precision(np.ones(1), np.ones(1), "101point")
    with pytest.raises(ValueError, match="non-decreasing"):
        average_precision(np.ones(2), np.array([0.5, 0.2]))
    with pytest.raises(ValueError, match="one length"):
        average_precision(np.ones(2), np.ones(3))


def test_precision_recall_curves_for_plots():
    preds, targets = random_case(1)
    curves = precision_recall(preds, targets, class_names=["bg", "a", "b", "c"])
    assert sorted(curves) == [1, 2, 3]
    for c in curves.values():
        assert c.name in ("a", "b", "c")
        assert len(c.precision) == len(c.recall) == len(c.scores)
        assert np.all(np.diff(c.scores) <= 0) and np.all(np.diff(c.recall) >= 0)
        assert np.all((0 <= c.precision) & (c.precision <= 1))
        assert c.recall[-1] <= 1 if len(c.recall) else True
        assert "PRCurve(" in repr(c) and "ap=" in repr(c)


# -- bad input -------------------------------------------------------------------------------


def test_bad_input_names_the_problem():
    preds, targets = hand_case()
    with pytest.raises(ValueError, match="2 prediction dicts for 1 target"):
        coco_map(preds, targets[:1])
    bad = [dict(preds[0]), preds[1]]
    bad[0]["boxes"] = torch.tensor([[10.0, 10, 5, 20], [0, 0, 1, 1], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"predictions\[0\]: box 0 .* x2 < x1"):
        voc_map(bad, targets)
    bad[0]["boxes"] = torch.ones(3, 5)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        voc_map(bad, targets)
    bad_t = [dict(targets[0]), targets[1]]
    bad_t[0]["labels"] = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"targets\[0\]: labels must be >= 1"):
        coco_map(preds, bad_t)
    with pytest.raises(KeyError, match="scores"):
        voc_map([{"boxes": torch.zeros(0, 4), "labels": []}] * 2, targets)
    with pytest.raises(ValueError, match=r"labels \[1\] are outside the 1 class names"):
        coco_map(preds, targets, class_names=["background"])
    with pytest.raises(ValueError, match="not finite"):
        bad[0]["boxes"] = torch.tensor([[0.0, 0, math.nan, 1]] * 3)
        voc_map(bad, targets)


# -- the model-over-dataset runner -------------------------------------------------------------


def test_evaluate_runs_a_model_over_a_dataset(device):
    from ssdlib.data.shapes import ShapesDataset
    from ssdlib.model import build_ssd
    from ssdlib.priors import config_from_scales

    priors = config_from_scales(0.2, 0.9, ((2,),) * 4, (8, 4, 2, 1), 64, name="TINY")
    data = ShapesDataset(5, 64, seed=2, split="val")
    model = build_ssd(priors, len(data.classes), width=0.125, class_names=data.classes)
    metrics, preds, targets = evaluate(
        model, data, batch_size=2, device=device, progress=False, return_predictions=True
    )
    assert metrics["num_images"] == 5 and len(preds) == len(targets) == 5
    assert preds[0]["boxes"].device.type == "cpu"
    # The same numbers as scoring the model's own detections directly.
    direct = model.detect([data[i][0] for i in range(5)])
    expected = coco_map(direct, [data[i][1] for i in range(5)], data.classes)
    for key in COCO_STAT_NAMES:
        assert same(metrics[key], expected[key]), key
    assert set(metrics["voc_ap_per_class"]) == set(data.classes[1:])

    wrong = build_ssd(priors, 3, width=0.125)
    with pytest.raises(ValueError, match="the model has 3 classes"):
        evaluate(wrong, data, progress=False)


def test_classes_in_another_order_or_renamed_are_refused():
    """Only the count was compared: the same classes reordered scored as if they matched."""
    from ssdlib.evaluate import check_same_classes

    ours = ["background", "circle", "square", "ring"]
    check_same_classes(ours, ["__background__", "circle", "square", "ring"], "val")  # index 0 free
    with pytest.raises(ValueError, match="class 1 is 'circle' for the model but 'square' in val"):
        check_same_classes(ours, ["bg", "square", "circle", "ring"], "val")
    with pytest.raises(ValueError, match="class 3 is 'ring' for the model but 'donut'"):
        check_same_classes(ours, ["bg", "circle", "square", "donut"], "val")
    with pytest.raises(ValueError, match="the model has 4 classes"):
        check_same_classes(ours, ["bg", "circle"], "val")
    check_same_classes(["background", "class_1", "class_2"], ["bg", "a", "b"], "val")  # unnamed
