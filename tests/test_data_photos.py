"""The real photographs: they load from scikit-image, with our hand-drawn boxes."""

import json

import pytest
import torch

from ssdlib.data import PHOTOS_JSON, DatasetError, PhotoDataset, eval_transform, load_photo


@pytest.fixture(scope="module")
def photos():
    return PhotoDataset()


def test_every_photo_loads_with_boxes_inside_it(photos):
    assert photos.names == ["astronaut", "coffee", "chelsea", "rocket", "camera"]
    assert photos.classes[0] == "__background__" and "person" in photos.classes
    for i, name in enumerate(photos.names):
        image, target = photos[i]
        h, w = image.shape[1:]
        assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
        boxes = target["boxes"]
        assert len(boxes) >= 1, name
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_named_objects(photos):
    def boxes_of(name, label):
        target = photos.get(name)[1]
        keep = target["labels"] == photos.classes.index(label)
        return target["boxes"][keep]

    assert photos.get("coffee")[0].shape == (3, 400, 600)
    assert len(boxes_of("rocket", "tower")) == 4 and len(boxes_of("rocket", "rocket")) == 1
    assert len(boxes_of("chelsea", "cat")) == 1
    with pytest.raises(KeyError, match=r"'dog'.*astronaut"):
        photos.get("dog")


def test_a_large_and_a_small_object_in_one_photo(photos):
    # the matching lesson: at 300 px, the person spans most of the image, the camcorder is
    # under 32 px tall, for the finest feature map
    _, target = eval_transform(300)(*photos.get("camera"))
    sides = target["boxes"][:, 2:] - target["boxes"][:, :2]
    labels = [photos.classes[k] for k in target["labels"]]
    person, camera = sides[labels.index("person")], sides[labels.index("camera")]
    assert person.min() > 150 and camera.max() < 48 and camera.min() < 32


def test_load_photo_equals_the_dataset(photos):
    image, target = load_photo("astronaut")
    assert torch.equal(image, photos[0][0]) and torch.equal(target["boxes"], photos[0][1]["boxes"])


def test_every_image_has_a_licence_and_a_readme_entry():
    data = json.loads(PHOTOS_JSON.read_text())
    licences = {lic["id"] for lic in data["licenses"]}
    readme = (PHOTOS_JSON.parent / "README.md").read_text()
    for record in data["images"]:
        assert record["license"] in licences
        assert record["file_name"] in readme


def test_a_photo_record_without_its_package_is_refused(tmp_path):
    data = json.loads(PHOTOS_JSON.read_text())
    del data["images"][1]["package"]
    (tmp_path / "photos.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"image 1 \(coffee.png\) needs a 'package'"):
        PhotoDataset(tmp_path / "photos.json")
    data["images"][1]["package"] = "not_a_real_package_xyz"
    (tmp_path / "photos.json").write_text(json.dumps(data))
    ds = PhotoDataset(tmp_path / "photos.json")
    with pytest.raises(FileNotFoundError, match="pip install not_a_real_package_xyz"):
        ds[1]
