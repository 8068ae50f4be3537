"""The HTTP rules: what may be sent again, how long a server asks us to wait, whose host it is.

Pure functions and constants, no I/O and no state. They answer the questions every client
adapter asks the same way: is this failure worth another attempt (`ErrorKinds` names the
client's exception classes, so httpx and its fork share the rules), is this request safe to
repeat, what does `Retry-After` say, which parts of an attempt's timeouts did the deadline
shorten, and which ``scheme://host:port`` owns a URL (the per-host breaker key).
"""

from __future__ import annotations

import email.utils
import math
import operator
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final, Protocol, cast

from ._compat import (
    CloseError,
    ConnectError,
    ConnectTimeout,
    LocalProtocolError,
    NetworkError,
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
    Request,
    TimeoutException,
    TransportError,
    UnsupportedProtocol,
    WriteTimeout,
)

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "HTTPX_ERRORS",
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENT_METHODS",
    "KEYED_METHODS",
    "LOWER_NAME",
    "ErrorKinds",
    "Expiry",
    "RequestLike",
    "UrlParts",
    "as_httpx",
    "attempt_timeouts",
    "authority",
    "budget_cut",
    "deadline_passed",
    "has_none_of",
    "is_not_sent",
    "is_retryable_error",
    "new_idempotency_key",
    "parse_retry_after",
    "safe_to_repeat",
]

DEFAULT_RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
"""Statuses retried for idempotent requests: the server asks us to come back later."""

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""RFC 9110 §9.2.2: these can be repeated after a communication failure."""

KEYED_METHODS: Final = frozenset({"POST", "PATCH"})
"""Methods that get an ``Idempotency-Key`` with ``idempotency_keys=True``."""

IDEMPOTENCY_HEADER: Final = "idempotency-key"

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_TIMEOUT_KEYS: Final = ("connect", "read", "write", "pool")


class Expiry(Protocol):
    """The active deadline as `resilience._deadline.current_deadline` returns it."""

    def remaining(self) -> float:
        """Seconds left, never negative."""
        ...


class UrlParts(Protocol):
    """What the rules read from a URL (`httpx.URL`, `yarl.URL` and the like)."""

    @property
    def scheme(self) -> str:
        """``http``, ``https``..."""
        ...

    @property
    def host(self) -> str:
        """The host, lower case, IPv6 without brackets."""
        ...

    @property
    def port(self) -> int | None:
        """The explicit port, or None for the scheme's default."""
        ...


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorKinds:
    """A client library's exception classes, sorted by what a failure says about the request.

    Errors are matched by base class, so that a custom inner transport raising subclasses (or
    the library's bases themselves) is classified like the library's own.
    """

    not_sent: tuple[type[BaseException], ...]
    """Nothing reached the server: safe to send again whatever the method."""
    maybe_sent: tuple[type[BaseException], ...]
    """Every other network error or timeout, and a broken answer: the server may have acted
    on the request, so only a request that is safe to repeat is sent again."""
    never_retried: tuple[type[BaseException], ...]
    """Closing a connection failed: the exchange itself is over, there is nothing to repeat."""
    caller_errors: tuple[type[BaseException], ...]
    """Deterministic mistakes on our side: retrying cannot help and the host is not at fault."""
    transport: tuple[type[BaseException], ...]
    """Failures of the exchange with the host (what a per-host breaker counts)."""
    timeout: tuple[type[BaseException], ...]
    """Any timeout."""
    timeout_phases: tuple[tuple[type[BaseException], str], ...]
    """The timeout setting (``connect``, ``read``, ``write``, ``pool``) behind each kind."""


HTTPX_ERRORS: Final = ErrorKinds(
    not_sent=(ConnectError, ConnectTimeout, PoolTimeout),
    maybe_sent=(NetworkError, TimeoutException, RemoteProtocolError),
    never_retried=(CloseError,),
    caller_errors=(LocalProtocolError, UnsupportedProtocol),
    transport=(TransportError,),
    timeout=(TimeoutException,),
    timeout_phases=(
        (ConnectTimeout, "connect"),
        (ReadTimeout, "read"),
        (WriteTimeout, "write"),
        (PoolTimeout, "pool"),
    ),
)
"""The kinds for httpx (through `resilience._http._compat`)."""


