"""Lesson 6's exercises: each solution, on the lesson's inputs (rebuilt small), accepts the right
answer, rejects a wrong one, and its hint does not give the value away."""

from __future__ import annotations

import pytest
import torch

from ssdlib.data import PhotoDataset, ShapesDataset, train_transform
from ssdlib.data.transforms import ZOOM_OUT_MAX, augmentation_stages
from ssdlib.exercises import EXERCISES
from ssdlib.exercises.lesson6 import kept_by_crop
from tests.exercise_checks import assert_exercise

SIZE = 128  # the cpu-tiny input side, as in the lesson
FIVE_BOXES = torch.tensor(  # exercise 1's objects, xyxy pixels of a 300×300 image
    [
        [0, 0, 130, 130],  # A
        [70, 100, 200, 270],  # B
        [250, 20, 300, 60],  # C
        [180, 40, 280, 100],  # D
        [40, 140, 260, 175],  # E
    ],
    dtype=torch.float32,
)
CROP = (60, 30, 150, 150)  # left, top, width, height


def test_kept_counts_boxes_by_their_centre():
    # A (centre 65, 65) and E (150, 157.5) are kept; B overlaps the window by 47% of its area
    # but its centre (135, 185) lies below it; D's centre (230, 70) lies right of it.
    assert kept_by_crop(FIVE_BOXES, CROP).tolist() == [True, False, False, False, True]
    assert_exercise("06.kept", 2, 3, FIVE_BOXES, CROP)


def test_kept_by_crop_is_the_pipelines_rule():
    photo, target = PhotoDataset().get("astronaut")
    stages = augmentation_stages(photo, target, train_transform(300), seed=0)
    zoomed, cropped = stages[2], stages[3]
    assert cropped.applied
    p = cropped.params
    crop = (p["left"], p["top"], p["width"], p["height"])
    assert torch.equal(kept_by_crop(zoomed.target["boxes"], crop), p["is_within_crop_area"])


def test_flipped_is_torchvisions_flip():
    boxes = torch.tensor([[30.0, 40.0, 90.0, 100.0], [0.0, 5.0, 200.0, 9.0]])
    width = 200

    def by_hand(b, w):  # what a learner writes
        return torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)

    def no_swap(b, w):  # the classic slip: x1 and x2 mirrored but not swapped
        return torch.stack([w - b[:, 0], b[:, 1], w - b[:, 2], b[:, 3]], dim=1)

    expected = assert_exercise(
        "06.flipped", by_hand(boxes, width), no_swap(boxes, width), boxes, width
    )
    assert expected.tolist() == [[110.0, 40.0, 170.0, 100.0], [0.0, 5.0, 200.0, 9.0]]


def test_shrink_is_the_share_of_canvas_factors_above_two():
    assert_exercise("06.shrink", 2 / 3, 0.5, ZOOM_OUT_MAX)
    assert EXERCISES["06.shrink"].solve(ZOOM_OUT_MAX) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def scene():
    image, target = ShapesDataset(8, SIZE, seed=0)[2]
    return image, target


def test_whole_image_counts_the_uncropped_draws(scene):
    image, target = scene
    transform = train_transform(SIZE)
    # the crop stage skips draws 0 and 3 of the six (it applies to 1, 2, 4 and 5)
    assert assert_exercise("06.whole_image", 2, 3, image, target, transform, 6) == 2


def test_seed_is_the_first_draw_that_flips_without_zooming_out(scene):
    image, target = scene
    seed = EXERCISES["06.seed"].solve(image, target, SIZE)
    for s in range(seed + 1):
        done = {
            st.name: st.applied
            for st in augmentation_stages(image, target, train_transform(SIZE), seed=s)
        }
        assert (done["flip"] and not done["zoom out"]) == (s == seed)
    assert_exercise("06.seed", seed, seed + 1, image, target, SIZE)
