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

from ._errors import DeadlineExceeded
from ._validate import NO_DEADLINE_HINT, Clock, Duration, required_duration
from ._validate import clock as check_clock

__all__ = [
    "Deadline",
    "check_deadline",
    "current_deadline",
    "deadline",
    "enter_scope",
    "remaining",
]


class _Expiry:
    """An absolute expiry time on a given clock (immutable, shared between contexts).

    ``task`` is the asyncio task whose timer enforces it (None: cooperative only). An inner
    async scope in the same task that keeps this earlier expiry needs no timer of its own;
    two timers firing together would make the inner one see a cancellation it cannot claim.
    """

    __slots__ = ("at", "clock", "task")

    def __init__(self, at: float, clock: Clock, task: asyncio.Task[object] | None = None) -> None:
        self.at = at
        self.clock = clock
        self.task = task

    def remaining(self) -> float:
        left = self.at - self.clock()
        return left if left > 0.0 else 0.0

    def __repr__(self) -> str:
        return f"<deadline remaining={self.remaining():.6g}s>"


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
    """The active expiry, for components that check it repeatedly.

    Example:
        >>> from resilience._deadline import current_deadline, deadline
        >>> with deadline(1.0):
        ...     current_deadline().remaining() <= 1.0
        True
    """
    return _CURRENT.get()


def _exceeded(what: str, seconds: float | None = None) -> DeadlineExceeded:
    """Build the error (and emit the event) for an expired deadline; off the happy path."""
    from ._observe._events import DeadlineExceededEvent, emit

    emit(DeadlineExceededEvent(where=what, seconds=seconds))
    if seconds is None:
        msg = f"deadline exceeded before {what} could start"
    else:
        msg = f"{what} exceeded its deadline of {seconds:g} s"
    return DeadlineExceeded(msg)


def check_deadline(what: str = "the operation") -> float | None:
    """Raise `DeadlineExceeded` if the active deadline has passed; else return what remains.

    Example:
        >>> from resilience._deadline import check_deadline, deadline
        >>> check_deadline() is None
        True
        >>> with deadline(0):
        ...     check_deadline("the query")
        Traceback (most recent call last):
        ...
        resilience._errors.DeadlineExceeded: deadline exceeded before the query could start
    """
    expiry = _CURRENT.get()
    if expiry is None:
        return None
    left = expiry.remaining()
    if left <= 0.0:
        raise _exceeded(what)
    return left


