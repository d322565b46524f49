"""SSD augmentation: boxes stay on their objects, per-box entries stay aligned, seeding works."""

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ssdlib.data import ShapesDataset, eval_transform, train_transform
from ssdlib.data.transforms import RandomIoUCrop

N_VIEWS = 40  # augmentations of the bright-rectangle image; ~0.3 s
N_CROPS = 150  # draws from each IoU crop for the distribution comparison; ~1.5 s


@pytest.fixture(autouse=True)
def one_thread():
    """The transforms run many tiny tensor ops: on a busy 2-core machine, two threads fighting
    over them made this file 5x slower. DataLoader workers run one thread each anyway."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bright_rectangle(h=120, w=160, box=(30, 40, 90, 70)):
    """A white rectangle on black: the object's pixels are known exactly."""
    image = torch.zeros(3, h, w)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 1.0
    target = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([3])}
    return image, target


def draws(transform, image, target, n: int, seed: int = 0) -> list[tuple[torch.Tensor, dict]]:
    """``n`` augmentations of one sample, from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return [transform(image, target) for _ in range(n)]


def bright_box(image: torch.Tensor) -> list[float]:
    """Tight box of the pixels at least 60% as bright as the brightest."""
    grey = image.mean(0)
    ys, xs = torch.nonzero(grey >= 0.6 * grey.max(), as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_augmented_boxes_stay_on_the_bright_pixels():
    image, target = bright_rectangle()
    transform = train_transform(size=200, fill=(0.0, 0.0, 0.0))  # black canvas: only one object
    views = draws(transform, image, target, N_VIEWS)
    kept = 0
    for out, t in views:
        assert out.shape == (3, 200, 200) and out.dtype == torch.float32
        assert 0 <= out.min() and out.max() <= 1
        if len(t["boxes"]) == 0:
            continue  # the crop dropped the object (its centre fell outside): SSD's rule
        kept += 1
        assert t["labels"].tolist() == [3]
        # resizing blurs the edge by about a pixel
        torch.testing.assert_close(
            t["boxes"][0], torch.tensor(bright_box(out), dtype=torch.float32), atol=1.5, rtol=0
        )
    assert kept >= N_VIEWS // 2, f"only {kept} of {N_VIEWS} views kept the object"


def test_per_box_entries_stay_aligned_with_their_boxes():
    ds = ShapesDataset(10, image_size=96, seed=3)
    transform = train_transform(size=96)
    torch.manual_seed(0)
    for i in range(10):
        image, target = ds[i]
        n = len(target["labels"])
        target["difficult"] = target["labels"] % 2 == 0  # a function of the label
        target["area"] = torch.arange(n, dtype=torch.float32) + 1
        _, t = transform(image, target)
        g = len(t["boxes"])
        assert t["labels"].shape == t["difficult"].shape == t["area"].shape == (g,)
        assert torch.equal(t["difficult"], t["labels"] % 2 == 0)
        assert t["image_id"] == i  # other entries pass through
        if g:
            assert (t["boxes"][:, 2:] - t["boxes"][:, :2] >= 1).all()
            assert t["boxes"].min() >= 0 and t["boxes"].max() <= 96


def test_input_sample_is_not_modified():
    image, target = bright_rectangle()
    before = (image.clone(), target["boxes"].clone())
    draws(train_transform(size=160), image, target, 10)
    assert torch.equal(image, before[0]) and torch.equal(target["boxes"], before[1])


def test_image_without_objects_goes_through():
    image = torch.rand(3, 50, 70)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    for out, t in draws(train_transform(64), image, target, 10):
        assert out.shape == (3, 64, 64)
        assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)


def test_eval_transform_scales_boxes_and_area_exactly():
    image = torch.rand(3, 100, 200)
    target = {
        "boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0]]),
        "labels": torch.tensor([1]),
        "area": torch.tensor([1600.0]),
    }
    out, t = eval_transform(300)(image, target)
    assert out.shape == (3, 300, 300)
    assert t["boxes"].tolist() == [[15.0, 60.0, 75.0, 180.0]]  # x * 1.5, y * 3
    torch.testing.assert_close(t["area"], torch.tensor([1600.0 * 4.5]))


def test_eval_transform_has_no_randomness():
    image, target = ShapesDataset(1, image_size=64)[0]
    a = eval_transform(100)(image, target)
    torch.manual_seed(123)
    b = eval_transform(100)(image, target)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])


def test_train_transform_repeats_with_the_seed():
    image, target = ShapesDataset(1, image_size=64, seed=2)[0]
    transform = train_transform(64)
    a = draws(transform, image, target, 4, seed=1)
    b = draws(transform, image, target, 4, seed=1)
    c = draws(transform, image, target, 4, seed=2)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c, strict=True))
    assert len({round(v[0].sum().item(), 3) for v in a}) > 1  # the draws differ


def test_zoom_out_canvas_is_filled_with_the_mean_colour():
    image = torch.zeros(3, 40, 40)
    target = {"boxes": torch.tensor([[0.0, 0.0, 40.0, 40.0]]), "labels": torch.tensor([1])}
    views = draws(train_transform(40), image, target, 30)
    # some view is zoomed out: the canvas around the black image shows the ImageNet mean
    # (photometric distortion runs before the zoom, so the canvas is the fill itself)
    mean = torch.tensor([0.485, 0.456, 0.406])
    corners = [v[0][:, 0, 0] for v in views if v[0][:, 0, 0].sum() > 0.5]
    assert corners, "no zoomed-out view in 30"
    assert any(torch.allclose(c, mean, atol=0.01) for c in corners)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"transform input: expected target\['boxes'\] of shape"):
        eval_transform(10)(
            torch.zeros(3, 5, 5), {"boxes": torch.zeros(4), "labels": torch.zeros(1)}
        )
    with pytest.raises(ValueError, match=r"expected an image tensor of shape \(3, H, W\)"):
        eval_transform(10)(
            torch.zeros(5, 5), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}
        )


def crop_statistics(crop, n: int) -> tuple[float, float, float]:
    """Share of draws that crop, mean crop area share, mean number of box centres kept."""
    image = tv_tensors.Image(torch.zeros(3, 120, 160))
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[30.0, 40.0, 90.0, 70.0], [100.0, 10.0, 150.0, 100.0]]),
        format="XYXY",
        canvas_size=(120, 160),
    )
    torch.manual_seed(0)
    params = [crop.make_params([image, boxes]) for _ in range(n)]
    crops = [p for p in params if p]
    for p in crops:
        assert 0 <= p["left"] and p["left"] + p["width"] <= 160
        assert 0 <= p["top"] and p["top"] + p["height"] <= 120
        assert 0.5 <= p["width"] / p["height"] <= 2 and p["is_within_crop_area"].any()
    area = sum(p["width"] * p["height"] for p in crops) / (160 * 120 * len(crops))
    kept = sum(int(p["is_within_crop_area"].sum()) for p in crops) / len(crops)
    return len(crops) / n, area, kept


def test_batched_iou_crop_draws_like_torchvision():
    ours = crop_statistics(RandomIoUCrop(), N_CROPS)
    theirs = crop_statistics(v2.RandomIoUCrop(), N_CROPS)
    # 1500 draws each gave (0.80, 0.41, 1.38) for both; these bounds are > 3 standard errors
    assert abs(ours[0] - theirs[0]) < 0.12
    assert abs(ours[1] - theirs[1]) < 0.08
    assert abs(ours[2] - theirs[2]) < 0.2
