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
    ("04", "0.01"): "the answer format an exercise asks for",
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_decimal_in_the_prose_is_in_the_lessons_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    printed = _code_and_outputs(cells)
    lesson = path.name[:2]
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
    assert not missing, "numbers in the prose that no output shows:\n" + "\n".join(missing)


def test_the_guard_finds_a_number_no_output_shows(tmp_path):
    cells = [
        {"cell_type": "markdown", "source": ["AP 0.123 here; > quoted 0.999 is skipped"]},
        {"cell_type": "code", "source": ["x = 1"], "outputs": [{"text": ["AP 0.124\n"]}]},
    ]
    printed = _code_and_outputs(cells)
    numbers = DECIMAL.findall(cells[0]["source"][0])
    assert numbers == ["0.123", "0.999"] and "0.123" not in printed
