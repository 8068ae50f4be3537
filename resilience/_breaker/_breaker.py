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

import enum
import functools
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn, ParamSpec, TypeVar, overload

from .. import _validate
from .._errors import CircuitOpenError, ConfigError
from .._observe._events import CallRejected, CircuitStateChanged, Event, Listener, emit, wanted
from ..backoff import Backoff
from . import _registry
from ._windows import FAILURE, SLOW, SUCCESS, CountWindow, TimeWindow

if TYPE_CHECKING:
    from ..stores import BreakerBinding, BreakerStore

__all__ = ["BreakerMetrics", "CircuitBreaker", "CircuitState"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_FAILURE_RATE: Final = 0.5
DEFAULT_WINDOW: Final = 100
DEFAULT_MINIMUM_CALLS: Final = 10
DEFAULT_SLOW_CALL_RATE: Final = 1.0
DEFAULT_OPEN_DURATION: Final = 30.0
DEFAULT_HALF_OPEN_CALLS: Final = 1

_DISABLED_PERMIT: Final = -1  # never equal to a generation: its outcome is never recorded
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
    """The validated settings of a `CircuitBreaker` (see its docstring for each one)."""

    failure_rate: float = DEFAULT_FAILURE_RATE
    consecutive_failures: int | None = None
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
        consecutive_failures: open after this many failures in a row instead of a rate.
        window: count window: the last N calls.
        window_seconds: time window: the calls of the last N seconds (replaces ``window``).
        minimum_calls: no rate decision before the window holds this many calls.
        slow_call_duration: calls taking at least this long count as slow.
        slow_call_rate: open when slow calls / calls reach this, in (0, 1].
        open_duration: seconds OPEN before probes are let through (HALF_OPEN); or a
            strategy called with the number of consecutive openings, so that the OPEN time
            grows each time (``backoff.exponential(30, 300, jitter=False)``: 30 s, 60 s,
            120 s...), back to the first step once the breaker closes.
        half_open_calls: probes allowed at once in HALF_OPEN, judged together.
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
        "_open_backoff",
        "_open_duration",
        "_open_until",
        "_openings",
        "_probe_failures",
        "_probe_slow",
        "_probes_done",
        "_probes_in_flight",
        "_remote",
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
        failure_rate: float = DEFAULT_FAILURE_RATE,
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
        self._slow_call_duration = (
            math.inf if config.slow_call_duration is None else config.slow_call_duration
        )
        self._slow_call_rate = config.slow_call_rate
        self._open_duration = config.open_duration
        self._open_backoff = config.open_backoff
        self._openings = 0
        self._half_open_calls = config.half_open_calls
        self._failure_on = _validate.exception_filter("failure_on", config.failure_on)
        self._ignore = config.ignore
        self._window: CountWindow | TimeWindow
        self._time_window: TimeWindow | None = None
        if config.window_seconds is not None:
            self._window = self._time_window = TimeWindow(config.window_seconds)
            self._minimum_calls = config.minimum_calls
        else:
            # Large enough to see a run of `consecutive_failures` too.
            self._window = CountWindow(max(config.window, config.consecutive_failures or 0))
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
        self._state = _CLOSED
        self._gen = 0
        self._open_until = 0.0
        self._consecutive = 0
        self._probes_in_flight = 0
        self._probes_done = 0
        self._probe_failures = 0
        self._probe_slow = 0
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
                if self._probes_in_flight + self._probes_done < self._half_open_calls:
                    self._probes_in_flight += 1
                    permit = self._gen
                else:
                    # Every probe slot is taken; a slot frees when a probe finishes.
                    rejection = CircuitOpenError(self._name, 0.0)
            elif state is _FORCED_OPEN:
                rejection = CircuitOpenError(self._name, None)
        if event is not None:
            self._emit(event)
        # Outside the lock: the fleet-wide probe slot may cost a Redis round trip.
        binding = self._binding
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
        if permit != self._gen:
            return
        outcome = FAILURE | SLOW if duration >= self._slow_call_duration else FAILURE
        self._record(permit, outcome)

    def release(self, permit: int) -> None:
        """Give back *permit* without recording anything (cancelled or ignored calls)."""
        if permit != self._gen or self._state is not _HALF_OPEN:
            return
        if self._give_back_probe(permit) and self._binding is not None:
            self._binding.probe_released()

    def _give_back_probe(self, permit: int) -> bool:
        with self._lock:
            if permit == self._gen and self._state is _HALF_OPEN:
                self._probes_in_flight -= 1
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
            if permit != self._gen:
                return
            state = self._state
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
                self._probes_in_flight -= 1
                self._probes_done += 1
                if outcome & FAILURE:
                    self._probe_failures += 1
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
        if limit is None and failures / calls >= self._failure_rate:
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
        if self._consecutive_limit is not None:
            if failures:
                return self._to_open("a probe failed")
        elif failures / planned >= self._failure_rate:
            return self._to_open("probe failure rate reached the threshold")
        if self._probe_slow / planned >= self._slow_call_rate:
            return self._to_open("probe slow-call rate reached the threshold")
        return self._transition(_CLOSED, "the probes succeeded")

    def _consecutive_failures(self) -> int:
        window = self._window
        if isinstance(window, CountWindow):
            return window.trailing_failures()
        return self._consecutive

    def _snapshot_numbers(self, now: float) -> tuple[int, int, int, float, float]:
        if self._state is _HALF_OPEN:
            calls, failures, slow = self._probes_done, self._probe_failures, self._probe_slow
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
        self._state = new
        self._fast_ok = new is _CLOSED and self._ring_append is not None
        self._gen += 1
        self._consecutive = 0
        self._probes_in_flight = self._probes_done = 0
        self._probe_failures = self._probe_slow = 0
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
                half_open_in_flight=self._probes_in_flight,
                retry_after=self._retry_after(now),
            )

    def _retry_after(self, now: float) -> float | None:
        state = self._state
        if state is _OPEN:
            return max(0.0, self._open_until - now)
        if state is _FORCED_OPEN:
            return None
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

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        Example:
            >>> from resilience import CircuitBreaker
            >>> CircuitBreaker("doc-call").call(max, 1, 2)
            2
        """
        permit = self._gen
        if self._state is not _CLOSED:
            permit = self._acquire_slow()
        timed = self._slow_call_duration != math.inf
        start = self._clock() if timed else 0.0
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.record_exception(permit, exc, self._clock() - start if timed else 0.0)
            raise
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
        permit = self._gen
        if self._state is not _CLOSED:
            permit = self._acquire_slow()
        timed = self._slow_call_duration != math.inf
        start = self._clock() if timed else 0.0
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self.record_exception(permit, exc, self._clock() - start if timed else 0.0)
            raise
        self.record_success(permit, self._clock() - start if timed else 0.0)
        return result

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a sync or async function so that every call goes through the breaker."""
        if inspect.iscoroutinefunction(fn):
            return self._wrap_async(fn)
        return self._wrap_sync(fn)

    def _wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        breaker = self
        clock = self._clock
        acquire_slow = self._acquire_slow
        record_success = self.record_success
        record_exception = self.record_exception

        if self._slow_call_duration != math.inf:

            @functools.wraps(fn)
            def timed(*args: P.args, **kwargs: P.kwargs) -> R:
                permit = breaker._gen
                if breaker._state is not _CLOSED:
                    permit = acquire_slow()
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

            @functools.wraps(fn)
            def windowed(*args: P.args, **kwargs: P.kwargs) -> R:
                permit = breaker._gen
                if breaker._state is not _CLOSED:
                    permit = acquire_slow()
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
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            permit = breaker._gen
            if breaker._state is not _CLOSED:
                permit = acquire_slow()
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
        acquire_slow = self._acquire_slow
        record_success = self.record_success
        record_exception = self.record_exception
        timed = self._slow_call_duration != math.inf

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            permit = breaker._gen
            if breaker._state is not _CLOSED:
                permit = acquire_slow()
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
