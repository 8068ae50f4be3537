"""Small frozen events for every decision the library makes, and where they go.

Each event is a frozen dataclass with an ``event`` name (the structlog event name) and the
numbers behind the decision. `emit` hands it to the component's own listeners, the
process-wide listeners, the log (structlog when the application configured it, else the
stdlib logger ``resilience``, silent by default) and OpenTelemetry (a span event on the
current span, and the counters of `resilience._observe._telemetry`). Nothing a listener, a log
processor or an exporter raises ever reaches the call. Events are only built off the happy
path, and carry no arguments, messages, headers or URLs: only names, states and numbers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final

import structlog

from ._redact import redact_name
from ._telemetry import active as telemetry_active
from ._telemetry import record_event

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
    "emit",
    "error_name",
    "remove_listener",
]

LOGGER_NAME: Final = "resilience"

_stdlib_logger = logging.getLogger(LOGGER_NAME)
# A library never configures logging: without this handler, Python's last-resort handler
# would print our warnings to stderr in applications that configured nothing.
_stdlib_logger.addHandler(logging.NullHandler())


_NAME_FIELDS: Final = ("breaker", "name")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event. ``event`` is the log event name; ``level`` the log level.

    Example:
        >>> from resilience.events import RetryScheduled
        >>> e = RetryScheduled(name="fetch", attempt=1, wait=0.5, error="ConnectError")
        >>> e.event, e.as_dict()["wait"]
        ('retry.scheduled', 0.5)
    """

    event: ClassVar[str] = "resilience.event"
    level: ClassVar[int] = logging.INFO

    def __post_init__(self) -> None:
        # Names are given in code, sometimes built from a URL: an event never carries the
        # URL's credentials, so neither do the logs, spans and metrics made from it.
        for field in _NAME_FIELDS:
            value = getattr(self, field, None)
            if isinstance(value, str):
                redacted = redact_name(value)
                if redacted is not value:
                    object.__setattr__(self, field, redacted)

    def as_dict(self) -> dict[str, Any]:
        """The event's fields as a dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def log_fields(self) -> dict[str, Any]:
        """The structured log keys: the fields, with ``name`` called after the component.

        ``name`` would collide with the stdlib `logging.LogRecord` attribute when a
        structlog setup hands the keys to stdlib logging as ``extra``, so a retry's name is
        logged as ``retry``, a bulkhead's as ``bulkhead``, a fallback's as ``fallback``.
        """
        data = self.as_dict()
        if "name" in data:
            data[self.event.partition(".")[0]] = data.pop("name")
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitStateChanged(Event):
    """A breaker moved from one state to another, with the window numbers that decided it."""

    event: ClassVar[str] = "circuit_breaker.state_changed"
    level: ClassVar[int] = logging.WARNING
    breaker: str
    old_state: str
    new_state: str
    reason: str = ""
    calls: int = 0
    failures: int = 0
    slow_calls: int = 0
    failure_rate: float = 0.0
    slow_call_rate: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRejected(Event):
    """A breaker rejected a call without running it."""

    event: ClassVar[str] = "circuit_breaker.call_rejected"
    level: ClassVar[int] = logging.DEBUG
    breaker: str
    state: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """An attempt failed and another is scheduled after ``wait`` seconds."""

    event: ClassVar[str] = "retry.scheduled"
    level: ClassVar[int] = logging.INFO
    name: str | None
    attempt: int
    wait: float
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryExhausted(Event):
    """Every attempt failed; the last outcome propagates."""

    event: ClassVar[str] = "retry.exhausted"
    level: ClassVar[int] = logging.WARNING
    name: str | None
    attempts: int
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetExhausted(Event):
    """A retry was wanted but the shared retry budget had none left."""

    event: ClassVar[str] = "retry.budget_exhausted"
    level: ClassVar[int] = logging.WARNING
    name: str | None
    attempt: int
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadRejected(Event):
    """A bulkhead had no free slot and no room to wait."""

    event: ClassVar[str] = "bulkhead.rejected"
    level: ClassVar[int] = logging.WARNING
    name: str | None
    max_concurrent: int
    max_waiting: int
    reason: str = "full"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadlineExceededEvent(Event):
    """The active deadline ran out (``where`` says what noticed it)."""

    event: ClassVar[str] = "deadline.exceeded"
    level: ClassVar[int] = logging.WARNING
    where: str
    seconds: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackUsed(Event):
    """A fallback replaced a failure with its value."""

    event: ClassVar[str] = "fallback.used"
    level: ClassVar[int] = logging.INFO
    name: str | None
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointEjected(Event):
    """An upstream's endpoint left the rotation: its breaker opened (``ejections`` counts the
    openings in a row since it was last closed). ``kept_in`` says the ejection cap or panic
    mode keeps it in the rotation anyway."""

    event: ClassVar[str] = "upstream.endpoint_ejected"
    level: ClassVar[int] = logging.WARNING
    name: str
    endpoint: str
    ejections: int
    kept_in: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointReturned(Event):
    """An upstream's endpoint is back in the rotation: its breaker closed after
    ``ejected_for`` seconds out."""

    event: ClassVar[str] = "upstream.endpoint_returned"
    level: ClassVar[int] = logging.INFO
    name: str
    endpoint: str
    ejected_for: float


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamEndpointsChanged(Event):
    """An upstream's resolver returned a different set of endpoints."""

    event: ClassVar[str] = "upstream.endpoints_changed"
    level: ClassVar[int] = logging.INFO
    name: str
    added: int
    removed: int
    endpoints: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamResolveFailed(Event):
    """Reading an upstream's resolver failed (raised, or returned no usable URL); the last
    set of ``endpoints`` is kept (0: there is none yet)."""

    event: ClassVar[str] = "upstream.resolve_failed"
    level: ClassVar[int] = logging.WARNING
    name: str
    error: str
    endpoints: int


