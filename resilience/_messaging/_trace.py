"""Spans for messages: one CONSUMER span per handling, one PRODUCER span per publish.

They follow the OpenTelemetry messaging semantic conventions (``messaging.system``,
``messaging.operation.type``, ``messaging.destination.name``, ``messaging.message.id``).
With no SDK configured nothing is started; the publisher's trace context is still made the
current context while the handler runs, so outgoing calls stay in the publisher's trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, StatusCode

from .._observe._labels import ERROR_TYPE, error_type
from .._observe._otel import tracer as _tracer
from ._headers import trace_context

__all__ = ["consumer_span", "producer_span"]

MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
MESSAGING_CONSUMER_GROUP: Final = "messaging.consumer.group.name"

_TRACE_HEADERS: Final = ("traceparent", "Traceparent", "TRACEPARENT")


def _has_trace(headers: Mapping[str, Any]) -> bool:
    return any(name in headers for name in _TRACE_HEADERS)


@contextlib.contextmanager
def consumer_span(
    headers: Mapping[str, Any], system: str, queue: str, consumer: str, message_id: str | None
) -> Iterator[None]:
    """Make the publisher's context current (and start a CONSUMER span under it)."""
    tracer = _tracer()
    if tracer is None:
        if not _has_trace(headers):
            yield
            return
        token = otel_context.attach(trace_context(headers))
        try:
            yield
        finally:
            otel_context.detach(token)
        return
    attributes: dict[str, str] = {
        MESSAGING_SYSTEM: system,
        MESSAGING_OPERATION_TYPE: "process",
        MESSAGING_OPERATION_NAME: "process",
        MESSAGING_DESTINATION_NAME: queue,
        MESSAGING_CONSUMER_GROUP: consumer,
    }
    if message_id:
        attributes[MESSAGING_MESSAGE_ID] = message_id
    parent = trace_context(headers) if _has_trace(headers) else None
    with tracer.start_as_current_span(
        f"process {queue}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, Exception):
                span.set_attribute(ERROR_TYPE, error_type(exc))
                span.set_status(StatusCode.ERROR, type(exc).__qualname__)
            raise


@contextlib.contextmanager
def producer_span(system: str, destination: str, message_id: str) -> Iterator[None]:
    """A PRODUCER span around one publish (nothing without an SDK)."""
    tracer = _tracer()
    if tracer is None:
        yield
        return
    attributes = {
        MESSAGING_SYSTEM: system,
        MESSAGING_OPERATION_TYPE: "send",
        MESSAGING_OPERATION_NAME: "publish",
        MESSAGING_DESTINATION_NAME: destination,
        MESSAGING_MESSAGE_ID: message_id,
    }
    with tracer.start_as_current_span(
        f"publish {destination}",
        kind=SpanKind.PRODUCER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, Exception):
                span.set_attribute(ERROR_TYPE, error_type(exc))
                span.set_status(StatusCode.ERROR, type(exc).__qualname__)
            raise
