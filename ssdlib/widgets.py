"""Interactive explorers for the notebooks: thin ipywidgets shells around :mod:`ssdlib.viz`.

Each explorer builds its sliders explicitly (all with ``continuous_update=False``, so a drag
redraws once, on release), connects them to a drawing function with
``ipywidgets.interactive_output``, and returns one :class:`Explorer` container: the controls,
an HTML line with the numbers behind the figure, and an ``Output`` that holds the figure.

What an explorer draws lives in :mod:`ssdlib.viz`, and the numbers it shows beside their concept
(:func:`ssdlib.priors.default_box_coverage`, :func:`ssdlib.loss.mining_report`); what lives here
is only which controls exist and how their values become those functions' arguments. An
explorer keeps its last figure and numbers (``explorer.figure``, ``explorer.result``) so that
tests can move a slider and check the change without a browser.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython import get_ipython
from matplotlib.figure import Figure
from torch import Tensor

from .loss import NEG_POS_RATIO, background_loss, hard_negative_mining, mining_report
from .matching import IOU_THRESHOLD, assign_targets
from .nms import NMS_IOU_THRESHOLD, NMSStep, nms_steps
from .priors import (
    SSD300_VOC,
    CoverageReport,
    PriorConfig,
    config_from_scales,
    default_box_coverage,
    default_boxes,
    layer_of_prior,
    point_to_cell,
)
from .viz import (
    plot_default_box_explorer,
    plot_feature_map,
    plot_hard_negatives,
    plot_iou_histogram,
    plot_negative_losses,
    plot_nms_step,
    plot_positives,
)

SLIDER_STYLE = {"description_width": "initial"}  # descriptions at their natural width
WIDE = widgets.Layout(width="320px")  # sliders long enough for fine steps, two fit in a row
LAYER_SLIDER = widgets.Layout(width="480px")  # its readout ("0: conv4_3 38×38") is long: a row
# of its own and room for it, so that it cannot run into the next control's label

PAPER_S_MIN, PAPER_S_MAX = 0.2, 0.9  # "the lowest layer has a scale of 0.2 and the highest layer
# has a scale of 0.9" (SSD §2.2); the released SSD300 rounds the top to 0.88
Draw = Callable[..., tuple[Figure, Any, str]]  # controls' values -> (figure, result, info HTML)


class Explorer(widgets.VBox):
    """The container every explorer returns: controls, an info line, and the figure.

    Attributes:
        controls: the control widgets by argument name; set ``.value`` to move one.
        info: the ``HTML`` line with the numbers behind the figure.
        output: the ``Output`` the figure is drawn in (class ``ssd-figure``).
        figure: the matplotlib figure drawn last.
        result: what the drawing function returned besides the figure (a report, steps, ...).
    """

    def __init__(
        self,
        controls: dict[str, widgets.Widget],
        draw: Draw,
        rows: Sequence[Sequence[str]],
        info_class: str = "ssd-info",
    ) -> None:
        self.controls = controls
        self.figure: Figure | None = None
        self.result: Any = None
        self.info = widgets.HTML()
        self.info.add_class(info_class)
        self._draw = draw
        self.output = widgets.interactive_output(self._update, controls)  # draws the first time
        self.output.add_class("ssd-figure")
        self._show()
        layout = [widgets.HBox([controls[name] for name in row]) for row in rows]
        super().__init__(children=[*layout, self.info, self.output])

    def __repr__(self) -> str:
        # What a reader without a kernel sees under the cell (GitHub, a stored notebook), in
        # place of ipywidgets' nested repr: one honest line, short enough not to be cut at 110.
        return (
            f"Interactive explorer ({len(self.controls)} controls): it needs a kernel, so run "
            "the lesson in JupyterLab (make lab)"
        )

    def _update(self, **values: Any) -> None:
        """Redraw: ``interactive_output`` calls this with the controls' values."""
        if self.figure is not None:
            plt.close(self.figure)
        self.figure, self.result, self.info.value = self._draw(**values)
        plt.close(self.figure)  # pyplot and the inline backend let go of it; _show displays it
        if hasattr(self, "output"):  # not yet on the first call, from interactive_output itself
            self._show()

    def _show(self) -> None:
        """Put the figure into the ``Output`` widget's state, as a PNG display.

        Not ``display()`` inside the Output's context: ipywidgets flushes inline figures only
        when the backend is named "module://matplotlib_inline...", and matplotlib >= 3.9 says
        "inline", so the figure would land under the cell, or nowhere after a slider move. A
        state change also reaches a live front-end, nbclient and nbval in the same way, so a
        stored notebook and a fresh run show the same outputs.
        """
        shell = get_ipython()
        if shell is None or self.figure is None:  # plain Python (tests): nothing to show it in
            return
        data, metadata = shell.display_formatter.format(self.figure)
        self.output.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)