class Deadline:
    """A deadline scope; use `deadline(seconds)` to make one.

    Works as ``with`` (sync or async code; cooperative) and ``async with`` (cancels the
    enclosed work at expiry and raises `DeadlineExceeded`). A scope can be entered again after
    it exits, but not while it is active.

    Example:
        >>> from resilience import deadline
        >>> scope = deadline(3.0)
        >>> with scope:
        ...     scope.remaining() <= 3.0
        True
    """

    __slots__ = (
        "_cancelling",
        "_clock",
        "_expired",
        "_expiry",
        "_handle",
        "_seconds",
        "_task",
        "_token",
        "_what",
    )

    def __init__(
        self, seconds: Duration, *, clock: Clock = time.monotonic, what: str = "the block"
    ) -> None:
        self._seconds = required_duration(
            "seconds", seconds, allow_zero=True, hint=NO_DEADLINE_HINT
        )
        self._clock = check_clock("clock", clock)
        self._what = what
        self._token: contextvars.Token[_Expiry | None] | None = None
        self._expiry: _Expiry | None = None
        self._handle: asyncio.Handle | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._expired = False

    @property
    def seconds(self) -> float:
        """The duration this scope was asked for."""
        return self._seconds

    def remaining(self) -> float | None:
        """Seconds left in this scope (the effective, possibly earlier, deadline)."""
        return None if self._expiry is None else self._expiry.remaining()

    def _enter(self, task: asyncio.Task[object] | None) -> bool:
        """Set the scope's expiry; return True when this scope must arm a timer for *task*."""
        if self._token is not None:
            msg = "a deadline scope cannot be entered twice at once; create a new deadline(...)"
            raise RuntimeError(msg)
        outer = _CURRENT.get()
        arm = task is not None
        if outer is not None and outer.remaining() <= self._seconds:
            # Nested deadlines keep the earlier one.
            if task is None or outer.task is task:
                expiry, arm = outer, False
            else:
                expiry = _Expiry(outer.at, outer.clock, task)
        else:
            expiry = _Expiry(self._clock() + self._seconds, self._clock, task)
        self._expiry = expiry
        self._token = _CURRENT.set(expiry)
        return arm

    def _exit(self) -> None:
        assert self._token is not None
        _CURRENT.reset(self._token)
        self._token = None

    def __enter__(self) -> Deadline:
        self._enter(None)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        if not self._enter(task):
            return self
        assert task is not None
        assert self._expiry is not None
        # The same bookkeeping as asyncio.timeout(), without its extra objects and awaits:
        # the task's cancel count tells our own cancellation apart from one that came from
        # outside (that one keeps propagating as CancelledError).
        self._task = task
        self._cancelling = task.cancelling()
        self._expired = False
        # The timer is armed lazily, from the loop: work that finishes without suspending
        # (a cache hit) never touches the loop's timer heap, which is costly to push to.
        self._handle = task.get_loop().call_soon(self._arm)
        return self

    def _arm(self) -> None:
        expiry = self._expiry
        if self._task is None or expiry is None:
            return
        left = expiry.remaining()
        if left <= 0.0:
            self._on_expiry()
            return
        loop = self._task.get_loop()
        self._handle = loop.call_at(loop.time() + left, self._on_expiry)

    def _on_expiry(self) -> None:
        self._handle = None
        task = self._task
        if task is not None:
            self._expired = True
            task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is None:
            self._exit()
            return
        self._task = None
        handle = self._handle
        if handle is not None:
            handle.cancel()
            self._handle = None
        try:
            if (
                self._expired
                and task.uncancel() <= self._cancelling
                and exc_type is asyncio.CancelledError
            ):
                raise _exceeded(self._what, self._seconds) from exc
        finally:
            self._expired = False
            self._exit()

    def __repr__(self) -> str:
        return f"deadline({self._seconds!r}, remaining={self.remaining()!r})"


def deadline(seconds: Duration, *, clock: Clock = time.monotonic) -> Deadline:
    """Run the enclosed block under a deadline of *seconds* (nested: the earlier one wins).

    ``with deadline(s)`` is cooperative (our retries, policies and transports inside check it);
    ``async with deadline(s)`` also cancels the block at expiry and raises `DeadlineExceeded`.

    Example:
        >>> from resilience import deadline, remaining
        >>> with deadline(2.0):
        ...     with deadline(10.0):          # the outer, earlier deadline stands
        ...         remaining() <= 2.0
        True
    """
    return Deadline(seconds, clock=clock)


def enter_scope(seconds: float, clock: Clock, what: str) -> Deadline:
    """A deadline scope from settings validated already: the per-call form of `deadline`.

    The internal API for code that opens a scope on every call or request (`timeout`, the
    web integrations): *seconds* is a float already checked (finite, not negative) and
    *clock* a checked clock, so none of `Deadline`'s validation runs again. *what* names
    the work in the `DeadlineExceeded` message ("the request", "the call").

    Example:
        >>> import time
        >>> from resilience._deadline import enter_scope, remaining
        >>> with enter_scope(2.0, time.monotonic, "the request"):
        ...     remaining() <= 2.0
        True
    """
    scope = Deadline.__new__(Deadline)
    scope._seconds = seconds
    scope._clock = clock
    scope._what = what
    scope._token = None
    scope._expiry = None
    scope._handle = None
    scope._task = None
    scope._cancelling = 0
    scope._expired = False
    return scope
