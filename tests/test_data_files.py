"""VOC and COCO readers: round trips through real files, and every kind of bad input."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssdlib.data import (
    SHAPES_CLASSES,
    VOC_CLASSES,
    CocoDataset,
    DatasetError,
    ShapesDataset,
    VOCDataset,
    read_image,
)

# -- round trips ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes():
    return ShapesDataset(8, image_size=96, seed=5)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory, shapes):
    root = tmp_path_factory.mktemp("voc")
    shapes.to_voc(root)
    ShapesDataset(3, image_size=96, seed=5, split="val").to_voc(root)
    return root


def test_coco_round_trip_is_exact(tmp_path, shapes):
    images_dir, json_path = shapes.to_coco(tmp_path)
    coco = CocoDataset(images_dir, json_path)
    assert coco.classes == list(SHAPES_CLASSES) and len(coco) == len(shapes)
    for i in range(len(shapes)):
        image, target = shapes[i]
        image2, target2 = coco[i]
        assert torch.equal(image, image2)  # PNG is lossless and the images are 8-bit
        assert torch.equal(target["boxes"], target2["boxes"])
        assert torch.equal(target["labels"], target2["labels"])


def test_coco_round_trip_through_pycocotools(tmp_path, shapes):
    from pycocotools.coco import COCO

    images_dir, json_path = shapes.to_coco(tmp_path)
    api = COCO(str(json_path))
    coco = CocoDataset(images_dir, json_path)
    for i, image_id in enumerate(coco.image_ids):
        anns = api.loadAnns(api.getAnnIds(imgIds=image_id))
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes = coco[i][1]["boxes"]
        torch.testing.assert_close(boxes, torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))


def test_voc_round_trip_keeps_boxes_and_labels_exactly(voc_root, shapes):
    voc = VOCDataset(voc_root, split="train", classes=SHAPES_CLASSES)
    assert len(voc) == len(shapes)
    for i in range(len(shapes)):
        image, target = shapes[i]
        image2, target2 = voc[i]
        assert torch.equal(target["boxes"], target2["boxes"])
        assert torch.equal(target["labels"], target2["labels"])
        assert not target2["difficult"].any()
        assert (image - image2).abs().mean() < 0.02  # JPEG: close, not equal


def test_voc_tree_layout_and_trainval(voc_root):
    main = voc_root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    train, val = (main / "train.txt").read_text().split(), (main / "val.txt").read_text().split()
    assert (main / "trainval.txt").read_text().split() == train + val
    assert len(VOCDataset(voc_root, split="trainval", classes=SHAPES_CLASSES)) == len(train) + 3
    # root may also be VOCdevkit or VOC2007 itself
    assert len(VOCDataset(voc_root / "VOCdevkit" / "VOC2007", "2007", "val", None, False, True,
                          SHAPES_CLASSES)) == 3  # fmt: skip
    xml = (voc_root / "VOCdevkit" / "VOC2007" / "Annotations" / f"{train[0]}.xml").read_text()
    assert "<xmin>" in xml and "<difficult>0</difficult>" in xml


# -- VOC by hand ---------------------------------------------------------------------------------


def write_voc(root: Path, objects: list[tuple], size=(40, 30), xml_size=None, image=True) -> Path:
    """One-image VOC2007 tree; objects are (name, xmin, ymin, xmax, ymax, difficult)."""
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    w, h = size
    if image:
        Image.new("RGB", (w, h), (200, 10, 10)).save(voc / "JPEGImages" / "000001.jpg")
    xw, xh = xml_size or size
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin>"
        f"<ymin>{b}</ymin><xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>"
        for n, a, b, c, e, d in objects
    )
    (voc / "Annotations" / "000001.xml").write_text(
        f"<annotation><size><width>{xw}</width><height>{xh}</height><depth>3</depth></size>"
        f"{objs}</annotation>"
    )
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n")
    return voc


def test_voc_converts_one_based_inclusive_coordinates(tmp_path):
    write_voc(tmp_path, [("dog", 1, 1, 40, 30, 0), ("cat", 5, 6, 5, 6, 1)])
    image, target = VOCDataset(tmp_path)[0]
    assert image.shape == (3, 30, 40)
    # the whole image, and a single pixel at column 4, row 5 (0-based)
    assert target["boxes"].tolist() == [[0, 0, 40, 30], [4, 5, 5, 6]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]
    assert target["difficult"].tolist() == [False, True]


def test_voc_keep_difficult_false_drops_them(tmp_path):
    write_voc(tmp_path, [("dog", 1, 1, 10, 10, 1), ("cat", 5, 6, 20, 20, 0)])
    target = VOCDataset(tmp_path, keep_difficult=False)[0][1]
    assert target["labels"].tolist() == [VOC_CLASSES.index("cat")]
    assert target["difficult"].tolist() == [False] and target["boxes"].shape == (1, 4)


def test_voc_image_without_objects(tmp_path):
    write_voc(tmp_path, [])
    target = VOCDataset(tmp_path)[0][1]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["difficult"].shape == (0,)


def test_voc_unknown_class_names_file_and_object(tmp_path):
    write_voc(tmp_path, [("dog", 1, 1, 10, 10, 0), ("unicorn", 1, 1, 10, 10, 0)])
    with pytest.raises(DatasetError, match=r"000001\.xml: object 1 .*'unicorn'"):
        VOCDataset(tmp_path)[0]


def test_voc_degenerate_box_is_an_error(tmp_path):
    write_voc(tmp_path, [("dog", 10, 1, 5, 10, 0)])
    with pytest.raises(DatasetError, match=r"000001\.xml: object 0 \(dog\).*degenerate"):
        VOCDataset(tmp_path)[0]


def test_voc_box_outside_the_image_is_an_error(tmp_path):
    write_voc(tmp_path, [("dog", 50, 1, 60, 10, 0)])
    with pytest.raises(DatasetError, match="outside the 40x30 image"):
        VOCDataset(tmp_path)[0]


def test_voc_boxes_slightly_outside_are_clipped_with_one_warning(tmp_path):
    write_voc(tmp_path, [("dog", 0, 1, 41, 10, 0), ("cat", 3, 2, 20, 33, 0)])
    ds = VOCDataset(tmp_path)
    with pytest.warns(UserWarning, match="clipped 2 box") as record:
        target = ds[0][1]
    assert len(record) == 1
    assert target["boxes"].tolist() == [[0, 0, 40, 10], [2, 1, 20, 30]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[0]  # reported once per dataset


def test_voc_malformed_xml(tmp_path):
    voc = write_voc(tmp_path, [])
    (voc / "Annotations" / "000001.xml").write_text("<annotation><size>")
    with pytest.raises(DatasetError, match=r"000001\.xml: malformed XML"):
        VOCDataset(tmp_path)[0]


def test_voc_missing_field_and_non_number(tmp_path):
    voc = write_voc(tmp_path, [("dog", 1, 1, 10, 10, 0)])
    xml = voc / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<xmax>10</xmax>", ""))
    with pytest.raises(DatasetError, match=r"object 0 \(dog\): missing <xmax>"):
        VOCDataset(tmp_path)[0]
    xml.write_text(xml.read_text().replace("<xmin>1</xmin>", "<xmin>one</xmin><xmax>9</xmax>"))
    with pytest.raises(DatasetError, match="<xmin> is 'one', not a number"):
        VOCDataset(tmp_path)[0]


def test_voc_missing_image_names_the_file(tmp_path):
    write_voc(tmp_path, [("dog", 1, 1, 10, 10, 0)], image=False)
    with pytest.raises(FileNotFoundError, match=r"000001\.jpg"):
        VOCDataset(tmp_path)[0]


def test_voc_image_size_must_match_the_xml(tmp_path):
    write_voc(tmp_path, [("dog", 1, 1, 10, 10, 0)], size=(40, 30), xml_size=(80, 60))
    with pytest.raises(DatasetError, match=r"is 40x30 pixels but .* says 80x60"):
        VOCDataset(tmp_path)[0]


def test_voc_missing_split_names_the_tar_files_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        VOCDataset(tmp_path, split="test")
    message = str(err.value)
    assert "VOCtrainval_06-Nov-2007.tar" in message and "VOCtest_06-Nov-2007.tar" in message
    assert "VOCdevkit/VOC2007/Annotations" in message and "test.txt" in message


def test_voc_download_offline_fails_with_the_same_help(tmp_path):
    # conftest blocks the network, so this is the offline path
    with pytest.raises(RuntimeError, match=r"download failed.*\n.*VOCtrainval_06-Nov-2007\.tar"):
        VOCDataset(tmp_path, download=True)


def test_voc_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        VOCDataset(tmp_path, split="everything")
    with pytest.raises(ValueError, match="test split"):
        VOCDataset(tmp_path, year="2012", split="test")


# -- images --------------------------------------------------------------------------------------


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.png"):
        read_image(tmp_path / "nothing.png")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with pytest.raises(DatasetError, match=r"cannot read image .*notes\.png"):
        read_image(not_an_image)
    good = tmp_path / "good.png"
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(good)
    assert torch.equal(read_image(good), torch.from_numpy(rgb).permute(2, 0, 1) / 255)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(DatasetError, match=r"truncated\.png"):
        read_image(truncated)


def test_read_image_converts_grey_to_rgb(tmp_path):
    Image.new("L", (5, 4), 51).save(tmp_path / "grey.png")
    image = read_image(tmp_path / "grey.png")
    assert image.shape == (3, 4, 5) and torch.allclose(image, torch.full_like(image, 0.2))


# -- COCO by hand --------------------------------------------------------------------------------


def write_coco(root: Path, annotations: list[dict], images=None, categories=None) -> Path:
    Image.new("RGB", (50, 40), (0, 0, 0)).save(root / "a.png")
    Image.new("RGB", (50, 40), (0, 0, 0)).save(root / "b.png")
    data = {
        "images": images
        or [
            {"id": 7, "file_name": "a.png", "width": 50, "height": 40},
            {"id": 3, "file_name": "b.png", "width": 50, "height": 40},
        ],
        "annotations": [
            {"id": k + 1, "image_id": 7, "category_id": 90, "iscrowd": 0, **a}
            for k, a in enumerate(annotations)
        ],
        "categories": categories or [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_maps_category_ids_to_contiguous_labels(tmp_path):
    path = write_coco(tmp_path, [{"bbox": [1, 2, 10, 20], "area": 150.0}])
    ds = CocoDataset(tmp_path, path)
    assert ds.classes == ["__background__", "person", "toothbrush"] and ds.cat_ids == [1, 90]
    assert ds.image_ids == [3, 7]  # in order of id
    empty, full = ds[0][1], ds[1][1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)  # no objects: valid
    assert full["boxes"].tolist() == [[1, 2, 11, 22]] and full["labels"].tolist() == [2]
    assert full["area"].tolist() == [150.0] and full["image_id"] == 7


def test_coco_skips_crowds_and_counts_them(tmp_path):
    anns = [{"bbox": [1, 2, 10, 20]}, {"bbox": [0, 0, 50, 40], "iscrowd": 1}]
    ds = CocoDataset(tmp_path, write_coco(tmp_path, anns))
    assert ds.num_crowd_skipped == 1 and len(ds[1][1]["boxes"]) == 1


def test_coco_zero_size_and_outside_boxes_skipped_or_clipped_with_one_warning(tmp_path):
    anns = [
        {"bbox": [1, 2, 0, 20]},  # zero width: skipped
        {"bbox": [5, 5, 10, 0]},  # zero height: skipped
        {"bbox": [45, 30, 10, 15]},  # past the corner: clipped to [45, 30, 50, 40]
        {"bbox": [1, 2, 10, 20]},
    ]
    with pytest.warns(UserWarning) as record:
        ds = CocoDataset(tmp_path, write_coco(tmp_path, anns))
    assert len(record) == 1
    message = str(record[0].message)
    assert "clipped 1 box" in message and "skipped 2 zero-size" in message
    assert "annotation 1" in message
    assert ds[1][1]["boxes"].tolist() == [[45, 30, 50, 40], [1, 2, 11, 22]]


def test_coco_box_entirely_outside_is_an_error(tmp_path):
    path = write_coco(tmp_path, [{"bbox": [60, 2, 10, 20]}])
    with pytest.raises(DatasetError, match=r"annotation 1 \(image a.png\).*outside the 50x40"):
        CocoDataset(tmp_path, path)


@pytest.mark.parametrize(
    ("annotation", "match"),
    [
        ({"bbox": [1, 2, 3]}, r"annotation 1 .*bbox must be 4 numbers"),
        ({"bbox": [1, 2, "3", 4]}, r"annotation 1 .*bbox must be 4 numbers"),
        ({"bbox": [1, 2, 3, 4], "category_id": 5}, r"annotation 1 .*category_id 5 is not in"),
        ({"bbox": [1, 2, 3, 4], "image_id": 8}, r"annotation 1: image_id 8 is not in"),
        ({"category_id": 90}, r"annotation 1 .*missing 'bbox'"),
    ],
)
def test_coco_bad_annotations_name_the_file_and_annotation(tmp_path, annotation, match):
    path = write_coco(tmp_path, [annotation])
    with pytest.raises(DatasetError, match=match) as err:
        CocoDataset(tmp_path, path)
    assert "instances.json" in str(err.value)


def test_coco_malformed_json_and_missing_keys(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"broken\.json: malformed JSON"):
        CocoDataset(tmp_path, path)
    path.write_text('{"images": []}')
    with pytest.raises(DatasetError, match="expected a list under 'annotations'"):
        CocoDataset(tmp_path, path)
    with pytest.raises(FileNotFoundError, match=r"absent\.json"):
        CocoDataset(tmp_path, tmp_path / "absent.json")


def test_coco_bad_image_records(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": 0, "height": 40}]
    with pytest.raises(DatasetError, match="image 0: width is 0"):
        CocoDataset(tmp_path, write_coco(tmp_path, [], images=images))
    twice = [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}] * 2
    with pytest.raises(DatasetError, match="image id 1 appears twice"):
        CocoDataset(tmp_path, write_coco(tmp_path, [], images=twice))


def test_coco_missing_truncated_or_wrong_size_image_fails_on_load(tmp_path):
    path = write_coco(tmp_path, [{"bbox": [1, 2, 10, 20]}])
    ds = CocoDataset(tmp_path, path)
    (tmp_path / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.png"):
        ds[1]
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    with pytest.raises(DatasetError, match=r"a\.png is 64x64 pixels but .* says 50x40"):
        ds[1]
    good = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"b\.png"):
        ds[0]


# -- images that used to read wrong ----------------------------------------------------------


def test_a_16_bit_png_and_a_float_tiff_keep_their_values(tmp_path):
    """Both used to come out all white (16-bit) or all black (float) through convert("RGB")."""
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray((ramp * 65535).round().astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(ramp, mode="F").save(tmp_path / "float.tif")
    for name in ("deep.png", "float.tif"):
        image = read_image(tmp_path / name)
        assert image.shape == (3, 8, 8)
        assert torch.allclose(image[0], torch.from_numpy(ramp), atol=1e-4), name
        assert torch.equal(image[0], image[2])  # grey: the same in every channel


def test_exif_orientation_turns_a_phone_photo_upright_when_asked(tmp_path):
    photo = Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8))  # stored 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    photo.save(tmp_path / "phone.jpg", exif=exif)
    assert read_image(tmp_path / "phone.jpg").shape == (3, 20, 40)  # datasets: stored pixels
    assert read_image(tmp_path / "phone.jpg", exif_upright=True).shape == (3, 40, 20)


def test_a_decompression_bomb_or_a_folder_is_a_dataset_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64² is then over twice the limit
    with pytest.raises(DatasetError, match=r"big\.png"):
        read_image(tmp_path / "big.png")
    with pytest.raises(DatasetError, match="is a folder"):
        read_image(tmp_path)


# -- looking through Subset and ConcatDataset ---------------------------------------------------


def test_leaf_datasets_map_indices_through_subset_and_concat(shapes):
    from torch.utils.data import ConcatDataset, Subset

    from ssdlib.data.common import leaf_datasets

    other = ShapesDataset(3, image_size=96, seed=5, split="val")
    both = ConcatDataset([Subset(shapes, [7, 5, 3]), other])  # images s7, s5, s3, o0, o1, o2
    assert [(d, i) for d, i in leaf_datasets(both)] == [(shapes, [7, 5, 3]), (other, [0, 1, 2])]
    assert list(leaf_datasets(Subset(both, [4, 1]))) == [(shapes, [5]), (other, [1])]
    assert list(leaf_datasets(Subset(both, [0]))) == [(shapes, [7])]  # `other` is not reached
    assert list(leaf_datasets(Subset(shapes, []))) == [(shapes, [])]


def test_read_every_annotation_names_the_broken_file(voc_root):
    from torch.utils.data import ConcatDataset, Subset

    from ssdlib.data.common import read_every_annotation

    voc = VOCDataset(voc_root, split="val", classes=SHAPES_CLASSES)
    broken = voc.annotation_path(2)
    text = broken.read_text()
    try:
        broken.write_text("<annotation><object>")
        read_every_annotation(Subset(voc, [0, 1]))  # the broken image is not served
        read_every_annotation(ConcatDataset([ShapesDataset(2, 64), Subset(voc, [1])]))
        read_every_annotation(None)
        with pytest.raises(DatasetError, match=broken.name):
            read_every_annotation(ConcatDataset([Subset(voc, [0]), Subset(voc, [2])]))
    finally:
        broken.write_text(text)