def is_not_sent(exc: BaseException, kinds: ErrorKinds = HTTPX_ERRORS) -> bool:
    """Whether *exc* says that nothing reached the server (connect errors, connect and pool
    timeouts, and their subclasses): then any request may be sent again.

    Example:
        >>> import httpx
        >>> is_not_sent(httpx.ConnectTimeout("slow")), is_not_sent(httpx.ReadTimeout("slow"))
        (True, False)
    """
    return isinstance(exc, kinds.not_sent)


def is_retryable_error(
    exc: BaseException, idempotent: bool, kinds: ErrorKinds = HTTPX_ERRORS
) -> bool:
    """The HTTP rules for a failed attempt: may it be sent again?

    Connect errors, connect timeouts and pool timeouts mean nothing was sent: retryable for
    any method. Any other network error or timeout (`httpx.NetworkError`,
    `httpx.TimeoutException` and their subclasses, but not `httpx.CloseError`) and remote
    protocol errors mean the server may have acted: retryable only when the request is safe
    to repeat (*idempotent*).

    Example:
        >>> import httpx
        >>> is_retryable_error(httpx.ConnectError("refused"), idempotent=False)
        True
        >>> is_retryable_error(httpx.ReadTimeout("slow"), idempotent=False)
        False
    """
    if isinstance(exc, kinds.not_sent):
        return True
    return (
        idempotent
        and isinstance(exc, kinds.maybe_sent)
        and not isinstance(exc, kinds.never_retried)
    )


def budget_cut(exc: BaseException, cut: tuple[str, ...], kinds: ErrorKinds = HTTPX_ERRORS) -> bool:
    """Whether timeout *exc* fired on a part of the attempt's timeouts the deadline shortened.

    A timeout of no known phase (a custom `httpx.TimeoutException`) counts as cut when
    any part was.

    Example:
        >>> import httpx
        >>> budget_cut(httpx.ReadTimeout("slow"), ("read",))
        True
        >>> budget_cut(httpx.ConnectTimeout("slow"), ("read",))
        False
    """
    if not cut or not isinstance(exc, kinds.timeout):
        return False
    for kind, key in kinds.timeout_phases:
        if isinstance(exc, kind):
            return key in cut
    return True


# --------------------------------------------------------------------------- requests


def safe_to_repeat(method: str, headers: Mapping[str, str], override: bool | None) -> bool:
    """Whether a request may be sent again after the server may have acted on it.

    The per-request override wins; otherwise an idempotent method (RFC 9110) or an
    ``Idempotency-Key`` header makes it safe.

    Example:
        >>> safe_to_repeat("POST", {}, None), safe_to_repeat("POST", {"idempotency-key": "k"}, None)
        (False, True)
        >>> safe_to_repeat("GET", {}, False)
        False
    """
    if override is not None:
        return override
    return method in IDEMPOTENT_METHODS or IDEMPOTENCY_HEADER in headers


def new_idempotency_key() -> str:
    """A fresh random key, quoted: the IETF draft makes the value a structured-field String.

    Example:
        >>> key = new_idempotency_key()
        >>> key[0], key[-1], len(key)
        ('"', '"', 38)
    """
    return f'"{uuid.uuid4()}"'


def authority(url: UrlParts) -> str:
    """``scheme://host:port`` with the default port spelled out: the per-host breaker key.

    Example:
        >>> import httpx
        >>> authority(httpx.URL("https://user:pw@API.example.com/v1?token=x"))
        'https://api.example.com:443'
    """
    host = url.host
    if ":" in host:
        host = f"[{host}]"
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    return f"{url.scheme}://{host}:{port}" if port else f"{url.scheme}://{host}"


# --------------------------------------------------------------------------- answers and time


def parse_retry_after(value: str, wall_now: float) -> float | None:
    """Seconds to wait from a `Retry-After` value, or None when it does not parse.

    Accepts delta-seconds (ASCII digits only: ``int()`` would take ``-5``, ``+5`` or
    full-width digits) and the three HTTP-date forms; a date in the past means 0.

    Example:
        >>> parse_retry_after("120", wall_now=0.0)
        120.0
        >>> parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", wall_now=30.0)
        30.0
        >>> parse_retry_after("soon", wall_now=0.0) is None
        True
    """
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        # Absurdly long values would only be capped anyway; skip the big-int parse.
        return math.inf if len(value) > 15 else float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        seconds = when.timestamp() - wall_now
    except (OverflowError, OSError, ValueError):
        return None
    return seconds if seconds > 0.0 else 0.0


