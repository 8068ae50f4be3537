"""Backoff strategies: how long a retry waits before its next attempt.

`exponential` (full jitter by default), `constant` and `none` cover most needs; any tenacity
wait object (``tenacity.wait_exponential(...)``, ``wait_random_exponential``, ``wait_chain``,
``wait_exception``...) is accepted too wherever a backoff is, so its strategies need not be
rewritten here. Every strategy is a pure function of the attempt number (and, for tenacity
waits, the error): it never sleeps.

Example:
    >>> import random
    >>> from resilience import backoff
    >>> steady = backoff.exponential(initial=0.1, maximum=1.0, jitter=False)
    >>> [steady.compute(n) for n in range(1, 6)]
    [0.1, 0.2, 0.4, 0.8, 1.0]
    >>> jittered = backoff.exponential(initial=0.1, random=random.Random(7))
    >>> 0 <= jittered.compute(3) <= 0.4
    True
"""

from __future__ import annotations

import abc
import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ._config import Duration, required_duration
from ._errors import ConfigError

__all__ = [
    "Backoff",
    "Constant",
    "Exponential",
    "NoBackoff",
    "TenacityWait",
    "constant",
    "exponential",
    "none",
]

DEFAULT_INITIAL: Final = 0.1
DEFAULT_MAXIMUM: Final = 10.0
DEFAULT_MULTIPLIER: Final = 2.0

RandomSource = Callable[[], float]
"""A function returning a float in [0, 1), like `random.random`."""


class Backoff(abc.ABC):
    """Base of our strategies: `compute` turns an attempt number into seconds to wait.

    *attempt* is the number of attempts made so far (1 after the first failure).
    """

    __slots__ = ()

    @abc.abstractmethod
    def compute(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after *attempt* attempts (1-based) have been made."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Exponential(Backoff):
    """``min(maximum, initial * multiplier ** (attempt - 1))``, times a random factor in
    [0, 1) when ``jitter`` is on ("full jitter", which spreads retries of many clients best).
    Build it with `exponential`."""

    initial: float = DEFAULT_INITIAL
    maximum: float = DEFAULT_MAXIMUM
    multiplier: float = DEFAULT_MULTIPLIER
    jitter: bool = True
    random: RandomSource = field(default=_random.random, repr=False, compare=False)

    def compute(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after *attempt* attempts (1-based) have been made."""
        try:
            value = self.initial * self.multiplier ** (attempt - 1)
        except OverflowError:  # thousands of attempts: the cap applies anyway
            value = self.maximum
        if value > self.maximum:
            value = self.maximum
        if self.jitter:
            value *= self.random()
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Constant(Backoff):
    """The same wait before every retry. Build it with `constant`."""

    seconds: float

    def compute(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after *attempt* attempts (1-based) have been made."""
        return self.seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class NoBackoff(Backoff):
    """Retry at once. Build it with `none`."""

    def compute(self, attempt: int, error: BaseException | None = None) -> float:
        """Always 0.0."""
        return 0.0


class TenacityWait(Backoff):
    """Adapts a tenacity wait object (a callable taking a ``RetryCallState``).

    The state is built only when a wait is computed, after a failure, so tenacity's
    machinery never runs on the happy path. ``attempt_number`` is the attempts made so far,
    as in tenacity, and the failed attempt's exception is the state's outcome (for
    ``tenacity.wait_exception``).
    """

    __slots__ = ("wait",)

    def __init__(self, wait: Callable[[Any], float]) -> None:
        self.wait = wait

    def compute(self, attempt: int, error: BaseException | None = None) -> float:
        """Ask the tenacity wait object, with a state describing *attempt* and *error*."""
        from tenacity import RetryCallState

        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # no Retrying object
        state.attempt_number = attempt
        if error is not None:
            state.set_exception((type(error), error, error.__traceback__))
        seconds = float(self.wait(state))
        return seconds if seconds > 0.0 else 0.0

    def __repr__(self) -> str:
        return f"TenacityWait({self.wait!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TenacityWait) and other.wait == self.wait

    def __hash__(self) -> int:
        return hash(self.wait)


def _random_source(value: object) -> RandomSource:
    if isinstance(value, _random.Random):
        return value.random
    if callable(value):
        source: RandomSource = value
        return source
    msg = (
        "random must be a random.Random instance or a function returning a float in [0, 1), "
        f"got {value!r}"
    )
    raise ConfigError(msg)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        msg = f"{name} must be True or False, got {value!r}"
        raise ConfigError(msg)
    return value


def _number(name: str, value: object, *, minimum: float) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < minimum
    ):
        msg = f"{name} must be a finite number >= {minimum:g}, got {value!r}"
        raise ConfigError(msg)
    return float(value)


def exponential(
    initial: Duration = DEFAULT_INITIAL,
    maximum: Duration = DEFAULT_MAXIMUM,
    multiplier: float = DEFAULT_MULTIPLIER,
    jitter: bool = True,
    *,
    random: _random.Random | RandomSource | None = None,
) -> Exponential:
    """Exponential backoff: ``initial``, then times ``multiplier`` per attempt, up to ``maximum``.

    With ``jitter=True`` (the default) each wait is drawn uniformly from 0 up to that value
    ("full jitter"), so clients that failed together do not retry together. Pass *random*
    (a seeded `random.Random` or a function returning [0, 1)) to make the draws repeatable.
    Durations are seconds or `datetime.timedelta`.

    Example:
        >>> from resilience import backoff
        >>> b = backoff.exponential(initial=0.5, maximum=3.0, multiplier=3.0, jitter=False)
        >>> [b.compute(n) for n in (1, 2, 3)]
        [0.5, 1.5, 3.0]
    """
    first = required_duration("initial", initial, allow_zero=True)
    cap = required_duration("maximum", maximum, allow_zero=True)
    if cap < first:
        msg = f"maximum must be >= initial ({first!r}), got {maximum!r}"
        raise ConfigError(msg)
    return Exponential(
        initial=first,
        maximum=cap,
        multiplier=_number("multiplier", multiplier, minimum=1.0),
        jitter=_flag("jitter", jitter),
        random=_random.random if random is None else _random_source(random),
    )


def constant(seconds: Duration) -> Constant:
    """Wait the same *seconds* before every retry.

    Example:
        >>> from resilience import backoff
        >>> backoff.constant(0.25).compute(7)
        0.25
    """
    return Constant(seconds=required_duration("seconds", seconds, allow_zero=True))


def none() -> NoBackoff:
    """Retry at once, without waiting.

    Example:
        >>> from resilience import backoff
        >>> backoff.none().compute(3)
        0.0
    """
    return _NONE


_NONE: Final = NoBackoff()


def as_backoff(value: object, *, setting: str = "backoff") -> Backoff:
    """Return *value* as a `Backoff`: ours as is, a tenacity wait object wrapped."""
    if isinstance(value, Backoff):
        return value
    if callable(value) and not isinstance(value, type):
        return TenacityWait(value)
    msg = (
        f"{setting} must be a resilience.backoff strategy (exponential, constant, none) "
        f"or a tenacity wait object, got {value!r}"
    )
    raise ConfigError(msg)
