"""`timeout(seconds)`: a deadline for each call of a function.

Async functions are cancelled at the deadline and raise `DeadlineExceeded`. Sync functions
cannot be interrupted safely from Python, so for them the timeout is cooperative: the call
runs under `deadline(seconds)`, which our retries, policies and httpx transports inside it
check and clamp their own timeouts to, and a call that starts after an outer deadline has
already passed is not started at all. A sync call that blocks on its own runs to its end.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from ._deadline import _CURRENT, Deadline, _exceeded, _Expiry
from ._public import public
from ._validate import NO_TIMEOUT_HINT, Clock, Duration, required_duration
from ._validate import clock as check_clock

__all__ = ["Timeout", "timeout"]

P = ParamSpec("P")
R = TypeVar("R")


def decorate(
    fn: Callable[P, R],
    call: Callable[..., Any],
    call_async: Callable[..., Awaitable[Any]],
) -> Callable[P, R]:
    """Wrap *fn* so each call goes through ``call(fn, ...)`` or ``await call_async(fn, ...)``.

    One decorator serves ``def`` and ``async def``: the choice is made once, here. Shared by
    every decorator of the library that wraps a call in a component's ``call``/``call_async``.
    """
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await call_async(fn, *args, **kwargs)

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return call(fn, *args, **kwargs)

    return cast(Callable[P, R], wrapper)


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
        """Decorate a sync or async function."""
        clock = self._clock
        seconds = self.seconds
        if inspect.iscoroutinefunction(fn):
            afn = fn
            trusted = Deadline._trusted

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with trusted(seconds, clock, "the call"):
                    return await afn(*args, **kwargs)

            return cast(Callable[P, R], async_wrapper)
        # The hot path, inlined: no earlier outer deadline, so this one is set around the call.
        get = _CURRENT.get
        set_ = _CURRENT.set
        reset = _CURRENT.reset
        call = self.call

        @functools.wraps(fn)
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
        async with Deadline._trusted(self.seconds, self._clock, "the call"):
            return await fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"timeout({self.seconds!r})"


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
