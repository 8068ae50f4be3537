"""The doorway to OpenTelemetry: cheap to import, it loads our OpenTelemetry modules
(`resilience._observe._otel`, `resilience._observe._otel_http`) only once the application
uses OpenTelemetry.

OpenTelemetry is *in use* once something imported it (an application that set an SDK up
has, and so has any code that made a span), or when the environment names a provider for
the API to load (``OTEL_PYTHON_TRACER_PROVIDER``, ``OTEL_PYTHON_METER_PROVIDER``). Until
then no span can be current, no SDK can be set and no context can be propagated, so every
question here is answered by one dictionary lookup, and neither opentelemetry-api (about
25 ms to import) nor our instruments are loaded. From then on, `OTEL_SINK` adds events to
spans and counters, `http_attempt` traces HTTP attempts, and the breaker gauges exist.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Final, Protocol

from .._public import public

if TYPE_CHECKING:
    from types import TracebackType

    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from .._http._compat import Headers, Request
    from ._events import Event

__all__ = [
    "NO_ATTEMPT",
    "OTEL_SINK",
    "HttpAttempt",
    "OTelSink",
    "attempts_unrecorded",
    "http_attempt",
    "in_use",
    "inject_context",
    "set_meter_provider",
    "set_tracer_provider",
]

_PROVIDER_VARIABLES: Final = ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER")
# Read once, as the API reads it once: set after start-up it is not looked at either.
_PROVIDER_IN_ENVIRONMENT: Final = any(name in os.environ for name in _PROVIDER_VARIABLES)


def in_use() -> bool:
    """Whether the application uses OpenTelemetry (then our spans and metrics may record).

    Example:
        >>> import opentelemetry
        >>> in_use()
        True
    """
    return _PROVIDER_IN_ENVIRONMENT or "opentelemetry" in sys.modules


class OTelSink:
    """The OpenTelemetry sink of `emit`: span events and counters, loaded on first use.

    Example:
        >>> import logging
        >>> OTEL_SINK.wants(logging.INFO)  # OpenTelemetry loaded, but no SDK configured
        False
    """

    __slots__ = ("_active", "_record")

    name: Final = "telemetry"

    def __init__(self) -> None:
        self._active: Callable[[], bool] | None = None
        self._record: Callable[[Event], None] | None = None

    def start(self) -> bool:
        """Load the OpenTelemetry sink if OpenTelemetry is in use; whether it is loaded.

        Loading builds the instruments on the global meter provider, the breaker gauges
        among them, so they report even where no event is ever emitted.
        """
        if self._active is not None:
            return True
        if not in_use():
            return False
        from . import _otel  # first use: opentelemetry-api is imported here

        self._record = _otel.record_event
        self._active = _otel.active
        return True

    def wants(self, level: int) -> bool:
        """Whether an event would reach a span or a metric now (the level does not matter)."""
        active = self._active
        if active is None:
            if not (_PROVIDER_IN_ENVIRONMENT or "opentelemetry" in sys.modules):
                return False  # `in_use` inlined: asked on every call an open breaker rejects
            if not self.start():
                return False
            active = self._active
            assert active is not None
        return active()

    def send(self, event: Event) -> None:
        """Add *event* to the current span (if recording) and count it in the metrics."""
        record = self._record
        if record is None:
            if not self.start():
                return
            record = self._record
            assert record is not None
        record(event)


OTEL_SINK: Final = OTelSink()
"""The one OpenTelemetry sink, registered with `emit` by the package."""


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Send this library's spans to *provider*; None goes back to the global provider.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> from resilience import events
        >>> events.set_tracer_provider(TracerProvider())
        >>> events.set_tracer_provider(None)
    """
    from . import _otel  # a provider is given: OpenTelemetry is loaded already

    OTEL_SINK.start()
    _otel.set_tracer_provider(provider)


def set_meter_provider(provider: MeterProvider | None) -> None:
    """Send this library's metrics to *provider*; None goes back to the global provider.

    The instruments (the breaker gauges among them) are built on *provider* at once.

    Example:
        >>> from opentelemetry.sdk.metrics import MeterProvider
        >>> from resilience import events
        >>> events.set_meter_provider(MeterProvider())
        >>> events.set_meter_provider(None)
    """
    from . import _otel  # a provider is given: OpenTelemetry is loaded already

    OTEL_SINK.start()
    _otel.set_meter_provider(provider)


class HttpAttempt(Protocol):
    """One HTTP attempt in flight: tell it the response status or the error.

    `http_attempt` returns one; used as a context manager, it ends the attempt's CLIENT span
    and records its duration on exit.
    """

    def response(self, status_code: int) -> None:
        """The response headers arrived with *status_code* (4xx and 5xx mark an error)."""

    def error(self, exc: BaseException) -> None:
        """The attempt failed with *exc*; a cancellation is not an error and is not recorded."""

    def __enter__(self) -> HttpAttempt: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class _NoAttempt:
    """The attempt while nothing records: every method does nothing."""

    __slots__ = ()

    def response(self, status_code: int) -> None:
        return None

    def error(self, exc: BaseException) -> None:
        return None

    def __enter__(self) -> _NoAttempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


NO_ATTEMPT: Final[HttpAttempt] = _NoAttempt()
"""The shared attempt that records nothing."""

_start: Callable[[Request, int], HttpAttempt | None] | None = None
_inject: Callable[[Headers | MutableMapping[str, str]], None] | None = None
_idle: Callable[[], bool] = bool  # replaced by `_otel.recording_nothing` when loaded


def _load_http() -> None:
    global _start, _inject, _idle, attempts_unrecorded
    from . import _otel, _otel_http  # first use: opentelemetry-api is imported here

    OTEL_SINK.start()
    _inject = _otel_http.inject_context
    _idle = _otel.recording_nothing
    _start = _otel_http.start
    # From now on the question is `recording_nothing`'s alone: callers that look the name
    # up on this module (once per request) ask it in one call instead of two.
    attempts_unrecorded = _otel.recording_nothing


def attempts_unrecorded() -> bool:  # noqa: F811  # `_load_http` rebinds it
    """True when `http_attempt` would record nothing now, whatever the request (no SDK).

    Example:
        >>> import httpx
        >>> request = httpx.Request("GET", "http://a.test/")
        >>> attempts_unrecorded() == (http_attempt(request) is NO_ATTEMPT)
        True
    """
    if _start is None:
        if not (_PROVIDER_IN_ENVIRONMENT or "opentelemetry" in sys.modules):
            return True  # `in_use`, inlined: asked once per HTTP request
        _load_http()
    return _idle()


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
    start = _start
    if start is None:
        if not in_use():
            return NO_ATTEMPT
        _load_http()
        start = _start
        assert start is not None
    elif _idle():  # no SDK: the common case, in one call
        return NO_ATTEMPT
    attempt = start(request, resend_count)
    return NO_ATTEMPT if attempt is None else attempt


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
    inject = _inject
    if inject is None:
        if not in_use():
            return  # no context can exist without OpenTelemetry
        _load_http()
        inject = _inject
        assert inject is not None
    inject(headers)


public("resilience.events", set_tracer_provider, set_meter_provider)
