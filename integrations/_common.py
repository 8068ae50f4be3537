"""Framework-free logic shared by the FastAPI and Flask integrations.

Everything here is plain Python with no framework import. It is grouped by job, one section
each: the options both integrations take; the answers (our errors, an upstream's 5xx, load
shedding, a late body, each as an HTTP answer); the parsing of inbound headers (deadlines,
body length); load shedding (the counter, the slot a large body takes late); and the status
endpoint (who may read it, the payload, its cache). The framework modules are thin adapters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import ipaddress
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, Final, Literal, TypeAlias

from resilience._errors import BulkheadFull, CircuitOpenError, ConfigError, DeadlineExceeded
from resilience._observe._redact import redact_name
from resilience._validate import MAX_CONCURRENT, Clock, duration, integer, url_path
from resilience._validate import clock as check_clock

__all__ = [
    "DEADLINE_HEADERS",
    "DEFAULT_BODY_BUFFER",
    "DEFAULT_BODY_TIMEOUT",
    "LONGEST_WAIT",
    "MAPPED_ERRORS",
    "STATUS_HEADERS",
    "Answer",
    "ConcurrencyLimiter",
    "DeadlineHeaders",
    "Options",
    "ShedRequest",
    "StatusCache",
    "asgi_header_budget",
    "content_length",
    "environ_budget",
    "error_response",
    "inbound_budget",
    "is_loopback",
    "parse_grpc_timeout",
    "parse_milliseconds",
    "request_budget",
    "request_timeout_response",
    "retry_after_header",
    "shed_response",
    "status_allowed",
    "status_body",
    "status_payload",
    "upstream_status",
]

# ============================================================================ options

DEFAULT_STATUS_PATH: Final = "/resilience"
DEFAULT_STATUS_ACCESS: Final = "loopback"
DEFAULT_BODY_BUFFER: Final = 256 * 1024
"""Bytes of a request body read before the request takes a ``max_concurrent`` slot (256 KiB).

