"""`CircuitBreaker`: the public face of a breaker.

It holds the settings (`BreakerConfig`), the state machine (`BreakerMachine`: the lock, the
window, permits, transitions and verdicts) and the link to a store, and offers the ways to use
them: the decorator and `call`/`call_async` (the drivers in `_drivers`), the permit API for
work that is not one function call, manual control, listeners, metrics and `clone`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from types import AsyncGeneratorType, GeneratorType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from .. import _validate
from .._errors import ConfigError
from .._observe._events import Listener
from .._public import public
from . import _registry
from ._config import (
    DEFAULT_HALF_OPEN_CALLS,
    DEFAULT_MINIMUM_CALLS,
    DEFAULT_OPEN_DURATION,
    DEFAULT_SLOW_CALL_RATE,
    DEFAULT_WINDOW,
    UNSET_FAILURE_RATE,
    BreakerConfig,
    OpenDuration,
)
from ._drivers import GUARDING, decorate, guard_iteration, guarded_by
from ._machine import BreakerMachine
from ._state import CLOSED, DISABLED, FORCED_OPEN, BreakerMetrics, CircuitState

if TYPE_CHECKING:
    from .._stores._protocol import BreakerStore

__all__ = ["BreakerConfig", "BreakerMetrics", "CircuitBreaker", "CircuitState", "machine_of"]

P = ParamSpec("P")
R = TypeVar("R")


class CircuitBreaker:
    """Stop calling a dependency that keeps failing; let a few probes test its recovery.

    Args:
        name: its name in the process-wide registry (`resilience.breakers`), logs, metrics
            and errors.
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

    __slots__ = ("__weakref__", "_decorated", "_machine", "_store")

    def __init__(
        self,
        name: str,
        *,
        failure_rate: float = UNSET_FAILURE_RATE,
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
        checked_name = _validate.required_name("name", name)
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
        self._setup(checked_name, config, _validate.clock("clock", clock), store, ())

    def _setup(
        self,
        name: str,
        config: BreakerConfig,
        clock: _validate.Clock,
        store: BreakerStore | None,
        listeners: tuple[Listener, ...],
    ) -> None:
        self._machine = BreakerMachine(name, config, clock)
        self._machine.listeners = listeners
        # Set once a function is decorated: from then on `call` marks the calls it guards.
        self._decorated = False
        self._store = store
        self._machine.bind(store)  # first: a store that refuses it leaves nothing listed
        _registry.register(self)

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self._machine.name

    @property
    def config(self) -> BreakerConfig:
        """The validated settings."""
        return self._machine.config

    @property
    def clock(self) -> _validate.Clock:
        """The clock the breaker reads (time is in its seconds)."""
        return self._machine.clock

    @property
    def state(self) -> CircuitState:
        """The current state; OPEN becomes HALF_OPEN here once ``open_duration`` has passed."""
        return self._machine.current_state()

    # ------------------------------------------------------------------ permits

    def acquire(self) -> int:
        """Take a permit to call, or raise `CircuitOpenError`.

        Pair every permit with exactly one of `record_success`, `record_failure`,
        `record_exception` or `release`. The decorator and `call` do this for you; use it to
        guard work that is not one function call (the httpx transports count 5xx responses
        this way).

        Example:
            >>> from resilience import CircuitBreaker
            >>> breaker = CircuitBreaker("doc-permit")
            >>> permit = breaker.acquire()
            >>> breaker.record_success(permit, duration=0.2)
            >>> breaker.metrics().calls
            1
        """
        return self._machine.acquire()

    def record_success(self, permit: int, duration: float = 0.0) -> None:
        """Record that the call holding *permit* succeeded (slow if *duration* is long)."""
        self._machine.record_success(permit, duration)

    def record_failure(self, permit: int, duration: float = 0.0) -> None:
        """Record that the call holding *permit* failed."""
        self._machine.record_failure(permit, duration)

    def release(self, permit: int) -> None:
        """Give back *permit* without recording anything (cancelled or ignored calls)."""
        self._machine.release(permit)

    def classify(self, exc: BaseException) -> bool | None:
        """True if *exc* counts as a failure, False as a success, None as neither.

        Only `Exception` can be a failure: cancellation, `KeyboardInterrupt` and
        `GeneratorExit` count as neither. ``ignore`` wins over ``failure_on``.
        """
        return self._machine.classify(exc)

    def record_exception(self, permit: int, exc: BaseException, duration: float = 0.0) -> None:
        """Record the call holding *permit* as its exception *exc* says (see `classify`)."""
        self._machine.record_exception(permit, exc, duration)

    # ------------------------------------------------------------------ manual control

    def force_open(self) -> None:
        """Reject every call (``retry_after=None``) until `reset()`.

        Example:
            >>> from resilience import CircuitBreaker
            >>> b = CircuitBreaker("doc-force")
            >>> b.force_open(); b.state
            <CircuitState.FORCED_OPEN: 'forced_open'>
        """
        self._machine.manual(FORCED_OPEN, "forced open")

    def disable(self) -> None:
        """Let every call through and record nothing, until `reset()`."""
        self._machine.manual(DISABLED, "disabled")

    def reset(self) -> None:
        """Back to CLOSED with an empty window."""
        self._machine.manual(CLOSED, "reset")

    def metrics(self) -> BreakerMetrics:
        """A consistent snapshot of the state and the window.

        Example:
            >>> from resilience import CircuitBreaker
            >>> CircuitBreaker("doc-m").metrics().failure_rate
            0.0
        """
        return self._machine.metrics()

    # ------------------------------------------------------------------ listeners, clones

    def add_listener(self, listener: Listener) -> None:
        """Call *listener* with every event of this breaker (after the lock is released).

        A listener that raises is logged and never breaks the call.
        """
        self._machine.listeners = (*self._machine.listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling *listener*; unknown listeners are ignored."""
        # By equality: `seen.append` is a new bound-method object each time it is read.
        self._machine.listeners = tuple(x for x in self._machine.listeners if x != listener)

    def clone(self, name: str) -> CircuitBreaker:
        """A new breaker with the same settings, clock, store and listeners under *name*.

        The httpx transports use this to make one breaker per host from a template.
        """
        twin = CircuitBreaker.__new__(CircuitBreaker)
        machine = self._machine
        twin._setup(
            _validate.required_name("name", name),
            machine.config,
            machine.clock,
            self._store,
            machine.listeners,
        )
        return twin

    # ------------------------------------------------------------------ calls

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        If *fn* returns a generator, the call is its iteration (see the decorator).

        Example:
            >>> from resilience import CircuitBreaker
            >>> CircuitBreaker("doc-call").call(max, 1, 2)
            2
        """
        outer = GUARDING.get()
        if outer is not None and guarded_by(outer, self):
            return fn(*args, **kwargs)
        m = self._machine
        permit = m.gen  # read before the state: a transition in between makes it stale
        if m.state is not CLOSED:
            permit = m.acquire_slow()
        timed = m.config.timed
        start = m.clock() if timed else 0.0
        # Only a breaker that decorates functions can meet itself inside the call.
        frame = [self, outer] if self._decorated else None
        token = None if frame is None else GUARDING.set(frame)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            m.record_exception(permit, exc, m.clock() - start if timed else 0.0)
            raise
        finally:
            if frame is not None and token is not None:
                frame[0] = None
                GUARDING.reset(token)
        kind = type(result)
        if kind is GeneratorType or kind is AsyncGeneratorType:
            # Creating a generator did none of its work: its iteration is the call.
            m.release(permit)
            return cast(R, guard_iteration(self, m, result))
        m.record_success(permit, m.clock() - start if timed else 0.0)
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
        outer = GUARDING.get()
        if outer is not None and guarded_by(outer, self):
            return await fn(*args, **kwargs)
        m = self._machine
        permit = m.gen  # read before the state: a transition in between makes it stale
        if m.state is not CLOSED:
            permit = m.acquire_slow()
        timed = m.config.timed
        start = m.clock() if timed else 0.0
        frame = [self, outer] if self._decorated else None
        token = None if frame is None else GUARDING.set(frame)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            m.record_exception(permit, exc, m.clock() - start if timed else 0.0)
            raise
        finally:
            if frame is not None and token is not None:
                frame[0] = None
                GUARDING.reset(token)
        m.record_success(permit, m.clock() - start if timed else 0.0)
        return result

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
        return decorate(self, self._machine, fn)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._machine.name!r} state={self._machine.state.value}>"


public("resilience", BreakerConfig, BreakerMetrics, CircuitBreaker, CircuitState)


def machine_of(breaker: CircuitBreaker) -> BreakerMachine:
    """*breaker*'s state machine, for the transports' per-attempt path.

    The machine's ``acquire``, ``record_success`` and ``release`` are what the breaker's own
    methods forward to: calling them straight saves two calls per attempt.

    Example:
        >>> breaker = CircuitBreaker("doc-machine")
        >>> machine = machine_of(breaker)
        >>> machine.record_success(machine.acquire())
        >>> breaker.metrics().calls
        1
    """
    return breaker._machine
