"""One CLIENT span per HTTP attempt, and the ``http.client.request.duration`` histogram.

Imported only once the application uses OpenTelemetry (`resilience._observe._otel_gate`
hands out `start` and `inject_context`). Spans follow the stable HTTP semantic conventions.
Skipped when the opentelemetry-instrumentation-httpx package already instruments httpx,
which would otherwise make every span and measurement twice.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from .._http._compat import HTTPTransport
from ._labels import ERROR_TYPE, OVERFLOW_LABEL, error_type
from ._otel import Instruments, instruments, tracer
from ._redact import redact_url

if TYPE_CHECKING:
    from types import TracebackType

    from opentelemetry.trace import Span, Tracer

    from .._http._compat import Headers, Request

__all__ = [
    "HTTP_REQUEST_METHOD",
    "HTTP_REQUEST_METHOD_ORIGINAL",
    "HTTP_REQUEST_RESEND_COUNT",
    "HTTP_RESPONSE_STATUS_CODE",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "URL_FULL",
    "RecordingAttempt",
    "inject_context",
    "start",
]

# Attribute names of the semantic conventions, written out: a library must not depend on
# opentelemetry-semantic-conventions, which pins one exact opentelemetry-api.
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL: Final = "http.request.method_original"
HTTP_REQUEST_RESEND_COUNT: Final = "http.request.resend_count"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
URL_FULL: Final = "url.full"

_KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _contrib_httpx_active() -> bool:
    """True when opentelemetry-instrumentation-httpx has patched httpx's transports."""
    return hasattr(HTTPTransport.handle_request, "__wrapped__")


class RecordingAttempt:
    """One HTTP attempt in flight with an SDK configured: its span, its duration."""

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
        instruments: Instruments | None,
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
        """The response headers arrived with *status_code* (4xx and 5xx mark an error)."""
        self._status = status_code

    def error(self, exc: BaseException) -> None:
        """The attempt failed with *exc*; a cancellation is not an error and is not recorded."""
        if isinstance(exc, Exception):
            self._error_type = error_type(exc)

    def __enter__(self) -> RecordingAttempt:
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


def start(request: Request, resend_count: int) -> RecordingAttempt | None:
    """The attempt's recorder, or None when nothing would be recorded (no SDK, or the
    opentelemetry-instrumentation-httpx package records it already)."""
    found_tracer = tracer()
    found_instruments = instruments()
    if found_tracer is None and found_instruments is None:
        return None
    if _contrib_httpx_active():
        return None
    return RecordingAttempt(request, resend_count, found_tracer, found_instruments)


def inject_context(headers: Headers | MutableMapping[str, str]) -> None:
    """Write the current W3C trace context (``traceparent``, ``tracestate``) into *headers*."""
    propagate.inject(headers)
