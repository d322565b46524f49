"""What every dataset shares: the sample format, reading images, checking boxes.

A sample is ``(image, target)``:

* ``image``: float32 ``(3, H, W)`` in [0, 1], RGB. Not normalised: the model carries mean/std.
* ``target["boxes"]``: float32 ``(G, 4)`` xyxy in pixels, where a box covering columns
  ``c0 .. c1`` (0-based, inclusive) has ``x1 = c0`` and ``x2 = c1 + 1``.
* ``target["labels"]``: int64 ``(G,)``, each >= 1 (0 is the background class).
* datasets may add keys: ``"difficult"`` (VOC, bool ``(G,)``), ``"image_id"`` (int).

An image without objects is valid: boxes ``(0, 4)``, labels ``(0,)``.
"""

from __future__ import annotations

import bisect
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import ConcatDataset, Subset

BACKGROUND_NAME = "__background__"  # index 0 of every ``.classes`` list


class DatasetError(ValueError):
    """A dataset file is unreadable or malformed; the message names the file and the annotation."""


def read_image(path: str | os.PathLike, exif_upright: bool = False) -> Tensor:
    """Decode an image file to float32 ``(3, H, W)`` RGB in [0, 1].

    With ``exif_upright``, turned upright as its EXIF orientation says (phone photos; what
    ``detect`` shows). Datasets leave it off: their boxes were drawn on the stored pixels.
    Grey and palette images become
    RGB; 16-bit images are scaled by 65535 and float images kept as they are (they must lie in
    [0, 1]), not clipped to white or black. A missing file raises ``FileNotFoundError``; a file
    that is not an image, is truncated, or is too large to decode safely (PIL's decompression
    bomb limit) raises :class:`DatasetError`, naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            if exif_upright:
                im = ImageOps.exif_transpose(im)
            if im.mode in HIGH_DEPTH_SCALE:  # one channel of 16-bit integers or floats
                grey = np.asarray(im, dtype=np.float32) / HIGH_DEPTH_SCALE[im.mode]
                return _grey_to_tensor(grey, path)
            rgb = np.array(im.convert("RGB"))  # decodes the whole file: truncation shows here
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err
    return uint8_to_tensor(rgb)


HIGH_DEPTH_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0, "F": 1.0}
# PIL modes that convert("RGB") would clip: 16-bit PNGs (read as "I;16" or "I") to [0, 1] by
# their full range, float TIFFs ("F") as they are


def _grey_to_tensor(grey: np.ndarray, path: Path) -> Tensor:
    if not np.isfinite(grey).all() or grey.min() < 0 or grey.max() > 1:
        raise DatasetError(
            f"cannot read image {path}: its values run from {grey.min():g} to {grey.max():g}, "
            "outside what a 16-bit or [0, 1] float image holds"
        )
    return torch.from_numpy(np.ascontiguousarray(grey)).expand(3, *grey.shape).contiguous()


def uint8_to_tensor(rgb: np.ndarray) -> Tensor:
    """``(H, W, 3)`` uint8 -> float32 ``(3, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255)


