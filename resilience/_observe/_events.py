"""Small frozen events for every decision the library makes, and `emit`, which delivers them.

Each event is a frozen dataclass with an ``event`` name (the log event name) and the numbers
behind the decision. `emit` hands it to the component's own listeners, the process-wide
listeners, then every registered `Sink` (the log and OpenTelemetry, which the package
``resilience._observe`` registers). This module imports no sink: importing a pattern costs
neither structlog nor OpenTelemetry. Nothing a listener or a sink raises ever reaches the
call: what they raise is reported on the stdlib logger ``resilience``, which lives here
with its `logging.NullHandler`. Events are only built off the happy path, and carry no
arguments, messages, headers or URLs: only names, states and numbers.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, Protocol

from .._public import public
from ._redact import redact_name

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
    "Sink",
    "UpstreamEndpointsChanged",
    "UpstreamResolveFailed",
    "add_listener",
    "add_sink",
    "configured_structlog",
    "emit",
    "error_name",
    "remove_listener",
    "remove_sink",
    "report_failure",
    "wanted",
]

LOGGER_NAME: Final = "resilience"
"""The name of the stdlib logger and of the structlog logger the events go to."""

stdlib_logger: Final = logging.getLogger(LOGGER_NAME)
# A library never configures logging: without this handler, Python's last-resort handler
# would print our warnings to stderr in applications that configured nothing.
stdlib_logger.addHandler(logging.NullHandler())


def configured_structlog() -> Any:
    """The structlog module when the application configured it, else None.

    structlog is never imported here: an application that configured it has imported it,
    so when ``structlog`` is not in `sys.modules` it cannot be configured, and we know it
    without paying for its import (about 50 ms, asyncio included).

    Example:
        >>> configured_structlog() is None  # nothing configured structlog here
        True
    """
    structlog = sys.modules.get("structlog")
    if structlog is not None and structlog.is_configured():
        return structlog
    return None


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
    """A breaker moved from one state to another, with the window numbers that decided it.

    Example:
        >>> from resilience import CircuitBreaker
        >>> from resilience.testing import capture_events
        >>> with capture_events() as seen:
        ...     CircuitBreaker("doc-state-changed").force_open()
        >>> seen[0].event, seen[0].old_state, seen[0].new_state
        ('circuit_breaker.state_changed', 'closed', 'forced_open')
    """

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
    """A breaker rejected a call without running it.

    Example:
        >>> from resilience import CircuitBreaker, CircuitOpenError
        >>> from resilience.testing import capture_events
        >>> breaker = CircuitBreaker("doc-rejected")
        >>> breaker.force_open()
        >>> with capture_events() as seen:
        ...     try:
        ...         breaker.call(print)
        ...     except CircuitOpenError:
        ...         pass
        >>> seen[0].event, seen[0].state, seen[0].retry_after
        ('circuit_breaker.call_rejected', 'forced_open', None)
    """

    event: ClassVar[str] = "circuit_breaker.call_rejected"
    level: ClassVar[int] = logging.DEBUG
    breaker: str
    state: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """An attempt failed and another is scheduled after ``wait`` seconds.

    Example:
        >>> from resilience import Retry, backoff
        >>> from resilience.testing import capture_events
        >>> @Retry(on=ConnectionError, attempts=2, backoff=backoff.constant(0), name="fetch")
        ... def fetch() -> None:
        ...     raise ConnectionError("down")
        >>> with capture_events() as seen:
        ...     try:
        ...         fetch()
        ...     except ConnectionError:
        ...         pass
        >>> [(e.event, e.error) for e in seen]
        [('retry.scheduled', 'ConnectionError'), ('retry.exhausted', 'ConnectionError')]
    """

    event: ClassVar[str] = "retry.scheduled"
    level: ClassVar[int] = logging.INFO
    name: str | None
    attempt: int
    wait: float
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryExhausted(Event):
    """Every attempt failed; the last outcome propagates (see `RetryScheduled`'s example).

    Example:
        >>> from resilience.events import RetryExhausted
        >>> RetryExhausted(name="fetch", attempts=3, error="ConnectError").as_dict()["attempts"]
        3
    """

    event: ClassVar[str] = "retry.exhausted"
    level: ClassVar[int] = logging.WARNING
    name: str | None
    attempts: int
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetExhausted(Event):
    """A retry was wanted but the shared retry budget had none left.

    Example:
        >>> from resilience.events import RetryBudgetExhausted
        >>> RetryBudgetExhausted(name="fetch", attempt=1, error="ConnectError").event
        'retry.budget_exhausted'
    """

    event: ClassVar[str] = "retry.budget_exhausted"
    level: ClassVar[int] = logging.WARNING
    name: str | None
    attempt: int
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadRejected(Event):
    """A bulkhead had no free slot and no room to wait.

    Example:
        >>> from resilience import Bulkhead, BulkheadFull
        >>> from resilience.testing import capture_events
        >>> pool = Bulkhead(1, name="db")
        >>> pool.acquire()
        >>> with capture_events() as seen:
        ...     try:
        ...         pool.call(print)
        ...     except BulkheadFull:
        ...         pass
        >>> pool.release()
        >>> seen[0].event, seen[0].name, seen[0].max_concurrent
        ('bulkhead.rejected', 'db', 1)
    """

    event: ClassVar[str] = "bulkhead.rejected"
    level: ClassVar[int] = logging.WARNING
    name: str | None
    max_concurrent: int
    max_waiting: int
    reason: str = "full"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadlineExceededEvent(Event):
    """The active deadline ran out (``where`` says what noticed it).

    Example:
        >>> from resilience.events import DeadlineExceededEvent
        >>> DeadlineExceededEvent(where="retry wait", seconds=2.0).event
        'deadline.exceeded'
    """

    event: ClassVar[str] = "deadline.exceeded"
    level: ClassVar[int] = logging.WARNING
    where: str
    seconds: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackUsed(Event):
    """A fallback replaced a failure with its value.

    Example:
        >>> from resilience import fallback
        >>> from resilience.testing import capture_events
        >>> @fallback("cached", on=ConnectionError, name="profile")
        ... def profile() -> str:
        ...     raise ConnectionError("down")
        >>> with capture_events() as seen:
        ...     profile()
        'cached'
        >>> seen[0].event, seen[0].name, seen[0].error
        ('fallback.used', 'profile', 'ConnectionError')
    """

    event: ClassVar[str] = "fallback.used"
    level: ClassVar[int] = logging.INFO
    name: str | None
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointEjected(Event):
    """An upstream's endpoint left the rotation: its breaker opened (``ejections`` counts the
    openings in a row since it was last closed). ``kept_in`` says the ejection cap or panic
    mode keeps it in the rotation anyway.

    Example:
        >>> e = EndpointEjected(name="payments", endpoint="http://10.0.0.6:8001", ejections=2)
        >>> e.event, e.log_fields()["upstream"], e.kept_in
        ('upstream.endpoint_ejected', 'payments', False)
    """

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
    ``ejected_for`` seconds out.

    Example:
        >>> EndpointReturned(name="payments", endpoint="http://10.0.0.6:8001",
        ...                  ejected_for=30.0).event
        'upstream.endpoint_returned'
    """

    event: ClassVar[str] = "upstream.endpoint_returned"
    level: ClassVar[int] = logging.INFO
    name: str
    endpoint: str
    ejected_for: float


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamEndpointsChanged(Event):
    """An upstream's resolver returned a different set of endpoints.

    Example:
        >>> UpstreamEndpointsChanged(name="payments", added=1, removed=0, endpoints=3).event
        'upstream.endpoints_changed'
    """

    event: ClassVar[str] = "upstream.endpoints_changed"
    level: ClassVar[int] = logging.INFO
    name: str
    added: int
    removed: int
    endpoints: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamResolveFailed(Event):
    """Reading an upstream's resolver failed (raised, or returned no usable URL); the last
    set of ``endpoints`` is kept (0: there is none yet).

    Example:
        >>> UpstreamResolveFailed(name="payments", error="gaierror", endpoints=3).as_dict()
        {'name': 'payments', 'error': 'gaierror', 'endpoints': 3}
    """

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


