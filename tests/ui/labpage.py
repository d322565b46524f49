"""One notebook open in JupyterLab in a real browser, driven the way a learner drives it.

Actions go through the UI: the Edit and Run menus, a keyboard press on a slider handle.
Checks read JupyterLab's own model through ``window.jupyterapp`` (the server is started with
``--LabApp.expose_app_in_browser``): execution counts, error outputs and the kernel status are
exact there, whereas in the DOM an error and a warning are both just red text.
Every failure raises :class:`LabPageError` with what the page showed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, NoReturn

OPEN_TIMEOUT_S = 90.0  # load JupyterLab (~100 scripts) and start the kernel on shared cores
POLL_S = 0.5  # how often to read the notebook's state while cells run
WIDGET_RENDER_TIMEOUT_S = 30.0  # the widget view appears once its model reaches the browser
SLIDER_MOVE_TIMEOUT_S = 5.0  # a key press moves the handle and its readout at once
WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"  # ipywidgets' JupyterLab front-end
WIDGETS_PLUGIN = f"{WIDGETS_EXTENSION}:plugin"  # its plugin: widget manager and view renderer
DEATH_STATUSES = ("dead", "autorestarting", "restarting")  # the test never restarts on purpose
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # IPython colours its tracebacks
TRACEBACK_TAIL_LINES = 12  # enough of a traceback to name the failing line
SERVER_LOG_LINES = 15  # the server's last words: kernel restarts, websocket errors

# Finds the notebook panel for a path; every script below starts with it.
_FIND_PANEL = """
const app = window.jupyterapp;
const panel = app && Array.from(app.shell.widgets('main')).find(
    w => w.context && w.context.path === path && w.sessionContext);
"""

# Records every kernel status and every error the kernel reports, from now on.
_INSTALL_RECORDER = (
    "(path) => {"
    + _FIND_PANEL
    + """
    const rec = {statuses: [], errors: []};
    panel.sessionContext.statusChanged.connect((_, status) => rec.statuses.push(status));
    panel.sessionContext.iopubMessage.connect((_, msg) => {
        const t = msg.header.msg_type, c = msg.content;
        if (t === 'error') rec.errors.push({ename: c.ename, evalue: c.evalue,
                                            traceback: c.traceback.join('\\n')});
    });
    window.__ssdRecorder = rec;
}"""
)

# The state of every code cell, the kernel and any open dialog.
_SNAPSHOT = (
    "(path) => {"
    + _FIND_PANEL
    + """
    if (!panel) return null;
    const cells = [], model = panel.content.model.cells;
    for (let i = 0; i < model.length; i++) {
        const c = model.get(i);
        if (c.type !== 'code') continue;
        const outputs = c.outputs.toJSON();
        cells.push({
            index: i,
            source: c.sharedModel.getSource(),
            count: c.executionCount,
            running: c.executionState === 'running',
            errors: outputs.filter(o => o.output_type === 'error').map(
                o => ({ename: o.ename, evalue: o.evalue, traceback: o.traceback.join('\\n')})),
        });
    }
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    return {
        kernelStatus: kernel ? kernel.status : 'no kernel',
        kernelName: kernel ? kernel.name : null,
        kernelDisplayName: panel.sessionContext.kernelDisplayName,
        dialogs: Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.innerText),
        recorder: window.__ssdRecorder || null,
        numCells: model.length,
        cells,
    };
}"""
)


class LabPageError(AssertionError):
    """The notebook did not behave in the browser; the message says what the page showed."""


def _first_line(source: str) -> str:
    lines = source.strip().splitlines()
    return lines[0] if lines else "(empty)"


def format_error(error: dict[str, str]) -> str:
    """``ename: evalue`` and the tail of the traceback, without IPython's colour codes."""
    tb = ANSI_ESCAPE.sub("", error.get("traceback", "")).splitlines()
    tail = "\n".join(tb[-TRACEBACK_TAIL_LINES:])
    return f"{error['ename']}: {error['evalue']}\n{tail}"


