"""What the httpx transports decide, kept apart from the I/O that `resilience.httpx` does.

Everything here is shared by the sync and the async transport: which failures are
retryable (HTTP rules), `Retry-After` parsing, how a request body is made replayable, how
an attempt's httpx timeouts are clamped to the deadline, per-request overrides, the
bounded per-host breaker map, and the "what next?" decision after each attempt. The two
drivers in `resilience.httpx` only add the sending, reading, closing and sleeping.
"""

from __future__ import annotations

import email.utils
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol

from opentelemetry import context as otel_context

from .. import _testmode, _validate
from .._breaker._breaker import CircuitBreaker
from .._deadline import check_deadline, current_deadline
from .._errors import ConfigError, DeadlineExceeded
from .._observe._events import (
    DeadlineExceededEvent,
    RetryBudgetExhausted,
    RetryExhausted,
    RetryScheduled,
    emit,
    error_name,
)
from .._observe._otel_gate import inject_context
from .._policy import Policy
from .._retry._retry import Retry
from ._compat import (
    URL,
    ByteStream,
    CloseError,
    ConnectError,
    ConnectTimeout,
    LocalProtocolError,
    NetworkError,
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
    Request,
    Response,
    TimeoutException,
    TransportError,
    UnsupportedProtocol,
    WriteTimeout,
)

if TYPE_CHECKING:
    from .._bulkhead import Bulkhead

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_BREAKER_NAME",
    "DEFAULT_BUFFER_LIMIT",
    "DEFAULT_MAX_HOSTS",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_RETRY_STATUSES",
    "EXTENSION",
    "IDEMPOTENT_METHODS",
    "RESEND_COUNT_EXTENSION",
    "BreakerMap",
    "Call",
    "Expiry",
    "HostBreakers",
    "Overrides",
    "TransportCore",
    "attempt_timeouts",
    "authority",
    "budget_cut",
    "deadline_error",
    "deadline_passed",
    "decide",
    "inject_trace_context",
    "is_not_sent",
    "is_retryable_error",
    "parse_overrides",
    "parse_retry_after",
]

DEFAULT_ATTEMPTS: Final = 3
"""Total attempts per request with no policy (the first included)."""

DEFAULT_RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
"""Statuses retried for idempotent requests: the server asks us to come back later."""

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""RFC 9110 §9.2.2: these can be repeated after a communication failure."""

KEYED_METHODS: Final = frozenset({"POST", "PATCH"})
"""Methods that get an ``Idempotency-Key`` with ``idempotency_keys=True``."""

IDEMPOTENCY_HEADER: Final = "idempotency-key"

DEFAULT_MAX_RETRY_AFTER: Final = 60.0
"""Longest `Retry-After` honoured, in seconds; longer values are capped to this."""

DEFAULT_BUFFER_LIMIT: Final = 1 << 20
"""Bodies (request or response) with a declared length up to this are read into memory."""

DEFAULT_MAX_HOSTS: Final = 1024
"""Per-host breakers kept per transport; the least recently used one goes first."""

DEFAULT_BREAKER_NAME: Final = "http"
"""Base name of per-host breakers when no policy breaker gives one."""

EXTENSION: Final = "resilience"
"""The `request.extensions` key for per-request overrides."""

RESEND_COUNT_EXTENSION: Final = "resilience.resend_count"
"""Set on the request's extensions for every retry (1 on the first retry, then 2...)."""

