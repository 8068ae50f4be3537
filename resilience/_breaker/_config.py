"""A breaker's settings: named defaults, validated once, frozen, and shared between twins.

`BreakerConfig` is built once per `CircuitBreaker(...)` call and never changes; clones share
it. Equal settings give the same config object (see `BreakerConfig.validated`), so 10,000
per-host breakers built alike hold one config between them, not 10,000.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Final

from .. import _validate
from ..backoff import Backoff

__all__ = [
    "DEFAULT_FAILURE_RATE",
    "DEFAULT_HALF_OPEN_CALLS",
    "DEFAULT_MINIMUM_CALLS",
    "DEFAULT_OPEN_DURATION",
    "DEFAULT_SLOW_CALL_RATE",
    "DEFAULT_WINDOW",
    "UNSET_FAILURE_RATE",
    "BreakerConfig",
    "OpenDuration",
]

DEFAULT_FAILURE_RATE: Final = 0.5
DEFAULT_WINDOW: Final = 100
DEFAULT_MINIMUM_CALLS: Final = 10
DEFAULT_SLOW_CALL_RATE: Final = 1.0
DEFAULT_OPEN_DURATION: Final = 30.0
DEFAULT_HALF_OPEN_CALLS: Final = 1

# Interned configs (see `BreakerConfig.validated`); bounded, since settings may be built in
# a loop with ever new values (a fuzzer, a predicate made per call).
_INTERNED_MAX: Final = 256

_log = logging.getLogger("resilience")

OpenDuration = Backoff | Callable[[int], float]
"""A strategy for ``open_duration``: a `resilience.backoff` strategy, or a function taking
the number of consecutive openings (1 for the first) and returning seconds."""


def _open_strategy(value: object) -> tuple[float, OpenDuration | None]:
    """``open_duration`` as (longest seconds OPEN, strategy or None).

    A number or timedelta is a fixed duration. A strategy grows the OPEN time with each
    consecutive opening (Envoy's ejection time, ``base_ejection_time`` x times ejected); its
    longest value is its ``maximum`` (exponential) or ``seconds`` (constant), else
    `resilience._validate.MAX_DURATION`, so the stores' TTLs have a bound to work from.
    """
    if isinstance(value, Backoff):
        longest = getattr(value, "maximum", getattr(value, "seconds", _validate.MAX_DURATION))
        return float(longest), value
    if callable(value) and not isinstance(value, type):
        return _validate.MAX_DURATION, value
    return _validate.required_duration("open_duration", value), None


class _DefaultRate(float):
    """The default ``failure_rate``: equal to 0.5, yet told apart from a ``0.5`` passed in.

    With ``consecutive_failures``, the rate trips the breaker too only when it was given.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return float.__repr__(self)


UNSET_FAILURE_RATE: Final[float] = _DefaultRate(DEFAULT_FAILURE_RATE)
"""The ``failure_rate`` default of `CircuitBreaker`: 0.5, but "not given"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """The validated settings of a `CircuitBreaker` (see its docstring for each one).

    The last four fields are derived from the others, for the state machine's use.

    Example:
        >>> from resilience import CircuitBreaker
        >>> config = CircuitBreaker("doc-config", consecutive_failures=3).config
        >>> config.consecutive_failures, config.rate_trips, config.window
        (3, False, 100)
    """

    failure_rate: float = DEFAULT_FAILURE_RATE
    consecutive_failures: int | None = None
    #: True when ``failure_rate`` was passed: with ``consecutive_failures`` both then trip.
    failure_rate_explicit: bool = False
    window: int = DEFAULT_WINDOW
    window_seconds: float | None = None
    minimum_calls: int = DEFAULT_MINIMUM_CALLS
    slow_call_duration: float | None = None
    slow_call_rate: float = DEFAULT_SLOW_CALL_RATE
    open_duration: float = DEFAULT_OPEN_DURATION
    #: The strategy ``open_duration`` was given as (``open_duration`` is then its longest).
    open_backoff: OpenDuration | None = None
    half_open_calls: int = DEFAULT_HALF_OPEN_CALLS
    failure_on: object = Exception
    ignore: tuple[type[BaseException], ...] = ()
    #: The rate trips the breaker (it does unless ``consecutive_failures`` replaces it).
    rate_trips: bool = field(init=False, compare=False, repr=False)
    #: Calls needed before a rate decision (a count window never holds more than ``window``).
    decisive_calls: int = field(init=False, compare=False, repr=False)
    #: ``slow_call_duration``, or infinity: a duration at or above it is a slow call.
    slow_threshold: float = field(init=False, compare=False, repr=False)
    #: ``failure_on`` as a predicate ``exc -> bool``.
    is_failure: Callable[[BaseException], bool] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        derive = object.__setattr__  # frozen: derived fields are set once, here
        derive(self, "rate_trips", self.consecutive_failures is None or self.failure_rate_explicit)
        derive(
            self,
            "decisive_calls",
            self.minimum_calls
            if self.window_seconds is not None
            else min(self.minimum_calls, self.window),
        )
        derive(
            self,
            "slow_threshold",
            math.inf if self.slow_call_duration is None else self.slow_call_duration,
        )
        derive(self, "is_failure", _validate.exception_filter("failure_on", self.failure_on))

    def __reduce__(self) -> tuple[object, tuple[dict[str, object]]]:
        # Pickled by its settings: the derived fields (a predicate among them) are rebuilt.
        settings = {name: getattr(self, name) for name in _SETTINGS}
        return (_from_settings, (settings,))

    def open_time(self, openings: int, name: str) -> tuple[float, float]:
        """(seconds OPEN at the *openings*-th opening in a row, how long a probe may then
        hold its slot): ``open_duration``, or the strategy's step, within (0, longest]."""
        strategy = self.open_backoff
        if strategy is None:
            return self.open_duration, self.open_duration
        try:
            if isinstance(strategy, Backoff):
                seconds = float(strategy.compute(openings))
            else:
                seconds = float(strategy(openings))
        except Exception:
            # A broken strategy must not leave the breaker half-way into OPEN.
            _log.exception("open_duration strategy of breaker %r raised", name)
            seconds = DEFAULT_OPEN_DURATION
        if not seconds > 0.0:  # NaN and negatives
            seconds = 0.0
        elif seconds > self.open_duration:
            seconds = self.open_duration
        return seconds, seconds or self.open_duration  # a probe always gets some time

    @property
    def timed(self) -> bool:
        """True when calls are timed (``slow_call_duration`` is set)."""
        return self.slow_call_duration is not None

    @classmethod
    def validated(
        cls,
        *,
        failure_rate: object,
        consecutive_failures: object,
        window: object,
        window_seconds: object,
        minimum_calls: object,
        slow_call_duration: object,
        slow_call_rate: object,
        open_duration: object,
        half_open_calls: object,
        failure_on: object,
        ignore: object,
    ) -> BreakerConfig:
        """Check every setting; raise `ConfigError` naming the first bad one.

        Equal settings return the same (immutable) object, so that many breakers built
        alike share one config.
        """
        _validate.exception_filter("failure_on", failure_on)
        longest_open, open_backoff = _open_strategy(open_duration)
        config = cls(
            failure_rate=_validate.rate("failure_rate", failure_rate),
            consecutive_failures=_validate.integer(
                "consecutive_failures",
                consecutive_failures,
                allow_none=True,
                maximum=_validate.MAX_WINDOW,
            ),
            failure_rate_explicit=failure_rate is not UNSET_FAILURE_RATE,
            window=_validate.required_integer(
                "window", window, maximum=_validate.MAX_WINDOW, hint=_validate.COUNT_WINDOW_HINT
            ),
            window_seconds=_validate.duration(
                "window_seconds", window_seconds, allow_none=True, minimum=_validate.MIN_WINDOW
            ),
            minimum_calls=_validate.required_integer("minimum_calls", minimum_calls),
            slow_call_duration=_validate.duration(
                "slow_call_duration", slow_call_duration, allow_none=True
            ),
            slow_call_rate=_validate.rate("slow_call_rate", slow_call_rate),
            open_duration=longest_open,
            open_backoff=open_backoff,
            half_open_calls=_validate.required_integer("half_open_calls", half_open_calls),
            failure_on=failure_on,
            ignore=_validate.exception_types("ignore", ignore) if ignore != () else (),
        )
        return _intern(config)


_SETTINGS: Final = tuple(f.name for f in fields(BreakerConfig) if f.init)


def _from_settings(settings: dict[str, object]) -> BreakerConfig:
    """Unpickle a `BreakerConfig` (see its ``__reduce__``)."""
    return _intern(BreakerConfig(**settings))  # type: ignore[arg-type]


_interned: dict[BreakerConfig, BreakerConfig] = {}
_interned_lock = threading.Lock()


def _intern(config: BreakerConfig) -> BreakerConfig:
    """The config equal to *config* already in use, or *config* itself (now remembered)."""
    try:
        hash(config)
    except TypeError:  # an unhashable failure_on predicate: nothing to share
        return config
    with _interned_lock:
        known = _interned.get(config)
        if known is not None:
            return known
        if len(_interned) >= _INTERNED_MAX:
            _interned.clear()  # settings built in a loop: start over rather than grow
        _interned[config] = config
        return config
