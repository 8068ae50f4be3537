"""`timeout(seconds)`: a deadline for each call of a function.

Async functions are cancelled at the deadline and raise `DeadlineExceeded`. Sync functions
cannot be interrupted safely from Python, so for them the timeout is cooperative: the call
runs under `deadline(seconds)`, which our retries, policies and httpx transports inside it
check and clamp their own timeouts to, and a call that starts after an outer deadline has
already passed is not started at all. A sync call that blocks on its own runs to its end.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Token
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from ._deadline import _CURRENT, Deadline, _exceeded, _Expiry, _timed_coroutine, enter_scope
from ._public import public
from ._validate import NO_TIMEOUT_HINT, Clock, Duration, required_duration
from ._validate import clock as check_clock
from ._wrapping import wrap_async_generator, wrap_generator, wraps

__all__ = ["Timeout", "scoped_call", "scoped_coroutine", "timeout"]

P = ParamSpec("P")
R = TypeVar("R")


class Timeout:
    """A per-call deadline; `timeout(seconds)` makes one. Use it as a decorator.

    Example:
        >>> import asyncio
        >>> from resilience import DeadlineExceeded, timeout
        >>> @timeout(0.01)
        ... async def slow() -> None:
        ...     await asyncio.sleep(10)
        >>> try:
        ...     asyncio.run(slow())
        ... except DeadlineExceeded:
        ...     print("timed out")
        timed out
    """

    __slots__ = ("_clock", "seconds")

    def __init__(self, seconds: Duration, *, clock: Clock = time.monotonic) -> None:
        self.seconds: float = required_duration("seconds", seconds, hint=NO_TIMEOUT_HINT)
        self._clock = check_clock("clock", clock)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a function, an async function or a (sync or async) generator function.

        For a generator function the timeout covers the whole iteration, from the first
        ``next()`` to its end, the consumer's time between items included: each step of the
        generator runs under what is left (an async one is cancelled at the deadline and
        raises `DeadlineExceeded`; a sync one sees the deadline cooperatively, and a step
        that would start after it raises `DeadlineExceeded` instead).
        """
        clock = self._clock
        seconds = self.seconds
        if inspect.isasyncgenfunction(fn):
            return cast(
                Callable[P, R],
                wrap_async_generator(fn, lambda: _AsyncTimedIteration(seconds, clock, fn)),
            )
        if inspect.isgeneratorfunction(fn):
            return cast(
                Callable[P, R], wrap_generator(fn, lambda: _TimedIteration(seconds, clock, fn))
            )
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], wraps(fn)(_timed_coroutine(fn, seconds, clock)))
        # The hot path, inlined: no earlier outer deadline, so this one is set around the call.
        get = _CURRENT.get
        set_ = _CURRENT.set
        reset = _CURRENT.reset
        call = self.call

        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            outer = get()
            if outer is not None and outer.remaining() <= seconds:
                return call(fn, *args, **kwargs)
            token = set_(_Expiry(clock() + seconds, clock))
            try:
                return fn(*args, **kwargs)
            finally:
                reset(token)

        return wrapper

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call sync *fn* under a deadline of `seconds` (cooperative: see the module doc).

        Example:
            >>> from resilience import remaining, timeout
            >>> timeout(2.0).call(remaining) <= 2.0
            True
        """
        outer = _CURRENT.get()
        if outer is not None:
            left = outer.remaining()
            if left <= self.seconds:
                # The outer deadline is earlier: it stands, and it may already be gone.
                if left <= 0.0:
                    raise _exceeded("the call")
                return fn(*args, **kwargs)
        clock = self._clock
        token = _CURRENT.set(_Expiry(clock() + self.seconds, clock))
        try:
            return fn(*args, **kwargs)
        finally:
            _CURRENT.reset(token)

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await *fn*; cancel it at the deadline and raise `DeadlineExceeded`.

        A cancellation that comes from outside propagates as `asyncio.CancelledError`.
        """
        async with enter_scope(self.seconds, self._clock, "the call"):
            return await fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"timeout({self.seconds!r})"


