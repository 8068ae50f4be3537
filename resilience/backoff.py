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
import inspect
import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ._errors import ConfigError
from ._retry._shape import check_arity
from ._validate import MAX_DURATION, MAX_MULTIPLIER, Duration, number, required_duration, show

if TYPE_CHECKING:
    from tenacity import RetryCallState, Retrying

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
            value = self.maximum if self.initial else 0.0
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
    machinery never runs on the happy path. A `Retry` hands the wait a state as complete as
    tenacity's own: ``fn``, ``args``, ``kwargs``, ``attempt_number`` (attempts made so far),
    ``outcome`` (a tenacity ``Future`` holding the failed attempt's exception, or the result
    ``on_result`` rejected), ``outcome_timestamp``, ``start_time``, ``idle_for`` (seconds
    slept so far), ``seconds_since_start`` and a ``retry_object``; times are read from the
    `Retry`'s clock. Called with no call behind it (`compute`), the state has no ``fn``
    and the outcome is *error*, or a result of None.

    A wait is a number of seconds: NaN and negative values count as 0, and values above
    `resilience._validate.MAX_DURATION` (30 days) as that much, so no sleep can overflow.

    Example:
        >>> import tenacity
        >>> from resilience import backoff
        >>> def by_error(state: tenacity.RetryCallState) -> float:
        ...     return 2.0 if isinstance(state.outcome.exception(), TimeoutError) else 0.5
        >>> b = backoff.as_backoff(by_error)
        >>> b.compute(1, TimeoutError()), b.compute(1, ConnectionError())
        (2.0, 0.5)
    """

    __slots__ = ("_retrying", "wait")

    def __init__(self, wait: Callable[[Any], float]) -> None:
        self.wait = wait
        self._retrying: Retrying | None = None

    def start(
        self,
        fn: Callable[..., object] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        now: float,
    ) -> RetryCallState:
        """A fresh tenacity state for one call of *fn* starting at *now* (a `Retry` clock).

        *fn* is None when no function stands behind the call (an HTTP request: then *args*
        holds the request)."""
        from tenacity import RetryCallState

        state = RetryCallState(self._retry_object(), fn, args, kwargs)
        state.start_time = now
        return state

    def compute(self, attempt: int, error: BaseException | None = None) -> float:
        """Ask the tenacity wait object, with a state describing *attempt* and *error*."""
        from tenacity import RetryCallState

        state = RetryCallState(self._retry_object(), None, (), {})
        return self.compute_for(state, attempt, error, None, state.start_time)

    def compute_for(
        self,
        state: RetryCallState,
        attempt: int,
        error: BaseException | None,
        result: object,
        now: float,
    ) -> float:
        """Record the outcome of *attempt* in *state* (from `start`) and ask the wait object.

        *error* is the attempt's exception, or None when it returned *result*; *now* is when
        it ended. Add each sleep to ``state.idle_for`` before the next attempt.
        """
        from tenacity import Future

        outcome = Future(attempt)
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(result)
        state.attempt_number = attempt
        state.outcome = outcome
        state.outcome_timestamp = now
        state.next_action = None
        return _seconds(self.wait(state))

    def _retry_object(self) -> Retrying:
        # A tenacity waits may look at ``retry_state.retry_object`` (its settings, its
        # statistics): give them a Retrying with this wait, built once, never run.
        retrying = self._retrying
        if retrying is None:
            from tenacity import Retrying

            retrying = self._retrying = Retrying(wait=self.wait)
        return retrying

    def __repr__(self) -> str:
        return f"TenacityWait({self.wait!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TenacityWait) and other.wait == self.wait

    def __hash__(self) -> int:
        return hash(self.wait)


def _expects_a_number(wait: object) -> bool:
    """Whether *wait*'s first parameter is annotated ``int`` or ``float`` (an attempt number)."""
    try:
        parameters = list(inspect.signature(wait).parameters.values())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    if not parameters:
        return False
    annotation = parameters[0].annotation
    return annotation in (int, float, "int", "float")


def _seconds(value: object) -> float:
    """A wait object's answer as seconds in [0, MAX_DURATION] (NaN and negatives are 0)."""
    seconds = float(value)  # type: ignore[arg-type]  # a wait returns a number
    if not seconds > 0.0:
        return 0.0
    return seconds if seconds < MAX_DURATION else MAX_DURATION


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
        multiplier=number("multiplier", multiplier, minimum=1.0, maximum=MAX_MULTIPLIER),
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


_WAIT_FIX: Final = (
    "use backoff.exponential(...), backoff.constant(...), backoff.none(), a tenacity wait "
    "object, or a function of one tenacity RetryCallState (its attempt_number is the "
    "attempts made so far)"
)


def as_backoff(value: object, *, setting: str = "backoff") -> Backoff:
    """Return *value* as a `Backoff`: ours as is, a tenacity wait object wrapped.

    Any other callable is taken as a tenacity wait and must accept one argument (the
    ``RetryCallState``); one that cannot is refused now, not at the first retry. A function
    whose one parameter is annotated ``int`` or ``float`` expects an attempt number, which
    is not what it would get, and is refused too.

    Example:
        >>> from resilience import ConfigError, backoff
        >>> try:
        ...     backoff.as_backoff(lambda attempt, error: 1.0)
        ... except ConfigError as exc:
        ...     print(str(exc).split(", got ")[1].split(";")[0])
        <lambda> taking (attempt, error)
    """
    if isinstance(value, Backoff):
        return value
    if callable(value) and not isinstance(value, type):
        check_arity(setting, value, args=1, takes="a tenacity RetryCallState", fix=_WAIT_FIX)
        if _expects_a_number(value):
            msg = (
                f"{setting} must take a tenacity RetryCallState, got {show(value)} whose "
                f"parameter is annotated as a number; {_WAIT_FIX}"
            )
            raise ConfigError(msg)
        return TenacityWait(value)
    msg = (
        f"{setting} must be a resilience.backoff strategy (exponential, constant, none) "
        f"or a tenacity wait object, got {value!r}"
    )
    raise ConfigError(msg)