# Errors are matched by base class, so that a custom inner transport raising subclasses (or
# httpx's bases themselves) is classified like httpx's own.
# Nothing reached the server: safe to send again whatever the method.
NOT_SENT: Final = (ConnectError, ConnectTimeout, PoolTimeout)
# Every other network error or timeout, and a broken answer: the server may have acted on
# the request, so only a request that is safe to repeat is sent again.
MAYBE_SENT: Final = (NetworkError, TimeoutException, RemoteProtocolError)
# Closing a connection failed: the exchange itself is over, there is nothing to repeat.
NEVER_RETRIED: Final = (CloseError,)
# Deterministic mistakes on our side: retrying cannot help and the host is not at fault.
CALLER_ERRORS: Final = (LocalProtocolError, UnsupportedProtocol)
# The httpx timeout setting behind each kind of timeout error.
_TIMEOUT_PHASES: Final = (
    (ConnectTimeout, "connect"),
    (ReadTimeout, "read"),
    (WriteTimeout, "write"),
    (PoolTimeout, "pool"),
)

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_TIMEOUT_KEYS: Final = ("connect", "read", "write", "pool")
# A timeout that fires this close to the deadline was the deadline's doing.
_DEADLINE_SLACK: Final = 0.02
_TIMEOUT_HEADROOM: Final = 0.01
"""httpx's own timeouts fire this much before the deadline (at most a tenth of what is left),
so an attempt cut by the deadline ends as an httpx timeout the transport recognises (and
turns into `DeadlineExceeded`) rather than as a bare cancellation of the task."""
_MIN_HEADER_BUDGET: Final = 0.001
"""Below one millisecond the deadline header would read ``0``, which means "no deadline"."""


# --------------------------------------------------------------------------- interfaces


class Expiry(Protocol):
    """The active deadline as `resilience._deadline.current_deadline` returns it."""

    def remaining(self) -> float:
        """Seconds left, never negative."""
        ...


# --------------------------------------------------------------------------- pure helpers


def is_not_sent(exc: BaseException) -> bool:
    """Whether *exc* says that nothing reached the server (connect errors, connect and pool
    timeouts, and their subclasses): then any request may be sent again.

    Example:
        >>> import httpx
        >>> is_not_sent(httpx.ConnectTimeout("slow")), is_not_sent(httpx.ReadTimeout("slow"))
        (True, False)
    """
    return isinstance(exc, NOT_SENT)


