"""What every lesson's exercise tests check: a solution accepts the right answer, rejects a wrong
one, and its hint does not give the value away."""

from __future__ import annotations

import re
from typing import Any

import torch

from ssdlib.exercises import EXERCISES, judge


def shows_value(expected: Any, hint: str) -> bool:
    """Whether the hint states the expected value as text: a name as a whole word; an integer
    as a whole number; a float at 2 or 3 decimals or 3 significant digits. A boolean mask is not
    a value."""
    if isinstance(expected, str):
        return re.search(rf"\b{re.escape(expected)}\b", hint) is not None
    if isinstance(expected, torch.Tensor) and expected.dtype == torch.bool:
        return False
    values = expected.tolist() if isinstance(expected, torch.Tensor) else expected
    values = values if isinstance(values, list | tuple) else [values]
    for v in values:
        if isinstance(v, str):
            if re.search(rf"\b{re.escape(v)}\b", hint):
                return True
            continue
        for x in torch.as_tensor(v, dtype=torch.float64).flatten().tolist():
            if float(x).is_integer():
                if re.search(rf"(?<![\d.]){int(x)}(?![\d]|\.\d)", hint):
                    return True
            elif any(f in hint for f in (f"{x:.2f}", f"{x:.3f}", f"{x:.3g}")):
                return True
    return False


def assert_exercise(name: str, right: Any, wrong: Any, *inputs: Any) -> Any:
    """Check exercise ``name`` on ``inputs``; returns the expected answer."""
    exercise = EXERCISES[name]
    expected = exercise.solve(*inputs)
    assert judge("answer", right, expected, exercise.rtol) == "correct"
    assert judge("answer", wrong, expected, exercise.rtol) != "correct"
    assert not shows_value(expected, exercise.hint), (name, exercise.hint)
    return expected
