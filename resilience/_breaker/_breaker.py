"""The circuit breaker: a small state machine with an injected clock.

CLOSED counts outcomes in a sliding window and opens when the failure (or slow-call) rate
reaches its threshold, or after N failures in a row. OPEN rejects at once until
``open_duration`` has passed; the next look at the breaker moves it to HALF_OPEN, which lets
``half_open_calls`` probes through and judges them as a window: open again, or close with an
empty window. FORCED_OPEN and DISABLED are manual states left only through `reset()`.

Concurrency model (resilience4j's and Polly's): a permit is taken under the lock, the user's
call runs outside it, and the outcome is recorded under the lock. A permit carries the
breaker's *generation*, bumped on every transition, so an outcome that arrives after the state
moved on (a slow call started before a trip or a reset) is dropped instead of polluting the new
state. Events are emitted after the lock is released.
"""

from __future__ import annotations

import contextvars
import enum
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from types import AsyncGeneratorType, GeneratorType, TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn, ParamSpec, TypeVar, cast, overload

from .. import _validate
from .._errors import CircuitOpenError, ConfigError
from .._observe._events import CallRejected, CircuitStateChanged, Event, Listener, emit, wanted
from .._public import public
from .._wrapping import wrap_async_generator, wrap_generator, wraps
from ..backoff import Backoff
from . import _registry
from ._windows import FAILURE, SLOW, SUCCESS, CountWindow, TimeWindow

if TYPE_CHECKING:
    from ..stores import BreakerBinding, BreakerStore

