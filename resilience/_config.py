"""Validation helpers shared by every component's configuration.

Each helper raises `ConfigError` with a message naming the setting and the value, so a
bad setting fails where the object is built.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import timedelta
from typing import TypeAlias

from ._errors import ConfigError

Clock: TypeAlias = Callable[[], float]
"""A monotonic clock: returns seconds as a float (default `time.monotonic`)."""

Duration: TypeAlias = float | int | timedelta
"""Seconds as a number, or a `datetime.timedelta`."""

ExceptionTypes: TypeAlias = type[BaseException] | tuple[type[BaseException], ...]
"""An exception type or a tuple of them."""

ExceptionFilter: TypeAlias = ExceptionTypes | Callable[[BaseException], bool]
"""Exception types, or a predicate taking the exception."""


def duration(
    name: str,
    value: object,
    *,
    allow_zero: bool = False,
    allow_none: bool = False,
) -> float | None:
    """Return *value* as float seconds, or raise `ConfigError` naming *name*."""
    if value is None:
        if allow_none:
            return None
        msg = f"{name} must be a number of seconds or a timedelta, got None"
        raise ConfigError(msg)
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        msg = f"{name} must be a number of seconds or a timedelta, got {value!r}"
        raise ConfigError(msg)
    if math.isnan(seconds) or math.isinf(seconds):
        msg = f"{name} must be a finite number of seconds, got {value!r}"
        raise ConfigError(msg)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be {bound} seconds, got {value!r}"
        raise ConfigError(msg)
    return seconds


def required_duration(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Like `duration`, for settings that cannot be None."""
    seconds = duration(name, value, allow_zero=allow_zero)
    assert seconds is not None
    return seconds


def integer(name: str, value: object, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """Return *value* if it is an int >= *minimum*, else raise `ConfigError`."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        msg = f"{name} must be an integer >= {minimum}, got {value!r}"
        raise ConfigError(msg)
    return value


def required_integer(name: str, value: object, *, minimum: int = 1) -> int:
    """Like `integer`, for settings that cannot be None."""
    result = integer(name, value, minimum=minimum)
    assert result is not None
    return result


def rate(name: str, value: object) -> float:
    """Return *value* if it is a number in (0, 1], else raise `ConfigError`."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or math.isnan(value)
        or not 0 < value <= 1
    ):
        msg = f"{name} must be in (0, 1], got {value!r}"
        raise ConfigError(msg)
    return float(value)


def clock(name: str, value: object) -> Clock:
    """Check that *value* is callable (a clock or a sleep function)."""
    if not callable(value):
        msg = f"{name} must be a callable returning seconds, got {value!r}"
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
            f"or a predicate taking the exception, got {value!r}"
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
    msg = f"{name} must be an exception type or a tuple of exception types, got {value!r}"
    raise ConfigError(msg)


def name(setting: str, value: object, *, allow_none: bool = False) -> str | None:
    """Return *value* if it is a non-empty string."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        msg = f"{setting} must be a non-empty string, got {value!r}"
        raise ConfigError(msg)
    return value


def required_name(setting: str, value: object) -> str:
    """Like `name`, for names that cannot be None."""
    result = name(setting, value)
    assert result is not None
    return result
