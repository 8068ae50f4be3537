"""Placeholder."""

from __future__ import annotations

from ._harness import Case

CASES: list[Case] = []
