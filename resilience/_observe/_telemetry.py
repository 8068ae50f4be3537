"""OpenTelemetry traces and metrics, through opentelemetry-api only.

Everything here is written against the API: with no SDK configured the API is a no-op, and
so is this module (no span is started, no attribute dict is built). One instrumentation
scope, ``resilience``, serves every signal. Providers come from the OpenTelemetry globals,
looked up at use (an application configures them after importing us), unless
`set_tracer_provider` / `set_meter_provider` inject others.

What is emitted (the docs page, ``docs/observability.md``, has the full tables):

- `http_attempt`: one CLIENT span per HTTP attempt following the stable HTTP semantic
  conventions, and the ``http.client.request.duration`` histogram. Skipped when the
  opentelemetry-instrumentation-httpx package already instruments httpx, which would
  otherwise make every span and measurement twice.
- `record_event`: every library event becomes a span event on the current span (when it
  is recording) and updates the counters below.
- Metrics: breaker state and window (observable gauges, read from the breaker registry
  when the SDK collects), transitions, retries, exhausted retries, fallbacks, and
  rejections by reason. Labels are names given in code (breaker, bulkhead, retry names),
  states, reasons and exception type names; never URLs. Names can still grow with the
  hosts a transport calls (its per-host breakers are named ``<name>:<authority>``), so each
  instrument reports at most `MAX_LABEL_VALUES` distinct names (and the duration histogram
  as many server addresses); the rest are counted together under `OVERFLOW_LABEL`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from .._version import __version__
from ._redact import redact_name, redact_url

if TYPE_CHECKING:
    from types import TracebackType

    from opentelemetry.metrics import (
        CallbackOptions,
        Counter,
        Histogram,
        Meter,
        MeterProvider,
        Observation,
    )
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .._http._compat import Headers, Request
    from ._events import Event

__all__ = [
    "ERROR_TYPE",
    "HTTP_CLIENT_REQUEST_DURATION",
    "HTTP_DURATION_BUCKETS",
    "HTTP_REQUEST_METHOD",
    "HTTP_REQUEST_METHOD_ORIGINAL",
    "HTTP_REQUEST_RESEND_COUNT",
    "HTTP_RESPONSE_STATUS_CODE",
    "MAX_LABEL_VALUES",
    "OVERFLOW_LABEL",
    "SCHEMA_URL",
    "SCOPE_NAME",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "URL_FULL",
    "HttpAttempt",
    "error_type",
    "get_meter_provider",
    "get_tracer_provider",
    "http_attempt",
    "inject_context",
    "record_event",
    "set_meter_provider",
    "set_tracer_provider",
]

SCOPE_NAME: Final = "resilience"
"""The instrumentation scope of every span and metric."""

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.26.0"
"""The semantic-conventions version the HTTP attributes follow (HTTP is stable since 1.23)."""

# Attribute and metric names of the semantic conventions, written out: a library must not
# depend on opentelemetry-semantic-conventions, which pins one exact opentelemetry-api.
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL: Final = "http.request.method_original"
HTTP_REQUEST_RESEND_COUNT: Final = "http.request.resend_count"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
URL_FULL: Final = "url.full"
ERROR_TYPE: Final = "error.type"
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

# Our own attributes (no semantic convention exists for resilience yet: semconv issue #2355).
BREAKER_NAME: Final = "resilience.circuit_breaker.name"
BREAKER_STATE: Final = "resilience.circuit_breaker.state"
BREAKER_OLD_STATE: Final = "resilience.circuit_breaker.old_state"
BREAKER_NEW_STATE: Final = "resilience.circuit_breaker.new_state"
BREAKER_OUTCOME: Final = "resilience.circuit_breaker.outcome"
RETRY_NAME: Final = "resilience.retry.name"
BULKHEAD_NAME: Final = "resilience.bulkhead.name"
FALLBACK_NAME: Final = "resilience.fallback.name"
REJECTION_REASON: Final = "resilience.rejection.reason"

MAX_LABEL_VALUES: Final = 250
"""Distinct names (breaker, retry, bulkhead, fallback) or server addresses one instrument
reports. A process that calls many hosts gets one per-host breaker each; past this many,
new names share the one series `OVERFLOW_LABEL`, so memory in the SDK and series in the
backend stay bounded, and the first names keep their own series. 250: a name has up to
five series (the state gauge: one per state), and the OpenTelemetry SDK merges everything
past 2,000 series of an instrument into one, losing every name's own figures."""