Listener = Callable[[Event], object]
"""A function called with every event (registry-wide) or a component's events."""

# Replaced, never mutated: emit iterates a snapshot without taking a lock.
_listeners: tuple[Listener, ...] = ()
_listeners_lock: Final = threading.Lock()


def add_listener(listener: Listener) -> None:
    """Call *listener* with every event the library emits, process-wide.

    Listeners run in the thread or task that made the decision, after any lock is
    released; keep them quick. One that raises is logged and never breaks the call.

    Example:
        >>> from resilience import events
        >>> seen = []
        >>> events.add_listener(seen.append)
        >>> events.remove_listener(seen.append)
    """
    global _listeners
    with _listeners_lock:
        _listeners = (*_listeners, listener)


def remove_listener(listener: Listener) -> None:
    """Stop calling *listener* (process-wide); unknown listeners are ignored.

    Example:
        >>> from resilience import events
        >>> events.remove_listener(print)  # never added: nothing happens
    """
    global _listeners
    with _listeners_lock:
        # Equality, not identity: bound methods (seen.append) are new objects each time.
        kept = list(_listeners)
        try:
            kept.remove(listener)
        except ValueError:
            return
        _listeners = tuple(kept)


def wanted(level: int, local: tuple[Listener, ...] = ()) -> bool:
    """Whether an event at *level* would reach anyone: a listener, a log, a span or a metric.

    Hot paths (a rejection by an open breaker happens on every call while a dependency is
    down) check this before building the event at all.
    """
    return bool(
        local
        or _listeners
        or structlog.is_configured()
        or _stdlib_logger.isEnabledFor(level)
        or telemetry_active()
    )


def error_name(exc: BaseException) -> str:
    """The exception's type name: never its message, which may carry secrets."""
    return type(exc).__qualname__


def emit(
    event: Event,
    local: Iterable[Listener] = (),
    /,
    *,
    local_listeners: Iterable[Listener] = (),
) -> None:
    """Deliver *event* to *local* listeners, the process-wide listeners, the log and OTel.

    Components call it after releasing their locks, passing their own listeners as
    *local* (positionally, or as ``local_listeners=``); the breaker passes the ones given
    to its ``add_listener``.
    """
    for listener in (*local, *local_listeners, *_listeners):
        try:
            listener(event)
        except Exception:
            _report_failure("listener", listener, event)
    try:
        _log(event)
    except Exception:
        _report_failure("log", None, event)
    try:
        record_event(event)
    except Exception:
        _report_failure("telemetry", None, event)


_METHODS: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


def _log(event: Event) -> None:
    if structlog.is_configured():
        # The level's own method: every structlog wrapper class has it, not all have log().
        method = getattr(structlog.get_logger(LOGGER_NAME), _METHODS.get(event.level, "info"))
        method(event.event, **event.log_fields())
    elif _stdlib_logger.isEnabledFor(event.level):
        data = event.log_fields()
        _stdlib_logger.log(
            event.level,
            "%s %s",
            event.event,
            " ".join(f"{k}={v!r}" for k, v in data.items()),
            extra={"resilience_event": event.event, "resilience": data},
        )


def _report_failure(what: str, listener: Listener | None, event: Event) -> None:
    """Log that a listener (or the log or telemetry) raised, without ever raising."""
    try:
        data = {"part": what, "listener": repr(listener), "for_event": event.event}
        if structlog.is_configured():
            structlog.get_logger(LOGGER_NAME).error("listener.failed", exc_info=True, **data)
        else:
            _stdlib_logger.error(
                "listener.failed part=%s listener=%s for_event=%s",
                what,
                data["listener"],
                event.event,
                exc_info=True,
                extra={"resilience_event": "listener.failed", "resilience": data},
            )
    except Exception:
        # Logging itself is broken (a faulty processor or handler): stay out of the call.
        _stdlib_logger.debug("listener.failed and logging it failed too", exc_info=True)
