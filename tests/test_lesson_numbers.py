"""A guard against drift: a measured number the lessons' prose states must be in the stored
outputs (or the code) of the same lesson, so that a re-run which changes it cannot leave the
prose behind unnoticed (issue: "Lessons that are right")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("0*.ipynb"))
# A decimal with two or more places, as measured numbers are printed (0.748, 53,981.7 is not
# matched: the thousands are prose, the checks aim at scores and ratios).
DECIMAL = re.compile(r"(?<![\w.])(\d+\.\d{2,})(?![\w.]*\d)")
SETTINGS = {  # numbers in prose that are settings or formats, not measurements
    ("08", "0.45"): "the NMS threshold, a setting",
}


def _code_and_outputs(cells: list[dict]) -> str:
    parts = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        parts.append("".join(cell["source"]))
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            for kind, value in out.get("data", {}).items():
                if kind.startswith("text/"):
                    parts.append("".join(value))
    return "\n".join(parts)


def missing_numbers(cells: list[dict], lesson: str) -> list[str]:
    """The decimals of two or more places in the markdown of ``cells`` (outside lines quoting the
    paper, which start with '>', and the lesson's SETTINGS) that no code or output shows."""
    printed = _code_and_outputs(cells)
    missing = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        for line in "".join(cell["source"]).splitlines():
            if line.lstrip().startswith(">"):  # a quotation of the paper
                continue
            for number in DECIMAL.findall(line):
                if number not in printed and (lesson, number) not in SETTINGS:
                    missing.append(f"cell {i}: {number} in {line.strip()[:80]!r}")
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_decimal_in_the_prose_is_in_the_lessons_outputs(path):
    missing = missing_numbers(json.loads(path.read_text())["cells"], path.name[:2])
    assert not missing, "numbers in the prose that no output shows:\n" + "\n".join(missing)


def test_the_guard_finds_a_number_no_output_shows(monkeypatch):
    monkeypatch.setattr(f"{__name__}.SETTINGS", {("99", "0.45"): "a setting"})
    prose = (
        "AP 0.123 here, 0.124 printed, NMS at 0.45, 53,981.7 images\n> quoted 0.999 is skipped\n"
    )
    cells = [
        {"cell_type": "markdown", "source": [prose]},
        {"cell_type": "code", "source": ["x = 1"], "outputs": [{"text": ["AP 0.124\n"]}]},
    ]
    assert missing_numbers(cells, "99") == ["cell 0: 0.123 in " + repr(prose.splitlines()[0])]
    # the exemption is per lesson: elsewhere 0.45 is a measurement like any other
    assert [m.split(" in ")[0] for m in missing_numbers(cells, "98")] == [
        "cell 0: 0.123",
        "cell 0: 0.45",
    ]
