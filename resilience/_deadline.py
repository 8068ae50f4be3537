"""One deadline for a whole unit of work, carried in a context variable.

A deadline is an absolute point on a monotonic clock. Nested deadlines keep the earlier one.
Because it lives in a `contextvars.ContextVar`, it flows into asyncio tasks and into
`asyncio.to_thread`, and every retry, policy and transport inside reads what remains.

In async code, ``async with deadline(s)`` cancels the work at expiry and raises
`DeadlineExceeded`. In sync code the deadline is cooperative: our components check it and
clamp their own timeouts to it, but code that blocks on its own is not interrupted.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from types import TracebackType
from typing import Final

from ._config import Clock, Duration, clock as check_clock, required_duration
from ._errors import DeadlineExceeded

__all__ = ["Deadline", "check_deadline", "current_deadline", "deadline", "remaining"]


class _Expiry:
    """An absolute expiry time on a given clock (immutable, shared between contexts)."""

    __slots__ = ("at", "clock")

    def __init__(self, at: float, clock: Clock) -> None:
        self.at = at
        self.clock = clock

    def remaining(self) -> float:
        left = self.at - self.clock()
        return left if left > 0.0 else 0.0


_CURRENT: Final[contextvars.ContextVar[_Expiry | None]] = contextvars.ContextVar(
    "resilience_deadline", default=None
)


def remaining() -> float | None:
    """Seconds left before the active deadline (never negative), or None outside any.

    Example:
        >>> from resilience import deadline, remaining
        >>> remaining() is None
        True
        >>> with deadline(5.0):
        ...     0 < remaining() <= 5.0
        True
    """
    expiry = _CURRENT.get()
    return None if expiry is None else expiry.remaining()


def current_deadline() -> _Expiry | None:
    """The active expiry, for components that check it repeatedly."""
    return _CURRENT.get()


def check_deadline(what: str = "the operation") -> float | None:
    """Raise `DeadlineExceeded` if the active deadline has passed; else return what remains."""
    expiry = _CURRENT.get()
    if expiry is None:
        return None
    left = expiry.remaining()
    if left <= 0.0:
        from ._events import DeadlineExceededEvent, emit

        emit(DeadlineExceededEvent(where=what))
        msg = f"deadline exceeded before {what} could start"
        raise DeadlineExceeded(msg)
    return left


class Deadline:
    """A deadline scope; use `deadline(seconds)` to make one.

    Works as ``with`` (sync or async code; cooperative) and ``async with`` (cancels the
    enclosed work at expiry and raises `DeadlineExceeded`).
    """

    __slots__ = ("_clock", "_expiry", "_seconds", "_timeout", "_token")

    def __init__(self, seconds: Duration, *, clock: Clock = time.monotonic) -> None:
        self._seconds = required_duration("seconds", seconds, allow_zero=True)
        self._clock = check_clock("clock", clock)
        self._token: contextvars.Token[_Expiry | None] | None = None
        self._expiry: _Expiry | None = None
        self._timeout: asyncio.Timeout | None = None

    @property
    def seconds(self) -> float:
        """The duration this scope was asked for."""
        return self._seconds

    def remaining(self) -> float | None:
        """Seconds left in this scope (the effective, possibly earlier, deadline)."""
        return None if self._expiry is None else self._expiry.remaining()

    def _enter(self) -> _Expiry:
        if self._token is not None:
            msg = "a deadline scope cannot be entered twice; create a new deadline(...)"
            raise RuntimeError(msg)
        outer = _CURRENT.get()
        at = self._clock() + self._seconds
        if outer is not None and outer.remaining() <= at - self._clock():
            expiry = outer  # nested deadlines keep the earlier one
        else:
            expiry = _Expiry(at, self._clock)
        self._expiry = expiry
        self._token = _CURRENT.set(expiry)
        return expiry

    def _exit(self) -> None:
        assert self._token is not None
        _CURRENT.reset(self._token)
        self._token = None

    def __enter__(self) -> Deadline:
        self._enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()

    async def __aenter__(self) -> Deadline:
        expiry = self._enter()
        loop = asyncio.get_running_loop()
        # asyncio.Timeout tells our own cancellation apart from one that came from outside
        # (that one keeps propagating as CancelledError).
        self._timeout = asyncio.timeout_at(loop.time() + expiry.remaining())
        try:
            await self._timeout.__aenter__()
        except BaseException:
            self._exit()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        timeout = self._timeout
        assert timeout is not None
        self._timeout = None
        try:
            await timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as timed_out:
            if isinstance(timed_out, DeadlineExceeded):
                raise
            from ._events import DeadlineExceededEvent, emit

            emit(DeadlineExceededEvent(where="async deadline", seconds=self._seconds))
            msg = f"deadline of {self._seconds:g} s exceeded"
            raise DeadlineExceeded(msg) from None
        finally:
            self._exit()

    def __repr__(self) -> str:
        return f"deadline({self._seconds!r}, remaining={self.remaining()!r})"


def deadline(seconds: Duration, *, clock: Clock = time.monotonic) -> Deadline:
    """Run the enclosed block under a deadline of *seconds* (nested: the earlier one wins).

    Example:
        >>> from resilience import deadline, remaining
        >>> with deadline(2.0):
        ...     with deadline(10.0):          # the outer, earlier deadline stands
        ...         remaining() <= 2.0
        True
    """
    return Deadline(seconds, clock=clock)
