"""The OpenTelemetry sink: providers, span events, counters and the breaker gauges.

Imported only once the application uses OpenTelemetry (`resilience._observe._otel_gate`
decides). Everything here is written against opentelemetry-api: with no SDK configured the
API is a no-op, and so is this module (no span event is added, no attribute dict is
built). One instrumentation scope, ``resilience``, serves every signal. Providers come
from the OpenTelemetry globals, looked up at use (an application configures them after
importing us), unless `set_tracer_provider` / `set_meter_provider` inject others.

- `record_event`: every library event becomes a span event on the current span (when it
  is recording) and updates a counter: transitions, retries, exhausted retries, fallbacks,
  and rejections by reason.
- The breaker gauges (state, window calls, failure rate) are observable: the SDK reads the
  live breakers through `resilience._observe._gauges` when it collects.
- The per-attempt HTTP CLIENT spans live in `resilience._observe._otel_http`.

Labels are capped per instrument (`resilience._observe._labels`); the docs page,
``docs/observability.md``, has the full tables.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import metrics, trace

from .._version import __version__
from ._events import (
    BulkheadRejected,
    CallRejected,
    CircuitStateChanged,
    DeadlineExceededEvent,
    Event,
    FallbackUsed,
    RetryBudgetExhausted,
    RetryExhausted,
    RetryScheduled,
)
from ._gauges import BreakerGauges, Points
from ._labels import (
    BREAKER_NAME,
    BREAKER_NEW_STATE,
    BREAKER_OLD_STATE,
    BULKHEAD_NAME,
    ERROR_TYPE,
    FALLBACK_NAME,
    REJECTION_REASON,
    RETRY_NAME,
    LabelCap,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import (
        CallbackOptions,
        Counter,
        Histogram,
        Meter,
        MeterProvider,
        Observation,
    )
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = [
    "HTTP_CLIENT_REQUEST_DURATION",
    "HTTP_DURATION_BUCKETS",
    "SCHEMA_URL",
    "SCOPE_NAME",
    "Instruments",
    "active",
    "get_meter_provider",
    "get_tracer_provider",
    "instruments",
    "record_event",
    "recording_nothing",
    "set_meter_provider",
    "set_tracer_provider",
    "tracer",
]

SCOPE_NAME: Final = "resilience"
"""The instrumentation scope of every span and metric."""

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.26.0"
"""The semantic-conventions version the HTTP attributes follow (HTTP is stable since 1.23)."""

HTTP_CLIENT_REQUEST_DURATION: Final = "http.client.request.duration"
HTTP_DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
"""The bucket boundaries the HTTP semantic conventions advise for request durations."""

_lock = threading.Lock()
_tracer_provider: TracerProvider | None = None
_meter_provider: MeterProvider | None = None
_tracer_cache: tuple[object, Tracer] | None = None


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Send this library's spans to *provider*; None goes back to the global provider."""
    global _tracer_provider, _tracer_cache, _none_injected
    with _lock:
        _tracer_provider = provider
        _tracer_cache = None
        _none_injected = _nothing_injected()


def set_meter_provider(provider: MeterProvider | None) -> None:
    """Send this library's metrics to *provider*; None goes back to the global provider."""
    global _meter_provider, _injected_instruments, _none_injected
    # Built now, not on first use, so the breaker gauges report from the first collection.
    built = Instruments(provider) if provider is not None else None
    with _lock:
        _meter_provider = provider
        _injected_instruments = built
        _none_injected = _nothing_injected()


def _nothing_injected() -> bool:
    """`_none_injected` as the setters leave it (called under `_lock`)."""
    return _FAST_PATHS and _tracer_provider is None and _injected_instruments is None


def get_tracer_provider() -> TracerProvider:
    """The provider spans go to: the injected one, else OpenTelemetry's global one."""
    provider = _tracer_provider
    return provider if provider is not None else trace.get_tracer_provider()


def get_meter_provider() -> MeterProvider:
    """The provider metrics go to: the injected one, else OpenTelemetry's global one."""
    provider = _meter_provider
    return provider if provider is not None else metrics.get_meter_provider()


def _noop_meter_types() -> tuple[type, ...]:
    types: list[type] = [metrics.NoOpMeterProvider]
    try:
        # Private, but the only way to tell "no SDK yet" without building instruments.
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:  # pragma: no cover - a future API moved it: then we just record
        pass
    else:
        types.append(_ProxyMeterProvider)
    return tuple(types)


_NOOP_TRACER_PROVIDERS: Final = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_NOOP_METER_PROVIDERS: Final = _noop_meter_types()

# The API's get_*_provider() looks the provider variable up in os.environ on every call
# until a provider is set (~0.6 us each): too much for every HTTP attempt. When the API
# module still keeps the global in the variables below, a None there (and no provider named
# by the environment) means "no SDK", at the cost of one attribute read.
_UNSET: Final = object()
_FAST_TRACE: Final = (
    getattr(trace, "_TRACER_PROVIDER", _UNSET) is not _UNSET
    and "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ
)


