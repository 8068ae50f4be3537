"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilience._deadline import _CURRENT, current_deadline
from resilience.events import Event
from resilience.testing import FakeClock, capture_events


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock: time moves only through clock.advance()."""
    return FakeClock()


@pytest.fixture
def events() -> Iterator[list[Event]]:
    """Every event the library emits during the test, in order."""
    with capture_events() as captured:
        yield captured


@pytest.fixture(autouse=True)
def _no_leaked_deadline() -> Iterator[None]:
    """Every test starts and ends outside any deadline (a leak would poison later tests)."""
    token = _CURRENT.set(None)
    yield
    leaked = current_deadline()
    _CURRENT.reset(token)
    assert leaked is None, "the test left a deadline active in its context"
