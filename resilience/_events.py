"""Small frozen events for every decision the library makes, and where they go.

Each event is a frozen dataclass with an ``event`` name (the structlog event name) and the
numbers behind the decision. `emit` hands it to the listeners and to the log; a listener that
raises is logged and never breaks the call. Events are only built off the happy path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final

import structlog

__all__ = [
    "BulkheadRejected",
    "CallRejected",
    "CircuitStateChanged",
    "DeadlineExceededEvent",
    "Event",
    "FallbackUsed",
    "Listener",
    "RetryBudgetExhausted",
    "RetryExhausted",
    "RetryScheduled",
    "add_listener",
    "emit",
    "remove_listener",
]

LOGGER_NAME: Final = "resilience"

_stdlib_logger = logging.getLogger(LOGGER_NAME)
# A library never configures logging: without this handler, Python's last-resort handler
# would print our warnings to stderr in applications that configured nothing.
_stdlib_logger.addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event. ``event`` is the log event name; ``level`` the log level."""

    event: ClassVar[str] = "resilience.event"
    level: ClassVar[int] = logging.INFO

    def as_dict(self) -> dict[str, Any]:
        """The event's fields as a dict (structured log keys)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


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


Listener = Callable[[Event], object]
"""A function called with every event (registry-wide) or a component's events."""

_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    """Call *listener* with every event the library emits, process-wide.

    Example:
        >>> from resilience import events
        >>> seen = []
        >>> events.add_listener(seen.append)
        >>> events.remove_listener(seen.append)
    """
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    """Stop calling *listener*; unknown listeners are ignored."""
    try:
        _listeners.remove(listener)
    except ValueError:
        pass


def error_name(exc: BaseException) -> str:
    """The exception's type name: never its message, which may carry secrets."""
    return type(exc).__qualname__


def emit(event: Event, local: Iterable[Listener] = ()) -> None:
    """Deliver *event* to *local* listeners, the process-wide listeners, and the log."""
    for listener in (*local, *_listeners):
        try:
            listener(event)
        except Exception:
            _stdlib_logger.exception("resilience listener %r failed", listener)
    _log(event)


def _log(event: Event) -> None:
    if structlog.is_configured():
        structlog.get_logger(LOGGER_NAME).log(event.level, event.event, **event.as_dict())
    elif _stdlib_logger.isEnabledFor(event.level):
        data = event.as_dict()
        _stdlib_logger.log(
            event.level,
            "%s %s",
            event.event,
            " ".join(f"{k}={v!r}" for k, v in data.items()),
            extra={"resilience_event": event.event, "resilience": data},
        )
