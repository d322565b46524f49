"""PASCAL VOC, the paper's main benchmark (SSD §3.1-3.4: VOC2007 test, trained on 07+12).

Reads a VOCdevkit tree as the challenge ships it::

    root/VOCdevkit/VOC2007/
        JPEGImages/000005.jpg
        Annotations/000005.xml          (1-based, inclusive pixel coordinates)
        ImageSets/Main/{train,val,trainval,test}.txt

and returns samples in the common format (see :mod:`ssdlib.data.common`), with boxes converted
to 0-based xyxy pixels where ``x2`` is one past the last column: ``x1 = xmin - 1``, ``x2 = xmax``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from .common import BACKGROUND_NAME, BoxChecker, DatasetError, make_target, read_image

VOC_CLASSES = (
    BACKGROUND_NAME,
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
VOC_SPLITS = ("train", "val", "trainval", "test")
VOC_DOWNLOAD_PAGE = "http://host.robots.ox.ac.uk/pascal/VOC/"  # the challenge's own site
VOC_TARS = {  # what each year's download is called; 2007 has a separate test set
    "2007": ["VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar"],
    "2012": ["VOCtrainval_11-May-2012.tar"],
}


def _number(node: ET.Element | None, tag: str, where: str) -> float:
    """The number in ``node``'s child ``<tag>``; a missing or non-number one names ``where``."""
    text = node.findtext(tag) if node is not None else None
    if text is None:
        raise DatasetError(f"{where}: missing <{tag}>")
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"{where}: <{tag}> is {text!r}, not a number") from None


def _image_size(
    root: ET.Element, xml_path: Path, image_path: str | os.PathLike | None
) -> tuple[int, int]:
    """``(width, height)`` from the XML's ``<size>``, else from the image file's header."""
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        where = f"{xml_path} <size>"
        return int(_number(size, "width", where)), int(_number(size, "height", where))
    if image_path is not None:
        with Image.open(image_path) as im:  # reads the header only
            return im.size
    raise DatasetError(f"{xml_path}: no <size> and no image to read the size from")


