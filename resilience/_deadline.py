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
import math
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from threading import get_ident
from types import TracebackType
from typing import Any, Final

from ._errors import DeadlineExceeded
from ._public import public
from ._validate import MAX_DURATION, NO_DEADLINE_HINT, Clock, Duration, required_duration
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

    ``task`` is the asyncio task an `_Alarm` cancels at this expiry (None: cooperative only).
    An inner async scope in the same task that keeps this earlier expiry needs no alarm of its
    own; two alarms firing together would make the inner one see a cancellation it cannot
    claim.
    """

    __slots__ = ("at", "clock", "task")

    def __init__(self, at: float, clock: Clock, task: asyncio.Task[Any] | None = None) -> None:
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


# -- Async enforcement: shared timers --------------------------------------------------------
#
# An async deadline cancels its task when it passes. One event-loop timer per scope, what
# asyncio.timeout() arms, costs more than everything else a policy does on a call (a Handle
# made, pushed into the loop's heap, cancelled and popped again). Here each event loop has one
# `_Wheel`, and a scope costs a few list and set operations:
#
# - Entering appends the scope's `_Alarm` to the wheel's pending list; leaving pops it again.
#   Work that never suspends (a cache hit) never gets further: the wheel files the pending
#   alarms at the loop's next turn, one callback for all of them, before any task that
#   suspended meanwhile can run again.
# - Filing puts an alarm in a slot: the loop's time is cut into slots of SLOT seconds, and
#   each slot that holds alarms has one loop timer, shared by every alarm in it. Adding to a
#   slot and removing from it are set operations, O(1). A near deadline goes into the slot
#   that ends at or after it: it fires at most SLOT seconds late, never early. A far one
#   (_NEAR slots ahead or more) goes into a coarser slot that rings *before* it and files it
#   again, nearer: the number of live slots stays small (a few dozen per power of two of the
#   time ahead) whatever the timeouts and the call rate, and an empty slot is left to ring
#   rather than cancelled (the next call would only arm it again).

_PER_SECOND: Final = 128
SLOT: Final = 1.0 / _PER_SECOND  # 7.8125 ms: how late an async deadline may fire, at most
_NEAR: Final = 32  # slots ahead (0.25 s): nearer deadlines go into the slot that ends after them


class _Alarm(_Expiry):
    """An expiry enforced by cancelling its task, through the `_Wheel` of the task's loop.

    ``slot`` is None while the alarm waits in the wheel's pending list, then the set it is
    filed in, and `_FIRED` once it cancelled its task (or `_GONE`: left while still pending,
    out of order). ``when`` is the expiry on the loop's clock, set when it is filed.
    """

    __slots__ = ("slot", "when")

    task: asyncio.Task[Any]
    slot: set[_Alarm] | None
    when: float

    def __init__(self, at: float, clock: Clock, task: asyncio.Task[Any]) -> None:
        self.at = at
        self.clock = clock
        self.task = task
        self.slot = None


# Markers for an alarm that is in no slot; empty, never added to (discarding is a no-op).
_FIRED: Final[set[_Alarm]] = set()
_GONE: Final[set[_Alarm]] = set()


def _fire(alarm: _Alarm) -> None:
    alarm.slot = _FIRED
    alarm.task.cancel()


class _Wheel:
    """The shared deadline timers of one event loop (only ever used from the loop's thread)."""

    __slots__ = ("context", "flushing", "loop", "pending", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[_Alarm] = []
        self.flushing = False
        self.slots: dict[int, set[_Alarm]] = {}
        # The wheel's callbacks run in an empty context of their own: by default a callback
        # keeps a copy of the context that scheduled it (some request's), for as long as a
        # far slot waits to ring.
        self.context = contextvars.Context()

    def add(self, alarm: _Alarm) -> None:
        """Take *alarm* (its slot None): it is filed at the loop's next turn."""
        if not self.flushing:
            self.flushing = True
            self.loop.call_soon(self.flush, context=self.context)
        self.pending.append(alarm)

    def remove(self, alarm: _Alarm) -> None:
        """Forget *alarm*: its scope ends. O(1) wherever it is."""
        slot = alarm.slot
        if slot is not None:
            slot.discard(alarm)
            return
        pending = self.pending
        if pending and pending[-1] is alarm:
            pending.pop()  # the usual case: scopes that never suspended end in LIFO order
        else:
            alarm.slot = _GONE  # the flush skips it

    def flush(self) -> None:
        """File the pending alarms (their tasks suspended since they were added)."""
        self.flushing = False
        pending = self.pending
        if not pending:
            return
        now = self.loop.time()
        for alarm in pending:
            if alarm.slot is None:
                self.file(alarm, now + alarm.at - alarm.clock(), now)
        pending.clear()

    def file(self, alarm: _Alarm, when: float, now: float) -> None:
        """File *alarm*, due at loop time *when*, in the slot that must look at it next."""
        ahead = (when - now) * _PER_SECOND
        if ahead >= _NEAR:
            # Far: a slot of 1/32 to 1/16 of the time ahead, ringing before the deadline.
            grain = 1 << (int(ahead).bit_length() - 5)
            key = math.floor(when * _PER_SECOND) // grain * grain
        elif ahead > 0.0:
            key = math.ceil(when * _PER_SECOND)  # near: the slot ending at or after it
        else:
            _fire(alarm)  # already due
            return
        alarm.when = when
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = set()
            self.loop.call_at(key * SLOT, self._ring, key, context=self.context)
        slot.add(alarm)
        alarm.slot = slot

    def _ring(self, key: int) -> None:
        slot = self.slots.pop(key)
        # The loop may run a timer a clock tick early, or late when it is busy.
        now = max(key * SLOT, self.loop.time())
        for alarm in slot:
            if alarm.when <= now:
                _fire(alarm)
            else:
                self.file(alarm, alarm.when, now)
        slot.clear()


def _python311_task_of() -> Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]:
    """The current task of a loop: Python 3.11's current_task() is Python around a dict."""
    tasks = getattr(asyncio.tasks, "_current_tasks", None)
    if isinstance(tasks, dict):
        return tasks.get
    return asyncio.current_task  # pragma: no cover - an interpreter without the C accelerator


_task_of: Final = asyncio.current_task if sys.version_info >= (3, 12) else _python311_task_of()

_WHEELS: Final[dict[asyncio.AbstractEventLoop, _Wheel]] = {}
_wheels_lock = threading.Lock()
# The wheel used last. While its loop runs in this thread (asyncio's own loops record the
# thread in ``_thread_id``; with other loops the check fails and get_running_loop() answers),
# it is the running loop's wheel: found without get_running_loop(), which on Python 3.11 makes
# a getpid() system call on every call (a fork check; this cache is emptied in a forked child
# instead).
_last_wheel: _Wheel | None = None


def _wheel_of(loop: asyncio.AbstractEventLoop) -> _Wheel:
    """The wheel of *loop*, made on first use; wheels of closed loops are dropped here."""
    global _last_wheel
    with _wheels_lock:
        wheel = _WHEELS.get(loop)
        if wheel is None:
            for closed in [other for other in _WHEELS if other.is_closed()]:
                del _WHEELS[closed]
            wheel = _WHEELS[loop] = _Wheel(loop)
    _last_wheel = wheel
    return wheel


def _forget_wheels() -> None:
    """In a forked child: the parent's loops do not run here (and its lock may be held)."""
    global _last_wheel, _wheels_lock
    _wheels_lock = threading.Lock()
    _last_wheel = None
    _WHEELS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_wheels)


