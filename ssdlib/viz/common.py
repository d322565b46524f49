"""What every figure of the lessons shares: the colours, the image on the unit square, boxes
drawn on it, a layer's cell grid, and the small helpers that lay panels out and label boxes.

One convention throughout :mod:`ssdlib.viz`: images are shown on the unit square, so every box
is **xyxy normalised to [0, 1]** of the image, the same numbers ``ssdlib`` computes with. Images
are ``(3, H, W)`` tensors in [0, 1] (what the datasets return) or ``(H, W, 3)`` arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from ..boxes import _as_boxes, pixels_to_unit
from ..priors import PriorConfig
from ..utils import TAB10

PALETTE = tuple(to_rgb(c) for c in TAB10)  # one colour per object or layer, cycling after ten;
# RGB tuples, which draw_boxes tells apart from a list of colours
GT_COLOR = "#00e5ff"  # ground truth: a cyan that stands out on photos and on the tab10 colours
PANEL_INCHES = 3.2  # side of one image panel; six of them fit a notebook's width in two rows
GRID_ALPHA = 0.35  # cell grid lines: visible, but quieter than the boxes drawn over them
MAX_GRID_LINES = 40  # finer grids than this only darken the photo; draw every other line


def _color(i: int) -> tuple[float, float, float]:
    return PALETTE[i % len(PALETTE)]


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (4.5, 4.5)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _panels(
    n: int, ncols: int | None = None, size: float | tuple[float, float] = PANEL_INCHES
) -> tuple[Figure, list]:
    """A figure with ``n`` image panels in a grid; the unused ones are hidden. ``size`` is a
    panel's side in inches, or its ``(width, height)``."""
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    width, height = size if isinstance(size, tuple) else (size, size)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), layout="constrained", squeeze=False
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _pixels_to_unit(boxes: Tensor | np.ndarray, width: int, height: int) -> Tensor:
    """``(N, 4)`` (or one ``(4,)``) xyxy pixels of a ``width`` × ``height`` image -> ``(N, 4)``
    xyxy normalised to it, a float32 CPU tensor, what :func:`draw_boxes` takes."""
    return pixels_to_unit(_as_boxes(boxes), width, height)


def image_to_numpy(image: Tensor | np.ndarray) -> np.ndarray:
    """A ``(3, H, W)`` tensor in [0, 1] or an ``(H, W, 3)`` array -> ``(H, W, 3)`` float array."""
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"expected an image tensor of shape (3, H, W), got {tuple(image.shape)}"
            )
        array = image.detach().cpu().float().permute(1, 2, 0).numpy()
    else:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an image array of shape (H, W, 3), got {array.shape}")
        if array.dtype == np.uint8:
            array = array / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def show_image(
    image: Tensor | np.ndarray, ax: Axes | None = None, title: str | None = None
) -> Axes:
    """Show an image on the unit square, so that normalised xyxy boxes draw in place.

    The axes keep the photo's own proportions (a 300×451 photo stays wide) while the data
    coordinates run over [0, 1] on both sides, y pointing down as in image coordinates.
    """
    array = image_to_numpy(image)
    ax = _new_axes(ax)
    h, w = array.shape[:2]
    ax.imshow(array, extent=(0, 1, 1, 0), interpolation="antialiased")
    ax.set_aspect(h / w)
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def draw_boxes(
    ax: Axes,
    boxes: Tensor | Sequence,
    color: str | Sequence | None = None,
    labels: Sequence[str] | None = None,
    linewidth: float = 1.5,
    linestyle: str = "-",
    alpha: float = 1.0,
) -> list[Rectangle]:
    """Draw boxes on ``ax``.

    Args:
        ax: axes set up by :func:`show_image` (or any axes in the same units as the boxes).
        boxes: ``(N, 4)`` xyxy, normalised.
        color: one colour for all, or one per box; None gives each box its own palette colour.
        labels: optional text per box, on a tag at its top corner (kept inside the image).

    Returns:
        The ``N`` rectangles added (tests and widgets read their geometry back).
    """
    boxes = _as_boxes(boxes)
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"got {len(labels)} labels for {len(boxes)} boxes")
    patches = []
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if color is None:
            c = _color(i)
        elif isinstance(color, str) or (len(color) in (3, 4) and np.isscalar(color[0])):
            c = color
        else:
            c = color[i]
        rect = Rectangle(
            (x1, y1),
            x2 - x1,
            y2 - y1,
            fill=False,
            edgecolor=c,
            linewidth=linewidth,
            linestyle=linestyle,
            alpha=alpha,
        )
        ax.add_patch(rect)
        patches.append(rect)
        if labels is not None and labels[i]:
            _label_box(ax, (x1, y1, x2, y2), labels[i], c)
    return patches


def draw_grid(ax: Axes, cfg: PriorConfig, layer: int, color: str = "white") -> None:
    """The cell grid of one source map: lines every ``step`` pixels of the network input."""
    f = cfg.feature_maps[layer]
    step = cfg.step(layer) / cfg.image_size
    every = 2 if f > MAX_GRID_LINES else 1
    for i in range(0, f + 1, every):
        ax.axhline(min(i * step, 1.0), color=color, linewidth=0.5, alpha=GRID_ALPHA)
        ax.axvline(min(i * step, 1.0), color=color, linewidth=0.5, alpha=GRID_ALPHA)


LABEL_TOP_ROOM = 0.06  # a box whose top is this close to the image's top edge (as a fraction of
# its height) gets its label inside the box, where the panel's title cannot cover it
LABEL_RIGHT_ROOM = 0.15  # a box starting this close to the right edge gets a right-aligned label


def _label_box(ax: Axes, box: Tensor | Sequence[float], text: str, color: str | tuple) -> None:
    """Write ``text`` on a coloured tag at the box's top corner, kept inside the image."""
    x1, y1, x2, _ = (float(v) for v in box)
    at_right = x1 > 1 - LABEL_RIGHT_ROOM
    ax.text(
        x2 if at_right else x1,
        y1,
        text,
        color="white",
        fontsize=8,
        va="top" if y1 < LABEL_TOP_ROOM else "bottom",  # y points down: "top" is inside the box
        ha="right" if at_right else "left",
        bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "linewidth": 0},
    )
