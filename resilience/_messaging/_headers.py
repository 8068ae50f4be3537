"""What travels in message headers: trace context, the deadline, and a message's failures.

Outgoing (`outgoing_headers`): the W3C trace context (``traceparent``, ``tracestate``,
through opentelemetry-api's global propagator) and, inside a `resilience.deadline`, the
moment the work stops being wanted, as wall-clock epoch milliseconds in ``x-deadline``. An
absolute time, because a message waits in a queue for an unknown while: a relative budget
would be stale by the time anyone reads it.

Incoming: `trace_context` and `deadline_left` read them back; `tries` and `first_failure`
read the failure history the consumer writes when it redelivers or dead-letters a message
(`failure_headers`). The history travels with the message, so any consumer process that
gets the redelivery knows how many tries are left.

Header values come from other programs: anything malformed is ignored, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from opentelemetry import propagate
from opentelemetry.context import Context

from .._deadline import remaining
from .._errors import DeadlineExceeded
from .._observe._redact import redact_url

__all__ = [
    "ATTEMPTS",
    "DEADLINE",
    "DEFERRALS",
    "ERROR_MESSAGE",
    "ERROR_TYPE",
    "FIRST_FAILURE",
    "LAST_FAILURE",
    "ORIGINAL_QUEUE",
    "deadline_left",
    "deferrals",
    "deferred_headers",
    "error_type",
    "failure_headers",
    "first_failure",
    "iso_time",
    "outgoing_headers",
    "trace_context",
    "tries",
]

ATTEMPTS: Final = "x-attempts"
"""How many times the message was tried (int)."""
ERROR_TYPE: Final = "x-error-type"
"""The last failure's exception type, ``module.QualName``."""
ERROR_MESSAGE: Final = "x-error-message"
"""The last failure's message (URL credentials redacted, at most `MAX_ERROR_MESSAGE` chars)."""
FIRST_FAILURE: Final = "x-first-failure"
"""When the first try failed, ISO 8601 UTC."""
LAST_FAILURE: Final = "x-last-failure"
"""When the last try failed, ISO 8601 UTC."""
ORIGINAL_QUEUE: Final = "x-original-queue"
"""The queue the message was consumed from."""
DEADLINE: Final = "x-deadline"
"""When the work stops being wanted: wall-clock epoch milliseconds (int)."""
DEFERRALS: Final = "x-deferrals"
"""How many times the message waited for another consumer holding its id (int)."""

MAX_ERROR_MESSAGE: Final = 1000

# Headers RabbitMQ adds when it dead-letters a message (here: out of a delay queue). Copied
# on every redelivery they would only grow; the consumer's own headers tell the story.
_BROKER_HISTORY: Final = frozenset(
    {"x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason"}
    | {"x-last-death-exchange", "x-last-death-queue", "x-last-death-reason"}
)
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def outgoing_headers(
    headers: Mapping[str, Any] | None, wall_now: float, *, what: str = "publishing"
) -> dict[str, Any]:
    """A copy of *headers* with the current trace context and deadline added.

    Raises `DeadlineExceeded` when the active deadline leaves less than a millisecond: the
    message would be expired before anyone reads it.

    Example:
        >>> from resilience import deadline
        >>> with deadline(2.0):
        ...     headers = outgoing_headers({"k": "v"}, wall_now=1_700_000_000.0)
        >>> headers["k"], headers["x-deadline"] <= 1_700_000_002_000
        ('v', True)
    """
    out: dict[str, Any] = dict(headers) if headers else {}
    propagate.inject(out)
    left = remaining()
    if left is not None:
        if left < 0.001:
            msg = f"deadline exceeded before {what} could start"
            raise DeadlineExceeded(msg)
        at = int((wall_now + left) * 1000)
        given = _number(out.get(DEADLINE))
        if given is None or at < given:
            out[DEADLINE] = at
    return out


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return None
    return None


def _number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value:  # not NaN
        return int(value)
    text = _text(value)
    if text is not None:
        try:
            return int(text.strip())
        except ValueError:
            return None
    return None