Big enough for nearly every JSON or form body, small enough that a connection costs little
memory while its body arrives. A larger body takes its slot when the handler reads past it.
"""
DEFAULT_BODY_TIMEOUT: Final = 30.0
"""Seconds a request body (up to the buffer) may take to arrive; later: 408, no slot held."""

LONGEST_WAIT: Final = threading.TIMEOUT_MAX
"""The longest wait a thread can do (about 292 years): durations beyond it cannot be waited."""

StatusAccess: TypeAlias = Literal["loopback", "any"] | Callable[[Any], bool]
"""Who may read the status path: ``"loopback"``, ``"any"`` or ``request -> bool``."""

DeadlineHeaderNames: TypeAlias = bool | Collection[str]
"""Which inbound deadline headers to honour: all (True), none (False), or these names."""


def _status_access(value: object) -> StatusAccess:
    if value in ("loopback", "any") or (callable(value) and not isinstance(value, str | type)):
        return value
    msg = (
        'status_access must be "loopback", "any" or a callable taking the request and '
        f"returning a bool, got {value!r}"
    )
    raise ConfigError(msg)


def _deadline_headers(value: object) -> tuple[str, ...]:
    known = tuple(name for name, _ in DEADLINE_HEADERS)
    if value is True:
        return known
    if value is False:
        return ()
    if (
        isinstance(value, Collection)
        and not isinstance(value, str | bytes)
        and all(isinstance(name, str) for name in value)
    ):
        names = tuple(dict.fromkeys(name.lower() for name in value))
        if all(name in known for name in names):
            return names
    msg = (
        f"deadline_headers must be True, False or a collection of header names among "
        f"{', '.join(known)}, got {value!r}"
    )
    raise ConfigError(msg)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """The settings both integrations take, validated once when the app is set up.

    ``deadline_headers`` is kept as the tuple of header names honoured (lower case).

    Example:
        >>> Options(max_concurrent=50, timeout=2.0).timeout
        2.0
        >>> Options(deadline_headers=["grpc-timeout"]).deadline_headers
        ('grpc-timeout',)
    """

    max_concurrent: int | None = None
    timeout: float | None = None
    status_path: str | None = DEFAULT_STATUS_PATH
    status_access: StatusAccess = DEFAULT_STATUS_ACCESS
    deadline_headers: DeadlineHeaderNames = True
    body_buffer: int = DEFAULT_BODY_BUFFER
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    clock: Clock = time.monotonic

    def __post_init__(self) -> None:
        integer("max_concurrent", self.max_concurrent, allow_none=True, maximum=MAX_CONCURRENT)
        seconds = duration("timeout", self.timeout, allow_none=True)
        object.__setattr__(self, "timeout", seconds)  # a timedelta becomes float seconds
        url_path("status_path", self.status_path, allow_none=True)
        _status_access(self.status_access)
        object.__setattr__(self, "deadline_headers", _deadline_headers(self.deadline_headers))
        integer("body_buffer", self.body_buffer, minimum=0)
        body_seconds = duration("body_timeout", self.body_timeout)
        object.__setattr__(self, "body_timeout", body_seconds)
        check_clock("clock", self.clock)


# ============================================================================ answers

JSON_CONTENT_TYPE: Final = "application/json"
SHED_RETRY_AFTER: Final = 1
"""Seconds a shed client is told to wait: overload passes quickly, and 1 is the smallest hint."""


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
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
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


# Fixed details: exception messages name internal breakers, bulkheads and hosts (an upstream
# error's message holds its URL, query secrets included), which a public client has no
# business seeing (the status endpoint is the place for names, and it can be off).
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
_REQUEST_TIMEOUT: Final = _json(
    408, "request_timeout", "The request body did not arrive in time; send it again."
)


class ShedRequest(Exception):  # an outcome, like BulkheadFull
    """No ``max_concurrent`` slot was free when a large body's handler started reading it.

    Raised from the body read inside the handler; the integrations answer it with the same
    503 as any shed request.
    """


MAPPED_ERRORS: Final = (CircuitOpenError, BulkheadFull, DeadlineExceeded)
"""Our errors the integrations turn into HTTP answers (found anywhere in a chain)."""

_CHAIN_LIMIT: Final = 32
"""Exceptions looked at, at most, in one chain: chains are short, and a loop must end."""


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


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """*exc*, then what it wraps: causes, contexts and a group's members, nearest first.

    Contexts are followed even when suppressed (``raise ... from None``): SDKs hide the
    httpx error they turned into their own that way.
    """
    queue: deque[BaseException] = deque((exc,))
    seen: set[int] = set()
    while queue and len(seen) < _CHAIN_LIMIT:
        current = queue.popleft()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            queue.extend(current.exceptions)
        if current.__cause__ is not None:
            queue.append(current.__cause__)
        if current.__context__ is not None:
            queue.append(current.__context__)


# Upstream errors that carry their status elsewhere than ``.response.status_code``.
_STATUS_ATTRIBUTE: Final = {("aiohttp", "ClientResponseError"): "status"}


def upstream_status(exc: BaseException) -> int | None:
    """The 5xx status of an upstream HTTP error (httpx, httpx2, requests, aiohttp); else None.

    Duck-typed, so no HTTP library is imported: an exception carrying ``.response`` with an
    ``int`` ``status_code`` (httpx's and httpx2's ``HTTPStatusError``, requests' ``HTTPError``,
    SDK errors built on them), or aiohttp's ``ClientResponseError`` (``.status``).

    Example:
        >>> import httpx
        >>> request = httpx.Request("GET", "https://api.example/v1")
        >>> response = httpx.Response(503, request=request)
        >>> upstream_status(httpx.HTTPStatusError("x", request=request, response=response))
        503
        >>> upstream_status(ValueError("x")) is None
        True
    """
    try:
        response = getattr(exc, "response", None)
        status = None if response is None else getattr(response, "status_code", None)
        if status is None:
            for cls in type(exc).__mro__:
                attribute = _STATUS_ATTRIBUTE.get((cls.__module__.partition(".")[0], cls.__name__))
                if attribute is not None:
                    status = getattr(exc, attribute, None)
                    break
    except Exception:  # a property that raises is not an HTTP status
        return None
    if isinstance(status, int) and not isinstance(status, bool) and 500 <= status <= 599:
        return status
    return None


def _answer_for(exc: BaseException) -> Answer | None:
    if isinstance(exc, CircuitOpenError):
        header = retry_after_header(exc.retry_after)
        if header is None:
            return _FORCED_OPEN
        return _json(503, "circuit_open", _CIRCUIT_OPEN_DETAIL, (("retry-after", header),))
    if isinstance(exc, BulkheadFull):
        return _BULKHEAD_FULL
    if isinstance(exc, DeadlineExceeded):
        return _DEADLINE_EXCEEDED
    if isinstance(exc, ShedRequest):
        return _SHED
    status = upstream_status(exc)
    if status is not None:
        detail = f"An upstream service answered with an error (HTTP {status}); retry later."
        return _json(502, "bad_gateway", detail)
    return None


def error_response(exc: BaseException) -> Answer | None:
    """The HTTP answer for one of our errors, or an upstream's 5xx, found in *exc*'s chain.

    The chain is *exc*, its ``__cause__`` and ``__context__`` (and theirs), and the members
    of an exception group; the nearest match wins. None: leave *exc* to the framework.

    Example:
        >>> from resilience import CircuitOpenError
        >>> answer = error_response(CircuitOpenError("payments", retry_after=2.2))
        >>> answer.status, dict(answer.headers)["retry-after"]
        (503, '3')
        >>> try:
        ...     try:
        ...         raise CircuitOpenError("payments", retry_after=1.0)
        ...     except CircuitOpenError as exc:
        ...         raise RuntimeError("the SDK's own error") from exc
        ... except RuntimeError as wrapped:
        ...     error_response(wrapped).status
        503
    """
    for link in _chain(exc):
        answer = _answer_for(link)
        if answer is not None:
            return answer
    return None


def shed_response() -> Answer:
    """The 503 sent at once when ``max_concurrent`` requests are already running."""
    return _SHED


def request_timeout_response() -> Answer:
    """The 408 sent when a request body does not arrive within ``body_timeout``."""
    return _REQUEST_TIMEOUT


def deadline_response() -> Answer:
    """The 504 for a request whose deadline passed (here: while its body was arriving)."""
    return _DEADLINE_EXCEEDED


# ============================================================================ inbound headers

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
_LENGTH_MAX_DIGITS: Final = 19  # a Content-Length beyond a 64-bit integer is not plausible
_ASCII_DIGITS: Final = frozenset("0123456789")

DEADLINE_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("x-envoy-expected-rq-timeout-ms", "ms"),
    ("grpc-timeout", "grpc"),
    ("connect-timeout-ms", "ms"),
)
"""Inbound headers that carry the caller's remaining budget, with their format."""


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
_KINDS: Final = dict(DEADLINE_HEADERS)
_DEADLINE_TAG: Final = "deadline"
_LENGTH_TAG: Final = "length"
_CHUNKED_TAG: Final = "chunked"