class Sink(Protocol):
    """Where events go after the listeners: the log, OpenTelemetry (see `add_sink`)."""

    @property
    def name(self) -> str:
        """What the sink is, for the log line when it raises (``log``, ``telemetry``)."""
        ...

    def wants(self, level: int) -> bool:
        """Whether an event at *level* would reach anything now; cheap, asked on hot paths."""
        ...

    def send(self, event: Event) -> None:
        """Deliver *event*; what it raises is logged by `emit` and goes no further."""
        ...


# Replaced, never mutated, like the listeners. Registered once by resilience._observe.
_sinks: tuple[Sink, ...] = ()
# Their `wants`, bound once: `wanted` runs on hot paths (every call an open breaker rejects).
_wants: tuple[Callable[[int], bool], ...] = ()


def add_sink(sink: Sink) -> None:
    """Send every event to *sink* too, after the listeners (a sink is added once)."""
    global _sinks, _wants
    with _listeners_lock:
        if sink not in _sinks:
            _sinks = (*_sinks, sink)
            _wants = tuple(s.wants for s in _sinks)


def remove_sink(sink: Sink) -> None:
    """Stop sending events to *sink*; an unknown sink is ignored."""
    global _sinks, _wants
    with _listeners_lock:
        _sinks = tuple(s for s in _sinks if s is not sink)
        _wants = tuple(s.wants for s in _sinks)


