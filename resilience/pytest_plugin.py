"""pytest plugin (registered through the ``pytest11`` entry point): fixtures for users' tests.

- ``fake_clock``: a `FakeClock`; pass it as ``clock=`` to any component.
- ``no_waits``: test mode for the test's duration: retries (and the httpx transports) never
  sleep; attempts are unchanged. Call ``resilience.testing.set_testing(True, attempts=N)``
  inside the test to cap them too.

Example (in a user's test file; the fixtures need no import)::

    def test_trips(fake_clock):
        breaker = CircuitBreaker("t", consecutive_failures=1, clock=fake_clock)

    def test_gives_up_fast(no_waits):
        with pytest.raises(ConnectionError):
            fetch()          # decorated with @retry(on=ConnectionError, attempts=5)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._fakeclock import FakeClock
from ._testmode import set_testing


@pytest.fixture
def fake_clock() -> FakeClock:
    """A `FakeClock` for the test: time moves only through ``fake_clock.advance()``."""
    return FakeClock()


@pytest.fixture
def no_waits() -> Iterator[None]:
    """Test mode for the test: every retry wait is zero; the previous mode comes back after."""
    with set_testing(True):
        yield
