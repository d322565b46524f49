"""Figures for the notebooks, one module per lesson, in the order of the paper.

========================  ========  ==========================================================
module                    lesson    what it draws
========================  ========  ==========================================================
:mod:`.common`            all       colours, the image on the unit square, boxes, a cell grid
:mod:`.feature_maps`      1         source maps over the photo, receptive fields (SSD §2.1)
:mod:`.priors`            2         default boxes of a cell, scales, coverage, k-means (§2.2)
:mod:`.matching`          3         IoU maps, positives, forced matches, offsets (§2.2, eq. 2)
:mod:`.loss`              4         hard negatives and the share of the loss they carry (§2.2)
:mod:`.nms`               5         greedy NMS step by step, candidates, detections (§3)
:mod:`.experiments`       6, 7      augmentation stages and the measured experiments
:mod:`.report`            8         reading a trained detector: curves, errors, confusion
========================  ========  ==========================================================

Every plotting function is pure: it takes data (tensors, a :class:`~ssdlib.priors.PriorConfig`)
and an optional matplotlib ``Axes``, draws, and returns the figure or the axes. Nothing here
keeps state; the widgets in :mod:`ssdlib.widgets` are thin shells around these functions. What
the figures compute lives beside its concept, not here: coverage and k-means of box shapes in
:mod:`ssdlib.priors`, receptive fields in :mod:`ssdlib.backbone`, the mining report in
:mod:`ssdlib.loss`, the lesson's synthetic detections in :mod:`ssdlib.nms`.

One convention throughout: images are shown on the unit square, so every box is **xyxy
normalised to [0, 1]** of the image, the same numbers ``ssdlib`` computes with. Images are
``(3, H, W)`` tensors in [0, 1] (what the datasets return) or ``(H, W, 3)`` arrays.

The names of lessons 1-5 are re-exported here (``viz.plot_cell_boxes(...)``). Lessons 6-8 are
imported as modules, ``from ssdlib.viz import experiments, report``: the first brings ipywidgets
(its explorer), and ``import ssdlib.viz`` stays light. ``import ssdlib`` loads none of this.
"""

from .common import (
    GRID_ALPHA,
    GT_COLOR,
    LABEL_RIGHT_ROOM,
    LABEL_TOP_ROOM,
    MAX_GRID_LINES,
    PALETTE,
    PANEL_INCHES,
    draw_boxes,
    draw_grid,
    image_to_numpy,
    show_image,
)
from .feature_maps import (
    FLAT_RTOL,
    LABEL_GAP,
    SUMMARIES,
    plot_feature_map,
    plot_object_sizes,
    plot_receptive_fields,
    plot_source_maps,
)
from .loss import (
    HARDEST_SHOWN,
    MUTED_CONTRAST,
    MUTED_LEVEL,
    NEGATIVE_ALPHA,
    NEGATIVE_CMAP,
    POSITIVE_COLOR,
    plot_hard_negatives,
    plot_negative_losses,
    plot_negative_weighting,
)
from .matching import (
    OFFSET_NAMES,
    plot_encoding,
    plot_forced_boxes,
    plot_iou_histogram,
    plot_iou_maps,
    plot_iou_matrix,
    plot_matches,
    plot_offset_histograms,
    plot_positives,
)
from .nms import nms_state, plot_candidates, plot_detections, plot_nms_step
from .priors import (
    box_shape_labels,
    plot_box_shape_clusters,
    plot_cell_boxes,
    plot_coverage,
    plot_default_box_explorer,
    plot_scales,
)

__all__ = [
    "FLAT_RTOL",
    "GRID_ALPHA",
    "GT_COLOR",
    "HARDEST_SHOWN",
    "LABEL_GAP",
    "LABEL_RIGHT_ROOM",
    "LABEL_TOP_ROOM",
    "MAX_GRID_LINES",
    "MUTED_CONTRAST",
    "MUTED_LEVEL",
    "NEGATIVE_ALPHA",
    "NEGATIVE_CMAP",
    "OFFSET_NAMES",
    "PALETTE",
    "PANEL_INCHES",
    "POSITIVE_COLOR",
    "SUMMARIES",
    "box_shape_labels",
    "draw_boxes",
    "draw_grid",
    "image_to_numpy",
    "nms_state",
    "plot_box_shape_clusters",
    "plot_candidates",
    "plot_cell_boxes",
    "plot_coverage",
    "plot_default_box_explorer",
    "plot_detections",
    "plot_encoding",
    "plot_feature_map",
    "plot_forced_boxes",
    "plot_hard_negatives",
    "plot_iou_histogram",
    "plot_iou_maps",
    "plot_iou_matrix",
    "plot_matches",
    "plot_negative_losses",
    "plot_negative_weighting",
    "plot_nms_step",
    "plot_object_sizes",
    "plot_offset_histograms",
    "plot_positives",
    "plot_receptive_fields",
    "plot_scales",
    "plot_source_maps",
    "show_image",
]