def _float_slider(description: str, value: float, lo: float, hi: float, step: float, **kw):
    return widgets.FloatSlider(
        value=value,
        min=lo,
        max=hi,
        step=step,
        description=description,
        continuous_update=False,
        style=SLIDER_STYLE,
        layout=WIDE,
        **kw,
    )


def _int_slider(description: str, value: int, lo: int, hi: int, **kw) -> widgets.IntSlider:
    return widgets.IntSlider(
        value=value,
        min=lo,
        max=hi,
        description=description,
        continuous_update=False,
        style=SLIDER_STYLE,
        layout=WIDE,
        **kw,
    )


def _check_image_boxes(boxes: Tensor | None, name: str = "gt_boxes") -> None:
    if boxes is not None and (boxes.dim() != 2 or boxes.shape[-1] != 4):
        raise ValueError(
            f"expected {name} of shape (G, 4) xyxy normalised, got {tuple(boxes.shape)}"
        )


# -- §2.1 Feature maps -----------------------------------------------------------------------------


def feature_map_explorer(
    image: Tensor | np.ndarray, fmaps: Sequence[Tensor], names: Sequence[str]
) -> Explorer:
    """Pick a source map and a channel; see its activations stretched over the photo.

    Args:
        image: the ``(3, H, W)`` photo the maps were computed from.
        fmaps: one ``(C, H', W')`` map per source layer (a batch dim of 1 is dropped).
        names: the layers' names, for the dropdown.
    """
    fmaps = [f[0] if f.dim() == 4 else f for f in (torch.as_tensor(m).detach() for m in fmaps)]
    if len(names) != len(fmaps):
        raise ValueError(f"got {len(names)} names for {len(fmaps)} feature maps")
    for name, f in zip(names, fmaps, strict=True):
        if f.dim() != 3:
            raise ValueError(f"{name}: expected a map of shape (C, H, W), got {tuple(f.shape)}")
    layer = widgets.Dropdown(
        options=[(n, k) for k, n in enumerate(names)],
        value=0,
        description="layer",
        style=SLIDER_STYLE,
    )
    channel = _int_slider("channel", 0, 0, fmaps[0].shape[0] - 1)
    opacity = _float_slider("opacity", 0.6, 0.0, 1.0, 0.05)

    def fit_channel(change: dict) -> None:
        channel.max = fmaps[change["new"]].shape[0] - 1  # the value clamps if it was larger

    layer.observe(fit_channel, "value")  # registered first, so it runs before the redraw

    def draw(layer: int, channel: int, opacity: float):
        fmap = fmaps[layer]
        c, h, w = fmap.shape
        channel = min(channel, c - 1)
        values = fmap[channel]
        fig, (ax_map, ax_img) = plt.subplots(1, 2, figsize=(9, 4.3), layout="constrained")
        ax_map.imshow(values.numpy(), cmap="magma", interpolation="nearest")
        ax_map.set_title(f"{names[layer]}, channel {channel} ({h}×{w} cells)", fontsize=9)
        ax_map.set_xticks([])
        ax_map.set_yticks([])
        plot_feature_map(image, values, ax=ax_img, alpha=opacity, title="over the photo")
        peak = int(values.argmax())
        info = (
            f"<b>{html.escape(names[layer])}</b>: {c} channels of {h}×{w}; channel {channel} "
            f"ranges {float(values.min()):.2f} … {float(values.max()):.2f}, strongest at cell "
            f"(row {peak // w}, col {peak % w})"
        )
        return fig, values, info

    return Explorer(
        {"layer": layer, "channel": channel, "opacity": opacity},
        draw,
        rows=[["layer", "channel", "opacity"]],
    )


# -- §2.2 Default boxes ----------------------------------------------------------------------------


def aspect_ratio_sets(num_layers: int, base: PriorConfig = SSD300_VOC) -> dict[str, tuple]:
    """The aspect-ratio choices of the default-box explorer: label -> per-layer ratios."""
    return {
        f"as {base.name}": base.aspect_ratios,
        "{1, 2, 1/2} everywhere": ((2.0,),) * num_layers,
        "{1, 2, 3, 1/2, 1/3} everywhere": ((2.0, 3.0),) * num_layers,
        "squares only": ((),) * num_layers,
    }


