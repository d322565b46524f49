"""JupyterLab in a real browser: notebook 02 runs top to bottom and its sliders redraw the figure.

Unit tests and nbval run notebooks without a front-end; a broken ipywidgets front-end, a
kernelspec the server cannot find, or a widget callback that raises would all pass them. Here a
learner's session is replayed in headless Chromium: open the notebook, Run All, move the s_min
slider, and check that the figure and the box count follow (GitHub issue 8). The widget is
found by the CSS classes notebook 02 promises: ``ssd-s-min``, ``ssd-s-max``, ``ssd-figure``
(an Output holding the inline PNG) and ``ssd-box-count`` (an HTML line).
Run with ``make test-ui`` (``pytest -m ui tests/ui``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import pytest
from labpage import (
    SLIDER_MOVE_TIMEOUT_S,
    WIDGET_RENDER_TIMEOUT_S,
    WIDGETS_EXTENSION,
    WIDGETS_PLUGIN,
    LabPageError,
    NotebookPage,
    format_error,
)
from labserver import LabServer, LabServerError, execute_in_kernel, start_lab

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parents[2]
KERNEL = "ssdlib"  # the kernelspec `make venv` registers in .venv; notebooks name it
SSD300_NUM_PRIORS = 8732  # SSD300's default boxes (SSD §3, Table 2's "# Boxes")
RUN_ALL_TIMEOUT_S = 150.0  # notebook 02 runs in < 60 s on 2 cores; the browser shares them
REDRAW_TIMEOUT_S = 30.0  # one redraw of the default-box figure takes about a second
UI_POLL_S = 0.1  # how often to re-read the widget while waiting for it to change

# The widget contract of notebook 02 (CSS classes set with `add_class`).
S_MIN, S_MAX, FIGURE, COUNT = ".ssd-s-min", ".ssd-s-max", ".ssd-figure", ".ssd-box-count"
FIGURE_PNG = f"{FIGURE} img[src^='data:image/png']"

# The widget's parts, read in one go: each part's text, its cell and the figure's data URL.
_WIDGET_STATE = """
([sMin, sMax, figure, count, png]) => {
    const one = sel => document.querySelector(sel);
    const cellOf = el => el && el.closest('.jp-Cell');
    const parts = [sMin, sMax, figure, count].map(one);
    const img = one(png);
    return {
        present: parts.map(Boolean),
        sameCell: parts.every(p => p && cellOf(p) === cellOf(parts[0])),
        label: parts[0] && parts[0].querySelector('.widget-label').innerText,
        readout: parts[0] && parts[0].querySelector('.widget-readout').innerText,
        handle: parts[0] && Object.fromEntries(['aria-valuenow', 'aria-valuemax'].map(
            a => [a, parts[0].querySelector('.noUi-handle').getAttribute(a)])),
        count: parts[3] && parts[3].innerText.trim(),
        png: img && img.src,
        figureText: parts[2] && parts[2].innerText.trim(),
    };
}
"""


def _widget_state(page) -> dict:
    return page.evaluate(_WIDGET_STATE, [S_MIN, S_MAX, FIGURE, COUNT, FIGURE_PNG])


def _widget_diagnosis(page) -> str:
    """What the page shows instead of the widget: a text repr means no widget front-end."""
    texts = page.locator(".jp-OutputArea-output").all_inner_texts()
    suspicious = [t for t in texts if "Box(" in t or "idget" in t or "Error" in t]
    views = page.evaluate(
        "() => Array.from(document.querySelectorAll('.jupyter-widgets.widget-slider, "
        ".jupyter-widgets.widget-output, .jupyter-widgets.widget-html')).map(e => e.className)"
    )
    return (
        "outputs that mention widgets:\n"
        + ("\n---\n".join(suspicious) or "(none)")
        + f"\nslider/output/html widget views and their classes: {views or '(none)'}"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lab_kernel_imports_ssdlib(lab: LabServer):
    """The server lists the `ssdlib` kernel, and that kernel runs this environment's ssdlib."""
    specs = lab.api("GET", "api/kernelspecs")["kernelspecs"]
    assert KERNEL in specs, f"JupyterLab does not list kernel {KERNEL!r}, only {sorted(specs)}"
    kernel = lab.api("POST", "api/kernels", {"name": KERNEL})
    try:
        code = (
            "import sys, ssdlib\n"
            "print(sys.prefix)\n"
            "print(ssdlib.__file__)\n"
            "print(ssdlib.default_boxes(ssdlib.SSD300_VOC).shape[0])\n"
        )
        result = execute_in_kernel(lab, kernel["id"], code)
    finally:
        lab.api("DELETE", f"api/kernels/{kernel['id']}")
    assert result["status"] == "ok", f"`import ssdlib` failed in the kernel: {result['error']}"
    prefix, module, num_priors = result["stdout"].split()
    assert Path(prefix).resolve() == Path(sys.prefix).resolve(), (
        f"the {KERNEL} kernel runs Python from {prefix}, not from this environment ({sys.prefix})"
    )
    assert Path(module).resolve().is_relative_to(REPO), (
        f"the kernel imported ssdlib from {module}, not from the repository at {REPO}"
    )
    assert int(num_priors) == SSD300_NUM_PRIORS


