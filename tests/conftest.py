"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from resilience.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock: time moves only through clock.advance()."""
    return FakeClock()
