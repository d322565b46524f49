"""The command line, end to end on tiny runs: train -> evaluate -> detect -> export, and the
one-line errors for a missing dataset, a checkpoint that does not fit, an unknown preset."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageColor

from ssdlib.checkpoint import load_model, read_training_checkpoint
from ssdlib.cli import draw_detections, main
from ssdlib.data.common import tensor_to_uint8
from ssdlib.data.shapes import CLASSES, ShapesDataset
from ssdlib.train import LAST
from ssdlib.utils import TAB10

# cpu-tiny's geometry at an eighth of VGG16's width, 8 images, batch 4: two steps take seconds.
TINY_TRAIN = [
    "train", "--preset", "cpu-tiny", "--dataset", "shapes", "--limit", "8", "--batch-size", "4",
    "--width", "0.125", "--max-steps", "2", "--eval-every", "0", "--quiet",
]  # fmt: skip


def replace_option(argv: list[str], flag: str, value: str) -> list[str]:
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One tiny training run shared by the tests that need a checkpoint."""
    out = tmp_path_factory.mktemp("run")
    assert main([*TINY_TRAIN, "--out", str(out)]) == 0
    return out


def test_train(run_dir, capsys):
    assert {p.name for p in run_dir.iterdir()} >= {"last.pt", "best.pt", "metrics.csv"}
    ckpt = read_training_checkpoint(run_dir / LAST)
    assert ckpt["state"]["step"] == 2 and ckpt["config"]["name"] == "cpu-tiny"
    assert ckpt["config"]["width"] == 0.125 and ckpt["config"]["batch_size"] == 4
    assert "val_map" in ckpt["state"]["history"][-1]  # validated at the end

    # --resume with a larger budget continues from step 2; the summary goes to stdout as JSON.
    more = replace_option(TINY_TRAIN, "--max-steps", "3")
    code, out, _ = run(capsys, *more, "--resume", "--out", str(run_dir))
    assert code == 0
    summary = json.loads(out)
    assert summary["steps"] == 3 and summary["stopped_by"] == "max_steps"


def test_evaluate_prints_metrics_as_json(run_dir, capsys):
    code, out, _ = run(
        capsys, "evaluate", "--checkpoint", str(run_dir / "best.pt"), "--dataset", "shapes",
        "--limit", "4", "--quiet",
    )  # fmt: skip
    assert code == 0
    metrics = json.loads(out)
    assert metrics["num_images"] == 4
    for key in ("map", "map_50", "voc07_map", "voc_map", "ap_per_class"):
        assert key in metrics
    assert metrics["map"] is None or 0 <= metrics["map"] <= 1  # nan is written as null


def test_detect_draws_labelled_boxes(run_dir, tmp_path, capsys):
    image = ShapesDataset(1, 128, seed=0, split="test")[0][0]
    path = tmp_path / "scene.png"
    Image.fromarray(tensor_to_uint8(image)).save(path)
    out_dir = tmp_path / "drawn"
    code, out, _ = run(
        capsys, "detect", "--checkpoint", str(run_dir / LAST), str(path), "--out", str(out_dir),
        "--score-threshold", "0.0",
    )  # fmt: skip
    assert code == 0
    (report,) = json.loads(out)
    assert report["output"] == str(out_dir / "scene.png")
    assert len(report["detections"]) > 0  # threshold 0: even an untrained model draws boxes
    first = report["detections"][0]
    assert set(first) == {"label", "score", "box"} and first["label"] in CLASSES
    drawn = np.asarray(Image.open(out_dir / "scene.png"))
    assert drawn.shape == (128, 128, 3)
    assert (drawn != np.asarray(Image.open(path))).any()  # boxes were drawn