def _default_box_controls(
    ratio_names: list[str],
    layer_names: list[str],
    sides: Sequence[int],
    point: tuple[float, float],
    s_min: float,
    s_max: float,
) -> dict[str, widgets.Widget]:
    """The default-box explorer's controls, by the drawing function's argument names."""
    s_min_slider = _float_slider("s_min", s_min, 0.05, 0.5, 0.01)
    s_min_slider.add_class("ssd-s-min")
    s_max_slider = _float_slider("s_max", s_max, 0.5, 1.0, 0.01)
    s_max_slider.add_class("ssd-s-max")
    layer = widgets.SelectionSlider(
        options=[
            (f"{k}: {n} {f}×{f}", k)
            for k, (n, f) in enumerate(zip(layer_names, sides, strict=True))
        ],
        value=0,
        description="layer",
        continuous_update=False,
        style=SLIDER_STYLE,
        layout=LAYER_SLIDER,
    )
    return {
        "s_min": s_min_slider,
        "s_max": s_max_slider,
        "ratios": widgets.Dropdown(options=ratio_names, description="ratios", style=SLIDER_STYLE),
        "layer": layer,
        "cell_x": _float_slider("point x → col", round(point[0], 2), 0.0, 1.0, 0.01),
        "cell_y": _float_slider("point y → row", round(point[1], 2), 0.0, 1.0, 0.01),
    }


def default_box_explorer(
    image: Tensor | np.ndarray,
    gt_boxes: Tensor,
    objects: Tensor | None = None,
    base: PriorConfig = SSD300_VOC,
    layer_names: Sequence[str] | None = None,
    point: tuple[float, float] | None = None,
    s_min: float = PAPER_S_MIN,
    s_max: float = PAPER_S_MAX,
) -> Explorer:
    """Sliders for the scale range, the aspect ratios, the layer and the cell of the default
    boxes; the figure redraws the cell's boxes on the photo and the coverage of ``objects``.

    The layers get the paper's linear scales from ``s_min`` to ``s_max`` (§2.2), on ``base``'s
    feature maps and steps. Controls: ``s_min`` (class ``ssd-s-min``), ``s_max``
    (``ssd-s-max``), ``ratios``, ``layer`` (on a row of its own, so its readout has room), and
    the point whose cell is drawn: ``cell_y`` ("point y → row") and ``cell_x`` ("point x →
    col"), in that order, as the figure names the cell (row, col). The HTML line (class
    ``ssd-box-count``) reads "8732 default boxes · N pairs (object, default box) at IoU ≥ 0.5 ·
    coverage C%", then the cell as (row, col). The coverage depends on the config alone: it is
    computed once per config, so moving the layer or the point only redraws.

    Args:
        image: the photo ``(3, H, W)`` in [0, 1].
        gt_boxes: ``(G, 4)`` xyxy normalised boxes of the photo's objects.
        objects: ``(N, 4)`` xyxy normalised boxes the coverage is measured on (default:
            ``gt_boxes``); pool a dataset's objects here.
        base: where the feature maps, steps and the first ratio choice come from.
        layer_names: names for the layer slider's readout.
        point: initial ``(x, y)`` of the cell; default: the centre of the first object.
        s_min, s_max: the sliders' initial values.
    """
    _check_image_boxes(gt_boxes)
    objects = gt_boxes if objects is None else objects
    _check_image_boxes(objects, "objects")
    m = len(base.feature_maps)
    names = list(layer_names) if layer_names is not None else [f"layer {k}" for k in range(m)]
    if len(names) != m:
        raise ValueError(f"got {len(names)} layer names for {m} layers")
    if point is None:
        point = ((gt_boxes[0, :2] + gt_boxes[0, 2:]) / 2).tolist() if len(gt_boxes) else (0.5, 0.5)
    ratio_sets = aspect_ratio_sets(m, base)
    controls = _default_box_controls(
        list(ratio_sets), names, base.feature_maps, point, s_min, s_max
    )
    coverage: dict[PriorConfig, CoverageReport] = {}  # the last config's coverage: layer and
    # point moves reuse it instead of recomputing the IoU of every object with every default box

    def draw(s_min: float, s_max: float, ratios: str, layer: int, cell_x: float, cell_y: float):
        cfg = config_from_scales(
            s_min,
            s_max,
            ratio_sets[ratios],
            base.feature_maps,
            base.image_size,
            steps=base.steps,
            clip=base.clip,
            name="explorer",
        )
        if cfg not in coverage:
            coverage.clear()
            coverage[cfg] = default_box_coverage(objects, cfg)
        report = coverage[cfg]
        fig, _ = plot_default_box_explorer(
            image, cfg, layer, (cell_x, cell_y), gt_boxes=gt_boxes, report=report
        )
        row, col = point_to_cell(cfg, layer, cell_x, cell_y)
        scales = " ".join(f"{s:.2f}" for s in cfg.scales[:-1])
        info = (
            f"<b>{cfg.num_priors}</b> default boxes · <b>{int(report.num_matches.sum())}</b> "
            f"(object, default box) pairs at IoU ≥ {report.threshold:g} · coverage "
            f"<b>{report.coverage:.0%}</b> of {report.num_objects} objects"
            f"<br>scales s_k: {scales}; boxes per cell: {cfg.boxes_per_cell}; drawn: "
            f"{html.escape(names[layer])}, cell (row {row}, col {col})"
        )
        return fig, (cfg, report), info

    rows = [["s_min", "s_max", "ratios"], ["layer"], ["cell_y", "cell_x"]]
    return Explorer(controls, draw, rows, info_class="ssd-box-count")


