"""The report: the pycocotools table against pycocotools' own printout, the error kinds on
hand-made cases and against a pure-Python loop and the VOC matcher, the confusion matrix on
literal cases and against a loop, galleries read back from their axes, and inference timing
checked for what it returns (never for how fast)."""

from __future__ import annotations

import contextlib
import io
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdlib import report
from ssdlib.coco_metric import coco_map
from ssdlib.report import (
    BACKGROUND,
    CONFUSION,
    CORRECT,
    DUPLICATE,
    ERROR_KINDS,
    LOCALISATION,
    coco_summary,
    confusion_matrix,
    diagnose,
    most_confused,
)
from ssdlib.utils import share_by_size
from ssdlib.viz import report as viz_report
from ssdlib.voc_metric import IGNORED, TRUE_POSITIVE, precision_recall, voc_match

NAMES = ["background", "circle", "square", "star"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def det(boxes, scores, labels) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def gt(boxes, labels, difficult=None) -> dict[str, torch.Tensor]:
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
    }
    if difficult is not None:
        target["difficult"] = torch.tensor(difficult)
    return target


def random_case(seed: int, num_images: int = 10, num_classes: int = 4, difficult: bool = True):
    """Objects, and detections near them (jittered, some relabelled, some twice) plus clutter,
    scores on a coarse grid so that ties happen; images without objects or detections."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for i in range(num_images):
        g = 0 if i % 4 == 3 else int(rng.integers(1, 6))
        xy = rng.uniform(0, 150, (g, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(4, 80, (g, 2))], axis=1)
        labels = rng.integers(1, num_classes, g)
        flags = (rng.random(g) < 0.2) if difficult else None
        targets.append(gt(boxes.tolist(), labels.tolist(), flags.tolist() if difficult else None))
        d_boxes, d_labels = [], []
        if i % 5 != 4:
            for b, c in zip(boxes, labels, strict=True):
                for _ in range(int(rng.integers(0, 3))):
                    jitter = rng.normal(0, 0.1, 4) * (b[2:] - b[:2]).repeat(2)
                    moved = b + jitter
                    d_boxes.append(
                        [*np.minimum(moved[:2], moved[2:]), *np.maximum(moved[:2], moved[2:])]
                    )
                    d_labels.append(
                        int(c) if rng.random() < 0.75 else int(rng.integers(1, num_classes))
                    )
            for _ in range(int(rng.integers(0, 4))):
                xy = rng.uniform(0, 200, 2)
                d_boxes.append([*xy, *(xy + rng.uniform(3, 50, 2))])
                d_labels.append(int(rng.integers(1, num_classes)))
        scores = rng.integers(1, 11, len(d_boxes)) / 10  # ties on purpose
        preds.append(det(d_boxes, scores.tolist(), d_labels))
    return preds, targets


# -- the pycocotools table ---------------------------------------------------------------------


def pycocotools_lines(preds, targets, names) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        metrics = coco_map(preds, targets, names, verbose=True)
    lines = [line for line in out.getvalue().splitlines() if line.startswith(" Average")]
    return metrics, lines


def test_coco_summary_equals_the_pycocotools_printout():
    preds, targets = random_case(0)
    metrics, lines = pycocotools_lines(preds, targets, NAMES)
    assert len(lines) == 12
    assert coco_summary(metrics).splitlines() == lines


def test_coco_summary_prints_minus_one_where_pycocotools_does():
    # only small objects (< 32² px): medium and large have no ground truth, so -1 in both
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 32]], [1, 2])]
    preds = [det([[0, 0, 10, 10]], [0.9], [1])]
    metrics, lines = pycocotools_lines(preds, targets, NAMES)
    assert math.isnan(metrics["map_large"])
    assert coco_summary(metrics).splitlines() == lines
    assert coco_summary(metrics).splitlines()[5].endswith("= -1.000")


def test_coco_summary_needs_the_metrics():
    with pytest.raises(KeyError, match="summary"):
        coco_summary({"map": 0.5, "map_50": 0.7})


# -- diagnose: hand-made cases -----------------------------------------------------------------


def hand_case():
    """One image. A circle (object 0) and a square (object 1) and a circle nobody finds
    (object 2); five detections, one of each kind, scores falling."""
    targets = [gt([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [1, 2, 1])]
    preds = [
        det(
            [
                [0, 0, 10, 10],  # circle on the circle: correct
                [0, 0, 10, 9],  # circle on it again (IoU 0.9): duplicate
                [0, 0, 10, 10],  # square on the circle: confusion
                [20, 20, 30, 30],  # square on a quarter of the square (IoU 0.25): localisation
                [100, 100, 110, 110],  # circle on nothing: background
            ],
            [0.9, 0.8, 0.7, 0.6, 0.5],
            [1, 1, 2, 2, 1],
        )
    ]
    return preds, targets


def test_diagnose_labels_each_kind():
    d = diagnose(*hand_case(), NAMES)
    assert d.det_kind.tolist() == [CORRECT, DUPLICATE, CONFUSION, LOCALISATION, BACKGROUND]
    assert d.det_object.tolist() == [0, 0, 0, 1, -1]
    np.testing.assert_allclose(d.det_iou, [1.0, 0.9, 1.0, 0.25, 0.0])
    assert d.det_score.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert d.obj_score.tolist() == pytest.approx([0.9, 0.0, 0.0])
    np.testing.assert_allclose(d.obj_size, [10.0, 20.0, 10.0])
    assert d.counts(0.5) == {
        "correct": 1, "localisation": 1, "duplicate": 1, "confusion": 1, "background": 1,
        "missed": 2,
    }  # fmt: skip
    assert d.counts(0.75) == {
        "correct": 1, "localisation": 0, "duplicate": 1, "confusion": 0, "background": 0,
        "missed": 2,
    }  # fmt: skip
    assert d.counts(0.95)["missed"] == 3
    assert d.misses(0.5).tolist() == [2, 1]  # smallest first: the 10 px circle, then the square
    assert d.false_positives(0.5).tolist() == [1, 2, 3, 4]
    assert d.false_positives(0.5, kinds=["background", "confusion"]).tolist() == [2, 4]
    assert "correct 1" in repr(d) and "missed 2" in repr(d)


def test_diagnose_thresholds_are_inclusive():
    # IoU exactly 0.5 is correct; exactly 0.1 with its class is a localisation error
    targets = [gt([[0, 0, 10, 20], [0, 100, 10, 200]], [1, 2])]
    preds = [det([[0, 0, 10, 10], [0, 100, 10, 110]], [0.9, 0.8], [1, 2])]
    d = diagnose(preds, targets, NAMES)
    assert d.det_iou.tolist() == pytest.approx([0.5, 0.1])
    assert d.det_kind.tolist() == [CORRECT, LOCALISATION]


def test_diagnose_localisation_comes_before_confusion():
    # IoU 0.3 with a circle and 0.8 with a square: a circle detection is a localisation error
    targets = [gt([[0, 0, 10, 10], [0, 0, 10, 8]], [1, 2])]
    preds = [det([[0, 0, 10, 3]], [0.9], [1])]
    d = diagnose(preds, targets, NAMES)
    assert d.det_kind.tolist() == [LOCALISATION] and d.det_iou.tolist() == pytest.approx([0.3])


def test_diagnose_difficult_objects_count_nowhere():
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], difficult=[True, False])]
    preds = [det([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [1, 1])]
    d = diagnose(preds, targets, NAMES)
    assert d.det_index.tolist() == [1]  # the detection on the difficult circle is left out
    assert d.det_kind.tolist() == [BACKGROUND]
    assert d.obj_index.tolist() == [1] and d.obj_score.tolist() == [0.0]


def test_diagnose_empty_inputs():
    d = diagnose([det([], [], [])], [gt([], [])], NAMES)
    assert len(d.det_kind) == 0 and len(d.obj_label) == 0
    assert d.counts()["missed"] == 0
    counts, recall = d.recall_by_size()
    assert counts.sum() == 0 and np.isnan(recall).all()
    d = diagnose([det([], [], [])], [gt([[0, 0, 5, 5]], [3])], NAMES)
    assert d.misses().tolist() == [0]
    d = diagnose([det([[0, 0, 5, 5]], [0.7], [3])], [gt([], [])], NAMES)
    assert d.det_kind.tolist() == [BACKGROUND] and d.det_object.tolist() == [-1]


def test_diagnose_rejects_bad_input():
    preds, targets = hand_case()
    with pytest.raises(ValueError, match="background_iou"):
        diagnose(preds, targets, NAMES, iou_threshold=0.5, background_iou=0.6)
    with pytest.raises(ValueError, match=r"labels \[3\] are outside the 3 class names"):
        diagnose(preds, [gt([[0, 0, 1, 1]], [3])], NAMES[:3])
    with pytest.raises(ValueError, match="1 target dicts"):
        diagnose(preds + preds, targets, NAMES)
    d = diagnose(preds, targets, NAMES)
    with pytest.raises(ValueError, match="score_threshold must be in"):
        d.misses(0.0)
    with pytest.raises(ValueError, match="unknown kind 'wrong'"):
        d.false_positives(0.5, kinds=["wrong"])
    with pytest.raises(ValueError, match="increasing"):
        d.recall_by_size(0.5, edges=[0, 32, 16])


def test_recall_by_size_literal():
    sizes = [4, 8, 20, 30, 40, 300]  # squares: bins < 16 (2), 16-32 (2), 32-64 (1), >= 256 (1)
    targets = [gt([[0, 0, s, s] for s in sizes], [1] * len(sizes))]
    preds = [det([[0, 0, 8, 8], [0, 0, 20, 20], [0, 0, 300, 300]], [0.9, 0.3, 0.6], [1, 1, 1])]
    d = diagnose(preds, targets, NAMES)
    counts, recall = d.recall_by_size(0.5)
    assert counts.tolist() == [2, 2, 1, 0, 0, 1]
    np.testing.assert_allclose(recall, [0.5, 0.0, 0.0, np.nan, np.nan, 1.0])
    counts, recall = d.recall_by_size(0.2, edges=[0, 16, 1000])
    assert counts.tolist() == [2, 4] and recall.tolist() == [0.5, 0.5]


def test_share_by_size_literal():
    """The one binning by size: ``[lo, hi)`` bins, the last one open above, nan where empty."""
    sizes = np.array([0.0, 0.05, 0.1, 0.5, 1.0, 2.0])
    flags = np.array([True, False, True, True, False, True])
    counts, share = share_by_size(sizes, flags, (0, 0.1, 0.5, 1.0))
    assert counts.tolist() == [2, 1, 3]  # 1.0 and 2.0, at or past the last edge: the last bin
    np.testing.assert_allclose(share, [0.5, 1.0, 2 / 3])
    counts, share = share_by_size(np.array([-1.0]), np.array([True]), (0, 1))
    assert counts.tolist() == [0] and np.isnan(share).all()  # below the first edge: nowhere
    with pytest.raises(ValueError, match="one shape"):
        share_by_size(np.zeros(2), np.zeros(3, bool), (0, 1))


# -- diagnose: against a pure-Python loop and against voc_match ---------------------------------


def py_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_diagnosis(preds, targets, iou_t=0.5, bg_t=0.1):
    """Hoiem's rules, one detection at a time: (image, index, kind, object) in score order,
    and the score that finds each non-difficult object."""
    dets = []
    for i, p in enumerate(preds):
        for j in range(len(p["scores"])):
            dets.append((-float(p["scores"][j]), i, j))
    dets.sort(key=lambda t: t[0])  # stable: image, then index, on ties (as the library)
    claimed, out = set(), []
    found = {}
    for neg_score, i, j in dets:
        box, label = preds[i]["boxes"][j].double().tolist(), int(preds[i]["labels"][j])
        objs = targets[i]["boxes"].double().tolist()
        labels = targets[i]["labels"].tolist()
        difficult = targets[i].get("difficult", torch.zeros(len(objs), dtype=torch.bool)).tolist()
        best_same, same_k, best_other, other_k = -1.0, -1, -1.0, -1
        for k, (obj, c) in enumerate(zip(objs, labels, strict=True)):
            v = py_iou(box, obj)
            if c == label and v > best_same:
                best_same, same_k = v, k
            if c != label and v > best_other:
                best_other, other_k = v, k
        if best_same >= iou_t:
            if difficult[same_k]:
                continue  # left out
            if (i, same_k) in claimed:
                out.append((i, j, DUPLICATE, same_k))
            else:
                claimed.add((i, same_k))
                found[(i, same_k)] = -neg_score
                out.append((i, j, CORRECT, same_k))
        elif best_same >= bg_t:
            out.append((i, j, LOCALISATION, same_k))
        elif best_other >= bg_t:
            out.append((i, j, CONFUSION, other_k))
        else:
            out.append((i, j, BACKGROUND, -1))
    obj_scores = [
        found.get((i, k), 0.0)
        for i, t in enumerate(targets)
        for k, hard in enumerate(t.get("difficult", torch.zeros(len(t["labels"]))).tolist())
        if not hard
    ]
    return out, obj_scores


@pytest.mark.parametrize("seed", range(6))
def test_diagnose_matches_a_python_loop(seed):
    preds, targets = random_case(seed)
    d = diagnose(preds, targets, NAMES)
    expected, obj_scores = reference_diagnosis(preds, targets)
    columns = (d.det_image, d.det_index, d.det_kind, d.det_object)
    got = list(zip(*(c.tolist() for c in columns), strict=True))
    assert got == expected
    np.testing.assert_allclose(d.obj_score, obj_scores, rtol=1e-6)
    assert len(set(d.det_kind.tolist())) >= 4  # the case exercises the kinds


@pytest.mark.parametrize("seed", range(4))
def test_correct_detections_are_voc_true_positives(seed):
    preds, targets = random_case(seed + 10)
    d = diagnose(preds, targets, NAMES)
    m = voc_match(preds, targets)  # the same order: falling score, ties in image order
    kept = m["status"] != IGNORED
    assert d.det_score.tolist() == m["score"][kept].tolist()
    assert ((d.det_kind == CORRECT) == (m["status"][kept] == TRUE_POSITIVE)).all()
    # recall at any threshold is VOC's: found objects / non-difficult objects
    assert d.found(0.05).sum() == (m["status"] == TRUE_POSITIVE).sum()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.sampled_from([0.2, 0.5, 0.8]))
def test_one_diagnosis_serves_every_threshold(seed, threshold):
    """Diagnosing only the detections above a threshold changes nothing for them."""
    preds, targets = random_case(seed, num_images=5)
    full = diagnose(preds, targets, NAMES)
    kept = [
        {k: v[p["scores"] >= threshold] for k, v in p.items()} for p in preds
    ]  # the same detections, thresholded first
    part = diagnose(kept, targets, NAMES)
    above = full.det_score >= threshold
    assert part.det_kind.tolist() == full.det_kind[above].tolist()
    assert (part.found(threshold) == full.found(threshold)).all()
    assert full.counts(threshold)["correct"] == int(full.found(threshold).sum())


# -- the confusion matrix ----------------------------------------------------------------------


def test_confusion_matrix_literal():
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], [1, 1, 2])]
    preds = [
        det(
            [[0, 0, 10, 10], [20, 20, 30, 29], [100, 100, 110, 110], [0, 0, 10, 9]],
            [0.9, 0.8, 0.7, 0.6],
            [1, 2, 3, 1],
        )
    ]
    m = confusion_matrix(preds, targets, num_classes=4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[1, 1] = 1  # circle found
    expected[1, 2] = 1  # circle taken for a square
    expected[2, 0] = 1  # square missed
    expected[0, 3] = 1  # star on nothing
    expected[0, 1] = 1  # second circle on the found circle: paired with nothing
    np.testing.assert_array_equal(m, expected)
    assert most_confused(m, NAMES) == ("circle", "square", 1)
    below = confusion_matrix(preds, targets, num_classes=4, score_threshold=0.85)
    assert below[1, 1] == 1 and below[1, 0] == 1 and below[2, 0] == 1 and below.sum() == 3


def test_confusion_pairs_by_iou_not_score():
    # A (square, 0.9) overlaps the circle by 0.82 and the square by 0.54; B (circle, 0.8) is
    # exactly on the circle. By IoU: B-circle (1.0), then A-square. By score, A would take the
    # circle and B and the square would stay unpaired.
    targets = [gt([[0, 0, 10, 10], [4, 0, 14, 10]], [1, 2])]
    preds = [det([[1, 0, 11, 10], [0, 0, 10, 10]], [0.9, 0.8], [2, 1])]
    m = confusion_matrix(preds, targets, num_classes=3)
    np.testing.assert_array_equal(m, np.diag([0, 1, 1]))
    assert most_confused(m, NAMES[:3]) == ("", "", 0)
    tie = np.array([[0, 0, 0], [0, 4, 2], [0, 2, 4]])
    assert most_confused(tie, NAMES[:3]) == ("circle", "square", 2)  # first in row order


def reference_confusion(preds, targets, k, score_t=0.5, iou_t=0.5):
    m = [[0] * k for _ in range(k)]
    for p, t in zip(preds, targets, strict=True):
        dets = [
            (b, int(c), float(s))
            for b, c, s in zip(p["boxes"].double().tolist(), p["labels"], p["scores"], strict=True)
            if float(s) >= score_t
        ]
        objs = list(zip(t["boxes"].double().tolist(), t["labels"].tolist(), strict=True))
        hard = t.get("difficult", torch.zeros(len(objs), dtype=torch.bool)).tolist()
        pairs = []
        for d, (db, _, ds) in enumerate(dets):
            for o, (ob, _) in enumerate(objs):
                v = py_iou(db, ob)
                if v >= iou_t:
                    pairs.append((-v, -ds, d, o))
        pairs.sort()
        used_d, used_o = set(), set()
        for _, _, d, o in pairs:
            if d in used_d or o in used_o:
                continue
            used_d.add(d)
            used_o.add(o)
            if not hard[o]:
                m[objs[o][1]][dets[d][1]] += 1
        for o, (_, c) in enumerate(objs):
            if o not in used_o and not hard[o]:
                m[c][0] += 1
        for d, (_, c, _) in enumerate(dets):
            if d not in used_d:
                m[0][c] += 1
    return np.array(m)


@pytest.mark.parametrize("seed", range(5))
def test_confusion_matrix_matches_a_python_loop(seed):
    preds, targets = random_case(seed + 20)
    m = confusion_matrix(preds, targets, num_classes=4)
    np.testing.assert_array_equal(m, reference_confusion(preds, targets, 4))
    # rows count objects (difficult left out), columns the detections above the threshold
    plain = random_case(seed + 20, difficult=False)
    m = confusion_matrix(*plain, num_classes=4)
    objects = np.bincount(torch.cat([t["labels"] for t in plain[1]]).numpy(), minlength=4)
    assert m[1:].sum(axis=1).tolist() == objects[1:].tolist()
    dets = torch.cat([p["labels"][p["scores"] >= 0.5] for p in plain[0]]).numpy()
    assert m[:, 1:].sum(axis=0).tolist() == np.bincount(dets, minlength=4)[1:].tolist()


def test_confusion_matrix_rejects_bad_input():
    preds, targets = hand_case()
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        confusion_matrix(preds, targets, num_classes=1)
    with pytest.raises(ValueError, match=r"labels \[2\] are outside the 2 class names"):
        confusion_matrix(preds, targets, num_classes=2)
    with pytest.raises(ValueError, match="score_threshold"):
        confusion_matrix(preds, targets, num_classes=4, score_threshold=1.5)
    assert most_confused(np.eye(3, dtype=int), NAMES[:3]) == ("", "", 0)


# -- figures -----------------------------------------------------------------------------------


def history(with_val: bool = True) -> list[dict[str, float]]:
    rows = []
    for step in range(10, 110, 10):
        row = {"step": step, "loss": 5 / step, "loc_loss": 2 / step, "conf_loss": 3 / step}
        row["lr"] = 1e-3
        if with_val and step % 50 == 0:
            row |= {"val_map": step / 400, "val_map_50": step / 200}
        rows.append(row)
    return rows


def test_plot_history():
    fig = viz_report.plot_history(history())
    loss_ax, _, map_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines][:1] == ["total"]
    assert map_ax.lines[0].get_xdata().tolist() == [50, 100]
    assert map_ax.lines[0].get_ydata().tolist() == [0.25, 0.5]
    fig = viz_report.plot_history(history(with_val=False))
    assert "no validation" in fig.axes[2].texts[0].get_text()
    with pytest.raises(ValueError, match="history is empty"):
        viz_report.plot_history([])
    with pytest.raises(KeyError, match="conf_loss"):
        viz_report.plot_history([{"step": 1, "loss": 1.0, "loc_loss": 1.0, "lr": 1.0}])


def test_plot_pr_curves_and_image_detections():
    preds, targets = hand_case()
    ax = viz_report.plot_pr_curves(precision_recall(preds, targets, NAMES))
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["circle  AP 0.50", "square  AP 0.00"]  # star has no ground truth
    image = torch.rand(3, 120, 100)
    ax = viz_report.plot_image_detections(image, preds[0], NAMES, 0.65, target=targets[0])
    assert len(ax.patches) == 3 + 3  # 3 detections score >= 0.65, 3 objects
    first = ax.patches[0]
    assert (first.get_x(), first.get_y(), first.get_width()) == (0.0, 0.0, pytest.approx(0.1))
    with pytest.raises(ValueError, match=r"shape \(3, H, W\)"):
        viz_report.plot_image_detections(torch.rand(120, 100), preds[0], NAMES)


def test_error_breakdown_and_recall_by_size_figures():
    d = diagnose(*hand_case(), NAMES)
    ax = viz_report.plot_error_breakdown(d, 0.75)
    assert len(ax.collections) == len(ERROR_KINDS)
    assert ax.lines[0].get_xdata()[0] == pytest.approx(2 / 3)  # 2 detections above, 3 objects
    ax = viz_report.plot_recall_by_size(d, 0.5)
    found_bars = ax.patches[len(report.SIZE_EDGES_PX) - 1 :]
    assert [round(b.get_height(), 3) for b in found_bars] == [0.5, 0.0, 0, 0, 0, 0]
    empty = diagnose([det([], [], [])], [gt([], [])], NAMES)
    assert viz_report.plot_error_breakdown(empty).texts[0].get_text() == "no detections"


def test_galleries():
    preds, targets = hand_case()
    dataset = [(torch.rand(3, 120, 100), targets[0])]
    d = diagnose(preds, targets, NAMES)
    fig = viz_report.plot_misses(dataset, d, 0.5, n=8)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    assert axes[0].get_title() == "image 0: circle, 10 px\nnever found"
    x0, x1 = axes[0].get_xlim()
    assert 0 <= x0 < 0.5 < x1 <= 1  # zoomed around the circle at x 0.5-0.6
    assert x1 - x0 == pytest.approx(0.3)  # 3 × 10 px = 30 px of the 100 px width
    # patches: the 3 objects (dashed), the detections above 0.5 that overlap the missed object
    # (none on the circle; the 0.6 square on the square), the missed object (thick)
    assert [len(ax.patches) for ax in axes] == [3 + 0 + 1, 3 + 1 + 1]
    crowd = [det([[0, 0, 10, 10 + k] for k in range(6)], [0.9] * 6, [2] * 6)]
    fig = viz_report.plot_misses(dataset, diagnose(crowd, targets, NAMES), 0.5, n=1)
    assert len(fig.axes[0].patches) == 3 + viz_report.MAX_CONTEXT_DETECTIONS + 1
    fig = viz_report.plot_false_positives(dataset, d, 0.5, n=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == [
        "duplicate: circle 0.80\non a circle, IoU 0.90",
        "confusion: square 0.70\non a circle, IoU 1.00",
        "localisation: square 0.60\non a square, IoU 0.25",
    ]
    fig = viz_report.plot_false_positives(dataset, d, 0.5, kinds=["background"])
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["background: circle 0.50"]
    fig = viz_report.plot_misses(dataset, d, 0.05)
    fig = viz_report.plot_false_positives(dataset, d, 0.95)
    assert "no false positives" in fig.axes[0].texts[0].get_text()
    with pytest.raises(ValueError, match="n must be >= 1"):
        viz_report.plot_misses(dataset, d, n=0)
    with pytest.raises(ValueError, match=r"dataset\[0\] should give"):
        viz_report.plot_misses([("not an image", {})], d)


def test_plot_confusion():
    m = np.array([[0, 1, 0], [2, 5, 1], [0, 0, 3]])
    ax = viz_report.plot_confusion(m, NAMES[:3])
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "2", "3", "5"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["missed", "circle", "square"]
    with pytest.raises(ValueError, match=r"\(4, 4\) matrix"):
        viz_report.plot_confusion(m, NAMES)
