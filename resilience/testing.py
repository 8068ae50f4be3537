"""Helpers for testing code that uses `resilience`.

- `FakeClock`: a clock that moves only when the test says so; pass it as ``clock=``.
- `set_testing` / `is_testing`: test mode, where every retry wait is zero and attempts can
  be capped, process-wide (also honoured by the httpx transports).
- The pytest plugin (installed with the package) provides the fixtures ``fake_clock`` and
  ``no_waits``.

Example:
    >>> from resilience import CircuitBreaker
    >>> from resilience.testing import FakeClock, set_testing
    >>> clock = FakeClock()
    >>> breaker = CircuitBreaker("doc-testing", consecutive_failures=1, clock=clock)
    >>> with set_testing(True, attempts=2):
    ...     pass  # retries in here never sleep and make at most 2 attempts
"""

from __future__ import annotations

from ._fakeclock import FakeClock
from ._testmode import is_testing, set_testing

__all__ = ["FakeClock", "is_testing", "set_testing"]