OVERFLOW_LABEL: Final = "_other"
"""The name (or ``server.address``) of the series counting every name past the cap."""

_KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_BREAKER_STATES: Final = ("closed", "open", "half_open", "forced_open", "disabled")

# ---------------------------------------------------------------------------- providers

_lock = threading.Lock()
_tracer_provider: TracerProvider | None = None
_meter_provider: MeterProvider | None = None
_tracer_cache: tuple[object, Tracer] | None = None


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Send this library's spans to *provider*; None goes back to the global provider.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> set_tracer_provider(TracerProvider())
        >>> set_tracer_provider(None)
    """
    global _tracer_provider, _tracer_cache
    with _lock:
        _tracer_provider = provider
        _tracer_cache = None


def set_meter_provider(provider: MeterProvider | None) -> None:
    """Send this library's metrics to *provider*; None goes back to the global provider.

    Example:
        >>> from opentelemetry.sdk.metrics import MeterProvider
        >>> set_meter_provider(MeterProvider())
        >>> set_meter_provider(None)
    """
    global _meter_provider, _injected_instruments
    # Built now, not on first use, so the breaker gauges report from the first collection.
    built = _Instruments(provider) if provider is not None else None
    with _lock:
        _meter_provider = provider
        _injected_instruments = built


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


def _contrib_httpx_active() -> bool:
    """True when opentelemetry-instrumentation-httpx has patched httpx's transports."""
    from .._http._compat import HTTPTransport

    return hasattr(HTTPTransport.handle_request, "__wrapped__")


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


def _tracer() -> Tracer | None:
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
    tracer = provider.get_tracer(SCOPE_NAME, __version__, schema_url=SCHEMA_URL)
    with _lock:
        _tracer_cache = (provider, tracer)
    return tracer


class _LabelCap:
    """Lets through at most *limit* distinct values of a label; later ones become
    `OVERFLOW_LABEL`. A value seen before costs one set lookup, without the lock."""

    __slots__ = ("_lock", "_seen", "limit")

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if value not in self._seen:
                if len(self._seen) >= self.limit:
                    return OVERFLOW_LABEL
                self._seen.add(value)
        return value


class _GaugeCap:
    """`_LabelCap` for the breaker gauges, which report live breakers only: a name keeps
    its series while its breaker lives, and a slot freed by a breaker gone is reused."""

    __slots__ = ("_lock", "_seen", "limit")

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, names: list[str]) -> set[str]:
        """The names of *names* (the live breakers) that get their own series."""
        with self._lock:
            kept = self._seen.intersection(names)
            for name in names:
                if len(kept) >= self.limit:
                    break
                kept.add(name)
            self._seen = kept
            return kept