def wanted(level: int, local: tuple[Listener, ...] = ()) -> bool:
    """Whether an event at *level* would reach anyone: a listener, a log, a span or a metric.

    Hot paths (a rejection by an open breaker happens on every call while a dependency is
    down) check this before building the event at all.

    Example:
        >>> import logging
        >>> wanted(logging.DEBUG, (print,))
        True
    """
    if local or _listeners:
        return True
    for wants in _wants:  # noqa: SIM110  # a loop: any() with a generator is slower here
        if wants(level):
            return True
    return False


def error_name(exc: BaseException) -> str:
    """The exception's type name: never its message, which may carry secrets.

    Example:
        >>> error_name(ValueError("password=hunter2"))
        'ValueError'
    """
    return type(exc).__qualname__


def emit(event: Event, local: Iterable[Listener] = (), /) -> None:
    """Deliver *event* to *local* listeners, the process-wide listeners, then every sink.

    Components call it after releasing their locks, passing their own listeners as
    *local*; the breaker passes the ones given to its ``add_listener``.
    """
    for listener in (*local, *_listeners):
        try:
            listener(event)
        except Exception:
            report_failure("listener", listener, event)
    for sink in _sinks:
        try:
            sink.send(event)
        except Exception:
            report_failure(sink.name, None, event)


def report_failure(what: str, culprit: object, event: Event) -> None:
    """Log that a listener or a sink (*what*) raised for *event*, without ever raising.

    Called from inside the ``except`` block, so the traceback is logged too.
    """
    try:
        data = {"part": what, "listener": repr(culprit), "for_event": event.event}
        structlog = configured_structlog()
        if structlog is not None:
            structlog.get_logger(LOGGER_NAME).error("listener.failed", exc_info=True, **data)
        else:
            stdlib_logger.error(
                "listener.failed part=%s listener=%s for_event=%s",
                what,
                data["listener"],
                event.event,
                exc_info=True,
                extra={"resilience_event": "listener.failed", "resilience": data},
            )
    except Exception:
        # Logging itself is broken (a faulty processor or handler): stay out of the call.
        stdlib_logger.debug("listener.failed and logging it failed too", exc_info=True)


public(
    "resilience.events",
    Event,
    CircuitStateChanged,
    CallRejected,
    RetryScheduled,
    RetryExhausted,
    RetryBudgetExhausted,
    BulkheadRejected,
    DeadlineExceededEvent,
    FallbackUsed,
    EndpointEjected,
    EndpointReturned,
    UpstreamEndpointsChanged,
    UpstreamResolveFailed,
    add_listener,
    remove_listener,
)