class DeadlineHeaders:
    """Reads the caller's budget from the inbound deadline headers an app honours.

    The shortest valid value wins. A malformed value is ignored, never an error; so is a
    budget longer than any wait can be (beyond `LONGEST_WAIT`): it counts as no budget.

    Example:
        >>> DeadlineHeaders(["grpc-timeout"]).mapping({"grpc-timeout": "250m"})
        0.25
        >>> DeadlineHeaders(["grpc-timeout"]).mapping({"connect-timeout-ms": "100"}) is None
        True
    """

    __slots__ = ("_asgi", "_asgi_tags", "_environ", "_kinds")

    def __init__(self, names: Iterable[str] = _KINDS) -> None:
        self._kinds = tuple((name, _KINDS[name]) for name in names)
        self._asgi = frozenset(name.encode("latin-1") for name, _ in self._kinds)
        # One dict lookup per header finds deadline and body headers alike.
        self._asgi_tags = {
            **dict.fromkeys(self._asgi, _DEADLINE_TAG),
            b"content-length": _LENGTH_TAG,
            b"transfer-encoding": _CHUNKED_TAG,
        }
        self._environ = tuple(
            ("HTTP_" + name.upper().replace("-", "_"), name) for name, _ in self._kinds
        )

    def __bool__(self) -> bool:
        return bool(self._kinds)

    def mapping(self, get_header: Mapping[str, str | bytes] | Any) -> float | None:
        """The budget from anything with ``.get(name)`` on lower-case names, or None."""
        budget: float | None = None
        for header, kind in self._kinds:
            raw = get_header.get(header)
            if raw is None:
                continue
            if isinstance(raw, bytes):
                try:
                    raw = raw.decode("ascii")
                except UnicodeDecodeError:
                    continue
            seconds = _PARSERS[kind](raw)
            if seconds is None or seconds > LONGEST_WAIT:
                continue  # longer than any wait: no budget (a thread could not wait for it)
            if budget is None or seconds < budget:
                budget = seconds
        return budget

    def asgi(self, headers: Iterable[tuple[bytes, bytes]]) -> float | None:
        """The budget from raw ASGI headers (lower-case byte names), without building a dict."""
        names = self._asgi
        if not names:
            return None
        found: dict[str, bytes] | None = None
        for name, value in headers:
            if name in names:
                if found is None:
                    found = {}
                found[name.decode("latin-1")] = value
        return None if found is None else self.mapping(found)

    def asgi_and_body(
        self, headers: Iterable[tuple[bytes, bytes]], http_version: str = "1.1"
    ) -> tuple[float | None, int]:
        """`asgi`, and the body's declared length, in one pass over the headers.

        The length is 0 for no body, -1 for one of unknown length (chunked; or HTTP/2 and 3,
        where a body may come without a length).

        Example:
            >>> DeadlineHeaders().asgi_and_body([(b"content-length", b"12")])
            (None, 12)
        """
        found: dict[str, bytes] | None = None
        length = 0 if http_version < "2" else -1
        chunked = False
        tags = self._asgi_tags
        for name, value in headers:
            tag = tags.get(name)
            if tag is None:
                continue
            if tag is _DEADLINE_TAG:
                if found is None:
                    found = {}
                found[name.decode("latin-1")] = value
            elif tag is _LENGTH_TAG:
                declared = content_length(value)
                length = -1 if declared is None else declared
            else:
                chunked = True
        budget = None if found is None else self.mapping(found)
        return budget, -1 if chunked else length

    def environ(self, environ: Mapping[str, Any]) -> float | None:
        """The budget from a WSGI environ (headers live under ``HTTP_*`` keys)."""
        found: dict[str, str] | None = None
        for key, header in self._environ:
            value = environ.get(key)
            if isinstance(value, str):
                if found is None:
                    found = {}
                found[header] = value
        return None if found is None else self.mapping(found)