def _open(lab: LabServer, page, notebook: Path) -> NotebookPage:
    """Open the notebook; check its kernel and that the ipywidgets front-end is active."""
    wanted = json.loads(notebook.read_text()).get("metadata", {}).get("kernelspec", {})
    assert wanted.get("name") == KERNEL, f"{notebook.name} asks for kernel {wanted}, not {KERNEL}"
    specs = sorted(lab.api("GET", "api/kernelspecs")["kernelspecs"])
    assert KERNEL in specs, f"JupyterLab does not list kernel {KERNEL!r}, only {specs}"
    nb = NotebookPage(page, notebook.name, lab.log_tail)
    config = nb.open(lab.lab_url(notebook.name), KERNEL)
    extensions = [ext["name"] for ext in config.get("federated_extensions", [])]
    assert WIDGETS_EXTENSION in extensions, (
        f"JupyterLab did not load the ipywidgets front-end ({WIDGETS_EXTENSION}); it has "
        f"{extensions}: is jupyterlab_widgets installed in {sys.prefix}?"
    )
    assert nb.plugin_active(WIDGETS_PLUGIN), (
        f"{WIDGETS_PLUGIN} is installed but did not activate (disabled in the lab config?)"
    )
    return nb


def _rendered_widget(page, notebook: Path) -> dict:
    """Wait for the widget; check that every part rendered in one cell's output."""
    try:
        page.wait_for_selector(f"{S_MIN} .noUi-handle", timeout=WIDGET_RENDER_TIMEOUT_S * 1000)
        page.wait_for_selector(FIGURE_PNG, timeout=WIDGET_RENDER_TIMEOUT_S * 1000)
    except Exception as exc:  # playwright's TimeoutError, re-raised with what the cells show
        raise LabPageError(
            f"the widget of {notebook.name} did not render: no {S_MIN} slider with an inline "
            f"PNG in {FIGURE} ({type(exc).__name__}); {_widget_diagnosis(page)}"
        ) from exc
    state = _widget_state(page)
    names = ["s_min slider", "s_max slider", "figure Output", "box-count HTML"]
    missing = [n for n, ok in zip(names, state["present"], strict=True) if not ok]
    assert not missing, f"the widget lacks its {missing} (classes {S_MIN} {S_MAX} {FIGURE} {COUNT})"
    assert state["sameCell"], "the sliders, figure and count are not in one cell's output"
    assert state["label"] == "s_min", f"the {S_MIN} slider is labelled {state['label']!r}"
    assert state["count"], f"the {COUNT} line is empty"
    return state


def _step_s_min(page, before: dict) -> None:
    """Press an arrow key on the focused s_min handle (left if it sits at its maximum)."""
    handle = page.locator(f"{S_MIN} .noUi-handle")
    at_max = float(before["handle"]["aria-valuenow"]) >= float(before["handle"]["aria-valuemax"])
    handle.focus()
    page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
    deadline = time.monotonic() + SLIDER_MOVE_TIMEOUT_S
    while _widget_state(page)["readout"] == before["readout"]:
        assert time.monotonic() < deadline, (
            f"the s_min slider did not move on a key press (readout stays {before['readout']})"
        )
        time.sleep(UI_POLL_S)


def _wait_for_redraw(nb: NotebookPage, before: dict, errors_before: int) -> dict:
    """Wait until the kernel has drawn a new figure and count line, and is idle again."""
    deadline = time.monotonic() + REDRAW_TIMEOUT_S
    while True:
        after = _widget_state(nb.page)
        changed = after["png"] not in (None, before["png"]) and after["count"] != before["count"]
        if changed and nb.kernel_status("moving s_min") == "idle":
            return after
        if time.monotonic() > deadline:
            new_errors = nb.new_kernel_errors(errors_before)
            figure = "changed" if after["png"] != before["png"] else "did not change"
            raise LabPageError(
                f"s_min moved {before['readout']} -> {after['readout']}, but within "
                f"{REDRAW_TIMEOUT_S:.0f} s the figure {figure} and the count line went "
                f"{before['count']!r} -> {after['count']!r}.\n"
                f"the figure area shows: {after['figureText']!r}\n"
                + "\n".join(format_error(e) for e in new_errors)
            )
        time.sleep(UI_POLL_S)


def test_notebook_02_runs_and_slider_redraws(
    lab: LabServer, page, browser_log, notebook: Path, artifacts: Path
):
    """Open notebook 02, Run All without errors, move s_min: figure and box count follow."""
    before_sha = _sha256(notebook)
    nb = _open(lab, page, notebook)
    nb.run_all(RUN_ALL_TIMEOUT_S)

    before = _rendered_widget(page, notebook)
    widget = page.locator(f".jp-Cell:has({S_MIN}) .jp-Cell-outputArea")
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=artifacts / "02_default_boxes-before.png")

    errors_before = len(nb.new_kernel_errors(0))
    _step_s_min(page, before)
    _wait_for_redraw(nb, before, errors_before)
    new_errors = nb.new_kernel_errors(errors_before)
    assert not new_errors, "moving s_min raised in the kernel:\n" + "\n".join(
        format_error(e) for e in new_errors
    )
    widget.screenshot(path=artifacts / "02_default_boxes-after.png")
    page.screenshot(path=artifacts / "02_default_boxes.png")

    assert not browser_log.page_errors, f"uncaught errors in the page: {browser_log.page_errors}"
    assert not browser_log.blocked, f"the page tried to reach the network: {browser_log.blocked}"
    assert _sha256(notebook) == before_sha, f"the test changed {notebook} on disk"


def test_server_that_cannot_start_reports_its_log(tmp_path: Path):
    """A server that exits at once fails with its exit code and the end of its log."""
    bad_option = "--ServerApp.port=not-a-port"
    with pytest.raises(LabServerError) as failure:
        start_lab(tmp_path, tmp_path / "home", extra_args=(bad_option,))
    message = str(failure.value)
    assert "exited with code" in message
    assert "not-a-port" in message, f"the log tail is missing from:\n{message}"