def attempt_timeouts(
    timeouts: Mapping[str, float | None] | None, cap: float | None, budget: float | None
) -> tuple[dict[str, float | None], tuple[str, ...]]:
    """An attempt's timeouts, and the parts the deadline shortened.

    Each part (``connect``, ``read``, ``write``, ``pool``: httpx's ``timeout`` extension) is
    the request's own timeout (None: none), capped by *cap* (the policy's
    ``attempt_timeout``), then by *budget* (what the deadline leaves). A part that *budget*
    made shorter than the transport's own setting is the caller's limit: when it fires, the
    caller ran out of time, which says nothing about the host.

    Example:
        >>> attempt_timeouts({"connect": 5.0, "read": None, "write": 0.5, "pool": 5.0}, None, 1.0)
        ({'connect': 1.0, 'read': 1.0, 'write': 0.5, 'pool': 1.0}, ('connect', 'read', 'pool'))
        >>> attempt_timeouts({"connect": 5.0, "read": 5.0}, 2.0, 3.0)
        ({'connect': 2.0, 'read': 2.0, 'write': 2.0, 'pool': 2.0}, ())
    """
    result: dict[str, float | None] = {}
    cut: list[str] = []
    for key in _TIMEOUT_KEYS:
        value = timeouts.get(key) if timeouts else None
        if cap is not None and (value is None or value > cap):
            value = cap
        if budget is not None and (value is None or value > budget):
            value = budget
            cut.append(key)
        result[key] = value
    return result, tuple(cut)


def deadline_passed(expiry: Expiry | None) -> bool:
    """Whether the deadline captured for a request has passed (False without one).

    Example:
        >>> from resilience._deadline import current_deadline, deadline
        >>> with deadline(0):
        ...     deadline_passed(current_deadline())
        True
    """
    return expiry is not None and expiry.remaining() <= 0.0


def has_none_of(headers: object, names: frozenset[bytes]) -> bool:
    """True when *headers* surely hold none of *names* (lower-case bytes); False when they may.

    httpx's and httpx2's `Headers` keep each name lower-cased beside its value, so one scan
    answers without what ``name in headers`` costs there: the first lookup on a `Headers`
    decodes every header to pick their encoding (about 1 µs for a client's five). Other
    mappings (requests', aiohttp's) answer False, and the caller asks them by name.

    Example:
        >>> import httpx
        >>> has_none_of(httpx.Headers({"Accept": "*/*"}), frozenset({b"idempotency-key"}))
        True
        >>> has_none_of(httpx.Headers({"Idempotency-Key": "k"}), frozenset({b"idempotency-key"}))
        False
        >>> has_none_of({"accept": "*/*"}, frozenset({b"idempotency-key"}))
        False
    """
    items = getattr(headers, "_list", None)
    if items.__class__ is not list:
        return False
    # Items are (raw name, lower-case name, value) in both libraries; all in C from here.
    return names.isdisjoint(map(LOWER_NAME, items))


LOWER_NAME: Final = operator.itemgetter(1)
"""The lower-case name of an httpx or httpx2 header item (raw name, lower name, value)."""


def as_httpx(request: RequestLike) -> Request:
    """*request*, which is httpx's own wherever routes exist (only httpx transports route)."""
    return cast("Request", request)


class RequestLike(Protocol):
    """What the core reads of a request: httpx's and httpx2's requests, and the views the
    requests and aiohttp adapters make of theirs."""

    @property
    def method(self) -> str:
        """Upper case."""
        ...

    @property
    def url(self) -> UrlParts:
        """Its scheme, host and port (``str()`` gives the whole URL, for spans)."""
        ...

    @property
    def headers(self) -> Any:
        """A mutable, case-insensitive mapping: the request's own headers."""
        ...

    @property
    def stream(self) -> object:
        """The body, as the client holds it (an in-memory one can be sent again)."""
        ...

    extensions: Any
    """A mapping the core reads per-request options from and replaces per attempt."""