class _Instruments:
    """The instruments of one meter provider, built once when it is first needed."""

    __slots__ = (
        "addresses",
        "fallback_names",
        "fallbacks",
        "gauge_names",
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
        self.addresses = _LabelCap()
        self.transition_names = _LabelCap()
        self.rejection_names = _LabelCap()
        self.retry_names = _LabelCap()
        self.retry_exhausted_names = _LabelCap()
        self.fallback_names = _LabelCap()
        self.gauge_names = _GaugeCap()
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
        meter.create_observable_gauge(
            "resilience.circuit_breaker.state",
            callbacks=[self._observe_states],
            unit="1",
            description="1 for the state each circuit breaker is in, 0 for the others.",
        )
        meter.create_observable_gauge(
            "resilience.circuit_breaker.window.calls",
            callbacks=[self._observe_window],
            unit="{call}",
            description="Calls in each breaker's window, by outcome (success or failure).",
        )
        meter.create_observable_gauge(
            "resilience.circuit_breaker.failure_rate",
            callbacks=[self._observe_failure_rate],
            unit="1",
            description="Failure share of each breaker's window.",
        )

    # -- the breaker gauges, read when the SDK collects ------------------------------------

    def _snapshots(self) -> tuple[list[tuple[str, Any]], list[Any]]:
        """(name, snapshot) of the breakers with their own series, and the overflow's."""
        snapshots = [(redact_name(str(s.name)), s) for s in _breaker_snapshots()]
        admitted = self.gauge_names.admit([name for name, _ in snapshots])
        own = [(name, snapshot) for name, snapshot in snapshots if name in admitted]
        other = [snapshot for name, snapshot in snapshots if name not in admitted]
        return own, other

    def _observe_states(self, options: CallbackOptions) -> Iterable[Observation]:
        observation = metrics.Observation
        own, other = self._snapshots()
        result = [
            observation(
                1 if state == str(snapshot.state.value) else 0,
                {BREAKER_NAME: name, BREAKER_STATE: state},
            )
            for name, snapshot in own
            for state in _BREAKER_STATES
        ]
        if other:
            # The overflow series counts the breakers in each state.
            states = [str(snapshot.state.value) for snapshot in other]
            result.extend(
                observation(
                    states.count(state), {BREAKER_NAME: OVERFLOW_LABEL, BREAKER_STATE: state}
                )
                for state in _BREAKER_STATES
            )
        return result

    def _observe_window(self, options: CallbackOptions) -> Iterable[Observation]:
        observation = metrics.Observation
        own, other = self._snapshots()
        rows = [(name, int(s.calls), int(s.failures)) for name, s in own]
        if other:
            rows.append(
                (
                    OVERFLOW_LABEL,
                    sum(int(s.calls) for s in other),
                    sum(int(s.failures) for s in other),
                )
            )
        result = []
        for name, calls, failures in rows:
            result.append(
                observation(calls - failures, {BREAKER_NAME: name, BREAKER_OUTCOME: "success"})
            )
            result.append(observation(failures, {BREAKER_NAME: name, BREAKER_OUTCOME: "failure"}))
        return result

    def _observe_failure_rate(self, options: CallbackOptions) -> Iterable[Observation]:
        own, other = self._snapshots()
        result = [
            metrics.Observation(float(snapshot.failure_rate), {BREAKER_NAME: name})
            for name, snapshot in own
        ]
        if other:
            # The overflow series: the failure share of all their windows together.
            calls = sum(int(s.calls) for s in other)
            failures = sum(int(s.failures) for s in other)
            rate = failures / calls if calls else 0.0
            result.append(metrics.Observation(rate, {BREAKER_NAME: OVERFLOW_LABEL}))
        return result


def _instruments() -> _Instruments | None:
    """The instruments, or None while no SDK is configured (then recording would be wasted)."""
    injected = _injected_instruments
    if injected is not None:
        return injected
    if _FAST_METRICS and _METRICS_INTERNAL._METER_PROVIDER is None:
        return None
    if isinstance(metrics.get_meter_provider(), _NOOP_METER_PROVIDERS):
        return None
    return _global_instruments


def _breaker_snapshots() -> Iterator[Any]:
    from .._breaker._registry import all_breakers

    for breaker in all_breakers():
        try:
            yield breaker.metrics()
        except Exception:  # one broken breaker must not hide the others
            continue


# Built once, at import, on the global provider: while no SDK is set that is the API's proxy,
# whose instruments (and the state gauge's callbacks) start recording when one is set later.
# Building them on first use instead would leave the gauges unregistered in a process whose
# breakers never emit an event.
_global_instruments: Final = _Instruments(metrics.get_meter_provider())
_injected_instruments: _Instruments | None = None


# ---------------------------------------------------------------------------- HTTP attempts


def error_type(exc: BaseException) -> str:
    """The ``error.type`` of *exc*: its fully qualified class name (``httpx.ConnectError``).

    Example:
        >>> error_type(TimeoutError())
        'TimeoutError'
        >>> from resilience import DeadlineExceeded
        >>> error_type(DeadlineExceeded())
        'resilience.DeadlineExceeded'
    """
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    # Name it where users import it from: resilience._errors.X is resilience.X.
    public = [part for part in module.split(".") if not part.startswith("_")]
    return ".".join((*public, cls.__qualname__))


class HttpAttempt:
    """One HTTP attempt in flight: tell it the response status or the error.

    `http_attempt` returns one; used as a context manager, it ends the attempt's CLIENT span
    and records its duration on exit. This base class records nothing: it is what you get
    while no OpenTelemetry SDK is configured.
    """

    __slots__ = ()

    def response(self, status_code: int) -> None:
        """The response headers arrived with *status_code* (4xx and 5xx mark an error)."""

    def error(self, exc: BaseException) -> None:
        """The attempt failed with *exc*; a cancellation is not an error and is not recorded."""

    def __enter__(self) -> HttpAttempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class _RecordingAttempt(HttpAttempt):
    __slots__ = (
        "_attrs",
        "_error_type",
        "_instruments",
        "_method",
        "_resend_count",
        "_span",
        "_start",
        "_start_ns",
        "_status",
        "_token",
        "_tracer",
        "_url",
    )

    def __init__(
        self,
        request: Request,
        resend_count: int,
        tracer: Tracer | None,
        instruments: _Instruments | None,
    ) -> None:
        url = request.url
        self._url = url
        self._method = request.method
        method = self._method if self._method in _KNOWN_METHODS else "_OTHER"
        port = url.port or _DEFAULT_PORTS.get(url.scheme)
        attrs: dict[str, Any] = {HTTP_REQUEST_METHOD: method, SERVER_ADDRESS: url.host}
        if port is not None:
            attrs[SERVER_PORT] = port
        self._attrs = attrs
        self._resend_count = resend_count
        self._tracer = tracer
        self._instruments = instruments
        self._status: int | None = None
        self._error_type: str | None = None
        self._token: object | None = None
        self._span: Span | None = None
        self._start_ns = 0
        self._start = 0.0

    def response(self, status_code: int) -> None:
        self._status = status_code

    def error(self, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            self._error_type = error_type(exc)

    def __enter__(self) -> HttpAttempt:
        self._start_ns = time.time_ns()
        tracer = self._tracer
        if tracer is not None:
            known = self._method in _KNOWN_METHODS
            span_attrs = dict(self._attrs)
            span_attrs[URL_FULL] = redact_url(self._url)
            if not known:
                span_attrs[HTTP_REQUEST_METHOD_ORIGINAL] = self._method
            if self._resend_count:
                span_attrs[HTTP_REQUEST_RESEND_COUNT] = self._resend_count
            span = tracer.start_span(
                self._method if known else "HTTP",
                kind=SpanKind.CLIENT,
                attributes=span_attrs,
                start_time=self._start_ns,
            )
            self._span = span
            # Current inside the block, so the traceparent injected there names this attempt.
            self._token = otel_context.attach(trace.set_span_in_context(span))
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        duration = time.perf_counter() - self._start
        if exc is not None and self._error_type is None:
            self.error(exc)
        status = self._status
        failure = self._error_type
        if failure is None and status is not None and status >= 400:
            failure = str(status)
        attrs = self._attrs
        if status is not None:
            attrs[HTTP_RESPONSE_STATUS_CODE] = status
        if failure is not None:
            attrs[ERROR_TYPE] = failure
        span = self._span
        if span is not None:
            if span.is_recording():
                if status is not None:
                    span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
                if failure is not None:
                    span.set_attribute(ERROR_TYPE, failure)
                    span.set_status(StatusCode.ERROR)
            # The same length as the metric, as the conventions ask.
            span.end(end_time=self._start_ns + int(duration * 1e9))
            if self._token is not None:
                otel_context.detach(self._token)  # type: ignore[arg-type]  # attach's token
        instruments = self._instruments
        if instruments is not None:
            address = attrs[SERVER_ADDRESS]
            if instruments.addresses(address) is not address:
                # Past the cap: one series for every other host (the span keeps the host).
                attrs = {k: v for k, v in attrs.items() if k != SERVER_PORT}
                attrs[SERVER_ADDRESS] = OVERFLOW_LABEL
            instruments.http_duration.record(duration, attrs)


_NO_ATTEMPT: Final = HttpAttempt()


def http_attempt(request: Request, resend_count: int = 0) -> HttpAttempt:
    """Trace and time one HTTP attempt: a CLIENT span, current inside the block.

    *resend_count* is 0 for the first attempt and n for the n-th resend (it becomes
    ``http.request.resend_count``). Call ``.response(status)`` when headers arrive, or
    ``.error(exc)``; an exception leaving the block is recorded by itself. The span ends
    when the block exits: put the block around sending and reading the headers (and the
    body, if the transport reads it). With no SDK configured this returns a shared object
    that does nothing, so it costs one function call.

    Example:
        >>> import httpx
        >>> request = httpx.Request("GET", "https://api.test/items")
        >>> with http_attempt(request, resend_count=0) as attempt:
        ...     attempt.response(200)
    """
    tracer = _tracer()
    instruments = _instruments()
    if tracer is None and instruments is None:
        return _NO_ATTEMPT
    if _contrib_httpx_active():
        # opentelemetry-instrumentation-httpx makes the span and the metric itself.
        return _NO_ATTEMPT
    return _RecordingAttempt(request, resend_count, tracer, instruments)


def inject_context(headers: Headers | MutableMapping[str, str]) -> None:
    """Write the current W3C trace context (``traceparent``, ``tracestate``) into *headers*.

    Call it inside `http_attempt` so the context names the attempt's span. With no SDK, the
    incoming context (if any) passes through unchanged, and nothing is written without one.

    Example:
        >>> headers = {}
        >>> inject_context(headers)
        >>> headers
        {}
    """
    propagate.inject(headers)


# ---------------------------------------------------------------------------- events


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
    if _instruments() is not None:
        return True
    if _tracer_provider is None and _FAST_TRACE and trace._TRACER_PROVIDER is None:
        # No SDK anywhere (the common case without OpenTelemetry): no span can record.
        return False
    return trace.get_current_span().is_recording()


def record_event(event: Event) -> None:
    """Add *event* to the current span (if recording) and count it in the metrics.

    Called by `resilience._observe._events.emit`; components never call it directly.
    """
    span = trace.get_current_span()
    if span.is_recording():
        attributes = {}
        for field, key in _span_event_keys(event):
            value = _attribute(getattr(event, field))
            if value is not None:
                attributes[key] = value
        span.add_event(f"resilience.{event.event}", attributes)
    instruments = _instruments()
    if instruments is not None:
        _count(instruments, event)


def _count(instruments: _Instruments, event: Event) -> None:
    kind = event.event
    data: Any = event
    if kind == "circuit_breaker.state_changed":
        instruments.transitions.add(
            1,
            {
                BREAKER_NAME: instruments.transition_names(data.breaker),
                BREAKER_OLD_STATE: str(data.old_state),
                BREAKER_NEW_STATE: str(data.new_state),
            },
        )
    elif kind == "circuit_breaker.call_rejected":
        names = instruments.rejection_names
        instruments.rejections.add(
            1, {REJECTION_REASON: "breaker", BREAKER_NAME: names(data.breaker)}
        )
    elif kind == "retry.scheduled":
        attrs = {ERROR_TYPE: data.error}
        instruments.retries.add(1, _named(RETRY_NAME, data.name, attrs, instruments.retry_names))
    elif kind == "retry.exhausted":
        attrs = {ERROR_TYPE: data.error}
        names = instruments.retry_exhausted_names
        instruments.retry_exhausted.add(1, _named(RETRY_NAME, data.name, attrs, names))
    elif kind == "retry.budget_exhausted":
        attrs = {REJECTION_REASON: "budget"}
        names = instruments.rejection_names
        instruments.rejections.add(1, _named(RETRY_NAME, data.name, attrs, names))
    elif kind == "bulkhead.rejected":
        attrs = {REJECTION_REASON: "bulkhead"}
        names = instruments.rejection_names
        instruments.rejections.add(1, _named(BULKHEAD_NAME, data.name, attrs, names))
    elif kind == "deadline.exceeded":
        instruments.rejections.add(1, {REJECTION_REASON: "deadline"})
    elif kind == "fallback.used":
        attrs = {ERROR_TYPE: data.error}
        names = instruments.fallback_names
        instruments.fallbacks.add(1, _named(FALLBACK_NAME, data.name, attrs, names))


def _named(key: str, name: str | None, attrs: dict[str, str], cap: _LabelCap) -> dict[str, str]:
    if name is not None:
        attrs[key] = cap(name)
    return attrs
