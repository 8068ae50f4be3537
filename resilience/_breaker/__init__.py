"""The circuit breaker, one job per module.

- `_config`: `BreakerConfig`, the frozen, validated settings and their named defaults.
- `_windows`: `CountWindow` and `TimeWindow`, each with its own fast path for a success.
- `_machine`: `BreakerMachine`, the lock, generations, probes, transitions and verdicts
  (also the breaker's port for a shared store).
- `_drivers`: the decorator factory, generator iterations, one call one outcome.
- `_breaker`: `CircuitBreaker`, the public face.
- `_registry`: the process-wide listing of live breakers.
"""
