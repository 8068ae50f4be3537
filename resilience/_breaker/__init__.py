"""The circuit breaker: settings, windows, the state machine, the façade and the registry.

Importing the package feeds the breaker gauges (`resilience._observe._gauges`) from the
registry: observability reads the breakers through that seam and never imports them.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._observe import _gauges
from ._breaker import CircuitState
from ._registry import all_breakers


def _readings() -> Iterator[_gauges.BreakerReading]:
    for breaker in all_breakers():
        try:
            snapshot = breaker.metrics()
        except Exception:  # one broken breaker must not hide the others
            continue
        yield _gauges.BreakerReading(
            snapshot.name,
            snapshot.state.value,
            snapshot.calls,
            snapshot.failures,
            snapshot.failure_rate,
        )


_gauges.feed(_readings, states=[state.value for state in CircuitState])
