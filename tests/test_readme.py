"""The README's code runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readmes_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    for code in blocks:
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)  # our own README: trusted code
        assert scope["loc"].shape == (2, 8732, 4) and scope["conf"].shape == (2, 8732, 21)
        assert int((scope["labels"] > 0).sum()) >= 1  # the person got its positives
        assert len(scope["detections"]) == 2


def test_every_module_in_the_readmes_table_is_what_import_gives():
    """No package-level name hides a module: ``import ssdlib.nms as m; m.postprocess`` works."""
    import importlib
    import types

    import ssdlib

    table = re.search(
        r"\| module \| what it holds \|\n\|---\|---\|\n(.*?)\n\n", README.read_text(), re.S
    )
    assert table, "README.md has no module table"
    names = re.findall(
        r"`(\w+)`", "".join(row.split("|")[1] for row in table.group(1).splitlines())
    )
    assert len(names) >= 15, names
    for name in names:
        module = importlib.import_module(f"ssdlib.{name}")
        assert isinstance(module, types.ModuleType), name
        assert getattr(ssdlib, name, module) is module, f"ssdlib.{name} is not the module"
    import ssdlib.nms as nms_module

    assert callable(nms_module.postprocess) and callable(nms_module.nms)


def test_importing_the_library_and_its_command_line_loads_no_pyplot():
    """Training and evaluating from the command line need no plotting: pyplot (and its backend
    choice) stays out until a figure is asked for."""
    import subprocess
    import sys

    code = (
        "import sys, ssdlib, ssdlib.cli, ssdlib.experiments, ssdlib.report; "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