def _timed_coroutine(
    afn: Callable[..., Awaitable[Any]], seconds: float, clock: Clock, what: str = "the call"
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``async with Deadline(seconds)`` around each call of *afn*, inlined for `timeout`.

    The hot path of every async `timeout` and `Policy` (and, through `scoped_coroutine`, of
    the ASGI middleware's ``timeout``): the scope's enter and exit without their two awaits
    and the wheel's fast paths without their calls (each is a measurable share of a policy's
    cost). `Deadline.__aenter__` and `__aexit__` are the reference; *what* names the work in
    the `DeadlineExceeded` message, as `enter_scope`'s does.
    """
    get = _CURRENT.get
    set_ = _CURRENT.set
    reset = _CURRENT.reset
    cancelled = asyncio.CancelledError

    async def timed(*args: Any, **kwargs: Any) -> Any:
        wheel = _last_wheel
        if wheel is None or getattr(wheel.loop, "_thread_id", None) != get_ident():
            wheel = _wheel_of(asyncio.get_running_loop())
        task = _task_of(wheel.loop)
        outer = get()
        if task is None or (outer is not None and outer.remaining() <= seconds):
            # An earlier outer deadline stands (or there is no task to cancel).
            async with Deadline._trusted(seconds, clock, what):
                return await afn(*args, **kwargs)
        alarm = _Alarm(clock() + seconds, clock, task)
        pending = wheel.pending
        if wheel.flushing:
            pending.append(alarm)
        else:
            wheel.add(alarm)
        cancelling = task.cancelling()
        token = set_(alarm)
        try:
            result = await afn(*args, **kwargs)
        except BaseException as exc:
            reset(token)
            wheel.remove(alarm)
            if alarm.slot is _FIRED and task.uncancel() <= cancelling and type(exc) is cancelled:
                raise _exceeded(what, seconds) from exc
            raise
        reset(token)
        if pending and pending[-1] is alarm:
            pending.pop()  # it never suspended (wheel.remove's usual case)
        else:
            wheel.remove(alarm)
        if alarm.slot is _FIRED:
            task.uncancel()  # it fired, but the call returned anyway: take ours back
        return result

    return timed


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
        resilience.DeadlineExceeded: deadline exceeded before the query could start
    """
    expiry = _CURRENT.get()
    if expiry is None:
        return None
    left = expiry.remaining()
    if left <= 0.0:
        raise _exceeded(what)
    return left


_TWICE: Final = "a deadline scope cannot be entered twice at once; create a new deadline(...)"


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
        "_alarm",
        "_cancelling",
        "_clock",
        "_expiry",
        "_seconds",
        "_token",
        "_what",
        "_wheel",
    )

    def __init__(
        self, seconds: Duration, *, clock: Clock = time.monotonic, what: str = "the block"
    ) -> None:
        if (type(seconds) is float or type(seconds) is int) and 0 <= seconds <= MAX_DURATION:
            self._seconds = float(seconds)  # not a bool, NaN, infinity or timedelta
        else:  # the full check, and its ConfigError (a scope per request makes this worth it)
            self._seconds = required_duration(
                "seconds", seconds, allow_zero=True, hint=NO_DEADLINE_HINT
            )
        self._clock = clock if clock is time.monotonic else check_clock("clock", clock)
        self._what = what
        self._token: contextvars.Token[_Expiry | None] | None = None
        self._expiry: _Expiry | None = None
        self._alarm: _Alarm | None = None
        self._wheel: _Wheel | None = None
        self._cancelling = 0

    @classmethod
    def _trusted(cls, seconds: float, clock: Clock, what: str) -> Deadline:
        """A scope from settings already validated (per-call use by `timeout`)."""
        self = cls.__new__(cls)
        self._seconds = seconds
        self._clock = clock
        self._what = what
        self._token = None
        self._expiry = None
        self._alarm = None
        self._wheel = None
        self._cancelling = 0
        return self

    @property
    def seconds(self) -> float:
        """The duration this scope was asked for."""
        return self._seconds

    def remaining(self) -> float | None:
        """Seconds left in this scope (the effective, possibly earlier, deadline)."""
        return None if self._expiry is None else self._expiry.remaining()

    def _enter(self) -> None:
        """Enter as a cooperative scope: set the expiry (nested: the earlier one stands)."""
        if self._token is not None:
            raise RuntimeError(_TWICE)
        outer = _CURRENT.get()
        if outer is not None and outer.remaining() <= self._seconds:
            expiry = outer
        else:
            expiry = _Expiry(self._clock() + self._seconds, self._clock)
        self._expiry = expiry
        self._token = _CURRENT.set(expiry)

    def __enter__(self) -> Deadline:
        self._enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        _CURRENT.reset(self._token)
        self._token = None

    async def __aenter__(self) -> Deadline:
        wheel = _last_wheel  # the running loop's wheel (see _last_wheel)
        if wheel is None or getattr(wheel.loop, "_thread_id", None) != get_ident():
            wheel = _wheel_of(asyncio.get_running_loop())
        task = _task_of(wheel.loop)
        if task is None:
            self._enter()  # no task to cancel: cooperative
            return self
        if self._token is not None:
            raise RuntimeError(_TWICE)
        outer = _CURRENT.get()
        seconds = self._seconds
        if outer is None or outer.remaining() > seconds:
            alarm = _Alarm(self._clock() + seconds, self._clock, task)
        elif outer.task is not task:
            alarm = _Alarm(outer.at, outer.clock, task)  # the earlier outer deadline stands
        else:
            # The earlier outer deadline stands and its own alarm cancels this task: a second
            # alarm firing with it would see a cancellation it cannot claim.
            self._expiry = outer
            self._token = _CURRENT.set(outer)
            return self
        if wheel.flushing:
            wheel.pending.append(alarm)  # wheel.add(alarm), inlined
        else:
            wheel.add(alarm)
        self._alarm = alarm
        self._wheel = wheel
        # The same bookkeeping as asyncio.timeout(): the task's cancel count tells our own
        # cancellation apart from one that came from outside (that one keeps propagating as
        # CancelledError).
        self._cancelling = task.cancelling()
        self._expiry = alarm
        self._token = _CURRENT.set(alarm)
        return self

    def _on_expiry(self) -> None:
        """Fire this scope's alarm now, as its slot's timer does at the deadline."""
        alarm = self._alarm
        if alarm is not None and alarm.slot is not _FIRED:
            if alarm.slot is not None:
                alarm.slot.discard(alarm)
            _fire(alarm)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._token
        assert token is not None
        self._token = None
        alarm = self._alarm
        wheel = self._wheel
        if alarm is None or wheel is None:
            _CURRENT.reset(token)
            return
        self._alarm = self._wheel = None
        pending = wheel.pending
        if pending and pending[-1] is alarm:
            pending.pop()  # wheel.remove(alarm)'s usual case, inlined
        else:
            wheel.remove(alarm)
        try:
            if (
                alarm.slot is _FIRED
                and alarm.task.uncancel() <= self._cancelling
                and exc_type is asyncio.CancelledError
            ):
                raise _exceeded(self._what, self._seconds) from exc
        finally:
            _CURRENT.reset(token)

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
    return Deadline._trusted(seconds, clock, what)


public("resilience", deadline, remaining)