# -- §2.2 Matching ---------------------------------------------------------------------------------


def matching_explorer(
    image: Tensor | np.ndarray,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    cfg: PriorConfig = SSD300_VOC,
    object_names: Sequence[str] | None = None,
    layer_names: Sequence[str] | None = None,
) -> Explorer:
    """A threshold slider and an object picker over the matching of one image.

    Left: the chosen object's positives on the photo, coloured by layer (dashed: forced best
    match). Right: the object's IoU with every default box, with the threshold, on a log count
    axis; boxes at or above the threshold that another object took are drawn apart.

    Args:
        gt_boxes: ``(G, 4)`` xyxy normalised, G >= 1.
        gt_labels: ``(G,)`` classes >= 1.
        object_names: a name per object for the picker.
        layer_names: the source maps' names, for the legend.
    """
    _check_image_boxes(gt_boxes)
    if len(gt_boxes) == 0:
        raise ValueError("the matching explorer needs at least one object")
    names = (
        list(object_names)
        if object_names is not None
        else [f"object {i}" for i in range(len(gt_boxes))]
    )
    if len(names) != len(gt_boxes):
        raise ValueError(f"got {len(names)} object names for {len(gt_boxes)} objects")
    if layer_names is not None and len(layer_names) != len(cfg.feature_maps):
        raise ValueError(f"got {len(layer_names)} layer names for {len(cfg.feature_maps)} layers")
    priors = default_boxes(cfg)
    layers = layer_of_prior(cfg)  # (P,) source layer of each default box
    threshold = _float_slider("IoU threshold", IOU_THRESHOLD, 0.1, 0.9, 0.05)
    obj = widgets.Dropdown(
        options=[(n, i) for i, n in enumerate(names)],
        value=0,
        description="object",
        style=SLIDER_STYLE,
    )

    def draw(threshold: float, obj: int):
        _, _, details = assign_targets(
            [gt_boxes], [gt_labels], priors, iou_threshold=threshold, return_details=True
        )
        matched, forced = details.matched_gt[0], details.forced[0]
        fig, (ax_img, ax_hist) = plt.subplots(
            1, 2, figsize=(9.5, 4.2), layout="constrained", width_ratios=(1, 1.1)
        )
        plot_positives(
            image,
            priors,
            matched,
            cfg,
            gt_boxes=gt_boxes,
            forced=forced,
            obj=obj,
            ax=ax_img,
            names=layer_names,
        )
        taken = (matched >= 0) & (matched != obj)  # another object's positives
        plot_iou_histogram(details.iou[0, obj], threshold=threshold, ax=ax_hist, taken=taken)
        mine = matched == obj
        per_layer = torch.bincount(layers[mine], minlength=len(cfg.feature_maps)).tolist()
        info = (
            f"<b>{html.escape(names[obj])}</b> at IoU ≥ {threshold:.2f}: "
            f"<b>{int(mine.sum())}</b> positives ({int((mine & forced).sum())} forced), "
            f"per layer {per_layer}; all objects: {int((matched >= 0).sum())} positives"
        )
        return fig, details, info

    return Explorer({"threshold": threshold, "obj": obj}, draw, rows=[["threshold", "obj"]])


# -- §2.2 Hard negative mining ---------------------------------------------------------------------

MAX_NEG_POS_RATIO = 10.0  # the ratio slider's end: past it the mined set hardly changes the picture