__all__ = ["BreakerConfig", "BreakerMetrics", "CircuitBreaker", "CircuitState"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_FAILURE_RATE: Final = 0.5
DEFAULT_WINDOW: Final = 100
DEFAULT_MINIMUM_CALLS: Final = 10
DEFAULT_SLOW_CALL_RATE: Final = 1.0
DEFAULT_OPEN_DURATION: Final = 30.0
DEFAULT_HALF_OPEN_CALLS: Final = 1


class _DefaultRate(float):
    """The default ``failure_rate``: equal to 0.5, yet told apart from a ``0.5`` passed in.

    With ``consecutive_failures``, the rate trips the breaker too only when it was given.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return float.__repr__(self)


_UNSET_FAILURE_RATE: Final[float] = _DefaultRate(DEFAULT_FAILURE_RATE)

_DISABLED_PERMIT: Final = -1  # never equal to a generation: its outcome is never recorded
# HALF_OPEN probes get permits of their own, -2, -3, ...: never a generation (those count up
# from 0), so a probe's outcome counts only while its slot is still listed as in flight.
_FIRST_PROBE_PERMIT: Final = -2
# Other processes' window totals (calls, failures, slow calls, failure run) from a shared store.
_NO_REMOTE: Final = (0, 0, 0, 0)

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


class CircuitState(enum.StrEnum):
    """The states of a `CircuitBreaker` (a `str` enum: ``CircuitState.OPEN == "open"``).

    Example:
        >>> CircuitState.HALF_OPEN.value
        'half_open'
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_HALF_OPEN: Final = CircuitState.HALF_OPEN
_FORCED_OPEN: Final = CircuitState.FORCED_OPEN
_DISABLED: Final = CircuitState.DISABLED


@dataclass(frozen=True, slots=True)
class BreakerMetrics(Mapping[str, Any]):
    """A snapshot of a breaker's state and window, readable as attributes or as a mapping.

    Example:
        >>> from resilience import CircuitBreaker
        >>> m = CircuitBreaker("doc-metrics").metrics()
        >>> m.state, m["calls"], dict(m)["failure_rate"]
        (<CircuitState.CLOSED: 'closed'>, 0, 0.0)
    """

    name: str
    state: CircuitState
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    consecutive_failures: int
    half_open_in_flight: int
    retry_after: float | None

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (the state as its string)."""
        data = dict(self)
        data["state"] = self.state.value
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """The validated settings of a `CircuitBreaker` (see its docstring for each one).

    Example:
        >>> from resilience import CircuitBreaker
        >>> config = CircuitBreaker("doc-config", failure_rate=0.25, window=20).config
        >>> config.failure_rate, config.window, config.open_duration
        (0.25, 20, 30.0)
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
    open_backoff: OpenDuration | None = None
    half_open_calls: int = DEFAULT_HALF_OPEN_CALLS
    failure_on: object = Exception
    ignore: tuple[type[BaseException], ...] = ()

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
        """Check every setting; raise `ConfigError` naming the first bad one."""
        _validate.exception_filter("failure_on", failure_on)
        longest_open, open_backoff = _open_strategy(open_duration)
        return cls(
            failure_rate=_validate.rate("failure_rate", failure_rate),
            consecutive_failures=_validate.integer(
                "consecutive_failures",
                consecutive_failures,
                allow_none=True,
                maximum=_validate.MAX_WINDOW,
            ),
            failure_rate_explicit=failure_rate is not _UNSET_FAILURE_RATE,
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


class CircuitBreaker:
    """Stop calling a dependency that keeps failing; let a few probes test its recovery.

    Args:
        name: unique key in the process-wide registry, used in logs, metrics and errors.
        failure_rate: open when failures / calls in the window reach this, in (0, 1].
        consecutive_failures: open after this many failures in a row instead of a rate; with
            ``failure_rate`` also given, open on whichever comes first.
        window: count window: the last N calls.
        window_seconds: time window: the calls of the last N seconds (replaces ``window``).
        minimum_calls: no rate decision before the window holds this many calls.
        slow_call_duration: calls taking at least this long count as slow.
        slow_call_rate: open when slow calls / calls reach this, in (0, 1].
        open_duration: seconds OPEN before probes are let through (HALF_OPEN); or a
            strategy called with the number of consecutive openings, so that the OPEN time
            grows each time (``backoff.exponential(30, 300, jitter=False)``: 30 s, 60 s,
            120 s...), back to the first step once the breaker closes.
        half_open_calls: probes allowed at once in HALF_OPEN, judged together: by the failure
            rate, or (``consecutive_failures`` alone) reopening if any failed.
        failure_on: exception types, or a predicate ``exc -> bool``: what counts as a failure.
        ignore: exception types that count as neither success nor failure (wins over
            ``failure_on``).
        clock: monotonic clock, seconds (inject a `resilience.testing.FakeClock` in tests).
        store: where the state lives: None (this process), or a `resilience.stores.RedisStore`
            to share it with every process using the same name and Redis.

    Example:
        >>> from resilience import CircuitBreaker, CircuitOpenError
        >>> from resilience.testing import FakeClock
        >>> clock = FakeClock()
        >>> breaker = CircuitBreaker("doc-breaker", consecutive_failures=2,
        ...                          open_duration=10, clock=clock)
        >>> @breaker
        ... def fetch() -> str:
        ...     raise ConnectionError("down")
        >>> for _ in range(2):
        ...     try:
        ...         fetch()
        ...     except ConnectionError:
        ...         pass
        >>> breaker.state
        <CircuitState.OPEN: 'open'>
        >>> try:
        ...     fetch()
        ... except CircuitOpenError as exc:
        ...     print(exc.retry_after)
        10.0
        >>> clock.advance(10)
        >>> breaker.state
        <CircuitState.HALF_OPEN: 'half_open'>
    """

    __slots__ = (
        "__weakref__",
        "_binding",
        "_clock",
        "_config",
        "_consecutive",
        "_consecutive_limit",
        "_decorated",
        "_failure_on",
        "_failure_rate",
        "_fast_ok",
        "_gen",
        "_half_open_calls",
        "_ignore",
        "_listeners",
        "_lock",
        "_minimum_calls",
        "_name",
        "_next_probe",
        "_open_backoff",
        "_open_duration",
        "_open_for",
        "_open_until",
        "_openings",
        "_probe_failures",
        "_probe_run",
        "_probe_slow",
        "_probes",
        "_probes_done",
        "_rate_trips",
        "_remote",
        "_reopened",
        "_ring_append",
        "_slow_call_duration",
        "_slow_call_rate",
        "_state",
        "_store",
        "_time_window",
        "_window",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_rate: float = _UNSET_FAILURE_RATE,
        consecutive_failures: int | None = None,
        window: int = DEFAULT_WINDOW,
        window_seconds: _validate.Duration | None = None,
        minimum_calls: int = DEFAULT_MINIMUM_CALLS,
        slow_call_duration: _validate.Duration | None = None,
        slow_call_rate: float = DEFAULT_SLOW_CALL_RATE,
        open_duration: _validate.Duration | OpenDuration = DEFAULT_OPEN_DURATION,
        half_open_calls: int = DEFAULT_HALF_OPEN_CALLS,
        failure_on: _validate.ExceptionFilter = Exception,
        ignore: _validate.ExceptionTypes = (),
        clock: _validate.Clock = time.monotonic,
        store: BreakerStore | None = None,
    ) -> None:
        self._name: str = _validate.required_name("name", name)
        if store is not None and not callable(getattr(store, "bind", None)):
            msg = f"store must be a resilience.stores store or None, got {store!r}"
            raise ConfigError(msg)
        config = BreakerConfig.validated(
            failure_rate=failure_rate,
            consecutive_failures=consecutive_failures,
            window=window,
            window_seconds=window_seconds,
            minimum_calls=minimum_calls,
            slow_call_duration=slow_call_duration,
            slow_call_rate=slow_call_rate,
            open_duration=open_duration,
            half_open_calls=half_open_calls,
            failure_on=failure_on,
            ignore=ignore,
        )
        self._clock = _validate.clock("clock", clock)
        self._init_from(config)
        self._listeners: tuple[Listener, ...] = ()
        _registry.register(self)
        self._bind(store)

    def _bind(self, store: BreakerStore | None) -> None:
        self._store: BreakerStore | None = store
        # Without a store (or with InMemoryStore) there is no binding and no extra work.
        self._binding: BreakerBinding | None = None if store is None else store.bind(self)

    def _init_from(self, config: BreakerConfig) -> None:
        self._config = config
        self._failure_rate = config.failure_rate
        self._consecutive_limit = config.consecutive_failures
        # The rate trips the breaker unless consecutive_failures replaces it.
        self._rate_trips = config.consecutive_failures is None or config.failure_rate_explicit
        self._slow_call_duration = (
            math.inf if config.slow_call_duration is None else config.slow_call_duration
        )
        self._slow_call_rate = config.slow_call_rate
        self._open_duration = config.open_duration
        self._open_backoff = config.open_backoff
        self._openings = 0
        # This opening's duration (a strategy's current step): also how long a probe may
        # hold its slot.
        self._open_for = config.open_duration
        self._half_open_calls = config.half_open_calls
        self._failure_on = _validate.exception_filter("failure_on", config.failure_on)
        self._ignore = config.ignore
        self._window: CountWindow | TimeWindow
        self._time_window: TimeWindow | None = None
        if config.window_seconds is not None:
            self._window = self._time_window = TimeWindow(config.window_seconds)
            self._minimum_calls = config.minimum_calls
        else:
            # Keeps enough outcomes to see a run of `consecutive_failures` too.
            self._window = CountWindow(config.window, keep=config.consecutive_failures or 0)
            # A count window never holds more than `window` calls.
            self._minimum_calls = min(config.minimum_calls, config.window)
        # A count window can record a success with one atomic deque.append, without the
        # lock (while `_fast_ok`). Time windows take the lock (buckets move with time).
        self._ring_append: Callable[[int], None] | None = (
            self._window.ring.append if isinstance(self._window, CountWindow) else None
        )
        # True while a success cannot trip the breaker (CLOSED, count window, and either
        # minimum_calls reached or nothing bad in the window): then it is recorded lock-free.
        self._fast_ok = self._ring_append is not None
        self._lock = threading.Lock()
        # Set once a function is decorated: from then on `call` marks the calls it guards.
        self._decorated = False
        self._state = _CLOSED
        self._gen = 0
        self._open_until = 0.0
        self._consecutive = 0
        # HALF_OPEN probes in flight: permit -> when it was taken (oldest first).
        self._probes: dict[int, float] = {}
        self._next_probe = _FIRST_PROBE_PERMIT
        self._probes_done = 0
        self._probe_failures = 0
        self._probe_slow = 0
        self._probe_run = 0
        # The probes' numbers (calls, failures, slow calls, failure run) while OPEN after a
        # failed HALF_OPEN round: the window was emptied for the probes, and these are what
        # metrics() shows until the next round (None: OPEN from CLOSED shows the window).
        self._reopened: tuple[int, int, int, int] | None = None
        self._remote = _NO_REMOTE

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """The breaker's name (its key in the registry)."""
        return self._name

    @property
    def config(self) -> BreakerConfig:
        """The validated settings."""
        return self._config

    @property
    def clock(self) -> _validate.Clock:
        """The clock the breaker reads (time is in its seconds)."""
        return self._clock

    @property
    def state(self) -> CircuitState:
        """The current state; OPEN becomes HALF_OPEN here once ``open_duration`` has passed."""
        if self._state is _OPEN:
            event = None
            with self._lock:
                # Another thread may have moved it on since the unlocked read above.
                still_open: bool = self._state is _OPEN
                if still_open and self._clock() >= self._open_until:
                    event = self._to_half_open()
            if event is not None:
                self._emit(event)
        return self._state

    # ------------------------------------------------------------------ permits

    def acquire(self) -> int:
        """Take a permit to call, or raise `CircuitOpenError`.

        Pair every permit with exactly one of `record_success`, `record_failure` or
        `release`. The decorator and `call` do this for you; use it to guard work that is
        not one function call (the httpx transports count 5xx responses this way).
        """
        permit = self._gen
        if self._state is _CLOSED:
            return permit
        return self._acquire_slow()

    def _acquire_slow(self) -> int:
        if self._state is _OPEN:
            # Fail fast without the lock: only time (under the lock, below) or a manual
            # command moves OPEN on, and a stale read just rejects one more call.
            left = self._open_until - self._clock()
            if left > 0.0:
                self._reject(CircuitOpenError(self._name, left))
        event: Event | None = None
        rejection: CircuitOpenError | None = None
        reclaimed = 0
        with self._lock:
            state = self._state
            if state is _CLOSED:
                return self._gen
            if state is _DISABLED:
                return _DISABLED_PERMIT
            if state is _OPEN:
                now = self._clock()
                if now < self._open_until:
                    rejection = CircuitOpenError(self._name, self._open_until - now)
                else:
                    event = self._to_half_open()
                    state = _HALF_OPEN
            if state is _HALF_OPEN:
                now = self._clock()
                reclaimed = self._reclaim_hung_probes(now)
                probes = self._probes
                if len(probes) + self._probes_done < self._half_open_calls:
                    permit = self._next_probe
                    self._next_probe = permit - 1
                    probes[permit] = now
                else:
                    # Every probe slot is taken; one frees when a probe finishes, or when the
                    # oldest has been held for open_duration.
                    rejection = CircuitOpenError(self._name, self._probe_wait(now))
            elif state is _FORCED_OPEN:
                rejection = CircuitOpenError(self._name, None)
        if event is not None:
            self._emit(event)
        # Outside the lock: the fleet-wide probe slot may cost a Redis round trip.
        binding = self._binding
        if binding is not None:
            for _ in range(reclaimed):
                binding.probe_released()
        if (
            rejection is None
            and state is _HALF_OPEN
            and binding is not None
            and not binding.take_probe()
        ):
            self._give_back_probe(permit)
            if self._state is _CLOSED:
                return self._gen  # the fleet closed meanwhile
            rejection = CircuitOpenError(self._name, 0.0)
        if rejection is not None:
            self._reject(rejection)
        return permit

    def _reclaim_hung_probes(self, now: float) -> int:
        """Free the slots of probes held for ``open_duration`` or longer (lock held).

        A probe that hangs (or a permit never given back) would otherwise keep the breaker
        HALF_OPEN, rejecting everything, for ever. Its late outcome is dropped (its permit is
        no longer listed) and the round's verdict waits for the probe that takes its slot.
        Returns how many slots were freed.
        """
        probes = self._probes
        freed = 0
        while probes:
            permit, started = next(iter(probes.items()))
            if now - started < self._open_for:
                break
            del probes[permit]
            freed += 1
        return freed

    def _probe_wait(self, now: float) -> float:
        """Seconds until a HALF_OPEN probe slot frees, at the latest (lock held).

        0.0 while a slot is free, or when every slot has finished and only the (fleet's)
        verdict is awaited.
        """
        probes = self._probes
        if not probes or len(probes) + self._probes_done < self._half_open_calls:
            return 0.0
        oldest = next(iter(probes.values()))
        return max(0.0, oldest + self._open_for - now)

    def _reject(self, rejection: CircuitOpenError) -> NoReturn:
        if wanted(CallRejected.level, self._listeners):
            self._emit(
                CallRejected(
                    breaker=self._name,
                    state=self._state.value,
                    retry_after=rejection.retry_after,
                )
            )
        raise rejection

    def record_success(self, permit: int, duration: float = 0.0) -> None:
        """Record that the call holding *permit* succeeded (slow if *duration* is long)."""
        if permit != self._gen:
            if permit <= _FIRST_PROBE_PERMIT:  # a probe: counted if its slot is still held
                self._record(permit, SLOW if duration >= self._slow_call_duration else SUCCESS)
            return  # disabled, or the state moved on while the call ran
        if duration >= self._slow_call_duration:
            self._record(permit, SLOW)
        elif self._fast_ok and self._ring_append is not None:
            self._ring_append(SUCCESS)
        elif self._time_window is None or not self._time_success(permit, self._time_window):
            self._record(permit, SUCCESS)

    def _time_success(self, permit: int, window: TimeWindow) -> bool:
        """Count a quick success in a time window's newest bucket; False: take the full path.

        The common case (same bucket as the last call, nothing bad in the window) is one
        increment under the lock; anything else (a bucket to roll over, failures that expiry
        could make decisive, a state change) goes through `_record`.
        """
        now = self._clock()
        with self._lock:
            if (
                permit != self._gen
                or self._state is not _CLOSED
                or now >= window._current_end
                or window.failures
                or window.slow_calls
            ):
                return False
            window._bucket_calls[window._current_slot] += 1
            window.calls += 1
            self._consecutive = 0
            return True

    def record_failure(self, permit: int, duration: float = 0.0) -> None:
        """Record that the call holding *permit* failed."""
        if permit != self._gen and permit > _FIRST_PROBE_PERMIT:
            return
        outcome = FAILURE | SLOW if duration >= self._slow_call_duration else FAILURE
        self._record(permit, outcome)

    def release(self, permit: int) -> None:
        """Give back *permit* without recording anything (cancelled or ignored calls)."""
        if permit > _FIRST_PROBE_PERMIT:
            return  # only a probe holds something to give back
        if self._give_back_probe(permit) and self._binding is not None:
            self._binding.probe_released()

    def _give_back_probe(self, permit: int) -> bool:
        with self._lock:
            if self._state is _HALF_OPEN and self._probes.pop(permit, None) is not None:
                return True
        return False

    def classify(self, exc: BaseException) -> bool | None:
        """True if *exc* counts as a failure, False as a success, None as neither.

        Only `Exception` can be a failure: cancellation, `KeyboardInterrupt` and
        `GeneratorExit` count as neither. ``ignore`` wins over ``failure_on``.
        """
        if not isinstance(exc, Exception):
            return None
        if self._ignore and isinstance(exc, self._ignore):
            return None
        try:
            return bool(self._failure_on(exc))
        except Exception:
            _log.exception("failure_on predicate of breaker %r raised", self._name)
            return True

    def record_exception(self, permit: int, exc: BaseException, duration: float = 0.0) -> None:
        """Record the call holding *permit* as its exception *exc* says (see `classify`)."""
        verdict = self.classify(exc)
        if verdict is None:
            self.release(permit)
        elif verdict:
            self.record_failure(permit, duration)
        else:
            self.record_success(permit, duration)

    # ------------------------------------------------------------------ the state machine

    def _record(self, permit: int, outcome: int) -> None:
        event: Event | None = None
        judged_by: BreakerBinding | None = None
        with self._lock:
            state = self._state
            if permit != self._gen and state is not _HALF_OPEN:
                return
            if state is _CLOSED:
                window = self._time_window
                if window is not None:
                    now = self._clock()
                    window.record(outcome, now)
                    self._consecutive = self._consecutive + 1 if outcome & FAILURE else 0
                    # With no failure or slow call in the window, nothing can trip it.
                    if outcome or window.failures or window.slow_calls:
                        event = self._check_closed(now)
                else:
                    self._window.record(outcome)
                    event = self._check_closed(0.0)
            elif state is _HALF_OPEN:
                if self._probes.pop(permit, None) is None:
                    return  # a late outcome: its slot was reclaimed, or from another round
                self._probes_done += 1
                if outcome & FAILURE:
                    self._probe_failures += 1
                    self._probe_run += 1
                else:
                    self._probe_run = 0
                if outcome & SLOW:
                    self._probe_slow += 1
                binding = self._binding
                # A shared store judges the whole fleet's probes; its verdict comes back.
                if binding is None or not binding.probe_done(outcome):
                    event = self._check_half_open()
                else:
                    judged_by = binding
        if event is not None:
            self._emit(event)
        if judged_by is not None:
            judged_by.settle()  # outside the lock: a deciding probe applies its verdict now

    def _check_closed(self, now: float) -> Event | None:
        limit = self._consecutive_limit
        if limit is not None:
            run = self._consecutive_failures() + self._remote[3]
            if run >= limit:
                return self._to_open(f"{run} consecutive failures")
        calls, failures, slow_calls = self._window.counts(now)
        remote = self._remote
        if remote is not _NO_REMOTE:
            calls += remote[0]
            failures += remote[1]
            slow_calls += remote[2]
        if calls < self._minimum_calls:
            # Until minimum_calls is reached, the success that reaches it may trip.
            self._fast_ok = not (failures or slow_calls or self._ring_append is None)
            return None
        if self._rate_trips and failures / calls >= self._failure_rate:
            return self._to_open("failure rate reached the threshold")
        if slow_calls and slow_calls / calls >= self._slow_call_rate:
            return self._to_open("slow-call rate reached the threshold")
        self._fast_ok = self._ring_append is not None
        return None

    def _check_half_open(self) -> Event | None:
        planned = self._half_open_calls
        if self._probes_done < planned:
            return None  # the verdict comes once every probe has finished (API.md)
        failures = self._probe_failures
        # Probes are judged by the rate whenever the rate trips the breaker (both triggers):
        # one unlucky probe of several must not reopen a host that mostly works.
        if not self._rate_trips:
            if failures:
                return self._to_open("a probe failed")
        elif failures / planned >= self._failure_rate:
            return self._to_open("probe failure rate reached the threshold")
        if self._probe_slow / planned >= self._slow_call_rate:
            return self._to_open("probe slow-call rate reached the threshold")
        return self._transition(_CLOSED, "the probes succeeded")

    def _consecutive_failures(self) -> int:
        if self._state is not _CLOSED:
            if self._state is _HALF_OPEN:
                return self._probe_run
            if self._reopened is not None and self._state is _OPEN:
                return self._reopened[3]
        window = self._window
        if isinstance(window, CountWindow):
            return window.trailing_failures()
        return self._consecutive

    def _snapshot_numbers(self, now: float) -> tuple[int, int, int, float, float]:
        reopened = self._reopened
        if self._state is _HALF_OPEN:
            calls, failures, slow = self._probes_done, self._probe_failures, self._probe_slow
        elif reopened is not None and self._state is _OPEN:
            calls, failures, slow = reopened[0], reopened[1], reopened[2]
        else:
            calls, failures, slow = self._window.counts(now)
            remote = self._remote
            if remote is not _NO_REMOTE and self._state is _CLOSED:
                calls += remote[0]
                failures += remote[1]
                slow += remote[2]
        return (
            calls,
            failures,
            slow,
            failures / calls if calls else 0.0,
            slow / calls if calls else 0.0,
        )

    def _transition(
        self, new: CircuitState, reason: str, *, remote: bool = False, manual: bool = False
    ) -> CircuitStateChanged:
        """Move to *new* (lock held); returns the event to emit once the lock is released.

        A local transition (not *remote*, i.e. not adopted from the store) goes to the store.
        """
        calls, failures, slow, failure_rate, slow_rate = self._snapshot_numbers(self._clock())
        old = self._state
        self._reopened = (
            (calls, failures, slow, self._probe_run) if old is _HALF_OPEN and new is _OPEN else None
        )
        self._state = new
        self._fast_ok = new is _CLOSED and self._ring_append is not None
        self._gen += 1
        self._consecutive = 0
        self._probes.clear()
        self._probes_done = 0
        self._probe_failures = self._probe_slow = self._probe_run = 0
        if new is _CLOSED:
            self._openings = 0  # a strategy's open_duration starts again from its first step
        if new is _CLOSED or new is _HALF_OPEN:
            self._window.clear()
            self._remote = _NO_REMOTE
        if self._binding is not None and not remote:
            self._binding.transition(new.value, manual)
        return CircuitStateChanged(
            breaker=self._name,
            old_state=old.value,
            new_state=new.value,
            reason=reason,
            calls=calls,
            failures=failures,
            slow_calls=slow,
            failure_rate=failure_rate,
            slow_call_rate=slow_rate,
        )

    def _to_open(self, reason: str) -> CircuitStateChanged:
        self._openings += 1
        self._open_until = self._clock() + self._next_open_duration()
        return self._transition(_OPEN, reason)

    def _next_open_duration(self) -> float:
        """Seconds to stay OPEN this time (lock held): fixed, or the strategy's next step."""
        strategy = self._open_backoff
        if strategy is None:
            return self._open_duration
        step = self._strategy_step(strategy)
        self._open_for = step or self._open_duration  # a probe always gets some time
        return step

    def _strategy_step(self, strategy: OpenDuration) -> float:
        """The strategy's step for this opening, in [0, open_duration's longest]."""
        try:
            if isinstance(strategy, Backoff):
                seconds = float(strategy.compute(self._openings))
            else:
                seconds = float(strategy(self._openings))
        except Exception:
            # A broken strategy must not leave the breaker half-way into OPEN.
            _log.exception("open_duration strategy of breaker %r raised", self._name)
            seconds = DEFAULT_OPEN_DURATION
        if not seconds > 0.0:  # NaN and negatives
            return 0.0
        return seconds if seconds < self._open_duration else self._open_duration

    def _to_half_open(self) -> CircuitStateChanged:
        return self._transition(_HALF_OPEN, "open_duration elapsed")

    def _manual(self, new: CircuitState, reason: str) -> None:
        with self._lock:
            event = self._transition(new, reason, manual=True)
        self._emit(event)

    # ------------------------------------------------------------------ the store seam
    # Called by a shared store's threads (see resilience/_redis_store.py), never per call.

    def _store_snapshot(self) -> tuple[int, int, int, int]:
        """This process's own window: (calls, failures, slow calls, failure run)."""
        with self._lock:
            if self._state is not _CLOSED:
                return _NO_REMOTE
            calls, failures, slow = self._window.counts(self._clock())
            return calls, failures, slow, self._consecutive_failures()

    def _store_counts(self, remote: tuple[int, int, int, int]) -> None:
        """Take the other processes' totals; trip if the fleet's window says so."""
        event = None
        with self._lock:
            self._remote = _NO_REMOTE if remote == _NO_REMOTE else remote
            if self._state is _CLOSED and (remote[1] or remote[2] or remote[3]):
                event = self._check_closed(self._clock())
        if event is not None:
            self._emit(event)

    def _store_apply(self, state: str, remaining: float, reason: str) -> None:
        """Adopt the fleet's newer *state* (OPEN for *remaining* seconds) without sharing it."""
        new = CircuitState(state)
        event = None
        with self._lock:
            if new is _OPEN:
                self._open_until = self._clock() + max(0.0, remaining)
                if self._state is not _OPEN:
                    event = self._transition(_OPEN, reason, remote=True)
            else:
                # CLOSED -> CLOSED too: the fleet moved on, so this window is stale.
                event = self._transition(new, reason, remote=True)
        if event is not None and event.old_state != event.new_state:
            self._emit(event)

    def _store_local_verdict(self) -> None:
        """The store stopped judging probes (Redis lost): judge the finished ones here."""
        event = None
        with self._lock:
            if self._state is _HALF_OPEN and self._probes_done:
                event = self._check_half_open()
        if event is not None:
            self._emit(event)

    def _emit(self, event: Event) -> None:
        emit(event, self._listeners)

    # ------------------------------------------------------------------ manual control

    def force_open(self) -> None:
        """Reject every call (``retry_after=None``) until `reset()`.

        Example:
            >>> from resilience import CircuitBreaker
            >>> b = CircuitBreaker("doc-force")
            >>> b.force_open(); b.state
            <CircuitState.FORCED_OPEN: 'forced_open'>
        """
        self._manual(_FORCED_OPEN, "forced open")

    def disable(self) -> None:
        """Let every call through and record nothing, until `reset()`."""
        self._manual(_DISABLED, "disabled")

    def reset(self) -> None:
        """Back to CLOSED with an empty window."""
        self._manual(_CLOSED, "reset")

    # ------------------------------------------------------------------ reading

    def metrics(self) -> BreakerMetrics:
        """A consistent snapshot of the state and the window.

        Example:
            >>> from resilience import CircuitBreaker
            >>> CircuitBreaker("doc-m").metrics().failure_rate
            0.0
        """
        self.state  # noqa: B018  # reading it moves OPEN -> HALF_OPEN when due
        with self._lock:
            now = self._clock()
            calls, failures, slow, failure_rate, slow_rate = self._snapshot_numbers(now)
            return BreakerMetrics(
                name=self._name,
                state=self._state,
                calls=calls,
                failures=failures,
                slow_calls=slow,
                failure_rate=failure_rate,
                slow_call_rate=slow_rate,
                consecutive_failures=self._consecutive_failures(),
                half_open_in_flight=len(self._probes),
                retry_after=self._retry_after(now),
            )

    def _retry_after(self, now: float) -> float | None:
        state = self._state
        if state is _OPEN:
            return max(0.0, self._open_until - now)
        if state is _FORCED_OPEN:
            return None
        if state is _HALF_OPEN:
            return self._probe_wait(now)
        return 0.0

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: Listener) -> None:
        """Call *listener* with every event of this breaker (after the lock is released).

        A listener that raises is logged and never breaks the call.
        """
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling *listener*; unknown listeners are ignored."""
        # By equality: `seen.append` is a new bound-method object each time it is read.
        self._listeners = tuple(x for x in self._listeners if x != listener)

    def clone(self, name: str) -> CircuitBreaker:
        """A new breaker with the same settings, clock and listeners under another *name*.

        The httpx transports use this to make one breaker per host from a template.
        """
        twin = CircuitBreaker.__new__(CircuitBreaker)
        twin._name = _validate.required_name("name", name)
        twin._clock = self._clock
        twin._init_from(self._config)
        twin._listeners = self._listeners
        _registry.register(twin)
        twin._bind(self._store)
        return twin

    # ------------------------------------------------------------------ drivers
    # One call, one outcome: a layer of this breaker that finds the breaker already guarding
    # the current call (``breaker.call(decorated)``, a Policy around a function the breaker
    # decorates) passes straight through, so the call takes one permit and is recorded once.
    # `call`, `call_async`, generator iterations and every call made outside CLOSED mark the
    # call (a context variable); the decorator's CLOSED fast path only reads the mark, because
    # setting it would double the decorator's cost. A decorator stacked over a function the
    # same breaker already decorates is found when decorating, and marks its calls. `call`
    # marks only once the breaker decorates something: until then nothing can meet it inside.

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        If *fn* returns a generator, the call is its iteration (see the decorator).

        Example:
            >>> from resilience import CircuitBreaker
            >>> CircuitBreaker("doc-call").call(max, 1, 2)
            2
        """
        outer = _GUARDING.get()
        if outer is not None and _guarded_by(outer, self):
            return fn(*args, **kwargs)
        permit = self._gen
        if self._state is not _CLOSED:
            permit = self._acquire_slow()
        timed = self._slow_call_duration != math.inf
        start = self._clock() if timed else 0.0
        # Only a breaker that decorates functions can meet itself inside the call.
        frame = [self, outer] if self._decorated else None
        token = None if frame is None else _GUARDING.set(frame)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.record_exception(permit, exc, self._clock() - start if timed else 0.0)
            raise
        finally:
            if frame is not None and token is not None:
                frame[0] = None
                _GUARDING.reset(token)
        kind = type(result)
        if kind is GeneratorType or kind is AsyncGeneratorType:
            # Creating a generator did none of its work: its iteration is the call.
            self.release(permit)
            return cast(R, self._guard_iteration(result))
        self.record_success(permit, self._clock() - start if timed else 0.0)
        return result

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker.

        Example:
            >>> import asyncio
            >>> from resilience import CircuitBreaker
            >>> async def ok() -> int:
            ...     return 1
            >>> asyncio.run(CircuitBreaker("doc-acall").call_async(ok))
            1
        """
        outer = _GUARDING.get()
        if outer is not None and _guarded_by(outer, self):
            return await fn(*args, **kwargs)
        permit = self._gen
        if self._state is not _CLOSED:
            permit = self._acquire_slow()
        timed = self._slow_call_duration != math.inf
        start = self._clock() if timed else 0.0
        frame = [self, outer] if self._decorated else None
        token = None if frame is None else _GUARDING.set(frame)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self.record_exception(permit, exc, self._clock() - start if timed else 0.0)
            raise
        finally:
            if frame is not None and token is not None:
                frame[0] = None
                _GUARDING.reset(token)
        self.record_success(permit, self._clock() - start if timed else 0.0)
        return result

    def _guard_iteration(self, items: Any) -> Any:
        """Guard the iteration of a generator already created (see `call`)."""
        if isinstance(items, AsyncGeneratorType):
            return wrap_async_generator(lambda: items, lambda: _AsyncIteration(self))()
        return wrap_generator(lambda: items, lambda: _Iteration(self))()

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a function, an async function or a (sync or async) generator function.

        Every call goes through the breaker. For a generator function the call is the whole
        iteration: the permit is taken at the first ``next()`` (an open breaker rejects
        there), and the outcome is recorded when the generator finishes (success) or raises
        (as `record_exception` says); a generator closed before its end (the consumer
        stopped early) records nothing and gives its permit back. Merely creating a
        generator records nothing. Slow-call timing covers the whole iteration, the
        consumer's time between items included.

        Decorating a function this breaker already decorates (directly, or under other
        layers, as a `Policy` does) guards each call once: one permit, one outcome.
        """
        self._decorated = True
        if inspect.isasyncgenfunction(fn):
            return wrap_async_generator(fn, lambda: _AsyncIteration(self))
        if inspect.isgeneratorfunction(fn):
            return wrap_generator(fn, lambda: _Iteration(self))
        if _encloses(fn, self):
            # An outer layer over one of ours: mark its calls so the inner one passes through.
            wrapped = self._wrap_outer(fn)
        elif inspect.iscoroutinefunction(fn):
            wrapped = self._wrap_async(fn)
        else:
            wrapped = self._wrap_sync(fn)
        setattr(wrapped, _MARK, (*getattr(fn, _MARK, ()), self))
        return wrapped

    def _wrap_outer(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        if inspect.iscoroutinefunction(fn):
            call_async = self.call_async
            afn = fn

            @wraps(fn)
            async def async_outer(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await call_async(afn, *args, **kwargs)

            return async_outer
        call = self.call

        @wraps(fn)
        def outer(*args: P.args, **kwargs: P.kwargs) -> Any:
            return call(fn, *args, **kwargs)

        return outer

    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        breaker = self
        clock = self._clock
        call = self.call
        record_success = self.record_success
        record_exception = self.record_exception
        guarding = _GUARDING.get

        if self._slow_call_duration != math.inf:

            @wraps(fn)
            def timed(*args: P.args, **kwargs: P.kwargs) -> R:
                outer = guarding()
                if outer is not None and _guarded_by(outer, breaker):
                    return fn(*args, **kwargs)
                permit = breaker._gen
                if breaker._state is not _CLOSED:
                    return call(fn, *args, **kwargs)
                start = clock()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    record_exception(permit, exc, clock() - start)
                    raise
                record_success(permit, clock() - start)
                return result

            return timed

        ring_append = self._ring_append
        window = self._time_window
        if window is not None:
            time_success = self._time_success

            @wraps(fn)
            def windowed(*args: P.args, **kwargs: P.kwargs) -> R:
                outer = guarding()
                if outer is not None and _guarded_by(outer, breaker):
                    return fn(*args, **kwargs)
                permit = breaker._gen
                if breaker._state is not _CLOSED:
                    return call(fn, *args, **kwargs)
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    record_exception(permit, exc)
                    raise
                if not time_success(permit, window):
                    record_success(permit)
                return result

            return windowed
        assert ring_append is not None  # a breaker has a count window or a time window

        # The hot path: record_success inlined for a count window.
        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            outer = guarding()
            if outer is not None and _guarded_by(outer, breaker):
                return fn(*args, **kwargs)
            permit = breaker._gen
            if breaker._state is not _CLOSED:
                return call(fn, *args, **kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                record_exception(permit, exc)
                raise
            if permit == breaker._gen and breaker._fast_ok:
                ring_append(SUCCESS)
            else:
                record_success(permit)
            return result

        return wrapper

    def _wrap_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        breaker = self
        clock = self._clock
        call_async = self.call_async
        record_success = self.record_success
        record_exception = self.record_exception
        guarding = _GUARDING.get
        timed = self._slow_call_duration != math.inf

        @wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            outer = guarding()
            if outer is not None and _guarded_by(outer, breaker):
                return await fn(*args, **kwargs)
            permit = breaker._gen
            if breaker._state is not _CLOSED:
                return await call_async(fn, *args, **kwargs)
            start = clock() if timed else 0.0
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                record_exception(permit, exc, clock() - start if timed else 0.0)
                raise
            record_success(permit, clock() - start if timed else 0.0)
            return result

        return wrapper

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} state={self._state.value}>"


# ---------------------------------------------------------------------- one call, one outcome

_MARK: Final = "_resilience_breakers"  # on our wrappers: the breakers guarding inside


# A guarded call in flight: ``[breaker, enclosing frame]`` (a list: the cheapest mutable
# object to make). When the call ends its breaker slot becomes None, because the context is
# copied into tasks spawned during the call: a task that outlives the call must not count as
# guarded by it.
_Frame = list[Any]

_GUARDING: Final[contextvars.ContextVar[_Frame | None]] = contextvars.ContextVar(
    "resilience_breaker_guarding", default=None
)


def _guarded_by(frame: _Frame | None, breaker: CircuitBreaker) -> bool:
    """True when *breaker* guards the call running in this context (*frame* is the newest)."""
    while frame is not None:
        if frame[0] is breaker:
            return True
        frame = frame[1]
    return False


def _encloses(fn: object, breaker: CircuitBreaker) -> bool:
    """True when *fn* is (or wraps, through ``__wrapped__``) a function *breaker* decorates."""
    for _ in range(100):  # bounded: a __wrapped__ cycle must not hang decoration
        if breaker in getattr(fn, _MARK, ()):
            return True
        fn = getattr(fn, "__wrapped__", None)
        if fn is None:
            return False
    return False


class _IterationBase:
    """One iteration of a generator the breaker guards (see `CircuitBreaker.__call__`)."""

    __slots__ = ("_breaker", "_frame", "_permit", "_started", "_token")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._permit: int | None = None  # None: another layer of the breaker guards it
        self._started = 0.0
        self._frame: _Frame | None = None
        self._token: contextvars.Token[_Frame | None] | None = None

    def _begin(self) -> None:
        breaker = self._breaker
        if _guarded_by(_GUARDING.get(), breaker):
            return
        self._permit = breaker.acquire()
        self._started = breaker._clock()

    def _resume(self) -> None:
        if self._permit is not None:
            self._frame = [self._breaker, _GUARDING.get()]
            self._token = _GUARDING.set(self._frame)

    def _pause(self) -> None:
        if self._token is not None and self._frame is not None:
            self._frame[0] = None
            _GUARDING.reset(self._token)
            self._token = self._frame = None

    def finish(self, error: BaseException | None) -> None:
        """Record the iteration's outcome (a closed generator gives its permit back)."""
        permit = self._permit
        if permit is None:
            return
        breaker = self._breaker
        duration = breaker._clock() - self._started
        if error is None:
            breaker.record_success(permit, duration)
        else:
            breaker.record_exception(permit, error, duration)


class _Iteration(_IterationBase):
    __slots__ = ()

    def start(self) -> None:
        self._begin()

    def __enter__(self) -> None:
        self._resume()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pause()


class _AsyncIteration(_IterationBase):
    __slots__ = ()

    async def start(self) -> None:
        self._begin()

    async def __aenter__(self) -> None:
        self._resume()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pause()


public("resilience", BreakerConfig, BreakerMetrics, CircuitBreaker, CircuitState)