class _TimedIterationBase:
    """A timeout over one iteration of a generator: the deadline starts at its first step."""

    __slots__ = ("_clock", "_expiry", "_seconds", "_token", "_what")

    def __init__(self, seconds: float, clock: Clock, fn: object) -> None:
        self._seconds = seconds
        self._clock = clock
        name = getattr(fn, "__qualname__", "the generator")
        self._what = f"an item of {name} (timeout {seconds:g} s for the whole iteration)"
        self._expiry: _Expiry | None = None
        self._token: Token[_Expiry | None] | None = None

    def _begin(self) -> None:
        self._expiry = _Expiry(self._clock() + self._seconds, self._clock)

    def finish(self, error: BaseException | None) -> None:
        """Nothing to undo: each step already left its deadline."""


class _TimedIteration(_TimedIterationBase):
    __slots__ = ()

    def start(self) -> None:
        self._begin()

    def __enter__(self) -> None:
        expiry = self._expiry
        assert expiry is not None
        outer = _CURRENT.get()
        if outer is not None and outer.remaining() <= expiry.remaining():
            expiry = outer  # an earlier outer deadline stands
        if expiry.remaining() <= 0.0:
            raise _exceeded(self._what)
        self._token = _CURRENT.set(expiry)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None


class _AsyncTimedIteration(_TimedIterationBase):
    __slots__ = ("_scope",)

    def __init__(self, seconds: float, clock: Clock, fn: object) -> None:
        super().__init__(seconds, clock, fn)
        self._scope: Deadline | None = None

    async def start(self) -> None:
        self._begin()

    async def __aenter__(self) -> None:
        assert self._expiry is not None
        left = self._expiry.remaining()
        if left <= 0.0:
            raise _exceeded(self._what)
        # A scope of what is left: it cancels this step at the iteration's deadline.
        self._scope = enter_scope(left, self._clock, self._what)
        await self._scope.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope, self._scope = self._scope, None
        if scope is not None:
            await scope.__aexit__(exc_type, exc, tb)


def scoped_call(seconds: float, clock: Clock, fn: Callable[..., R], /, *args: Any) -> R:
    """``with enter_scope(seconds, clock, ...): return fn(*args)``, inlined (cooperative).

    For code that opens a scope around one call on every request (the WSGI middleware's
    deadline), with settings validated already: the scope costs what a sync `timeout` costs.
    As in any scope, an earlier outer deadline stands.

    Example:
        >>> import time
        >>> from resilience import remaining
        >>> scoped_call(2.0, time.monotonic, remaining) <= 2.0
        True
    """
    outer = _CURRENT.get()
    if outer is not None and outer.remaining() <= seconds:
        expiry = outer
    else:
        expiry = _Expiry(clock() + seconds, clock)
    token = _CURRENT.set(expiry)
    try:
        return fn(*args)
    finally:
        _CURRENT.reset(token)


def scoped_coroutine(
    afn: Callable[..., Awaitable[Any]], seconds: float, clock: Clock, what: str
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """*afn* with each call awaited under ``enter_scope(seconds, clock, what)``, inlined.

    For code that awaits the same function under the same validated settings every time
    (the ASGI middleware's ``timeout``): a scope then costs what an async `timeout` costs.
    """
    return _timed_coroutine(afn, seconds, clock, what)


def timeout(seconds: Duration, *, clock: Clock = time.monotonic) -> Timeout:
    """Give each call of the decorated function at most *seconds* (float or timedelta).

    Async functions are cancelled at the deadline and raise `DeadlineExceeded` (a
    `TimeoutError`). Sync functions run under a cooperative `deadline`: what they call through
    this library checks it, but code that blocks on its own is not interrupted.

    Example:
        >>> from resilience import remaining, timeout
        >>> @timeout(2.0)
        ... def lookup() -> float | None:
        ...     return remaining()
        >>> 0 < lookup() <= 2.0
        True
    """
    return Timeout(seconds, clock=clock)


public("resilience", Timeout, timeout)