def parse_voc_xml(
    xml_path: str | os.PathLike,
    classes: Sequence[str] = VOC_CLASSES,
    checker: BoxChecker | None = None,
    image_path: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], tuple[int, int]]:
    """Read one VOC annotation file.

    Args:
        xml_path: the ``Annotations/*.xml`` file.
        classes: class names, index 0 the background; an object of another name is an error.
        checker: applies the box policy (see :class:`~ssdlib.data.common.BoxChecker`); boxes
            partly outside the image are clipped, degenerate ones raise.
        image_path: read the image size from this file's header when the XML has no ``<size>``.

    Returns:
        ``(target, (height, width))``: target has ``boxes`` ``(G, 4)`` xyxy 0-based pixels,
        ``labels`` ``(G,)`` and ``difficult`` ``(G,)`` bool.
    """
    xml_path = Path(xml_path)
    checker = checker or BoxChecker("VOC")
    if not xml_path.is_file():
        raise FileNotFoundError(f"annotation file not found: {xml_path}")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise DatasetError(f"{xml_path}: malformed XML: {err}") from err
    if root.tag != "annotation":
        raise DatasetError(f"{xml_path}: expected an <annotation> root element, got <{root.tag}>")

    width, height = _image_size(root, xml_path, image_path)
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"{xml_path}: object {k} ({name or 'no name'})"
        if name not in classes[1:]:
            raise DatasetError(
                f"{where}: unknown class name {name!r}; expected one of {classes[1:]}"
            )
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(f"{where}: missing <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        # 1-based inclusive pixels -> 0-based, x2 one past the last column
        xyxy = checker.check((xmin - 1, ymin - 1, xmax, ymax), width, height, where)
        if xyxy is None:
            continue
        boxes.append(xyxy)
        labels.append(classes.index(name))
        difficult.append(obj.findtext("difficult", "0").strip() == "1")
    return make_target(boxes, labels, difficult=difficult), (height, width)


def _voc_dir(root: Path, year: str) -> Path:
    """Accept the folder holding VOCdevkit, VOCdevkit itself, or VOC{year} itself."""
    for candidate in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root):
        if (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    return root / "VOCdevkit" / f"VOC{year}"


def _not_found_message(root: Path, year: str, split: str, reason: str) -> str:
    tars = VOC_TARS.get(year, [f"the VOC{year} trainval tar file"])
    if split != "test" or year != "2007":
        tars = tars[:1]
    return (
        f"PASCAL VOC{year} {split!r} not found: {reason}.\n"
        f"Download {' and '.join(tars)} from {VOC_DOWNLOAD_PAGE} (or a mirror) and extract into "
        f"{root}, e.g. `tar xf {tars[0]} -C {root}`, which gives\n"
        f"  {root}/VOCdevkit/VOC{year}/JPEGImages/*.jpg\n"
        f"  {root}/VOCdevkit/VOC{year}/Annotations/*.xml\n"
        f"  {root}/VOCdevkit/VOC{year}/ImageSets/Main/{split}.txt\n"
        "or pass download=True on a machine with internet access."
    )


class VOCDataset:
    """PASCAL VOC detection in the common format.

    Args:
        root: the folder that holds ``VOCdevkit`` (``VOCdevkit`` or ``VOC{year}`` also work).
        year: "2007" ... "2012".
        split: "train", "val", "trainval", or "test" (2007 only).
        transforms: optional ``(image, target) -> (image, target)``.
        download: fetch and extract the tar with torchvision's downloader if the split is
            missing. Offline, this fails with a message naming the tar files and the layout.
        keep_difficult: keep objects marked difficult (with ``target["difficult"]`` True), as
            VOC evaluation needs them; False drops them, as SSD's training does.
        classes: class names, index 0 the background; default the 20 VOC classes.

    Items: ``(image (3, H, W) float32 in [0, 1], {"boxes": (G, 4) xyxy pixels, "labels": (G,)
    int64 >= 1, "difficult": (G,) bool, "image_id": index})``; ``.ids[index]`` is the file name.

    Bad input: a missing image or XML raises ``FileNotFoundError``; unreadable images, malformed
    XML, a missing field, a non-number, an unknown class name, a box with ``xmax < xmin``, a box
    entirely outside the image, or an image whose size differs from the XML's ``<size>`` raise
    :class:`~ssdlib.data.common.DatasetError` naming the file and the object. Boxes partly outside
    the image are clipped, with one warning per dataset (per DataLoader worker). An image with
    no objects is valid. Annotations are read when an item is loaded, so a bad file surfaces
    then; :meth:`load_target` reads one without decoding the image.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        year: str = "2007",
        split: str = "trainval",
        transforms: Callable[[Tensor, dict], tuple[Tensor, dict]] | None = None,
        download: bool = False,
        keep_difficult: bool = True,
        classes: Sequence[str] = VOC_CLASSES,
    ) -> None:
        year = str(year)
        if split not in VOC_SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {VOC_SPLITS}")
        if split == "test" and year != "2007":
            raise ValueError(f"only VOC2007 has a public test split, not VOC{year}")
        if classes[0] != BACKGROUND_NAME:
            raise ValueError(f"classes[0] must be {BACKGROUND_NAME!r}, got {classes[0]!r}")
        root = Path(root)
        self.year, self.split, self.transforms = year, split, transforms
        self.keep_difficult = keep_difficult
        self.classes = list(classes)
        self.voc_dir = _voc_dir(root, year)
        split_file = self.voc_dir / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file() and download:
            self._download(root, year, split)
            self.voc_dir = _voc_dir(root, year)
            split_file = self.voc_dir / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(_not_found_message(root, year, split, f"no {split_file}"))
        self.ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        self._checker = BoxChecker(f"VOCDataset({self.voc_dir})")

    @staticmethod
    def _download(root: Path, year: str, split: str) -> None:
        from torchvision.datasets import VOCDetection

        try:
            VOCDetection(str(root), year=year, image_set=split, download=True)
        except Exception as err:  # offline, a proxy, a bad checksum: all end the same way
            reason = f"download failed ({type(err).__name__}: {err})"
            raise RuntimeError(_not_found_message(root, year, split, reason)) from err

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"VOCDataset({str(self.voc_dir)!r}, split={self.split!r}, images={len(self)})"

    def image_path(self, index: int) -> Path:
        return self.voc_dir / "JPEGImages" / f"{self.ids[index]}.jpg"

    def annotation_path(self, index: int) -> Path:
        return self.voc_dir / "Annotations" / f"{self.ids[index]}.xml"

    def load_target(self, index: int) -> tuple[dict[str, Any], tuple[int, int]]:
        """The target of image ``index`` and the ``(height, width)`` from its XML."""
        target, size = parse_voc_xml(
            self.annotation_path(index), self.classes, self._checker, self.image_path(index)
        )
        self._checker.warn("Later clipped boxes in this dataset are not reported.", stacklevel=4)
        if not self.keep_difficult:
            keep = ~target["difficult"]
            target = {k: v[keep] for k, v in target.items()}
        target["image_id"] = index
        return target, size

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        target, (height, width) = self.load_target(index)
        image = read_image(self.image_path(index))
        if tuple(image.shape[1:]) != (height, width):
            raise DatasetError(
                f"{self.image_path(index)} is {image.shape[2]}x{image.shape[1]} pixels but "
                f"{self.annotation_path(index)} says {width}x{height}: the boxes would be wrong"
            )
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
