"""Helpers for testing code that uses `resilience`.

Example:
    >>> from resilience import CircuitBreaker
    >>> from resilience.testing import FakeClock
    >>> clock = FakeClock()
    >>> breaker = CircuitBreaker("doc-testing", consecutive_failures=1, clock=clock)
"""

from __future__ import annotations

from ._clock import FakeClock

__all__ = ["FakeClock"]