def _metrics_module() -> Any:
    try:
        from opentelemetry.metrics import _internal
    except ImportError:  # pragma: no cover - a future API moved it: use the slow path
        return None
    return _internal


_METRICS_INTERNAL: Final = _metrics_module()
_FAST_METRICS: Final = (
    getattr(_METRICS_INTERNAL, "_METER_PROVIDER", _UNSET) is not _UNSET
    and "OTEL_PYTHON_METER_PROVIDER" not in os.environ
)


_FAST_PATHS: Final = _FAST_TRACE and _FAST_METRICS
"""Whether a None in the API's provider variables means "no SDK" for both signals."""
_none_injected: bool = _FAST_PATHS
"""`_FAST_PATHS`, and no provider injected by `set_tracer_provider`/`set_meter_provider`:
kept up to date by both, so that `recording_nothing` (per HTTP attempt) reads one name for
the four it stands for."""


def tracer() -> Tracer | None:
    """Our tracer, or None while no SDK is configured (then spans would be no-ops)."""
    provider = _tracer_provider
    if provider is None:
        if _FAST_TRACE and trace._TRACER_PROVIDER is None:
            return None
        provider = trace.get_tracer_provider()
    if isinstance(provider, _NOOP_TRACER_PROVIDERS):
        return None
    cached = _tracer_cache
    if cached is not None and cached[0] is provider:
        return cached[1]
    return _new_tracer(provider)


def _new_tracer(provider: TracerProvider) -> Tracer:
    global _tracer_cache
    built = provider.get_tracer(SCOPE_NAME, __version__, schema_url=SCHEMA_URL)
    with _lock:
        _tracer_cache = (provider, built)
    return built


