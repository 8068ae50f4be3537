"""Validation helpers shared by every component's configuration.

Each helper raises `ConfigError` with a message naming the setting, the value and what it
must be, so a bad setting fails where the object is built, never on first use.

Every setting is bounded on both sides, and the bounds live here as named constants (the
docs page ``docs/settings.md`` lists them):

- `MAX_DURATION`: no duration above 30 days. Durations end up as thread waits, socket
  timeouts and timer deadlines; each platform refuses waits above `threading.TIMEOUT_MAX`
  (292 years on Linux, 49.7 days on Windows) with an `OverflowError`, and nothing in a
  resilience setting needs a month.
- `MIN_WINDOW`: time windows (a breaker's ``window_seconds``, a `RetryBudget`'s ``ttl``)
  are at least 1 ms: they are cut into buckets and divided by, so a subnormal width would
  make every call divide by zero.
- `MAX_WINDOW`, `MAX_CONCURRENT`, `MAX_BYTES`: counts that allocate memory up front (a
  count window's ring, a bulkhead's permits, a buffered body) stay in megabytes.
- `MAX_INTEGER`: every other count stays a machine-sized integer.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Final, TypeAlias

from ._errors import ConfigError

Clock: TypeAlias = Callable[[], float]
"""A monotonic clock: returns seconds as a float (default `time.monotonic`)."""

Duration: TypeAlias = float | int | timedelta
"""Seconds as a number, or a `datetime.timedelta`."""

ExceptionTypes: TypeAlias = type[BaseException] | tuple[type[BaseException], ...]
"""An exception type or a tuple of them."""

ExceptionFilter: TypeAlias = ExceptionTypes | Callable[[BaseException], bool]
"""Exception types, or a predicate taking the exception."""

MAX_DURATION: Final = 30 * 86_400.0
"""Longest duration any setting takes, in seconds (30 days): below every platform's
`threading.TIMEOUT_MAX`, so no wait built from a setting can overflow."""

MIN_WINDOW: Final = 0.001
"""Shortest time window, in seconds (1 ms): breaker ``window_seconds``, budget ``ttl``."""

MIN_INTERVAL: Final = 0.001
"""Shortest period of a background loop or socket timeout, in seconds (1 ms): a
`RedisStore`'s ``sync_interval`` and ``timeout``."""

MAX_SYNC_INTERVAL: Final = 3_600.0
"""Longest period of a background sync, in seconds (1 hour): a `RedisStore`'s
``sync_interval`` (fleet state older than that is of little use to a breaker)."""

MAX_SOCKET_TIMEOUT: Final = 60.0
"""Longest timeout of one network command, in seconds (1 minute): a `RedisStore`'s
``timeout`` (a probe in HALF_OPEN may wait that long for Redis)."""

MAX_WINDOW: Final = 100_000
"""Largest count window (a breaker's ``window`` and ``consecutive_failures``): one slot per
call, counted again on every failure."""

MAX_CONCURRENT: Final = 1_000_000
"""Largest concurrency limit (a bulkhead's ``max_concurrent``, the integrations'
``max_concurrent``): a bulkhead keeps one slot per permit."""

MAX_BYTES: Final = 1 << 30
"""Largest size in bytes a body may be buffered up to (1 GiB): the transports'
``buffer_limit``."""

MAX_INTEGER: Final = 2**31 - 1
"""Largest value of any other count (attempts, ``minimum_calls``, ``max_waiting``...)."""

MAX_RATIO: Final = 1_000.0
"""Largest ratio of one count to another (a `RetryBudget`'s ``ratio``)."""

MAX_PER_SECOND: Final = 1_000_000.0
"""Largest rate per second (a `RetryBudget`'s ``min_per_second``)."""

MAX_MULTIPLIER: Final = 1_000.0
"""Largest growth factor between two waits (``backoff.exponential(multiplier=...)``)."""

_MAX_DURATION_TEXT: Final = "2592000 seconds (30 days)"

COUNT_WINDOW_HINT: Final = "for a window over a long time, use window_seconds instead"
NO_DEADLINE_HINT: Final = "for no deadline, leave the code outside deadline(...)"
NO_TIMEOUT_HINT: Final = "for no time limit, leave the timeout out"
_SHOWN_CHARS: Final = 80
# RFC 9110 §5.1: a field name is a token.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 3986 §3.3: "/" then segments of pchars, without percent-escapes ("/" alone is a path).
_PATH: Final = re.compile(r"/|(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@]+)+/?")


def show(value: object) -> str:
    """*value*'s repr for an error message: short, and never an error itself.

    A 5,000-digit int has no repr (``ValueError``), and an object's ``__repr__`` may raise:
    neither may turn a `ConfigError` into something else.

    Example:
        >>> show(1.5), show(10**100)[:12], len(show(10**100)) <= 80
        ('1.5', '100000000000', True)
    """
    try:
        text = repr(value)
    except Exception:  # an int too long to print, or a broken __repr__
        if isinstance(value, int):
            return f"<an int of {value.bit_length()} bits>"
        return f"<a {type(value).__name__} that cannot be shown>"
    if len(text) > _SHOWN_CHARS:
        text = f"{text[: _SHOWN_CHARS - 3]}..."
    return text