def tensor_to_uint8(image: Tensor) -> np.ndarray:
    """float ``(3, H, W)`` in [0, 1] -> ``(H, W, 3)`` uint8 (rounded), for writing files."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def make_target(
    boxes: np.ndarray | Tensor | Sequence, labels: np.ndarray | Tensor | Sequence, **extra: Any
) -> dict[str, Any]:
    """The common target dict with the right dtypes and shapes, also when there are no objects.

    Args:
        boxes: ``(G, 4)`` xyxy pixels (anything ``torch.as_tensor`` takes; ``[]`` for none).
        labels: ``(G,)`` class indices >= 1.
        **extra: more entries, e.g. ``difficult=`` (converted to a bool tensor) or ``image_id=``.
    """
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)
    if len(boxes_t) != len(labels_t):
        raise ValueError(f"{len(boxes_t)} boxes but {len(labels_t)} labels")
    target: dict[str, Any] = {"boxes": boxes_t, "labels": labels_t}
    for key, value in extra.items():
        if key == "difficult":
            value = torch.as_tensor(np.asarray(value, dtype=bool)).reshape(-1)
        target[key] = value
    return target


def check_sample(image: Tensor, target: dict[str, Any], where: str = "sample") -> None:
    """Raise ``ValueError`` naming ``where`` unless ``(image, target)`` is in the common format."""
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{where}: expected an image tensor of shape (3, H, W), got {shape}")
    boxes, labels = target.get("boxes"), target.get("labels")
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{where}: expected target['boxes'] of shape (G, 4), got {shape}")
    if not isinstance(labels, Tensor) or labels.shape != (len(boxes),):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(
            f"{where}: expected target['labels'] of shape ({len(boxes)},), got {shape}"
        )
    if len(labels) and int(labels.min()) < 1:
        raise ValueError(f"{where}: labels must be >= 1 (0 is background), got {labels.tolist()}")


class BoxChecker:
    """Checks annotated boxes against their image, with one policy for every dataset.

    * not finite, or ``x2 <= x1`` / ``y2 <= y1``: an error naming the file and the annotation,
      or (``skip_degenerate=True``, for COCO's few zero-size boxes) skipped;
    * partly outside the image: clipped to it;
    * entirely outside the image: an error (the annotation belongs to another image or is wrong).

    Clips and skips are counted, and :meth:`warn` issues ONE ``UserWarning`` for all of them
    (the first example named), so a dataset with a few sloppy boxes does not flood the output.
    """

    def __init__(self, dataset_name: str, skip_degenerate: bool = False) -> None:
        self.dataset_name = dataset_name
        self.skip_degenerate = skip_degenerate
        self.clipped: list[str] = []
        self.skipped: list[str] = []
        self._warned = False

    def check(
        self, box: Sequence[float], width: int, height: int, where: str
    ) -> list[float] | None:
        """Return the (clipped) xyxy box, or None when it is skipped.

        Args:
            box: ``(x1, y1, x2, y2)`` in pixels.
            width, height: the image size in pixels.
            where: names the file and the annotation, for messages.
        """
        x1, y1, x2, y2 = (float(v) for v in box)
        shown = [round(v, 2) for v in (x1, y1, x2, y2)]
        if not all(np.isfinite([x1, y1, x2, y2])):
            raise DatasetError(f"{where}: box {shown} has a coordinate that is not finite")
        if x2 <= x1 or y2 <= y1:
            if self.skip_degenerate:
                self.skipped.append(f"{where}: box {shown} has zero or negative size")
                return None
            raise DatasetError(
                f"{where}: box {shown} (xyxy pixels) is degenerate: need x2 > x1 and y2 > y1"
            )
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            raise DatasetError(
                f"{where}: box {shown} (xyxy pixels) lies outside the {width}x{height} image"
            )
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            self.clipped.append(f"{where}: box {shown} clipped to the {width}x{height} image")
        return [cx1, cy1, cx2, cy2]

    def warn(self, note: str = "", stacklevel: int = 3) -> None:
        """Issue the single summary warning, if anything was clipped or skipped (once only)."""
        if self._warned or not (self.clipped or self.skipped):
            return
        self._warned = True
        parts = []
        if self.clipped:
            parts.append(
                f"clipped {len(self.clipped)} box(es) to the image (first: {self.clipped[0]})"
            )
        if self.skipped:
            parts.append(
                f"skipped {len(self.skipped)} zero-size box(es) (first: {self.skipped[0]})"
            )
        message = f"{self.dataset_name}: " + "; ".join(parts) + "." + (f" {note}" if note else "")
        warnings.warn(message, stacklevel=stacklevel)


def leaf_datasets(
    dataset: Any, indices: Sequence[int] | None = None
) -> Iterator[tuple[Any, list[int]]]:
    """The datasets that hold ``dataset``'s images, each with the indices (its own) of those
    that ``dataset`` (its ``indices``, if given) serves: looks through ``Subset`` and
    ``ConcatDataset``, which hold no images of their own.

    A part of a ``ConcatDataset`` that the indices do not reach is left out; ``dataset`` itself,
    when it is a leaf, is yielded even with no indices.
    """
    indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    if isinstance(dataset, Subset):
        yield from leaf_datasets(dataset.dataset, [int(dataset.indices[i]) for i in indices])
    elif isinstance(dataset, ConcatDataset):
        ends = dataset.cumulative_sizes  # index one past each part's last image
        parts: list[list[int]] = [[] for _ in dataset.datasets]
        for i in indices:
            k = bisect.bisect_right(ends, i)
            parts[k].append(i - (ends[k - 1] if k else 0))
        for part, idx in zip(dataset.datasets, parts, strict=True):
            if idx:
                yield from leaf_datasets(part, idx)
    else:
        yield dataset, indices


def _load_target(dataset: Any, index: int) -> dict[str, Any]:
    target = dataset.load_target(index)
    return target[0] if isinstance(target, tuple) else target  # VOC's (target, (height, width))


def read_every_annotation(dataset: Any) -> None:
    """Parse the annotation of every image ``dataset`` serves (looking through ``Subset`` and
    ``ConcatDataset``) without decoding an image, so that a broken one raises, naming its file,
    before training starts. Datasets without ``load_target`` (shapes, photos) have none to read.
    """
    if dataset is None:
        return
    for leaf, indices in leaf_datasets(dataset):
        if hasattr(leaf, "load_target"):
            for i in indices:
                leaf.load_target(i)


def holds_objects(dataset: Any, indices: Sequence[int] | None = None) -> bool | None:
    """Whether any image of ``dataset`` (of its ``indices``, if given) has an object, read from
    the annotations alone; None where that would mean drawing or decoding images.

    Looks through ``Subset`` and ``ConcatDataset`` (:func:`leaf_datasets`). A dataset with
    ``load_target`` (VOC reads one XML file, COCO its parsed JSON) is read up to its first image
    with an object, so a sound dataset costs one annotation; a ShapesDataset with
    ``max_objects=0`` has none.
    """
    from .shapes import ShapesDataset  # (shapes imports this module)

    answer: bool | None = False
    for leaf, idx in leaf_datasets(dataset, indices):
        if isinstance(leaf, ShapesDataset) and leaf.max_objects == 0:
            continue
        if isinstance(leaf, ShapesDataset) or not hasattr(leaf, "load_target"):
            answer = None  # only drawing or decoding the images would tell
        elif any(len(_load_target(leaf, i)["labels"]) for i in idx):
            return True
    return answer


def describe_dataset(dataset: Any) -> str:
    """A dataset's repr, looking through ``Subset`` and ``ConcatDataset`` (which have none)."""
    if isinstance(dataset, Subset):
        return f"{len(dataset)} images of {describe_dataset(dataset.dataset)}"
    if isinstance(dataset, ConcatDataset):
        return " + ".join(describe_dataset(part) for part in dataset.datasets)
    if type(dataset).__repr__ is object.__repr__:  # "<... object at 0x7f...>" says nothing
        return type(dataset).__name__
    return repr(dataset)