_ALL_HEADERS: Final = DeadlineHeaders()


def inbound_budget(get_header: Mapping[str, str] | Any) -> float | None:
    """The shortest budget the caller sent in a deadline header, in seconds, or None.

    *get_header* is anything with ``.get(name)`` on lower-case header names (a dict, or a
    framework's case-insensitive headers). Malformed values are ignored, never an error;
    a budget beyond `LONGEST_WAIT` (``grpc-timeout: 99999999H``) counts as none.

    Example:
        >>> inbound_budget({"grpc-timeout": "300m", "x-envoy-expected-rq-timeout-ms": "200"})
        0.2
        >>> inbound_budget({"grpc-timeout": "soon"}) is None
        True
    """
    return _ALL_HEADERS.mapping(get_header)


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
    return _ALL_HEADERS.asgi(headers)


def environ_budget(environ: Mapping[str, Any]) -> float | None:
    """`inbound_budget` for a WSGI environ (headers live under ``HTTP_*`` keys)."""
    return _ALL_HEADERS.environ(environ)


def content_length(value: str | bytes | None) -> int | None:
    """A ``Content-Length`` value as bytes; None when absent or malformed.

    Example:
        >>> content_length("120"), content_length(b"0"), content_length("-1"), content_length(None)
        (120, 0, None, None)
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return _digits(value.strip(), _LENGTH_MAX_DIGITS)


# ============================================================================ load shedding


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


class LateSlot:
    """The slot of a request whose body is larger than the buffer: taken on the first read
    past the buffer (`try_take`, or `take`, which raises `ShedRequest` when none is free),
    given back once.

    Example:
        >>> limiter = ConcurrencyLimiter(1)
        >>> slot = LateSlot(limiter)
        >>> slot.take(); slot.take(); limiter.in_flight
        1
        >>> slot.give_back(); slot.give_back(); limiter.in_flight
        0
    """

    __slots__ = ("held", "limiter")

    def __init__(self, limiter: ConcurrencyLimiter) -> None:
        self.limiter = limiter
        self.held = False

    def try_take(self) -> bool:
        """Hold a slot from now on; False if none is free (True when held already)."""
        if not self.held:
            self.held = self.limiter.try_acquire()
        return self.held

    def take(self) -> None:
        """Hold a slot from now on (no-op when held already); `ShedRequest` if none is free."""
        if not self.try_take():
            msg = "no max_concurrent slot was free for this request's body"
            raise ShedRequest(msg)

    def give_back(self) -> None:
        """Release the slot if this request holds one."""
        if self.held:
            self.held = False
            self.limiter.release()


# ============================================================================ status endpoint

STATUS_HEADERS: Final = (
    ("content-type", JSON_CONTENT_TYPE),
    ("cache-control", "no-store"),  # a snapshot: never serve it from a cache
)

STATUS_COST_SHARE: Final = 20
"""A status payload is reused for 20 times as long as it took to build: however often it is
asked for, building it takes at most about 1/21 of one CPU (a few breakers: always fresh)."""


_IN_PROCESS: Final = "testclient"
"""The client address Starlette's ``TestClient`` reports: a call in the same process.