def _bound(limit: float) -> str:
    """A bound as people write it: ``1000000``, not ``1e+06``; ``0.001`` stays."""
    if float(limit).is_integer() and abs(limit) < 1e15:
        return str(int(limit))
    return f"{limit:g}"


def _hinted(msg: str, hint: str) -> str:
    return f"{msg}; {hint}" if hint else msg


def duration(
    name: str,
    value: object,
    *,
    allow_zero: bool = False,
    allow_none: bool = False,
    minimum: float = 0.0,
    maximum: float = MAX_DURATION,
    hint: str = "",
) -> float | None:
    """Return *value* as float seconds, or raise `ConfigError` naming *name*.

    The value must be finite, > 0 (>= 0 with *allow_zero*), at least *minimum* when that
    is above 0, and at most *maximum* (`MAX_DURATION` unless given). *hint*, what to do
    instead, is added to the message when the value is too large (or infinite).

    Example:
        >>> duration("open_duration", 2.5)
        2.5
        >>> try:
        ...     duration("open_duration", 1e10)
        ... except ConfigError as exc:
        ...     print(exc)
        open_duration must be at most 2592000 seconds (30 days), got 10000000000.0
    """
    if value is None:
        if allow_none:
            return None
        msg = f"{name} must be a number of seconds or a timedelta, got None"
        raise ConfigError(msg)
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            seconds = math.inf if value > 0 else -math.inf
    else:
        msg = f"{name} must be a number of seconds or a timedelta, got {show(value)}"
        raise ConfigError(msg)
    if math.isnan(seconds) or math.isinf(seconds):
        msg = f"{name} must be a finite number of seconds, got {show(value)}"
        raise ConfigError(_hinted(msg, hint))
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be {bound} seconds, got {show(value)}"
        raise ConfigError(msg)
    if seconds < minimum and (seconds > 0 or not allow_zero):
        msg = f"{name} must be at least {_bound(minimum)} seconds, got {show(value)}"
        raise ConfigError(msg)
    if seconds > maximum:
        limit = _MAX_DURATION_TEXT if maximum == MAX_DURATION else f"{_bound(maximum)} seconds"
        msg = f"{name} must be at most {limit}, got {show(value)}"
        raise ConfigError(_hinted(msg, hint))
    return seconds


def required_duration(
    name: str,
    value: object,
    *,
    allow_zero: bool = False,
    minimum: float = 0.0,
    maximum: float = MAX_DURATION,
    hint: str = "",
) -> float:
    """Like `duration`, for settings that cannot be None."""
    seconds = duration(
        name, value, allow_zero=allow_zero, minimum=minimum, maximum=maximum, hint=hint
    )
    assert seconds is not None
    return seconds


def integer(
    name: str,
    value: object,
    *,
    minimum: int = 1,
    maximum: int = MAX_INTEGER,
    allow_none: bool = False,
    hint: str = "",
) -> int | None:
    """Return *value* if it is an int in [*minimum*, *maximum*], else raise `ConfigError`.

    *hint*, what to do instead, is added to the message when the value is too large.

    Example:
        >>> integer("window", 100, maximum=MAX_WINDOW)
        100
        >>> try:
        ...     integer("window", 2**63, maximum=MAX_WINDOW)
        ... except ConfigError as exc:
        ...     print(exc)
        window must be an integer <= 100000, got 9223372036854775808
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        msg = f"{name} must be an integer >= {minimum}, got {show(value)}"
        raise ConfigError(msg)
    if value > maximum:
        msg = f"{name} must be an integer <= {maximum}, got {show(value)}"
        raise ConfigError(_hinted(msg, hint))
    return value


def required_integer(
    name: str, value: object, *, minimum: int = 1, maximum: int = MAX_INTEGER, hint: str = ""
) -> int:
    """Like `integer`, for settings that cannot be None."""
    result = integer(name, value, minimum=minimum, maximum=maximum, hint=hint)
    assert result is not None
    return result


def number(name: str, value: object, *, minimum: float, maximum: float) -> float:
    """Return *value* as a float if it is a finite number in [*minimum*, *maximum*].

    Example:
        >>> number("ratio", 0.2, minimum=0.0, maximum=MAX_RATIO)
        0.2
        >>> try:
        ...     number("ratio", 1.7e308, minimum=0.0, maximum=MAX_RATIO)
        ... except ConfigError as exc:
        ...     print(exc)
        ratio must be a finite number in [0, 1000], got 1.7e+308
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        assert isinstance(value, int | float)
        try:
            ok = math.isfinite(value) and minimum <= value <= maximum
        except OverflowError:  # an int beyond any float
            ok = False
    if not ok:
        bounds = f"[{_bound(minimum)}, {_bound(maximum)}]"
        msg = f"{name} must be a finite number in {bounds}, got {show(value)}"
        raise ConfigError(msg)
    return float(value)  # type: ignore[arg-type]  # checked above