def test_draw_detections_outlines_each_box_in_its_class_colour():
    image = torch.zeros(3, 150, 150, dtype=torch.uint8)  # black; outline width 150 / 150 = 1 px
    det = {
        "boxes": torch.tensor([[10.0, 60.0, 80.0, 120.0], [90.0, 20.0, 140.0, 70.0]]),
        "scores": torch.tensor([0.9, 0.5]),
        "labels": torch.tensor([1, 2]),
    }
    drawn = draw_detections(image, det, CLASSES)
    assert drawn.shape == (3, 150, 150) and drawn.dtype == torch.uint8
    for (x1, y1, x2, y2), label in zip(det["boxes"].int().tolist(), [1, 2], strict=True):
        colour = ImageColor.getrgb(TAB10[label])
        assert tuple(drawn[:, y2, x1 + 5].tolist()) == colour  # the bottom edge
        assert tuple(drawn[:, (y1 + y2) // 2, x2].tolist()) == colour  # the right edge
        assert (drawn[:, y1 + 3 : y1 + 12, x1 + 3 : x1 + 20] == 255).any()  # white label text
    assert (drawn[:, 0:5, 0:5] == 0).all()  # outside the boxes the image is as it was
    empty = {k: v[:0] for k, v in det.items()}  # nothing detected: the image as it is
    assert torch.equal(draw_detections(image, empty, CLASSES), image)


def test_export_writes_a_model_file(run_dir, tmp_path, capsys):
    target = tmp_path / "data" / "model.pt"
    code, out, _ = run(
        capsys, "export", "--checkpoint", str(run_dir / "best.pt"), "--out", str(target)
    )
    assert code == 0 and json.loads(out)["output"] == str(target)
    exported = load_model(target)
    original = load_model(run_dir / "best.pt")
    assert exported.cfg == original.cfg and exported.class_names == original.class_names
    for key, value in original.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == exported.state_dict()[key].dtype  # fp32 kept
            assert torch.equal(value, exported.state_dict()[key]), key
    # The model file works where a checkpoint does.
    code, out, _ = run(
        capsys, "evaluate", "--checkpoint", str(target), "--dataset", "shapes", "--limit", "2",
        "--quiet",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["num_images"] == 2


# -- errors: one line, no traceback, non-zero exit ------------------------------------------------


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_missing_dataset(run_dir, tmp_path, capsys):
    code, _, err = run(
        capsys, "train", "--preset", "cpu-tiny", "--dataset", "voc", "--data-root",
        str(tmp_path), "--max-steps", "1", "--out", str(tmp_path / "voc"),
    )  # fmt: skip
    assert code == 1
    line = one_line_error(err)
    assert "VOC2007" in line and "not found" in line
    code, _, err = run(
        capsys, "evaluate", "--checkpoint", str(run_dir / LAST), "--dataset", "coco",
    )  # fmt: skip
    assert code == 1 and "--data-root" in one_line_error(err)


def test_checkpoint_of_another_config(run_dir, tmp_path, capsys):
    wider = replace_option(TINY_TRAIN, "--width", "0.25")
    code, _, err = run(capsys, *wider, "--resume", "--out", str(run_dir))
    assert code == 1
    assert "width: 0.125 vs 0.25" in one_line_error(err)
    csv = run_dir / "metrics.csv"
    code, _, err = run(capsys, "export", "--checkpoint", str(csv), "--out", str(tmp_path / "m"))
    assert code == 1 and "metrics.csv" in one_line_error(err)


def test_unknown_preset_exits_with_one_line():
    # A real process: `python -m ssdlib` and its exit status.
    result = subprocess.run(
        [sys.executable, "-m", "ssdlib", "train", "--preset", "ssd9000", "--dataset", "shapes",
         "--out", "x"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert "invalid choice: 'ssd9000'" in line and "cpu-tiny" in line


def test_train_augment_option_reaches_the_config_and_the_data(tmp_path, monkeypatch):
    import ssdlib.cli as cli

    seen = {}
    real = cli.train_dataset

    def spy(args, image_size, augment="ssd"):
        seen["augment"] = augment
        return real(args, image_size, augment)

    monkeypatch.setattr(cli, "train_dataset", spy)
    argv = replace_option(TINY_TRAIN, "--max-steps", "1")
    assert main([*argv, "--augment", "none", "--no-val", "--out", str(tmp_path)]) == 0
    assert seen["augment"] == "none"
    assert read_training_checkpoint(tmp_path / LAST)["config"]["augment"] == "none"
    with pytest.raises(SystemExit):
        main([*argv, "--augment", "crops", "--out", str(tmp_path / "x")])


# -- nothing lost ----------------------------------------------------------------------------------


def _scene(path, seed: int = 0):
    image = ShapesDataset(1, 64, seed=seed, split="test")[0][0]
    Image.fromarray(tensor_to_uint8(image)).save(path)
    return path


def test_detect_never_replaces_an_input_or_an_earlier_output(run_dir, tmp_path, capsys):
    photo = _scene(tmp_path / "a.png")
    original = photo.read_bytes()
    detect = ["detect", "--checkpoint", str(run_dir / LAST)]
    code, _, err = run(capsys, *detect, str(photo), "--out", str(tmp_path))  # its own folder
    assert code == 1 and "input images" in one_line_error(err)
    assert photo.read_bytes() == original
    # Two inputs with one name get two outputs; an unreadable one is reported, the rest done.
    (tmp_path / "in").mkdir()
    other = _scene(tmp_path / "in" / "a.jpg", seed=1)
    broken = tmp_path / "in" / "b.png"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, *detect, str(photo), str(other), str(broken), "--out", str(out))
    assert code == 1 and "1 of 3 images could not be read" in err and str(broken) in err
    report = json.loads(stdout)
    assert [r.get("output") for r in report[:2]] == [str(out / "a_png.png"), str(out / "a_jpg.png")]
    assert "error" in report[2] and (out / "a_png.png").exists() and (out / "a_jpg.png").exists()
    # Again into the same folder: refused without --overwrite, done with it.
    code, _, err = run(capsys, *detect, str(photo), "--out", str(out / "again"))
    assert code == 0
    code, _, err = run(capsys, *detect, str(photo), "--out", str(out / "again"))
    assert code == 1 and "--overwrite" in one_line_error(err)
    code, _, _ = run(capsys, *detect, str(photo), "--out", str(out / "again"), "--overwrite")
    assert code == 0
    code, _, err = run(capsys, *detect, str(tmp_path / "in"), "--out", str(out))
    assert code == 1 and "is a folder" in one_line_error(err)


def test_export_never_replaces_a_file_without_overwrite(run_dir, tmp_path, capsys):
    target = tmp_path / "model.pt"
    target.write_bytes(b"a model someone made")
    export = ["export", "--checkpoint", str(run_dir / "best.pt"), "--out"]
    code, _, err = run(capsys, *export, str(target))
    assert code == 1 and "--overwrite" in one_line_error(err)
    assert target.read_bytes() == b"a model someone made"
    code, _, err = run(capsys, *export, str(run_dir / "best.pt"), "--overwrite")
    assert code == 1 and "the checkpoint being exported" in one_line_error(err)
    code, _, _ = run(capsys, *export, str(target), "--overwrite")
    assert code == 0 and load_model(target) is not None


def test_flags_that_used_to_mislead(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*TINY_TRAIN, "--seed", "-1", "--out", str(tmp_path / "s")])
    assert "from 0 to 2**63 - 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*TINY_TRAIN, "--resume", "--overwrite", "--out", str(tmp_path / "s")])
    assert "not allowed with argument" in capsys.readouterr().err
    # --traceback after the command shows the traceback, as before it.
    with pytest.raises(FileNotFoundError):
        main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--dataset", "shapes",
              "--traceback"])  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_device_cuda_without_cuda_blames_the_device_not_the_file(run_dir, capsys):
    code, _, err = run(capsys, "evaluate", "--checkpoint", str(run_dir / LAST), "--dataset",
                       "shapes", "--device", "cuda")  # fmt: skip
    assert code == 1 and "no CUDA device" in one_line_error(err)


def test_voc_years_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*TINY_TRAIN, "--voc-years", "", "--out", str(tmp_path / "v")])
    assert "expected years from 2007,2012" in capsys.readouterr().err


