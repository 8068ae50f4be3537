"""Helpers for testing code that uses `resilience`.

- `FakeClock`: a clock that moves only when the test says so; pass it as ``clock=``.
- `set_testing` / `is_testing`: test mode, where every retry wait is zero and attempts can
  be capped, process-wide (also honoured by the httpx transports).
- `capture_events`: every event the library emits inside a ``with`` block, in a list.
- `reset_breakers`: every live breaker back to CLOSED with an empty window.
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

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ._fakeclock import FakeClock
from ._observe._events import Event, add_listener, remove_listener
from ._testmode import is_testing, set_testing

__all__ = ["FakeClock", "capture_events", "is_testing", "reset_breakers", "set_testing"]


@contextmanager
def capture_events() -> Iterator[list[Event]]:
    """Collect every event the library emits inside the block, from any thread, in order.

    The list fills while the block runs and keeps its events after it; events are the
    frozen dataclasses of `resilience.events`. Like structlog's ``capture_logs``, it is a
    process-wide listener for the block's duration: events from other threads count too.

    Example:
        >>> from resilience import CircuitBreaker, events
        >>> from resilience.testing import capture_events
        >>> with capture_events() as captured:
        ...     CircuitBreaker("doc-capture").force_open()
        >>> [(type(e).__name__, e.new_state) for e in captured]
        [('CircuitStateChanged', 'forced_open')]
        >>> isinstance(captured[0], events.CircuitStateChanged)
        True
    """
    captured: list[Event] = []
    lock = threading.Lock()

    def listener(event: Event) -> None:
        with lock:  # list.append is atomic under the GIL, but not in free-threaded builds
            captured.append(event)

    add_listener(listener)
    try:
        yield captured
    finally:
        remove_listener(listener)


def reset_breakers() -> None:
    """Reset every live circuit breaker of the process: CLOSED, with an empty window.

    For tests that share breakers built at import time (a module-level breaker, a
    transport's per-host breakers): call it between tests so one test's failures cannot
    open a breaker for the next. Templates of transports are reset too. Like
    `CircuitBreaker.reset`, each reset is an event, and is shared through a store.

    Example:
        >>> from resilience import CircuitBreaker
        >>> from resilience.testing import reset_breakers
        >>> breaker = CircuitBreaker("doc-reset-all")
        >>> breaker.force_open()
        >>> reset_breakers()
        >>> breaker.state
        <CircuitState.CLOSED: 'closed'>
    """
    from ._breaker._registry import every_breaker  # the breaker only when it is used

    for breaker in every_breaker():
        breaker.reset()