def rate(name: str, value: object) -> float:
    """Return *value* if it is a number in (0, 1], else raise `ConfigError`."""
    # NaN fails the comparison; an int too large for a float never reaches isnan.
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        msg = f"{name} must be in (0, 1], got {show(value)}"
        raise ConfigError(msg)
    return float(value)


def header_name(name: str, value: object, *, allow_none: bool = False) -> str | None:
    """Return *value* if it is a valid HTTP field name (an RFC 9110 token).

    Example:
        >>> header_name("deadline_header", "x-envoy-expected-rq-timeout-ms")
        'x-envoy-expected-rq-timeout-ms'
        >>> try:
        ...     header_name("deadline_header", "x deadline")
        ... except ConfigError as exc:
        ...     print(str(exc).replace("(letters, digits and !#$%&'*+-.^_`|~)", "(...)"))
        deadline_header must be an HTTP header name (...), got 'x deadline'
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
        msg = (
            f"{name} must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), "
            f"got {show(value)}"
        )
        raise ConfigError(msg)
    return value


def url_path(name: str, value: object, *, allow_none: bool = False) -> str | None:
    """Return *value* if it is a plain absolute URL path, as a client sends it.

    ``/`` and segments of letters, digits and ``-._~!$&'()*+,;=:@``: no query, fragment,
    space, percent-escape, empty, ``.`` or ``..`` segment, none of which a request path
    could match as written (and ``<``, which Flask reads as a route variable).

    Example:
        >>> url_path("status_path", "/ops/breakers")
        '/ops/breakers'
        >>> try:
        ...     url_path("status_path", "/ops?x=1")
        ... except ConfigError as exc:
        ...     print(str(exc)[:44])
        status_path must be a plain URL path such as
    """
    if value is None and allow_none:
        return None
    if (
        not isinstance(value, str)
        or _PATH.fullmatch(value) is None
        or any(segment in (".", "..") for segment in value.split("/"))
    ):
        msg = (
            f"{name} must be a plain URL path such as '/resilience' (ASCII letters, digits, "
            f"-._~!$&'()*+,;=:@ between slashes){' or None' if allow_none else ''}, "
            f"got {show(value)}"
        )
        raise ConfigError(msg)
    return value


def clock(name: str, value: object) -> Clock:
    """Check that *value* is callable (a clock or a sleep function)."""
    if not callable(value):
        msg = f"{name} must be a callable returning seconds, got {show(value)}"
        raise ConfigError(msg)
    return value


def exception_filter(name: str, value: object) -> Callable[[BaseException], bool]:
    """Turn exception types, a tuple of them, or a predicate into a predicate.

    Types and tuples become a fast `isinstance` check; anything else that is callable is
    taken as a predicate; everything else is a `ConfigError`.
    """
    if isinstance(value, type) and issubclass(value, BaseException):
        types: tuple[type[BaseException], ...] = (value,)
    elif isinstance(value, tuple) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        types = value
    elif callable(value) and not isinstance(value, type):
        predicate: Callable[[BaseException], bool] = value
        return predicate
    else:
        msg = (
            f"{name} must be an exception type, a tuple of exception types, "
            f"or a predicate taking the exception, got {show(value)}"
        )
        raise ConfigError(msg)
    return _type_filter(types)


@functools.lru_cache(maxsize=256)
def _type_filter(types: tuple[type[BaseException], ...]) -> Callable[[BaseException], bool]:
    # Shared per tuple of types: thousands of per-host breakers need one closure, not one each.
    def matches(exc: BaseException) -> bool:
        return isinstance(exc, types)

    matches.types = types  # type: ignore[attr-defined]  # read back by reprs and fast paths
    return matches


def exception_types(name: str, value: object) -> tuple[type[BaseException], ...]:
    """Return *value* as a tuple of exception types, or raise `ConfigError`."""
    if isinstance(value, type) and issubclass(value, BaseException):
        return (value,)
    if isinstance(value, tuple) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        return value
    msg = f"{name} must be an exception type or a tuple of exception types, got {show(value)}"
    raise ConfigError(msg)


def name(setting: str, value: object, *, allow_none: bool = False) -> str | None:
    """Return *value* if it is a non-empty string."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        msg = f"{setting} must be a non-empty string, got {show(value)}"
        raise ConfigError(msg)
    return value


def required_name(setting: str, value: object) -> str:
    """Like `name`, for names that cannot be None."""
    result = name(setting, value)
    assert result is not None
    return result
