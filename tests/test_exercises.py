"""The exercises' judge: \"correct\" or a \"not yet\" that never shows the value."""

import json
import re
from pathlib import Path

import pytest

from ssdlib.exercises import EXERCISES, Exercise, check, judge

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("0[1-8]_*.ipynb"))


@pytest.mark.parametrize(
    ("answer", "expected", "message"),
    [
        (None, 8732, "not yet: `n` is still None; fill it in and run this cell again."),
        (8732, 8732, "correct"),
        (8731.999, 8732, "not yet: `n` = 8731.999 is too low."),  # counts are exact
        (14.8, 21 / 2**0.5, "correct"),  # three significant digits of 14.85
        (14.7, 21 / 2**0.5, "not yet: `n` = 14.7 is too low."),
        (8000, 8732, "not yet: `n` = 8000 is too low."),
        (9000, 8732, "not yet: `n` = 9000 is too high."),
        ([0.2, 0.34], [0.2, 0.34], "correct"),
        ([0.2, 0.35], [0.2, 0.34], "not yet: element 1 of `n` (0.35) is off."),
        ([0.2], [0.2, 0.34], "not yet: `n` has shape (1,), expected (2,)."),
        ([1, 2], 3, "not yet: `n` should be a single number, got shape (2,)."),
        ("conv4_3", "conv4_3", "correct"),
        ("fc7", "conv4_3", "not yet: `n` = 'fc7' is not it."),
    ],
)
def test_judge_messages(answer, expected, message):
    assert judge("n", answer, expected) == message


def test_check_adds_the_hint_only_when_wrong(capsys, monkeypatch):
    monkeypatch.setitem(EXERCISES, "00.n", Exercise("00.n", lambda x: x + 1, "count again."))
    assert check("00.n", 1, 1) is None  # a check cell shows only the print
    assert capsys.readouterr().out.strip().endswith("too low. Hint: count again.")
    check("00.n", 2, 1)
    assert capsys.readouterr().out == "correct\n"
    with pytest.raises(KeyError, match=r"no exercise '00\.none'"):
        check("00.none", 1)


def test_every_lesson_is_checked():
    assert [p.name[:2] for p in LESSONS] == [f"0{n}" for n in range(1, 9)]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name[:2])
def test_the_lesson_checks_exactly_these_exercises(lesson):
    number = lesson.name[:2]
    cells = json.loads(lesson.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    checked = set(re.findall(rf'exercises\.check\(\s*"({number}\.\w+)"', code))
    assert checked, f"lesson {number} checks no exercise"
    assert checked == {n for n in EXERCISES if n.startswith(f"{number}.")}
    assert "check_answer" not in code