def hard_negative_explorer(
    image: Tensor | np.ndarray,
    priors: Tensor,
    labels: Tensor,
    conf_logits: dict[str, Tensor],
    gt_boxes: Tensor | None = None,
) -> Explorer:
    """A negatives-per-positive slider and a model picker over one image's hard negatives.

    Left: the positives and the mined negatives on the image. Right: every negative's loss,
    hardest first, with the mining cut.

    Args:
        priors: ``(P, 4)`` cxcywh default boxes.
        labels: ``(P,)`` long, the matched class of each default box (0 = background).
        conf_logits: model name -> ``(P, K)`` that model's class logits for this image.
        gt_boxes: ``(G, 4)`` xyxy normalised, drawn in cyan.
    """
    _check_image_boxes(gt_boxes)
    if not conf_logits:
        raise ValueError("conf_logits needs at least one model's logits")
    for name, logits in conf_logits.items():
        if logits.dim() != 2 or logits.shape[0] != len(priors):
            raise ValueError(
                f"conf_logits[{name!r}]: expected shape ({len(priors)}, K), "
                f"got {tuple(logits.shape)}"
            )
    if labels.shape != priors.shape[:1]:
        raise ValueError(f"expected labels of shape ({len(priors)},), got {tuple(labels.shape)}")
    bg = {name: background_loss(logits[None])[0] for name, logits in conf_logits.items()}
    ratio = _float_slider("negatives per positive", NEG_POS_RATIO, 0.0, MAX_NEG_POS_RATIO, 0.5)
    model = widgets.Dropdown(
        options=list(conf_logits), value=next(iter(conf_logits)), description="model"
    )

    def draw(ratio: float, model: str):
        chosen = hard_negative_mining(bg[model][None], labels[None], ratio)[0]
        report = mining_report(bg[model], labels, chosen)
        fig, (ax_img, ax_curve) = plt.subplots(
            1, 2, figsize=(10, 4.3), layout="constrained", width_ratios=(1, 1.25)
        )
        plot_hard_negatives(image, priors, labels, chosen, bg[model], gt_boxes, ax=ax_img)
        plot_negative_losses(bg[model], labels, chosen, ax=ax_curve, label=model)
        info = (
            f"<b>{html.escape(model)}</b>, {ratio:g} : 1 → <b>{report.mined}</b> of "
            f"{report.negatives} negatives beside {report.positives} positives; they carry "
            f"<b>{report.mined_share:.0%}</b> of the negatives' confidence loss"
        )
        return fig, report, info

    return Explorer({"ratio": ratio, "model": model}, draw, rows=[["ratio", "model"]])


# -- §3 Non-maximum suppression --------------------------------------------------------------------


def nms_explorer(image: Tensor | np.ndarray, boxes: Tensor, scores: Tensor) -> Explorer:
    """Step through greedy NMS of one class's boxes; a second slider sets the IoU threshold.

    Args:
        boxes: ``(N, 4)`` xyxy normalised candidates of one class.
        scores: ``(N,)``.
    """
    _check_image_boxes(boxes, "boxes")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"expected scores of shape ({len(boxes)},), got {tuple(scores.shape)}")
    threshold = _float_slider("IoU threshold", NMS_IOU_THRESHOLD, 0.05, 0.95, 0.05)
    last = {NMS_IOU_THRESHOLD: nms_steps(boxes, scores, NMS_IOU_THRESHOLD)}  # the last run

    def steps_at(t: float) -> list[NMSStep]:  # one NMS per threshold, for slider and redraw
        if t not in last:
            last.clear()
            last[t] = nms_steps(boxes, scores, t)
        return last[t]

    step = _int_slider("step", 0, 0, len(steps_at(NMS_IOU_THRESHOLD)))

    def fit_steps(change: dict) -> None:
        step.max = len(steps_at(change["new"]))  # the value clamps if larger

    threshold.observe(fit_steps, "value")  # registered first, so it runs before the redraw

    def draw(threshold: float, step: int):
        steps = steps_at(threshold)
        step = min(step, len(steps))
        fig, ax = plt.subplots(figsize=(5.5, 5.2), layout="constrained")
        plot_nms_step(image, boxes, scores, steps, step, ax=ax)
        info = f"IoU threshold {threshold:.2f}: NMS keeps <b>{len(steps)}</b> of {len(boxes)} boxes"
        if step:
            cur = steps[step - 1]
            info += f"; step {step} keeps box {cur.kept} (score {float(scores[cur.kept]):.2f})"
            if cur.ious:
                lo, hi = min(cur.ious), max(cur.ious)
                info += f" and removes {len(cur.suppressed)} (IoU {lo:.2f} … {hi:.2f})"
            else:
                info += " and removes none"
        return fig, steps, info

    return Explorer({"threshold": threshold, "step": step}, draw, rows=[["threshold", "step"]])
