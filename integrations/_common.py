"""Framework-free logic shared by the FastAPI and Flask integrations.

Everything here is plain Python with no framework import: the options both integrations take,
the mapping from our errors to an HTTP answer, the parsing of inbound deadline headers, the
load-shedding counter and the status payload. The framework modules are thin adapters.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from resilience._config import MAX_CONCURRENT, Clock, duration, integer, url_path
from resilience._config import clock as check_clock
from resilience._errors import BulkheadFull, CircuitOpenError, DeadlineExceeded
from resilience._redact import redact_name

__all__ = [
    "DEADLINE_HEADERS",
    "MAPPED_ERRORS",
    "STATUS_HEADERS",
    "Answer",
    "ConcurrencyLimiter",
    "Options",
    "asgi_header_budget",
    "environ_budget",
    "error_response",
    "inbound_budget",
    "parse_grpc_timeout",
    "parse_milliseconds",
    "request_budget",
    "retry_after_header",
    "shed_response",
    "status_body",
    "status_payload",
]

DEFAULT_STATUS_PATH: Final = "/resilience"
SHED_RETRY_AFTER: Final = 1
"""Seconds a shed client is told to wait: overload passes quickly, and 1 is the smallest hint."""

JSON_CONTENT_TYPE: Final = "application/json"

# grpc-timeout units (gRPC PROTOCOL-HTTP2.md), as seconds per unit.
_GRPC_UNITS: Final[Mapping[str, float]] = {
    "H": 3600.0,
    "M": 60.0,
    "S": 1.0,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}
_GRPC_MAX_DIGITS: Final = 8  # the protocol allows at most 8 digits
_MS_MAX_DIGITS: Final = 10  # as Connect's connect-timeout-ms: longer values are not plausible
_ASCII_DIGITS: Final = frozenset("0123456789")

DEADLINE_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("x-envoy-expected-rq-timeout-ms", "ms"),
    ("grpc-timeout", "grpc"),
    ("connect-timeout-ms", "ms"),
)
"""Inbound headers that carry the caller's remaining budget, with their format."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """The settings both integrations take, validated once when the app is set up.

    Example:
        >>> Options(max_concurrent=50, timeout=2.0).timeout
        2.0
    """

    max_concurrent: int | None = None
    timeout: float | None = None
    status_path: str | None = DEFAULT_STATUS_PATH
    clock: Clock = time.monotonic

    def __post_init__(self) -> None:
        integer("max_concurrent", self.max_concurrent, allow_none=True, maximum=MAX_CONCURRENT)
        seconds = duration("timeout", self.timeout, allow_none=True)
        object.__setattr__(self, "timeout", seconds)  # a timedelta becomes float seconds
        url_path("status_path", self.status_path, allow_none=True)
        check_clock("clock", self.clock)


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer ready for any framework: status, headers and a JSON body (bytes).

    Example:
        >>> shed_response().status
        503
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def reason(self) -> str:
        """The reason phrase for the status line (WSGI needs one)."""
        return _REASONS.get(self.status, "Error")


_REASONS: Final[Mapping[int, str]] = {
    503: "Service Unavailable",
    504: "Gateway Timeout",
    405: "Method Not Allowed",
    200: "OK",
}


def _json(status: int, kind: str, detail: str, headers: Iterable[tuple[str, str]] = ()) -> Answer:
    body = json.dumps({"error": kind, "detail": detail}).encode()
    return Answer(
        status=status,
        headers=(
            ("content-type", JSON_CONTENT_TYPE),
            ("content-length", str(len(body))),
            *headers,
        ),
        body=body,
    )


# Fixed details: exception messages name internal breakers and bulkheads, which a public
# client has no business seeing (the status endpoint is the place for names, and can be off).
_BULKHEAD_FULL: Final = _json(
    503, "bulkhead_full", "Too many calls to a dependency are in progress; retry later."
)
_DEADLINE_EXCEEDED: Final = _json(
    504, "deadline_exceeded", "The request did not complete within its deadline."
)
_CIRCUIT_OPEN_DETAIL: Final = "A dependency is temporarily unavailable; retry later."
_FORCED_OPEN: Final = _json(503, "circuit_open", _CIRCUIT_OPEN_DETAIL)
_SHED: Final = _json(
    503,
    "overloaded",
    "The server is handling as many requests as it can; retry later.",
    (("retry-after", str(SHED_RETRY_AFTER)),),
)

MAPPED_ERRORS: Final = (CircuitOpenError, BulkheadFull, DeadlineExceeded)
"""The exceptions the integrations turn into HTTP answers."""


def retry_after_header(retry_after: float | None) -> str | None:
    """``Retry-After`` in whole seconds, rounded up and at least 1; None when unknown.

    Example:
        >>> retry_after_header(0.2), retry_after_header(2.01), retry_after_header(None)
        ('1', '3', None)
    """
    if retry_after is None or math.isnan(retry_after):
        return None
    if math.isinf(retry_after):
        return None
    return str(max(1, math.ceil(retry_after)))


def error_response(exc: BaseException) -> Answer | None:
    """The HTTP answer for one of our errors, or None for any other exception.

    Example:
        >>> from resilience import CircuitOpenError
        >>> answer = error_response(CircuitOpenError("payments", retry_after=2.2))
        >>> answer.status, dict(answer.headers)["retry-after"]
        (503, '3')
    """
    if isinstance(exc, CircuitOpenError):
        header = retry_after_header(exc.retry_after)
        if header is None:
            return _FORCED_OPEN
        return _json(503, "circuit_open", _CIRCUIT_OPEN_DETAIL, (("retry-after", header),))
    if isinstance(exc, BulkheadFull):
        return _BULKHEAD_FULL
    if isinstance(exc, DeadlineExceeded):
        return _DEADLINE_EXCEEDED
    return None


def shed_response() -> Answer:
    """The 503 sent at once when ``max_concurrent`` requests are already running."""
    return _SHED


def _digits(value: str, max_digits: int) -> int | None:
    # int() alone would accept "+5", " 5", "5_0" and non-ASCII (fullwidth, Arabic-Indic) digits.
    if not value or len(value) > max_digits or not _ASCII_DIGITS.issuperset(value):
        return None
    return int(value)


def parse_milliseconds(value: str) -> float | None:
    """Seconds from a positive whole number of milliseconds; None when malformed or zero.

    Example:
        >>> parse_milliseconds("1500"), parse_milliseconds("-5"), parse_milliseconds("0")
        (1.5, None, None)
    """
    number = _digits(value.strip(), _MS_MAX_DIGITS)
    if not number:
        return None  # Envoy uses 0 for "no timeout": not a budget
    return number / 1000.0


def parse_grpc_timeout(value: str) -> float | None:
    """Seconds from a ``grpc-timeout`` value such as ``250m`` or ``1S``; None when malformed.

    Example:
        >>> parse_grpc_timeout("250m"), parse_grpc_timeout("2S"), parse_grpc_timeout("2s")
        (0.25, 2.0, None)
    """
    value = value.strip()
    unit = _GRPC_UNITS.get(value[-1:])
    if unit is None:
        return None
    number = _digits(value[:-1], _GRPC_MAX_DIGITS)
    if not number:
        return None
    return number * unit


_PARSERS: Final = {"ms": parse_milliseconds, "grpc": parse_grpc_timeout}


def inbound_budget(get_header: Mapping[str, str] | Any) -> float | None:
    """The shortest budget the caller sent in a deadline header, in seconds, or None.

    *get_header* is anything with ``.get(name)`` on lower-case header names (a dict, or a
    framework's case-insensitive headers). Malformed values are ignored, never an error.

    Example:
        >>> inbound_budget({"grpc-timeout": "300m", "x-envoy-expected-rq-timeout-ms": "200"})
        0.2
        >>> inbound_budget({"grpc-timeout": "soon"}) is None
        True
    """
    budget: float | None = None
    for header, kind in DEADLINE_HEADERS:
        raw = get_header.get(header)
        if raw is None:
            continue
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("ascii")
            except UnicodeDecodeError:
                continue
        seconds = _PARSERS[kind](raw)
        if seconds is not None and seconds > threading.TIMEOUT_MAX:
            continue  # longer than any wait can be (grpc-timeout allows 99999999H): no budget
        if seconds is not None and (budget is None or seconds < budget):
            budget = seconds
    return budget


def request_budget(timeout: float | None, inbound: float | None) -> float | None:
    """The deadline for one request: the server's timeout, shortened by the caller's budget.

    Example:
        >>> request_budget(2.0, 0.5), request_budget(2.0, 30.0), request_budget(None, 0.5)
        (0.5, 2.0, 0.5)
    """
    if inbound is None:
        return timeout
    if timeout is None or inbound < timeout:
        return inbound
    return timeout


def asgi_header_budget(headers: Iterable[tuple[bytes, bytes]]) -> float | None:
    """`inbound_budget` for raw ASGI headers (lower-case byte names), without building a dict."""
    found: dict[str, bytes] | None = None
    for name, value in headers:
        # Cheap pre-filter: every deadline header name ends in "timeout" or "timeout-ms".
        if name.endswith((b"timeout", b"timeout-ms")):
            if found is None:
                found = {}
            found[name.decode("latin-1")] = value
    return None if found is None else inbound_budget(found)


_ENVIRON_KEYS: Final = tuple(
    ("HTTP_" + header.upper().replace("-", "_"), header) for header, _ in DEADLINE_HEADERS
)


def environ_budget(environ: Mapping[str, Any]) -> float | None:
    """`inbound_budget` for a WSGI environ (headers live under ``HTTP_*`` keys)."""
    found: dict[str, str] | None = None
    for key, header in _ENVIRON_KEYS:
        value = environ.get(key)
        if isinstance(value, str):
            if found is None:
                found = {}
            found[header] = value
    return None if found is None else inbound_budget(found)


class ConcurrencyLimiter:
    """Counts requests in progress and refuses one beyond the limit, at once (no waiting).

    Thread-safe, so one limiter serves a threaded WSGI server as well as an event loop; the
    lock is held for a counter update only, never while a request runs.

    Example:
        >>> limiter = ConcurrencyLimiter(1)
        >>> limiter.try_acquire(), limiter.try_acquire()
        (True, False)
        >>> limiter.release(); limiter.in_flight
        0
    """

    __slots__ = ("_lock", "in_flight", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take a slot if one is free; False means shed this request."""
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def release(self) -> None:
        """Give back a slot taken by `try_acquire`."""
        with self._lock:
            self.in_flight -= 1


def _plain(value: object) -> object:
    """A JSON-ready metric value: enums as their value, NaN and infinities as null."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _metrics_dict(metrics: object) -> dict[str, object]:
    # A breaker's metrics snapshot is a Mapping (and a dataclass); accept either.
    if isinstance(metrics, Mapping):
        raw: Mapping[object, object] = metrics
    elif dataclasses.is_dataclass(metrics) and not isinstance(metrics, type):
        raw = {f.name: getattr(metrics, f.name) for f in dataclasses.fields(metrics)}
    else:
        msg = f"breaker metrics must be a mapping or a dataclass, got {metrics!r}"
        raise TypeError(msg)
    return {str(k): _plain(v) for k, v in raw.items()}


def status_payload() -> dict[str, list[dict[str, object]]]:
    """Every registered breaker with its state and window numbers, sorted by name.

    Example:
        >>> from resilience import CircuitBreaker
        >>> _ = CircuitBreaker("doc-status")
        >>> entry = next(b for b in status_payload()["breakers"] if b["name"] == "doc-status")
        >>> entry["state"]
        'closed'
    """
    from resilience._registry import all_breakers

    breakers = []
    for breaker in all_breakers():
        metrics = _metrics_dict(breaker.metrics())  # its state is read fresh (OPEN -> HALF_OPEN)
        name = metrics.pop("name", breaker.name)
        state = metrics.pop("state", None) or _plain(breaker.state)
        breakers.append({"name": redact_name(str(name)), "state": state, **metrics})
    breakers.sort(key=lambda entry: str(entry["name"]))
    return {"breakers": breakers}


def status_body() -> bytes:
    """`status_payload` as JSON bytes."""
    return json.dumps(status_payload()).encode()


STATUS_HEADERS: Final = (
    ("content-type", JSON_CONTENT_TYPE),
    ("cache-control", "no-store"),  # a snapshot: never serve it from a cache
)
