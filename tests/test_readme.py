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
