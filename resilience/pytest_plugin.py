"""pytest plugin (registered through the ``pytest11`` entry point): fixtures for users' tests.

Example (in a user's test file; the fixtures need no import)::

    def test_trips(fake_clock):
        breaker = CircuitBreaker("t", consecutive_failures=1, clock=fake_clock)
"""

from __future__ import annotations

import pytest

from ._clock import FakeClock


@pytest.fixture
def fake_clock() -> FakeClock:
    """A `FakeClock` for the test: time moves only through ``fake_clock.advance()``."""
    return FakeClock()
