"""How a breaker guards calls: the decorator factory, generator iterations, one call one outcome.

`decorate` builds every decorated form from one place: a sync and an async driver (twins that
differ only in ``await``), an outer layer over a function the breaker already guards, and the
whole iteration of a (sync or async) generator. Each driver takes a permit, runs the call
outside the lock, and records the outcome; on the hot path (CLOSED, nothing to time) a
success in a count window costs one attribute check and one ``next()`` (see
`CountWindow`), and a rejection by an OPEN breaker is raised from the driver itself.

**One call, one outcome.** A layer of a breaker that finds the breaker already guarding the
current call (``breaker.call(decorated)``, a `Policy` around a function the breaker
decorates) passes straight through, so the call takes one permit and is recorded once.
`CircuitBreaker.call`, `CircuitBreaker.call_async`, generator iterations and every call made
outside CLOSED mark the call (a context variable); the drivers' CLOSED fast path only reads
the mark, because setting it would double their cost. A decorator stacked over a function the
same breaker already decorates is found when decorating (`encloses`), and marks its calls.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast

from .._errors import CircuitOpenError
from .._observe._events import wanted
from .._wrapping import wrap_async_generator, wrap_generator, wraps
from ._machine import FAST_IDLE, FAST_TICK, REJECTED_LEVEL, BreakerMachine
from ._state import CLOSED, OPEN
from ._windows import CountWindow, TimeWindow

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = [
    "GUARDING",
    "AsyncIteration",
    "Frame",
    "Iteration",
    "decorate",
    "guard_iteration",
    "guarded_by",
]

P = ParamSpec("P")
R = TypeVar("R")

_MARK: Final = "_resilience_breakers"  # on our wrappers: the breakers guarding inside

# A guarded call in flight: ``[breaker, enclosing frame]`` (a list: the cheapest mutable
# object to make). When the call ends its breaker slot becomes None, because the context is
# copied into tasks spawned during the call: a task that outlives the call must not count as
# guarded by it.
Frame = list[Any]

GUARDING: Final[contextvars.ContextVar[Frame | None]] = contextvars.ContextVar(
    "resilience_breaker_guarding", default=None
)


def guarded_by(frame: Frame | None, breaker: CircuitBreaker) -> bool:
    """True when *breaker* guards the call running in this context (*frame* is the newest)."""
    while frame is not None:
        if frame[0] is breaker:
            return True
        frame = frame[1]
    return False


def encloses(fn: object, breaker: CircuitBreaker) -> bool:
    """True when *fn* is (or wraps, through ``__wrapped__``) a function *breaker* decorates."""
    for _ in range(100):  # bounded: a __wrapped__ cycle must not hang decoration
        if breaker in getattr(fn, _MARK, ()):
            return True
        fn = getattr(fn, "__wrapped__", None)
        if fn is None:
            return False
    return False


def decorate(
    breaker: CircuitBreaker, machine: BreakerMachine, fn: Callable[P, Any]
) -> Callable[P, Any]:
    """*fn* guarded by *breaker* (whose state machine is *machine*): the variant is chosen
    here, once."""
    if inspect.isasyncgenfunction(fn):
        return wrap_async_generator(fn, lambda: AsyncIteration(breaker, machine))
    if inspect.isgeneratorfunction(fn):
        return wrap_generator(fn, lambda: Iteration(breaker, machine))
    if encloses(fn, breaker):
        # An outer layer over one of ours: mark its calls so the inner one passes through.
        wrapped = _outer(breaker, fn)
    elif inspect.iscoroutinefunction(fn):
        wrapped = _async_driver(breaker, machine, fn)
    else:
        wrapped = _sync_driver(breaker, machine, fn)
    setattr(wrapped, _MARK, (*getattr(fn, _MARK, ()), breaker))
    return wrapped


def _outer(breaker: CircuitBreaker, fn: Callable[P, Any]) -> Callable[P, Any]:
    if inspect.iscoroutinefunction(fn):
        call_async = breaker.call_async
        afn = fn

        @wraps(fn)
        async def async_outer(*args: P.args, **kwargs: P.kwargs) -> Any:
            return await call_async(afn, *args, **kwargs)

        return async_outer
    call = breaker.call

    @wraps(fn)
    def outer(*args: P.args, **kwargs: P.kwargs) -> Any:
        return call(fn, *args, **kwargs)

    return outer


def _sync_driver(breaker: CircuitBreaker, m: BreakerMachine, fn: Callable[P, R]) -> Callable[P, R]:
    # Everything the call needs, bound once: each lookup saved is a few ns per call.
    guarding = GUARDING.get
    call = breaker.call
    clock = m.clock
    name = m.name
    record_success = m.record_success
    record_plain_success = m.record_plain_success
    # A time window's quick success: one increment under the lock (None: a count window).
    quick = m.window.record_fast_success if isinstance(m.window, TimeWindow) else None
    record_exception = m.record_exception
    # Read only while ``m.fast`` says a count window ticks (never for a time window).
    window = cast(CountWindow, m.window)
    ticks = window.ticks
    settle = m.settle

    @wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        outer = guarding()
        if outer is not None and guarded_by(outer, breaker):
            return fn(*args, **kwargs)
        permit = m.gen
        state = m.state
        if state is not CLOSED:
            if state is OPEN:
                left = m.open_until - clock()
                if left > 0.0:  # fail fast, from here: no frame more than needed
                    if wanted(REJECTED_LEVEL, m.listeners):
                        m.note_rejection(left)
                    raise CircuitOpenError(name, left)
            return call(fn, *args, **kwargs)  # probes, forced open, disabled
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            record_exception(permit, exc)
            raise
        if permit == m.gen:
            fast = m.fast
            if fast == FAST_IDLE:
                return result  # the window is full of successes: nothing to count
            if fast == FAST_TICK:
                if next(ticks) == window.settle_at:
                    settle()  # the window may be full of successes now
                return result
            if quick is not None and quick(clock()):
                return result
        record_plain_success(permit)  # under the lock: it may trip
        return result

    @wraps(fn)
    def guarded_timed(*args: P.args, **kwargs: P.kwargs) -> R:
        outer = guarding()
        if outer is not None and guarded_by(outer, breaker):
            return fn(*args, **kwargs)
        permit = m.gen
        state = m.state
        if state is not CLOSED:
            if state is OPEN:
                left = m.open_until - clock()
                if left > 0.0:
                    if wanted(REJECTED_LEVEL, m.listeners):
                        m.note_rejection(left)
                    raise CircuitOpenError(name, left)
            return call(fn, *args, **kwargs)
        start = clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            record_exception(permit, exc, clock() - start)
            raise
        record_success(permit, clock() - start)
        return result

    return guarded_timed if m.config.timed else guarded


def _async_driver(breaker: CircuitBreaker, m: BreakerMachine, fn: Callable[P, Any]) -> Any:
    # The sync driver's twin (timing included: an await costs more than the check).
    guarding = GUARDING.get
    call_async = breaker.call_async
    clock = m.clock
    name = m.name
    record_success = m.record_success
    record_plain_success = m.record_plain_success
    record_exception = m.record_exception
    timed = m.config.timed
    window = cast(CountWindow, m.window)
    ticks = window.ticks
    settle = m.settle
    quick = m.window.record_fast_success if isinstance(m.window, TimeWindow) else None

    @wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
        outer = guarding()
        if outer is not None and guarded_by(outer, breaker):
            return await fn(*args, **kwargs)
        permit = m.gen
        state = m.state
        if state is not CLOSED:
            if state is OPEN:
                left = m.open_until - clock()
                if left > 0.0:
                    if wanted(REJECTED_LEVEL, m.listeners):
                        m.note_rejection(left)
                    raise CircuitOpenError(name, left)
            return await call_async(fn, *args, **kwargs)
        start = clock() if timed else 0.0
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            record_exception(permit, exc, clock() - start if timed else 0.0)
            raise
        if timed:
            record_success(permit, clock() - start)
            return result
        if permit == m.gen:
            fast = m.fast
            if fast == FAST_IDLE:
                return result
            if fast == FAST_TICK:
                if next(ticks) == window.settle_at:
                    settle()
                return result
            if quick is not None and quick(clock()):
                return result
        record_plain_success(permit)
        return result

    return guarded


def guard_iteration(breaker: CircuitBreaker, machine: BreakerMachine, items: Any) -> Any:
    """Guard the iteration of a generator already created (`CircuitBreaker.call` got one)."""
    if inspect.isasyncgen(items):
        return wrap_async_generator(lambda: items, lambda: AsyncIteration(breaker, machine))()
    return wrap_generator(lambda: items, lambda: Iteration(breaker, machine))()


class _IterationBase:
    """One iteration of a generator the breaker guards (see `CircuitBreaker.__call__`)."""

    __slots__ = ("_breaker", "_frame", "_machine", "_permit", "_started", "_token")

    def __init__(self, breaker: CircuitBreaker, machine: BreakerMachine) -> None:
        self._breaker = breaker
        self._machine = machine
        self._permit: int | None = None  # None: another layer of the breaker guards it
        self._started = 0.0
        self._frame: Frame | None = None
        self._token: contextvars.Token[Frame | None] | None = None

    def _begin(self) -> None:
        if guarded_by(GUARDING.get(), self._breaker):
            return
        self._permit = self._machine.acquire()
        self._started = self._machine.clock()

    def _resume(self) -> None:
        if self._permit is not None:
            self._frame = [self._breaker, GUARDING.get()]
            self._token = GUARDING.set(self._frame)

    def _pause(self) -> None:
        if self._token is not None and self._frame is not None:
            self._frame[0] = None
            GUARDING.reset(self._token)
            self._token = self._frame = None

    def finish(self, error: BaseException | None) -> None:
        """Record the iteration's outcome (a closed generator gives its permit back)."""
        permit = self._permit
        if permit is None:
            return
        machine = self._machine
        duration = machine.clock() - self._started
        if error is None:
            machine.record_success(permit, duration)
        else:
            machine.record_exception(permit, error, duration)


class Iteration(_IterationBase):
    """The guard of a sync generator's iteration (`resilience._wrapping.IterationGuard`)."""

    __slots__ = ()

    def start(self) -> None:
        """Take the permit (or raise `CircuitOpenError`) at the first ``next()``."""
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


class AsyncIteration(_IterationBase):
    """The guard of an async generator's iteration."""

    __slots__ = ()

    async def start(self) -> None:
        """Take the permit (or raise `CircuitOpenError`) at the first ``anext()``."""
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