def test_a_bad_val_annotation_stops_training_before_the_first_step(tmp_path, capsys):
    """A broken validation annotation used to surface only at the first validation, after the
    training steps; now every annotation of both splits is read first, and nothing is written."""
    from ssdlib.data.shapes import ShapesDataset

    voc = ShapesDataset(4, image_size=128, seed=1, split="train").to_voc(tmp_path)
    ShapesDataset(3, image_size=128, seed=1, split="test").to_voc(tmp_path)
    for xml in (voc / "Annotations").glob("*.xml"):  # the shapes under a VOC class name
        xml.write_text(re.sub(r"<name>\w+</name>", "<name>dog</name>", xml.read_text()))
    broken = next(
        x for x in sorted((voc / "Annotations").glob("test_*.xml")) if "dog" in x.read_text()
    )
    broken.write_text(broken.read_text().replace("dog", "unicorn", 1))  # not a VOC class
    out = tmp_path / "run"
    argv = replace_option(TINY_TRAIN, "--dataset", "voc")
    code, _, err = run(
        capsys, *argv, "--data-root", str(tmp_path), "--voc-years", "2007", "--out", str(out)
    )
    assert code != 0 and broken.name in one_line_error(err)
    assert not out.exists() or not any(out.iterdir())  # no step was taken, nothing written