def _observer(points: Callable[[], Points]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """A gauge callback reporting *points* as observations."""

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [metrics.Observation(value, attrs) for value, attrs in points()]

    return observe


class Instruments:
    """The instruments of one meter provider, built once when it is first needed."""

    __slots__ = (
        "addresses",
        "fallback_names",
        "fallbacks",
        "gauges",
        "http_duration",
        "meter",
        "provider",
        "rejection_names",
        "rejections",
        "retries",
        "retry_exhausted",
        "retry_exhausted_names",
        "retry_names",
        "transition_names",
        "transitions",
    )

    def __init__(self, provider: MeterProvider) -> None:
        self.provider = provider
        # One cap per instrument: a name seen only in rejections does not crowd out retries.
        self.addresses = LabelCap()
        self.transition_names = LabelCap()
        self.rejection_names = LabelCap()
        self.retry_names = LabelCap()
        self.retry_exhausted_names = LabelCap()
        self.fallback_names = LabelCap()
        self.gauges = BreakerGauges()
        meter: Meter = provider.get_meter(SCOPE_NAME, __version__, schema_url=SCHEMA_URL)
        self.meter = meter
        self.http_duration: Histogram = meter.create_histogram(
            HTTP_CLIENT_REQUEST_DURATION,
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=HTTP_DURATION_BUCKETS,
        )
        self.transitions: Counter = meter.create_counter(
            "resilience.circuit_breaker.transitions",
            unit="{transition}",
            description="Circuit breaker state changes.",
        )
        self.rejections: Counter = meter.create_counter(
            "resilience.rejections",
            unit="{call}",
            description="Calls refused or cut short, by reason: breaker, bulkhead, budget, "
            "deadline.",
        )
        self.retries: Counter = meter.create_counter(
            "resilience.retries",
            unit="{retry}",
            description="Retries scheduled after a failed attempt.",
        )
        self.retry_exhausted: Counter = meter.create_counter(
            "resilience.retry.exhausted",
            unit="{call}",
            description="Calls that failed after their last attempt.",
        )
        self.fallbacks: Counter = meter.create_counter(
            "resilience.fallbacks",
            unit="{call}",
            description="Failures replaced by a fallback value.",
        )
        # The breaker gauges, read when the SDK collects.
        meter.create_observable_gauge(
            "resilience.circuit_breaker.state",
            callbacks=[_observer(self.gauges.states)],
            unit="1",
            description="1 for the state each circuit breaker is in, 0 for the others.",
        )
        meter.create_observable_gauge(
            "resilience.circuit_breaker.window.calls",
            callbacks=[_observer(self.gauges.window)],
            unit="{call}",
            description="Calls in each breaker's window, by outcome (success or failure).",
        )
        meter.create_observable_gauge(
            "resilience.circuit_breaker.failure_rate",
            callbacks=[_observer(self.gauges.failure_rates)],
            unit="1",
            description="Failure share of each breaker's window.",
        )


def instruments() -> Instruments | None:
    """The instruments, or None while no SDK is configured (then recording would be wasted)."""
    injected = _injected_instruments
    if injected is not None:
        return injected
    if _FAST_METRICS and _METRICS_INTERNAL._METER_PROVIDER is None:
        return None
    if isinstance(metrics.get_meter_provider(), _NOOP_METER_PROVIDERS):
        return None
    return _global_instruments


# Built once, when this module is first imported, on the global provider: while no SDK is
# set that is the API's proxy, whose instruments (and the gauges' callbacks) start recording
# when one is set later. The gate imports this module as soon as OpenTelemetry is in use and
# a breaker is built or an event emitted, so the gauges exist even where no event ever is.
_global_instruments: Final = Instruments(metrics.get_meter_provider())
_injected_instruments: Instruments | None = None


def _span_event_keys(event: Event) -> tuple[tuple[str, str], ...]:
    cls = type(event)
    keys = _SPAN_KEYS.get(cls)
    if keys is None:
        prefix = event.event.partition(".")[0]
        pairs = []
        for field in (f.name for f in dataclasses.fields(event)):
            if field in ("breaker", "name"):
                key = f"resilience.{prefix}.name"
            elif field == "error":
                key = ERROR_TYPE
            else:
                key = f"resilience.{prefix}.{field}"
            pairs.append((field, key))
        keys = tuple(pairs)
        _SPAN_KEYS[cls] = keys
    return keys


_SPAN_KEYS: dict[type, tuple[tuple[str, str], ...]] = {}


def _attribute(value: object) -> str | int | float | bool | None:
    if value is None or type(value) in (str, int, float, bool):
        return value  # type: ignore[return-value]  # narrowed by the exact type check
    if isinstance(value, bool | int | float):
        return value
    return str(value)


def active() -> bool:
    """Whether `record_event` would do anything now (a recording span, or a metrics SDK)."""
    # Asked on every call an open breaker rejects: `instruments()` is not called (a frame)
    # while the API's own global says no metrics SDK was ever set.
    no_metrics = (
        _injected_instruments is None
        and _FAST_METRICS
        and _METRICS_INTERNAL._METER_PROVIDER is None
    )
    if not no_metrics and instruments() is not None:
        return True
    if _tracer_provider is None and _FAST_TRACE and trace._TRACER_PROVIDER is None:
        # No SDK anywhere (the common case without OpenTelemetry): no span can record.
        return False
    return trace.get_current_span().is_recording()


def record_event(event: Event) -> None:
    """Add *event* to the current span (if recording) and count it in the metrics.

    The OTel sink calls it for every emitted event; components never call it directly.
    """
    span = trace.get_current_span()
    if span.is_recording():
        attributes = {}
        for field, key in _span_event_keys(event):
            value = _attribute(getattr(event, field))
            if value is not None:
                attributes[key] = value
        span.add_event(f"resilience.{event.event}", attributes)
    found = instruments()
    if found is not None:
        _count(found, event)


def _count(instruments: Instruments, event: Event) -> None:
    """Add one to the counter *event* belongs to."""
    match event:
        case CircuitStateChanged():
            name = instruments.transition_names(event.breaker)
            instruments.transitions.add(
                1,
                {
                    BREAKER_NAME: name,
                    BREAKER_OLD_STATE: event.old_state,
                    BREAKER_NEW_STATE: event.new_state,
                },
            )
        case CallRejected():
            name = instruments.rejection_names(event.breaker)
            instruments.rejections.add(1, {REJECTION_REASON: "breaker", BREAKER_NAME: name})
        case RetryScheduled():
            attrs = {ERROR_TYPE: event.error}
            instruments.retries.add(
                1, _named(RETRY_NAME, event.name, attrs, instruments.retry_names)
            )
        case RetryExhausted():
            attrs = {ERROR_TYPE: event.error}
            names = instruments.retry_exhausted_names
            instruments.retry_exhausted.add(1, _named(RETRY_NAME, event.name, attrs, names))
        case RetryBudgetExhausted():
            attrs = {REJECTION_REASON: "budget"}
            names = instruments.rejection_names
            instruments.rejections.add(1, _named(RETRY_NAME, event.name, attrs, names))
        case BulkheadRejected():
            attrs = {REJECTION_REASON: "bulkhead"}
            names = instruments.rejection_names
            instruments.rejections.add(1, _named(BULKHEAD_NAME, event.name, attrs, names))
        case DeadlineExceededEvent():
            instruments.rejections.add(1, {REJECTION_REASON: "deadline"})
        case FallbackUsed():
            attrs = {ERROR_TYPE: event.error}
            names = instruments.fallback_names
            instruments.fallbacks.add(1, _named(FALLBACK_NAME, event.name, attrs, names))


def _named(key: str, name: str | None, attrs: dict[str, str], cap: LabelCap) -> dict[str, str]:
    if name is not None:
        attrs[key] = cap(name)
    return attrs


def recording_nothing() -> bool:
    """True while no SDK is set for traces or metrics: then `tracer` and `instruments` would
    both answer None. One call, for paths that run per HTTP attempt; False when unsure.

    Example:
        >>> recording_nothing() == (tracer() is None and instruments() is None)
        True
    """
    return (
        _none_injected
        and trace._TRACER_PROVIDER is None
        and _METRICS_INTERNAL._METER_PROVIDER is None
    )
