"""Lesson 5's exercises: their solutions and hints (see :mod:`ssdlib.exercises`)."""

from __future__ import annotations

from . import solution  # noqa: F401
