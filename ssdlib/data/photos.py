"""A few real photographs with hand-drawn boxes, for lessons that need more than shapes.

The images are not copied into this repository: they ship inside scikit-image (a dependency),
as public-domain or CC0 sample data, and are read from the installed package at run time. Our
boxes are in ``data/photos.json`` (COCO format); ``data/README.md`` gives each image's source
and licence and how the boxes were drawn.

Two photos pair a large object with a small one, for the matching lesson: the astronaut (the
person, 343x497 px, and the shuttle model, 104x266 px) and the cameraman (the person and the
camcorder, 70x45 px). The rocket is 24x278 px: an aspect ratio of about 1:12.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from .coco import CocoDataset
from .common import DatasetError

PHOTOS_JSON = Path(__file__).resolve().parents[2] / "data" / "photos.json"  # repo's data/


class PhotoDataset(CocoDataset):
    """The photos of ``data/photos.json`` in the common format.

    Each image record names the package that ships it (``"package": "skimage"``) and the file
    inside it (``"resource": "data/astronaut.png"``). Items are as in :class:`CocoDataset`;
    ``.names`` are the file stems (``"astronaut"``, ``"coffee"``, ...), usable with
    :meth:`get`. The images differ in size; resize them (``eval_transform``) to batch them.

    Args:
        annotation_file: the COCO JSON; default the repository's ``data/photos.json``.
        transforms: optional ``(image, target) -> (image, target)``.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike = PHOTOS_JSON,
        transforms: Callable[[Tensor, dict], tuple[Tensor, dict]] | None = None,
    ) -> None:
        super().__init__(Path(annotation_file).parent, annotation_file, transforms)
        for k, record in enumerate(self.images):
            for key in ("package", "resource"):
                if not isinstance(record.get(key), str):
                    raise DatasetError(
                        f"{self.annotation_file}: image {k} ({record['file_name']}) needs a "
                        f"{key!r} string naming where the photo ships"
                    )
        self.names = [Path(record["file_name"]).stem for record in self.images]

    def image_path(self, index: int) -> Path:
        """The photo inside its installed package."""
        record = self.images[index]
        package = record["package"]
        if importlib.util.find_spec(package) is None:
            raise FileNotFoundError(
                f"{record['file_name']} ships with the package {package!r}, which is not "
                f"installed: pip install {package}"
            )
        return Path(str(importlib.resources.files(package).joinpath(record["resource"])))

    def get(self, name: str) -> tuple[Tensor, dict[str, Any]]:
        """The sample of the photo called ``name`` (a file stem, see ``.names``)."""
        if name not in self.names:
            raise KeyError(f"no photo called {name!r}; the photos are {self.names}")
        return self[self.names.index(name)]


def load_photo(name: str) -> tuple[Tensor, dict[str, Any]]:
    """One photo by name, e.g. ``load_photo("astronaut")``: ``(image (3, H, W), target)``."""
    return PhotoDataset().get(name)