A server always reports the peer's IP address (or one a trusted proxy forwarded), so no
network client can appear under this name, and tests need not configure anything.
"""


def is_loopback(host: object) -> bool:
    """True for a client on 127.0.0.0/8 or ``::1`` (also IPv4-mapped), or in process.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("10.0.0.7")
        (True, True, False)
        >>> is_loopback("::ffff:127.0.0.1"), is_loopback("testclient"), is_loopback(None)
        (True, True, False)
    """
    if not isinstance(host, str) or not host:
        return False  # no address (a Unix socket): nothing says the client is local
    if host == _IN_PROCESS:
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # drop an IPv6 zone
    except ValueError:
        return False
    if address.is_loopback:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped is not None and bool(mapped.is_loopback)


def status_allowed(access: StatusAccess, request: object, host: object) -> bool:
    """Whether *request* (from client address *host*) may read the status path.

    Example:
        >>> status_allowed("loopback", None, "127.0.0.1")
        True
        >>> status_allowed("loopback", None, "192.0.2.1")
        False
        >>> status_allowed("any", None, None), status_allowed(lambda request: False, None, "::1")
        (True, False)
    """
    if access == "loopback":
        return is_loopback(host)
    if access == "any":
        return True
    assert callable(access)
    return bool(access(request))


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
    from resilience._breaker._registry import all_breakers

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


class StatusCache:
    """The status body, rebuilt at most once at a time and reused while it is cheap to.

    A body is reused for `STATUS_COST_SHARE` times as long as it took to build, so polling
    the status path costs a bounded share of a CPU however many breakers there are; with a
    few breakers a build takes microseconds and every answer is fresh. `aget` builds in a
    worker thread, off the event loop. Concurrent callers share one build.

    Example:
        >>> cache = StatusCache(build=lambda: b'{"breakers": []}')
        >>> cache.get()
        b'{"breakers": []}'
    """

    __slots__ = ("_body", "_build", "_clock", "_fresh_until", "_lock", "_pending")

    def __init__(
        self, *, build: Callable[[], bytes] = status_body, clock: Clock = time.monotonic
    ) -> None:
        self._build = build
        self._clock = clock
        self._body: bytes | None = None
        self._fresh_until = -math.inf
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[bytes] | None = None

    def fresh(self) -> bytes | None:
        """The cached body while it is fresh, else None."""
        body = self._body
        return body if body is not None and self._clock() < self._fresh_until else None

    def _rebuild(self) -> bytes:
        started = self._clock()
        body = self._build()
        done = self._clock()
        self._body = body
        self._fresh_until = done + (done - started) * STATUS_COST_SHARE
        return body

    def get(self) -> bytes:
        """The body, built in this thread if stale (threads arriving meanwhile wait for it)."""
        body = self.fresh()
        if body is not None:
            return body
        future, owner = self._join()
        if owner:
            self._fill(future)
        return future.result()

    async def aget(self) -> bytes:
        """The body, built in a worker thread if stale (callers meanwhile share that build)."""
        body = self.fresh()
        if body is not None:
            return body
        future, owner = self._join()
        if owner:
            asyncio.get_running_loop().run_in_executor(None, self._fill, future)
        return await asyncio.wrap_future(future)

    def _join(self) -> tuple[concurrent.futures.Future[bytes], bool]:
        with self._lock:
            future = self._pending
            if future is not None:
                return future, False
            future = self._pending = concurrent.futures.Future()
            # Running: one waiter's cancellation (its deadline) cannot cancel the others' build.
            future.set_running_or_notify_cancel()
            return future, True

    def _fill(self, future: concurrent.futures.Future[bytes]) -> None:
        try:
            body = self._rebuild()
        except BaseException as exc:  # the waiters get it (a 500), the next call retries
            with self._lock:
                self._pending = None
            future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        with self._lock:
            self._pending = None
        future.set_result(body)
