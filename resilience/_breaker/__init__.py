"""The circuit breaker, one job per module.

- `_config`: `BreakerConfig`, the frozen, validated settings and their named defaults.
- `_windows`: `CountWindow` and `TimeWindow`, each with its own fast path for a success.
- `_state`: `CircuitState`, `BreakerMetrics` and the tally of a HALF_OPEN round.
- `_machine`: `BreakerMachine`, the lock, generations, probes, transitions and verdicts
  (also the breaker's port for a shared store).
- `_drivers`: the decorator factory, generator iterations, one call one outcome.
- `_breaker`: `CircuitBreaker`, the public face.
- `_registry`: the process-wide listing of live breakers.

Importing the package feeds the breaker gauges (`resilience._observe._gauges`) from the
registry: observability reads the breakers through that seam and never imports them.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._observe import _gauges
from ._registry import all_breakers
from ._state import CircuitState


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
