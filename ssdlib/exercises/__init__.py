"""The lessons' exercises: each answer is checked here, out of the learner's sight.

A check cell in a lesson reads ``exercises.check("05.kept_at_09", answer_kept_at_09, boxes,
scores)``: it names the exercise and hands over the learner's answer and the inputs the
exercise is about. The expected value is computed by that exercise's solution, a function in
``lessonNN.py`` registered with :func:`solution`, so the notebook shows neither the answer nor
the expression that gives it. A wrong answer gets the exercise's hint, written to teach (what
to reconsider), never the value.

``check`` never raises: a lesson committed with its exercises unsolved runs top to bottom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

ANSWER_RTOL = 5e-3  # hand-computed numbers to three significant digits pass (14.8 for 14.85);
# counts (integers) must be exact


@dataclass(frozen=True)
class Exercise:
    """One exercise's solution, and what a wrong answer is told."""

    name: str  # "05.kept_at_09": lesson, then the answer variable without its "answer_" prefix
    solve: Callable[..., Any]  # the inputs the check cell passes -> the expected answer
    hint: str  # one or two sentences that point at the idea, never at the value
    rtol: float = ANSWER_RTOL


EXERCISES: dict[str, Exercise] = {}


def solution(
    name: str, hint: str, rtol: float = ANSWER_RTOL
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the solution of exercise ``name``."""

    def register(solve: Callable[..., Any]) -> Callable[..., Any]:
        if name in EXERCISES:
            raise ValueError(f"exercise {name!r} is registered twice")
        EXERCISES[name] = Exercise(name, solve, hint, rtol)
        return solve

    return register


def check(name: str, answer: Any, *inputs: Any) -> None:
    """Print ``correct``, or ``not yet: …`` with the exercise's hint.

    Args:
        name: the exercise, e.g. ``"05.kept_at_09"``.
        answer: the learner's value (``None`` while unsolved).
        inputs: what the solution needs (the lesson's boxes, scores, model ...).
    """
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; known: {', '.join(sorted(EXERCISES))}")
    exercise = EXERCISES[name]
    variable = "answer_" + name.split(".", 1)[1]
    message = judge(variable, answer, exercise.solve(*inputs), exercise.rtol)
    if message != "correct":
        message += f" Hint: {exercise.hint}"
    print(message)


def judge(name: str, answer: Any, expected: Any, rtol: float = ANSWER_RTOL) -> str:
    """``"correct"`` or a ``"not yet: …"`` that never shows ``expected``.

    Numbers (and tensors, arrays, lists of numbers) are compared with a relative tolerance
    ``rtol``, or exactly when ``expected`` is an integer; anything else with ``==``. A wrong
    number is told whether it is too high or too low.
    """
    if answer is None:
        return f"not yet: `{name}` is still None; fill it in and run this cell again."
    try:
        exact = not torch.as_tensor(expected).is_floating_point()  # a count: no tolerance
        want = torch.as_tensor(expected, dtype=torch.float64)
        got = torch.as_tensor(answer, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return "correct" if answer == expected else f"not yet: `{name}` = {answer!r} is not it."
    if got.shape != want.shape:
        return (
            f"not yet: `{name}` has shape {tuple(got.shape)}, expected {tuple(want.shape)}."
            if want.dim()
            else f"not yet: `{name}` should be a single number, got shape {tuple(got.shape)}."
        )
    close = got == want if exact else torch.isclose(got, want, rtol=rtol, atol=rtol * 1e-3)
    if bool(close.all()):
        return "correct"
    if want.dim() == 0:
        direction = "too high" if got > want else "too low"
        return f"not yet: `{name}` = {float(got):.10g} is {direction}."
    i = int((~close).flatten().nonzero()[0])
    return f"not yet: element {i} of `{name}` ({float(got.flatten()[i]):.10g}) is off."


# The solutions, one module per lesson; importing them registers them.
from . import (  # noqa: E402, F401  (imported for their registrations)
    lesson1,
    lesson2,
    lesson3,
    lesson4,
    lesson5,
    lesson6,
    lesson7,
    lesson8,
)

__all__ = ["EXERCISES", "Exercise", "check", "judge", "solution"]
