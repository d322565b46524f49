"""Fixtures for the browser tests: a throw-away JupyterLab server and headless Chromium.

These tests run only when asked for with ``-m ui`` (``make test-ui``); in a plain ``pytest tests``
(``make test``) they are deselected, so the unit-test run needs neither a browser nor a server.
Screenshots, the server log and the browser console go to ``ui-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from labserver import LabServer, start_lab, stop_lab

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "ui-artifacts"
UI_DIR = Path(__file__).resolve().parent
# Debian's package; Playwright never downloads a browser here. Override for another install.
CHROMIUM = Path(os.environ.get("SSDLIB_UI_CHROMIUM", "/usr/bin/chromium"))
# The notebook under test; overridable so the test can be pointed at a scratch copy.
NOTEBOOK = Path(os.environ.get("SSDLIB_UI_NOTEBOOK", REPO / "notebooks" / "02_default_boxes.ipynb"))
VIEWPORT = {"width": 1280, "height": 1000}  # tall enough for a slider row and its figure
# Chromium must not reach the network: no background services, updates, sync or QUIC probes.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the sandbox needs user namespaces, which containers running as root lack
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the browser tests unless the ``-m`` expression names ``ui``."""
    if "ui" in re.findall(r"\w+", config.getoption("markexpr") or ""):
        return
    ui_items = [item for item in items if UI_DIR in Path(item.path).parents]
    if ui_items:
        config.hook.pytest_deselected(items=ui_items)
        items[:] = [item for item in items if item not in ui_items]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the item, so fixtures can save artifacts on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is None or report.failed


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``ui-artifacts/``, emptied first so that every file in it is from this run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir()
    return ARTIFACTS


@pytest.fixture(scope="session")
def notebook() -> Path:
    if not NOTEBOOK.exists():
        pytest.fail(f"the notebook under test is missing: {NOTEBOOK}")
    return NOTEBOOK


@pytest.fixture(scope="module")
def lab(notebook: Path, artifacts: Path, tmp_path_factory) -> Iterator[LabServer]:
    """JupyterLab serving the notebook's folder; stopped (kernels too) even when a test fails."""
    server = start_lab(notebook.parent, tmp_path_factory.mktemp("jupyter"))
    try:
        yield server
    finally:
        stop_lab(server)
        shutil.copyfile(server.log_path, artifacts / "jupyterlab-server.log")


@dataclass
class BrowserLog:
    """What the page did besides rendering: console lines, uncaught errors, blocked requests."""

    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # requests to anywhere but our server


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
def page(lab: LabServer, browser_log: BrowserLog, artifacts: Path, request, tmp_path):
    """A page in headless Chromium with a fresh profile; only our server can be reached."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` "
            "(or point SSDLIB_UI_CHROMIUM at a Chromium binary)"
        )
    from playwright.sync_api import sync_playwright

    def block(route) -> None:
        browser_log.blocked.append(route.request.url)
        route.abort()

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            context.route(lambda url: not url.startswith(lab.base_url), block)
            pg = context.pages[0] if context.pages else context.new_page()
            pg.on("console", lambda m: browser_log.console.append(f"[{m.type}] {m.text}"))
            pg.on("pageerror", lambda exc: browser_log.page_errors.append(str(exc)))
            yield pg
            if _failed(request):
                pg.screenshot(path=artifacts / f"{request.node.name}-failure.png", full_page=True)
        finally:
            (artifacts / f"{request.node.name}-console.log").write_text(
                "\n".join([*browser_log.console, "--- uncaught ---", *browser_log.page_errors])
            )
            context.close()