def is_retryable_error(exc: BaseException, idempotent: bool) -> bool:
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
    if isinstance(exc, NOT_SENT):
        return True
    return idempotent and isinstance(exc, MAYBE_SENT) and not isinstance(exc, NEVER_RETRIED)


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
    """An attempt's httpx ``timeout`` extension, and the parts the deadline shortened.

    Each part is the request's own timeout (None: none), capped by *cap* (the policy's
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


def budget_cut(exc: BaseException, cut: tuple[str, ...]) -> bool:
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
    if not cut or not isinstance(exc, TimeoutException):
        return False
    for kind, key in _TIMEOUT_PHASES:
        if isinstance(exc, kind):
            return key in cut
    return True


def authority(url: URL) -> str:
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


def inject_trace_context(headers: Any) -> None:
    """Put the current W3C trace context (``traceparent``...) into *headers*.

    Costs about 0.1 µs when the OpenTelemetry context is empty (no span, no baggage: the
    case without an SDK), where the propagators would have nothing to write.
    """
    if _current_context():
        inject_context(headers)


_current_context: Final = otel_context.get_current


# --------------------------------------------------------------------------- overrides


class Overrides:
    """Per-request settings read from ``request.extensions["resilience"]``.

    Keys: ``retry`` (False or None: send once; or a `Retry` replacing the transport's),
    ``attempts`` (total attempts, the first included), ``idempotent`` (True or False:
    overrides the method rules, e.g. for a POST the server deduplicates).

    Example:
        >>> parse_overrides({"attempts": 5}).attempts
        5
    """

    __slots__ = ("attempts", "idempotent", "no_retry", "retry")

    def __init__(
        self,
        *,
        retry: Retry | None = None,
        no_retry: bool = False,
        attempts: int | None = None,
        idempotent: bool | None = None,
    ) -> None:
        self.retry = retry
        self.no_retry = no_retry
        self.attempts = attempts
        self.idempotent = idempotent

    def __repr__(self) -> str:
        return (
            f"Overrides(retry={self.retry!r}, no_retry={self.no_retry!r}, "
            f"attempts={self.attempts!r}, idempotent={self.idempotent!r})"
        )


_OVERRIDE_KEYS: Final = frozenset({"retry", "attempts", "idempotent"})


def parse_overrides(value: object) -> Overrides:
    """Validate ``request.extensions["resilience"]``; raise `ConfigError` when malformed."""
    if isinstance(value, Overrides):
        return value
    if not isinstance(value, Mapping):
        msg = (
            'request.extensions["resilience"] must be a dict with keys '
            f"{sorted(_OVERRIDE_KEYS)}, got {value!r}"
        )
        raise ConfigError(msg)
    unknown = set(value) - _OVERRIDE_KEYS
    if unknown:
        msg = (
            f'request.extensions["resilience"] has unknown keys {sorted(unknown)!r}; '
            f"known keys are {sorted(_OVERRIDE_KEYS)}"
        )
        raise ConfigError(msg)
    retry: Retry | None = None
    no_retry = False
    if "retry" in value:
        given = value["retry"]
        if given is None or given is False:
            no_retry = True
        elif isinstance(given, Retry):
            retry = given
        else:
            msg = (
                f'request.extensions["resilience"]["retry"] must be False or a Retry, got {given!r}'
            )
            raise ConfigError(msg)
    attempts = _validate.integer(
        'request.extensions["resilience"]["attempts"]', value.get("attempts"), allow_none=True
    )
    idempotent = value.get("idempotent")
    if idempotent is not None and not isinstance(idempotent, bool):
        msg = f'request.extensions["resilience"]["idempotent"] must be a bool, got {idempotent!r}'
        raise ConfigError(msg)
    return Overrides(retry=retry, no_retry=no_retry, attempts=attempts, idempotent=idempotent)


# --------------------------------------------------------------------------- per-host breakers


class BreakerMap(Mapping[str, "CircuitBreaker"]):
    """A live, read-only view of a transport's per-host breakers, keyed ``scheme://host:port``.

    Lookups also accept a URL, ``scheme://host`` (the default port is filled in), or
    ``host:port`` / ``host`` when only one scheme was used with it. Hosts seen after the
    view was taken show up in it too.

    Example:
        >>> from resilience.httpx import ResilientTransport
        >>> ResilientTransport().breakers
        BreakerMap({})
    """

    __slots__ = ("_hosts",)

    def __init__(self, hosts: HostBreakers | None) -> None:
        self._hosts = hosts

    def _items(self) -> dict[str, CircuitBreaker]:
        return {} if self._hosts is None else self._hosts.by_authority()

    @staticmethod
    def _key(items: Mapping[str, CircuitBreaker], key: object) -> object:
        if isinstance(key, URL):
            return authority(key)
        if not isinstance(key, str) or key in items:
            return key
        if "://" in key:
            try:
                return authority(URL(key))
            except Exception:
                return key
        # "host:port" or "host": accept it when exactly one authority matches.
        matches = [
            name
            for name in items
            if name.partition("://")[2] == key or name.partition("://")[2].rpartition(":")[0] == key
        ]
        return matches[0] if len(matches) == 1 else key

    def __getitem__(self, key: str) -> CircuitBreaker:
        items = self._items()
        return items[self._key(items, key)]  # type: ignore[index]  # normalised str or miss

    def __contains__(self, key: object) -> bool:
        items = self._items()
        return self._key(items, key) in items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return f"BreakerMap({ {k: b.state.value for k, b in self._items().items()}!r})"


class HostBreakers:
    """One breaker per ``scheme://host:port``, at most *max_hosts* of them (LRU).

    Breakers are made from a template (`CircuitBreaker.clone`) or, without one, with the
    `CircuitBreaker` defaults, named ``<base>:<scheme://host:port>``.
    """

    __slots__ = ("_base", "_by_key", "_factory", "_lock", "_max")

    def __init__(self, base: str, factory: Callable[[str], CircuitBreaker], max_hosts: int) -> None:
        self._base = base
        self._factory = factory
        self._max = max_hosts
        self._lock = threading.Lock()
        # (scheme, host, port) -> (authority, breaker); a tuple key avoids formatting a
        # string per request on the happy path.
        self._by_key: OrderedDict[tuple[str, str, int | None], tuple[str, CircuitBreaker]] = (
            OrderedDict()
        )

    def get(self, url: URL) -> CircuitBreaker:
        """The breaker for *url*'s host, made on first use."""
        key = (url.scheme, url.host, url.port)
        with self._lock:
            entry = self._by_key.get(key)
            if entry is not None:
                self._by_key.move_to_end(key)
                return entry[1]
        # Built outside the lock: building registers the breaker (another lock).
        name = authority(url)
        breaker = self._factory(f"{self._base}:{name}")
        with self._lock:
            entry = self._by_key.get(key)
            if entry is not None:  # another thread won the race; keep its breaker
                self._by_key.move_to_end(key)
                return entry[1]
            self._by_key[key] = (name, breaker)
            if len(self._by_key) > self._max:
                self._by_key.popitem(last=False)
        return breaker

    def by_authority(self) -> dict[str, CircuitBreaker]:
        """The breakers by authority, as they are now (a copy)."""
        with self._lock:
            return dict(self._by_key.values())


# --------------------------------------------------------------------------- the decision


class Stop:
    """Why no further attempt is made (the reasons `decide` returns)."""

    NOT_RETRYABLE: Final = "not retryable"
    EXHAUSTED: Final = "attempts exhausted"
    DEADLINE: Final = "the next wait would cross the deadline"


def decide(
    *,
    retryable: bool,
    attempt: int,
    max_attempts: int,
    backoff: Callable[[int], float],
    retry_after: float | None,
    max_retry_after: float,
    deadline_left: float | None,
) -> float | str:
    """What next after a failed attempt: the wait before the next one, or why to stop.

    *attempt* counts the attempts made so far (1 after the first). The wait is the larger of
    the backoff and `Retry-After` (capped at *max_retry_after*); a wait that would reach
    the deadline is not taken.

    Example:
        >>> decide(retryable=True, attempt=1, max_attempts=3, backoff=lambda n: 0.5,
        ...        retry_after=2.0, max_retry_after=60.0, deadline_left=None)
        2.0
        >>> decide(retryable=True, attempt=3, max_attempts=3, backoff=lambda n: 0.5,
        ...        retry_after=None, max_retry_after=60.0, deadline_left=None)
        'attempts exhausted'
    """
    if not retryable:
        return Stop.NOT_RETRYABLE
    if attempt >= max_attempts:
        return Stop.EXHAUSTED
    wait = backoff(attempt)
    if retry_after is not None:
        capped = retry_after if retry_after < max_retry_after else max_retry_after
        if capped > wait:
            wait = capped
    if deadline_left is not None and wait >= deadline_left:
        return Stop.DEADLINE
    return wait


# --------------------------------------------------------------------------- the core


class Call:
    """The state of one logical request across its attempts (one per `handle_request`)."""

    __slots__ = (
        "attempt",
        "base_extensions",
        "breaker",
        "cut",
        "expiry",
        "idempotent",
        "max_attempts",
        "must_read",
        "permit",
        "request",
        "retry",
        "scope",
        "started",
    )

    def __init__(self, request: Request) -> None:
        self.request = request
        self.base_extensions = request.extensions
        self.attempt = 0
        self.breaker: CircuitBreaker | None = None
        # The deadline active for the attempt (read again by the drivers while the answer
        # arrives), and the timeout parts it shortened below the transport's own.
        self.expiry: Expiry | None = None
        self.cut: tuple[str, ...] = ()
        self.retry: Retry | None = None
        self.max_attempts = 1
        self.idempotent = False
        self.must_read = False
        self.scope: float | None = None
        self.permit = 0
        self.started = 0.0


class TransportCore:
    """Settings and shared logic of a resilient transport (both drivers hold one).

    The drivers call `begin` once per request, then per attempt `before_attempt`, the
    inner transport, and `after_error` or `after_response`, which say whether to retry and
    after how long.
    """

    __slots__ = (
        "buffer_limit",
        "bulkhead",
        "clock",
        "deadline_header",
        "hosts",
        "idempotency_keys",
        "max_retry_after",
        "policy",
        "policy_attempt_timeout",
        "policy_timeout",
        "retry",
        "retry_statuses",
        "wall_clock",
    )

    def __init__(
        self,
        *,
        policy: object,
        idempotency_keys: object,
        max_retry_after: _validate.Duration,
        buffer_limit: int,
        deadline_header: str | None,
        max_hosts: int,
        retry_statuses: object,
        clock: _validate.Clock,
        wall_clock: _validate.Clock,
    ) -> None:
        if idempotency_keys is True:
            self.idempotency_keys: Callable[[], str] | None = new_idempotency_key
        elif idempotency_keys is False:
            self.idempotency_keys = None
        elif callable(idempotency_keys) and not isinstance(idempotency_keys, type):
            self.idempotency_keys = idempotency_keys
        else:
            msg = (
                "idempotency_keys must be True, False or a function returning a new key, "
                f"got {idempotency_keys!r}"
            )
            raise ConfigError(msg)
        self.max_retry_after = _validate.required_duration(
            "max_retry_after", max_retry_after, allow_zero=True
        )
        self.buffer_limit = _validate.required_integer(
            "buffer_limit", buffer_limit, minimum=0, maximum=_validate.MAX_BYTES
        )
        self.deadline_header = _validate.header_name(
            "deadline_header", deadline_header, allow_none=True
        )
        max_hosts = _validate.required_integer("max_hosts", max_hosts)
        if not isinstance(retry_statuses, frozenset | set | tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599
            for s in retry_statuses
        ):
            msg = f"retry_statuses must be a set of HTTP status codes, got {retry_statuses!r}"
            raise ConfigError(msg)
        self.retry_statuses = frozenset(retry_statuses)
        self.clock = _validate.clock("clock", clock)
        self.wall_clock = _validate.clock("wall_clock", wall_clock)
        if policy is not None and not isinstance(policy, Policy):
            msg = f"policy must be a resilience.Policy or None, got {policy!r}"
            raise ConfigError(msg)
        self.policy = policy

        template: CircuitBreaker | None
        if policy is None:
            self.retry: Retry | None = _default_retry()
            template = None
            self.policy_timeout: float | None = None
            self.policy_attempt_timeout: float | None = None
            self.bulkhead: Bulkhead | None = None
            base = DEFAULT_BREAKER_NAME
            # A partial, not a bound method: no cycle, so a dropped transport's breakers
            # leave the registry at once instead of at the next garbage collection.
            factory: Callable[[str], CircuitBreaker] = partial(CircuitBreaker, clock=self.clock)
        else:
            self.retry = policy.retry
            template = policy.breaker
            self.policy_timeout = policy.timeout
            self.policy_attempt_timeout = policy.attempt_timeout
            self.bulkhead = policy.bulkhead
            base = template.name if template is not None else DEFAULT_BREAKER_NAME
            factory = (
                template.clone if template is not None else partial(CircuitBreaker, clock=clock)
            )
        self.hosts: HostBreakers | None = (
            HostBreakers(base, factory, max_hosts)
            if policy is None or template is not None
            else None
        )

    # ------------------------------------------------------------------ per request

    def begin(self, request: Request) -> Call:
        """Plan a request: overrides, retry settings, idempotency, body replay, breaker."""
        call = Call(request)
        headers = request.headers
        method = request.method
        retry = self.retry
        attempts: int | None = None
        idempotent: bool | None = None
        raw = call.base_extensions.get(EXTENSION)
        if raw is not None:
            overrides = parse_overrides(raw)
            if overrides.no_retry:
                retry = None
            elif overrides.retry is not None:
                retry = overrides.retry
            attempts = overrides.attempts
            idempotent = overrides.idempotent

        new_key = self.idempotency_keys
        if new_key is not None and method in KEYED_METHODS and IDEMPOTENCY_HEADER not in headers:
            headers[IDEMPOTENCY_HEADER] = new_key()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS or IDEMPOTENCY_HEADER in headers
        call.idempotent = idempotent

        if retry is not None:
            call.retry = retry
            call.max_attempts = attempts if attempts is not None else retry.max_attempts()
            if call.max_attempts > 1:
                call.must_read, replayable = self._replay_mode(request)
                if not replayable:
                    call.max_attempts = 1
            timeout = retry.timeout
            if timeout is not None:
                call.scope = timeout
            budget = retry.budget
            if budget is not None:
                budget.record_call()

        scope = self.policy_timeout
        if scope is not None and (call.scope is None or scope < call.scope):
            call.scope = scope
        if self.hosts is not None:
            call.breaker = self.hosts.get(request.url)
        return call

    def _replay_mode(self, request: Request) -> tuple[bool, bool]:
        """(must read first, replayable) for the request body."""
        stream = request.stream
        if isinstance(stream, ByteStream):
            return False, True
        length = request.headers.get("content-length")
        if (
            length is not None
            and length.isascii()
            and length.isdigit()
            and int(length) <= self.buffer_limit
        ):
            return True, True
        return False, False

    def before_attempt(self, call: Call) -> None:
        """Check the deadline, set this attempt's timeouts and headers, take a breaker permit.

        The driver then opens the attempt's span (`_otel_gate.http_attempt`) and injects the
        trace context inside it, so ``traceparent`` names the attempt.
        """
        call.attempt += 1
        request = call.request
        expiry = call.expiry = current_deadline()
        left = None if expiry is None else check_deadline("the HTTP request")
        limit = left
        attempt_timeout = self.policy_attempt_timeout
        if attempt_timeout is not None and (limit is None or attempt_timeout < limit):
            limit = attempt_timeout
        if limit is not None or call.attempt > 1:
            extensions = dict(call.base_extensions)
            if limit is not None:
                budget = None if left is None else left - min(_TIMEOUT_HEADROOM, left / 10)
                extensions["timeout"], call.cut = attempt_timeouts(
                    call.base_extensions.get("timeout"), attempt_timeout, budget
                )
                if self.deadline_header is not None:
                    if left is not None and left < _MIN_HEADER_BUDGET:
                        # "0" would tell the server it has no deadline at all.
                        raise deadline_error("less than 1 ms was left for the deadline header")
                    # Whole milliseconds, rounded down: never promise more than remains.
                    ms = int(limit * 1000)
                    request.headers[self.deadline_header] = str(ms) if ms > 0 else "1"
            if call.attempt > 1:
                extensions[RESEND_COUNT_EXTENSION] = call.attempt - 1
            request.extensions = extensions
        breaker = call.breaker
        if breaker is not None:
            try:
                call.permit = breaker.acquire()
            except Exception as exc:
                if call.attempt > 1:
                    exc.add_note(f"resilience.httpx: rejected before attempt {call.attempt}")
                raise
            call.started = breaker.clock()

    def release(self, call: Call) -> None:
        """Give back the breaker permit of an attempt that was cancelled or interrupted."""
        breaker = call.breaker
        if breaker is not None:
            breaker.release(call.permit)

    def after_error(self, call: Call, exc: Exception) -> float | None:
        """Record a failed attempt; return the wait before the next one, or None to stop.

        Raises `DeadlineExceeded` (from *exc*) when the attempt timed out because the
        active deadline ran out. A timeout the deadline shortened below the transport's own
        setting is the caller's budget running out, not the host failing: the breaker
        permit is given back, not recorded as a failure.

        A request that is not safe to repeat is sent again only when nothing reached the
        server (`is_not_sent`), whatever the `Retry`'s ``on`` says; ``on`` adds retryable
        errors for requests that are safe to repeat.
        """
        breaker = call.breaker
        if breaker is not None:
            if (
                isinstance(exc, TransportError)
                and not isinstance(exc, CALLER_ERRORS)
                and not budget_cut(exc, call.cut)
            ):
                breaker.record_exception(call.permit, exc, breaker.clock() - call.started)
            else:
                breaker.release(call.permit)
        if isinstance(exc, TimeoutException):
            expiry = current_deadline()
            if expiry is not None and expiry.remaining() <= _DEADLINE_SLACK:
                raise _deadline_error(exc)
        elif isinstance(exc, DeadlineExceeded):
            return None  # the drivers' own check while the answer arrived: no time to retry
        retry = call.retry
        if retry is None:
            return None
        if isinstance(exc, NOT_SENT):
            retryable = True
        elif call.idempotent:
            retryable = is_retryable_error(exc, True) or _extra(retry, exc)
        else:
            retryable = False
        return self._next(call, retryable, None, error_name(exc), exc)

    def after_response(self, call: Call, response: Response) -> float | None:
        """Record an attempt that got a response; return the wait before retrying, or None."""
        status = response.status_code
        breaker = call.breaker
        if breaker is not None:
            duration = breaker.clock() - call.started
            if status >= 500:
                breaker.record_failure(call.permit, duration)
            else:
                breaker.record_success(call.permit, duration)
        if call.retry is None or status not in self.retry_statuses:
            return None
        retry_after = None
        header = response.headers.get("retry-after")
        if header is not None:
            retry_after = parse_retry_after(header, self.wall_clock())
        return self._next(call, call.idempotent, retry_after, f"HTTP {status}", None)

    def _next(
        self,
        call: Call,
        retryable: bool,
        retry_after: float | None,
        error: str,
        exc: Exception | None,
    ) -> float | None:
        retry = call.retry
        assert retry is not None
        expiry = current_deadline()
        deadline_left = None if expiry is None else expiry.remaining()
        verdict = decide(
            retryable=retryable,
            attempt=call.attempt,
            max_attempts=call.max_attempts,
            backoff=retry.compute_wait,
            retry_after=retry_after,
            max_retry_after=self.max_retry_after,
            deadline_left=deadline_left,
        )
        name = call.breaker.name if call.breaker is not None else authority(call.request.url)
        if isinstance(verdict, str):
            if verdict is Stop.NOT_RETRYABLE or call.max_attempts == 1:
                return None
            if verdict is Stop.EXHAUSTED:
                emit(RetryExhausted(name=name, attempts=call.attempt, error=error))
            if exc is not None:
                exc.add_note(f"resilience.httpx: gave up after {call.attempt} attempts: {verdict}")
            return None
        # Test mode (resilience.testing.set_testing) zeroes every wait, Retry-After included.
        verdict = _testmode.wait(verdict)
        budget = retry.budget
        if budget is not None and not budget.try_spend():
            emit(RetryBudgetExhausted(name=name, attempt=call.attempt, error=error))
            if exc is not None:
                exc.add_note("resilience.httpx: not retried, the retry budget is exhausted")
            return None
        emit(RetryScheduled(name=name, attempt=call.attempt, wait=verdict, error=error))
        return verdict


def _extra(retry: Retry, exc: Exception) -> bool:
    """Whether the policy's `Retry` adds *exc* to the HTTP rules (its ``on`` filter)."""
    try:
        return bool(retry.should_retry(exc))
    except Exception:
        return False


def deadline_error(detail: str) -> DeadlineExceeded:
    """`DeadlineExceeded` for the HTTP request, saying why (and the event for it)."""
    emit(DeadlineExceededEvent(where="the HTTP request"))
    return DeadlineExceeded(f"the HTTP request ran out of time: {detail}")


def _deadline_error(exc: Exception) -> DeadlineExceeded:
    error = deadline_error(f"the deadline expired ({error_name(exc)})")
    error.__cause__ = exc
    return error


def new_idempotency_key() -> str:
    """A fresh random key, quoted: the IETF draft makes the value a structured-field String.

    Example:
        >>> key = new_idempotency_key()
        >>> key[0], key[-1], len(key)
        ('"', '"', 38)
    """
    return f'"{uuid.uuid4()}"'


def _never(exc: BaseException) -> bool:
    """The default `Retry`'s ``on``: the HTTP rules alone decide what is retried."""
    return False


def _default_retry() -> Retry:
    return Retry(on=_never, attempts=DEFAULT_ATTEMPTS)
