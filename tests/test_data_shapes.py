"""ShapesDataset: determinism, geometry against an independent oracle, sizes, occlusion."""

import hashlib

import numpy as np
import pytest
import torch
from matplotlib.path import Path as MplPath

from ssdlib.data import SHAPES_CLASSES, ShapesDataset
from ssdlib.data.shapes import (
    MIN_VISIBLE,
    NOISE_MAX,
    STAR,
    TRIANGLE,
    _rasterise,
    shape_mask,
)

N_STATS = 150  # images for the size statistics: ~470 objects, about 1 s


@pytest.fixture(scope="module")
def scenes():
    ds = ShapesDataset(N_STATS, seed=0)
    return [ds.scene(i) for i in range(N_STATS)]


def test_same_seed_same_tensors_in_any_order():
    a, b = ShapesDataset(6, seed=1), ShapesDataset(6, seed=1)
    forward = [a[i] for i in range(6)]
    backward = [b[i] for i in reversed(range(6))][::-1]
    for (img_a, t_a), (img_b, t_b) in zip(forward, backward, strict=True):
        assert torch.equal(img_a, img_b)
        assert torch.equal(t_a["boxes"], t_b["boxes"])
        assert torch.equal(t_a["labels"], t_b["labels"])


def test_seeds_and_splits_give_different_images():
    base = ShapesDataset(3, seed=0)[2][0]
    assert not torch.equal(base, ShapesDataset(3, seed=1)[2][0])
    assert not torch.equal(base, ShapesDataset(3, seed=0, split="val")[2][0])
    assert not torch.equal(base, ShapesDataset(3, seed=0)[1][0])


def test_literal_checksum_of_one_image():
    # Catches any accidental change to the generator. If you change it on purpose, update these.
    scene = ShapesDataset(3, seed=0).scene(2)
    assert hashlib.sha256(scene.image.tobytes()).hexdigest()[:16] == "8c02471656f1c5a7"
    assert int(scene.image.sum(dtype=np.int64)) == 39367079
    assert [o.box for o in scene.objects] == [
        (0, 43, 102, 187),
        (15, 184, 112, 297),
        (107, 35, 133, 63),
        (176, 282, 183, 300),
    ]
    assert [o.name for o in scene.objects] == ["circle", "circle", "square", "bar"]


def test_sample_format():
    ds = ShapesDataset(4, image_size=128, seed=0)
    assert ds.classes[0] == "__background__" and len(ds.classes) == 8
    image, target = ds[0]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    # 8-bit levels exactly, so PNG round trips are exact
    torch.testing.assert_close(image * 255, (image * 255).round(), atol=1e-4, rtol=0)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].shape == (len(target["labels"]), 4)
    assert target["image_id"] == 0


def test_image_without_objects_is_valid():
    ds = ShapesDataset(20, seed=0)
    empty = [i for i in range(20) if not ds.scene(i).objects]
    assert empty, "expected some images without objects among 20"
    _, target = ds[empty[0]]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    no_objects = ShapesDataset(2, max_objects=0)[1][1]
    assert no_objects["boxes"].shape == (0, 4)


def test_shape_masks_at_named_points():
    def inside(name, u, v):
        return bool(shape_mask(name, np.array([u]), np.array([v]))[0])

    assert inside("circle", 0.0, 0.0) and not inside("circle", 0.75, 0.75)
    assert inside("ring", 0.8, 0.0) and not inside("ring", 0.0, 0.0)  # the hole
    assert inside("square", 0.95, 0.95) and not inside("square", 1.05, 0.0)
    assert inside("cross", 0.95, 0.0) and not inside("cross", 0.8, 0.8)  # between arms
    assert inside("triangle", 0.0, -0.9) and not inside("triangle", 0.8, -0.8)
    assert inside("star", 0.0, -0.95) and not inside("star", 0.0, 0.9)  # a tip; a notch
    with pytest.raises(ValueError, match="hexagon"):
        shape_mask("hexagon", np.zeros(1), np.zeros(1))


@pytest.mark.parametrize(("name", "vertices"), [("triangle", TRIANGLE), ("star", STAR)])
def test_polygon_masks_equal_matplotlib(name, vertices):
    rng = np.random.default_rng(0)
    u, v = rng.uniform(-1.1, 1.1, 5000), rng.uniform(-1.1, 1.1, 5000)
    expected = MplPath(vertices).contains_points(np.stack([u, v], axis=1))
    np.testing.assert_array_equal(shape_mask(name, u, v), expected)


def test_rasterised_square_and_circle_by_hand():
    # a 10 x 10 square centred at (10, 10): pixel centres 5.5 .. 14.5 are inside
    x0, y0, mask = _rasterise("square", 10.0, 10.0, 5.0, 5.0, 0.0)
    ys, xs = np.nonzero(mask)
    assert (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1) == (5, 5, 15, 15)
    assert mask.sum() == 100
    # radius 3 at (5, 5): pixel centres at half-integer offsets, 8 per quadrant within 3
    _, _, mask = _rasterise("circle", 5.0, 5.0, 3.0, 3.0, 0.0)
    assert mask.sum() == 32


def test_boxes_are_tight_around_each_objects_painted_pixels(scenes):
    for scene in scenes[:40]:
        for j, obj in enumerate(scene.objects):
            mine = scene.owner == j
            ys, xs = np.nonzero(mine)
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert mine.sum() == obj.area
            # the owner map describes the pixels: they carry the object's colour (+- noise)
            colour = np.asarray(obj.colour) * 255
            err = np.abs(scene.image[mine].astype(float) - colour).max()
            assert err <= NOISE_MAX * 255 + 1, (obj, err)


def test_sizes_span_tiny_to_most_of_the_image(scenes):
    boxes = np.array([o.box for s in scenes for o in s.objects], dtype=float)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert len(boxes) > 300
    assert 0.2 < (side < 32).mean() < 0.6  # the small-object lesson
    assert (side >= 150).mean() > 0.05  # and objects filling half the image or more
    assert side.max() >= 250 and side.min() <= 10
    assert boxes.min() >= 0 and boxes.max() <= 300
    assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_every_class_appears_and_objects_per_image_vary(scenes):
    labels = [o.label for s in scenes for o in s.objects]
    assert set(labels) == set(range(1, len(SHAPES_CLASSES)))
    counts = {len(s.objects) for s in scenes}
    assert 0 in counts and max(counts) >= 5


def test_occlusion_happens_and_keeps_every_object_visible_enough(scenes):
    visible = np.array([o.visible for s in scenes for o in s.objects])
    assert visible.min() >= MIN_VISIBLE
    assert (visible < 0.95).mean() > 0.1  # partly covered or cut by the image edge


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_images": -1}, "num_images"),
        ({"num_images": 3, "split": "holdout"}, "split"),
        ({"num_images": 3, "seed": -2}, "seed"),
        ({"num_images": 3, "image_size": 8}, "image_size"),
        ({"num_images": 3, "min_size": 0.5, "max_size": 0.2}, "min_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesDataset(**kwargs)


def test_index_out_of_range():
    ds = ShapesDataset(3)
    with pytest.raises(IndexError, match="index 3 out of range for 3"):
        ds[3]
    assert torch.equal(ds[-1][0], ds[2][0])
    assert len(list(ds)) == 3  # iteration stops at the end
