"""What the library decided, as small frozen events, and where its telemetry goes.

Every decision (a breaker changing state or rejecting a call, a retry scheduled or given
up, a retry budget or a bulkhead saying no, a deadline running out, a fallback stepping in,
an upstream's endpoint ejected or returned, its endpoint set changed or unreadable) is an
event: a frozen dataclass with the numbers behind it. Listen to all of them process-wide
with `add_listener`, or to one breaker's with ``breaker.add_listener``. A listener that
raises is logged on the stdlib logger ``resilience`` and never breaks the call. The same
events go to structlog (when the application configured it) and to OpenTelemetry;
`set_tracer_provider` and `set_meter_provider` point our spans and metrics at providers
other than the global ones (tests, or several SDKs in one process).

Example:
    >>> from resilience import CircuitBreaker, events
    >>> seen = []
    >>> events.add_listener(seen.append)
    >>> CircuitBreaker("doc-events").force_open()
    >>> events.remove_listener(seen.append)
    >>> [(e.event, e.new_state) for e in seen]
    [('circuit_breaker.state_changed', 'forced_open')]
"""

from __future__ import annotations

from ._observe._events import (
    BulkheadRejected,
    CallRejected,
    CircuitStateChanged,
    DeadlineExceededEvent,
    EndpointEjected,
    EndpointReturned,
    Event,
    FallbackUsed,
    Listener,
    RetryBudgetExhausted,
    RetryExhausted,
    RetryScheduled,
    UpstreamEndpointsChanged,
    UpstreamResolveFailed,
    add_listener,
    remove_listener,
)
from ._observe._otel_gate import set_meter_provider, set_tracer_provider

__all__ = [
    "BulkheadRejected",
    "CallRejected",
    "CircuitStateChanged",
    "DeadlineExceededEvent",
    "EndpointEjected",
    "EndpointReturned",
    "Event",
    "FallbackUsed",
    "Listener",
    "RetryBudgetExhausted",
    "RetryExhausted",
    "RetryScheduled",
    "UpstreamEndpointsChanged",
    "UpstreamResolveFailed",
    "add_listener",
    "remove_listener",
    "set_meter_provider",
    "set_tracer_provider",
]