def trace_context(headers: Mapping[str, Any] | None) -> Context:
    """The trace context the publisher put in *headers* (empty when there is none).

    Example:
        >>> from opentelemetry import trace
        >>> parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        >>> ctx = trace_context({"traceparent": parent})
        >>> format(trace.get_current_span(ctx).get_span_context().trace_id, "032x")
        '0af7651916cd43dd8448eb211c80319c'
    """
    carrier: dict[str, str] = {}
    if headers:
        for name, value in headers.items():
            text = _text(value)
            if text is not None:
                carrier[name.lower()] = text
    return propagate.extract(carrier)


def deadline_left(headers: Mapping[str, Any] | None, wall_now: float) -> float | None:
    """Seconds left before the message's deadline (<= 0: passed), None when it has none.

    Example:
        >>> deadline_left({"x-deadline": 1_700_000_002_500}, wall_now=1_700_000_000.0)
        2.5
        >>> deadline_left({"x-deadline": "soon"}, wall_now=0.0) is None
        True
    """
    if not headers:
        return None
    at = _number(headers.get(DEADLINE))
    if at is None or at <= 0:
        return None
    return at / 1000.0 - wall_now


def tries(headers: Mapping[str, Any] | None) -> int:
    """How many times the message was tried already (0 for a fresh one).

    Example:
        >>> tries({"x-attempts": 2}), tries({}), tries({"x-attempts": "junk"})
        (2, 0, 0)
    """
    if not headers:
        return 0
    count = _number(headers.get(ATTEMPTS))
    return count if count is not None and count > 0 else 0


def deferrals(headers: Mapping[str, Any] | None) -> int:
    """How many times the message was deferred already (0 for a fresh one)."""
    if not headers:
        return 0
    count = _number(headers.get(DEFERRALS))
    return count if count is not None and count > 0 else 0


def first_failure(headers: Mapping[str, Any] | None) -> str | None:
    """When the message first failed (ISO 8601), or None."""
    if not headers:
        return None
    return _text(headers.get(FIRST_FAILURE))


def iso_time(wall: float) -> str:
    """*wall* (epoch seconds) as ISO 8601 UTC with milliseconds.

    Example:
        >>> iso_time(0.25)
        '1970-01-01T00:00:00.250Z'
    """
    moment = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def error_type(exc: BaseException) -> str:
    """``module.QualName`` of the exception's type.

    Example:
        >>> error_type(ValueError("bad"))
        'builtins.ValueError'
    """
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def error_message(exc: BaseException) -> str:
    """The exception's message, with URL credentials redacted and the length bounded.

    Example:
        >>> error_message(ConnectionError("cannot reach redis://u:hunter2@db:6379/0"))
        'cannot reach redis://REDACTED:REDACTED@db:6379/0'
    """
    try:
        text = str(exc)
    except Exception:
        text = ""
    text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[: MAX_ERROR_MESSAGE - 1] + "…"
    return text


def failure_headers(
    headers: Mapping[str, Any] | None,
    *,
    exc: BaseException,
    attempts: int,
    queue: str,
    wall_now: float,
) -> dict[str, Any]:
    """*headers* with the failure history after try number *attempts* failed with *exc*.

    Example:
        >>> h = failure_headers({}, exc=ValueError("bad"), attempts=1, queue="q", wall_now=0.0)
        >>> h["x-attempts"], h["x-error-type"], h["x-first-failure"] == h["x-last-failure"]
        (1, 'builtins.ValueError', True)
    """
    out = plain_headers(headers)
    out.pop(DEFERRALS, None)
    now = iso_time(wall_now)
    out[ATTEMPTS] = attempts
    out[ERROR_TYPE] = error_type(exc)
    out[ERROR_MESSAGE] = error_message(exc)
    out[FIRST_FAILURE] = first_failure(headers) or now
    out[LAST_FAILURE] = now
    out[ORIGINAL_QUEUE] = queue
    return out


def plain_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """*headers* without the broker's own dead-lettering history."""
    return {k: v for k, v in (headers or {}).items() if k not in _BROKER_HISTORY}


def deferred_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """*headers* for a message deferred once more (no try is counted).

    Example:
        >>> deferred_headers({"x-deferrals": 2, "x-death": []})
        {'x-deferrals': 3}
    """
    out = plain_headers(headers)
    out[DEFERRALS] = deferrals(headers) + 1
    return out
