"""augmentation_stages returns every step of one draw, ending exactly where train_transform does."""

import itertools

import pytest
import torch
from torchvision.transforms import v2

from ssdlib.data import ShapesDataset, augmentation, eval_transform, load_photo, train_transform
from ssdlib.data.transforms import DetectionTransform, augmentation_stages

STAGES = ["original", "photometric distortion", "zoom out", "IoU crop", "flip", "resize"]
SEEDS = range(6)


@pytest.fixture(scope="module")
def scene():
    return ShapesDataset(1, image_size=96, seed=3)[0]


def sample_with_boxes():
    image = torch.rand(3, 40, 60)
    target = {
        "boxes": torch.tensor([[5.0, 4.0, 25.0, 30.0], [30.0, 10.0, 58.0, 20.0]]),
        "labels": torch.tensor([1, 2]),
    }
    return image, target


@pytest.mark.parametrize("seed", SEEDS)
def test_last_stage_is_the_transform_output(scene, seed):
    image, target = scene
    transform = train_transform(64)
    stages = augmentation_stages(image, target, transform, seed=seed)
    torch.manual_seed(seed)
    want_image, want_target = transform(image, target)
    assert [s.name for s in stages] == STAGES
    assert torch.equal(stages[-1].image, want_image)
    for key in ("boxes", "labels"):
        assert torch.equal(stages[-1].target[key], want_target[key])


def test_a_photo_with_its_area_key():
    image, target = load_photo("camera")
    stages = augmentation_stages(image, target, train_transform(100), seed=1)
    torch.manual_seed(1)
    want_image, want_target = train_transform(100)(image, target)
    assert torch.equal(stages[-1].image, want_image)
    assert torch.allclose(stages[-1].target["area"], want_target["area"])


def test_the_global_rng_is_left_alone(scene):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    augmentation_stages(*scene, train_transform(64), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_object_ids_follow_the_boxes(scene):
    image, target = scene
    for seed in SEEDS:
        for stage in augmentation_stages(image, target, train_transform(64), seed=seed):
            assert torch.equal(stage.target["labels"], target["labels"][stage.object_ids])
            assert len(stage.object_ids) == len(stage.target["boxes"])


def test_skipped_steps_leave_the_sample_and_applied_ones_change_it(scene):
    image, target = scene
    seen = {"flip": set(), "zoom out": set()}
    for seed in range(12):
        stages = augmentation_stages(image, target, train_transform(64), seed=seed)
        for before, stage in itertools.pairwise(stages):
            if stage.name not in seen:
                continue
            seen[stage.name].add(stage.applied)
            if not stage.applied:
                assert torch.equal(stage.image, before.image)
                assert torch.equal(stage.target["boxes"], before.target["boxes"])
            elif stage.name == "flip":
                assert torch.equal(stage.image, before.image.flip(-1))
                w = before.image.shape[-1]
                mirrored = before.target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1])
                assert torch.allclose(stage.target["boxes"], mirrored + torch.tensor([w, 0, w, 0]))
            else:  # zoom out: a larger canvas, the boxes shifted by the padding, sizes kept
                assert stage.image.shape[-1] > before.image.shape[-1]
                left, top = stage.params["padding"][:2]
                shift = torch.tensor([left, top, left, top], dtype=torch.float32)
                assert torch.allclose(stage.target["boxes"], before.target["boxes"] + shift)
    assert seen == {"flip": {True, False}, "zoom out": {True, False}}  # both outcomes tested


def test_the_crop_drops_boxes_whose_centre_leaves():
    image, target = sample_with_boxes()
    for seed in range(20):
        stages = augmentation_stages(image, target, train_transform(32), seed=seed)
        crop = stages[3]
        if not crop.applied:
            continue
        h, w = crop.image.shape[-2:]
        boxes = crop.target["boxes"]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()


def test_without_zoom_out():
    image, target = sample_with_boxes()
    transform = train_transform(32, zoom_out=False)
    stages = augmentation_stages(image, target, transform, seed=2)
    assert [s.name for s in stages] == [n for n in STAGES if n != "zoom out"]
    torch.manual_seed(2)
    assert torch.equal(stages[-1].image, transform(image, target)[0])


def test_default_transform_keeps_the_longer_side():
    image, target = sample_with_boxes()
    stages = augmentation_stages(image, target, seed=0)
    assert tuple(stages[-1].image.shape) == (3, 60, 60)


def test_repr_is_one_line(scene):
    stage = augmentation_stages(*scene, train_transform(64), seed=0)[-1]
    assert repr(stage).startswith("AugmentStage('resize': 64×64 px, ")
    assert "\n" not in repr(stage)


def test_bad_input_is_named():
    image, target = sample_with_boxes()
    with pytest.raises(ValueError, match="augmentation_stages input"):
        augmentation_stages(image[0], target)
    with pytest.raises(ValueError, match="needs a DetectionTransform"):
        augmentation_stages(image, target, transform=lambda i, t: (i, t))
    single = DetectionTransform(v2.RandomHorizontalFlip(p=1.0))  # a bare step, not a Compose
    assert [s.name for s in augmentation_stages(image, target, single)] == ["original", "flip"]


@pytest.mark.parametrize(
    ("name", "stages"),
    [
        ("ssd", list(STAGES)),
        ("no-zoom-out", [n for n in STAGES if n != "zoom out"]),
        ("light", [n for n in STAGES if n not in ("zoom out", "IoU crop")]),
    ],
)
def test_named_augmentations_run_the_stages_they_promise(name, stages):
    image, target = sample_with_boxes()
    transform = augmentation(name, 32)
    assert [s.name for s in augmentation_stages(image, target, transform, seed=1)] == stages
    out_image, out = transform(image, target)
    assert tuple(out_image.shape) == (3, 32, 32) and out["boxes"].shape[1] == 4


def test_light_augmentation_keeps_every_object():
    image, target = sample_with_boxes()
    for seed in range(10):
        torch.manual_seed(seed)
        assert len(augmentation("light", 32)(image, target)[1]["boxes"]) == len(target["boxes"])


def test_no_augmentation_only_resizes_and_an_unknown_name_is_refused():
    image, target = sample_with_boxes()
    torch.testing.assert_close(
        augmentation("none", 32)(image, target)[0], eval_transform(32)(image, target)[0]
    )
    with pytest.raises(ValueError, match="unknown augmentation 'crops'"):
        augmentation("crops", 32)