@dataclass
class NotebookPage:
    """The notebook ``path`` (relative to the server root) open in ``page``."""

    page: Any  # playwright.sync_api.Page
    path: str
    server_log_tail: Any  # (lines: int) -> str, the server log for failure messages

    # --- reading state ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        state = self.page.evaluate(_SNAPSHOT, self.path)
        if state is None:
            raise LabPageError(f"{self.path} is no longer open in JupyterLab")
        return state

    def _fail(self, what: str, state: dict[str, Any] | None = None) -> NoReturn:
        parts = [what]
        if state is not None:
            parts.append(
                f"kernel: {state['kernelDisplayName']} ({state['kernelName']}), "
                f"status {state['kernelStatus']}"
            )
            if state["recorder"] and state["recorder"]["statuses"]:
                parts.append(f"kernel statuses seen: {state['recorder']['statuses']}")
            if state["dialogs"]:
                parts.append("dialogs on screen:\n" + "\n---\n".join(state["dialogs"]))
        tail = self.server_log_tail(SERVER_LOG_LINES)
        parts.append(f"--- JupyterLab server log, last {SERVER_LOG_LINES} lines ---\n{tail}")
        raise LabPageError("\n".join(parts))

    def _check_alive(self, state: dict[str, Any], doing: str, suspect: str | None = None) -> None:
        """Fail if the kernel died (or was restarting); ``suspect`` names the cell it last ran."""
        statuses = state["recorder"]["statuses"] if state["recorder"] else []
        died = [s for s in statuses if s in DEATH_STATUSES]
        if died or state["kernelStatus"] in DEATH_STATUSES:
            where = f", most likely in {suspect}" if suspect else ""
            self._fail(f"the kernel died during {doing}{where}", state)

    @staticmethod
    def _cell_name(cell: dict[str, Any], state: dict[str, Any]) -> str:
        """'cell 4/7 ('first line')', numbered from 1 like JupyterLab's status bar."""
        return f"cell {cell['index'] + 1}/{state['numCells']} ({_first_line(cell['source'])!r})"

    # --- opening ------------------------------------------------------------------------------
    def open(self, url: str, kernel_name: str) -> dict[str, Any]:
        """Load JupyterLab at ``url`` and wait until the notebook's kernel ``kernel_name`` is idle.

        Returns the page's ``jupyter-config-data`` (its list of front-end extensions included).
        """
        self.page.goto(url)
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        # Plain property reads: awaiting `ready` would hang the test when a dialog blocks it.
        ready = (
            "(path) => {"
            + _FIND_PANEL
            + """
            const dialogs = Array.from(document.querySelectorAll('.jp-Dialog'));
            return {ready: !!panel && panel.context.isReady && panel.sessionContext.isReady,
                    dialogs: dialogs.map(d => d.innerText)};
        }"""
        )
        while not (status := self.page.evaluate(ready, self.path))["ready"]:
            if status["dialogs"] or time.monotonic() > deadline:
                self._fail(
                    f"JupyterLab did not open {self.path} within {OPEN_TIMEOUT_S:.0f} s "
                    f"(page title {self.page.title()!r}); dialogs on screen:\n"
                    + ("\n---\n".join(status["dialogs"]) or "(none)")
                )
            time.sleep(POLL_S)
        self.page.evaluate(_INSTALL_RECORDER, self.path)
        state = self.snapshot()
        while state["kernelStatus"] != "idle":
            self._check_alive(state, "kernel start-up")
            if state["dialogs"] or time.monotonic() > deadline:
                self._fail(f"the kernel of {self.path} did not become idle", state)
            time.sleep(POLL_S)
            state = self.snapshot()
        if state["kernelName"] != kernel_name:
            self._fail(
                f"{self.path} runs on kernel {state['kernelName']!r}, not {kernel_name!r}: "
                f"is the kernelspec registered in this environment (make venv)?",
                state,
            )
        return self.page.evaluate(
            "() => JSON.parse(document.getElementById('jupyter-config-data').textContent)"
        )

    def plugin_active(self, plugin_id: str) -> bool:
        """Whether the front-end plugin ``plugin_id`` is registered and has been activated."""
        return self.page.evaluate(
            "(id) => window.jupyterapp.hasPlugin(id) && window.jupyterapp.isPluginActivated(id)",
            plugin_id,
        )

    # --- running ------------------------------------------------------------------------------
    def click_menu(self, menu: str, item: str) -> None:
        self.page.get_by_role("menuitem", name=menu, exact=True).click()
        self.page.get_by_role("menuitem", name=item, exact=True).click()

    def run_all(self, timeout_s: float) -> dict[str, Any]:
        """Edit > Clear Outputs of All Cells, then Run > Run All Cells; wait until they are done.

        Raises:
            LabPageError: the kernel died, a cell raised, a cell did not run, or the run took
                longer than ``timeout_s`` (the message names the cell).
        """
        self.click_menu("Edit", "Clear Outputs of All Cells")
        self.click_menu("Run", "Run All Cells")
        deadline = time.monotonic() + timeout_s
        suspect = None  # the first cell seen running: the one the kernel is on
        while True:
            state = self.snapshot()
            self._check_alive(state, "Run All Cells", suspect)
            cells = [c for c in state["cells"] if c["source"].strip()]
            running = [c for c in cells if c["running"]]
            if running:
                suspect = self._cell_name(running[0], state)
            errors = [c for c in cells if c["errors"]]
            finished = all(c["count"] is not None for c in cells) or errors
            if state["kernelStatus"] == "idle" and not running and finished:
                break
            if time.monotonic() > deadline:
                where = f"; still running: {self._cell_name(running[0], state)}" if running else ""
                self._fail(f"Run All Cells did not finish within {timeout_s:.0f} s{where}", state)
            time.sleep(POLL_S)
        if errors:
            first = errors[0]
            self._fail(
                f"{self._cell_name(first, state)} raised {format_error(first['errors'][0])}", state
            )
        skipped = [self._cell_name(c, state) for c in cells if c["count"] is None]
        if skipped:
            self._fail(f"Run All Cells left cells {skipped} unexecuted", state)
        return state

    def new_kernel_errors(self, since: int) -> list[dict[str, str]]:
        """Kernel errors after the first ``since`` of them (e.g. raised in a widget callback)."""
        recorder = self.snapshot()["recorder"]
        return recorder["errors"][since:] if recorder else []

    def kernel_status(self, doing: str) -> str:
        """The kernel's status now; raises if it died at any point during ``doing``."""
        state = self.snapshot()
        self._check_alive(state, doing)
        return state["kernelStatus"]
