"""Bulkhead: at most N calls at once, shared by threads and asyncio tasks alike.

One counter under one `threading.Lock` is the permit, so a single bulkhead caps threads and
tasks together. Callers that may wait queue up in one FIFO: a thread waits on a lock of its
own, a task on a future of its own loop that the releaser resolves with
``loop.call_soon_threadsafe``. Nothing is bound to an event loop when the bulkhead is built, so
one bulkhead serves several loops in turn (or at once, from several threads).

A released permit is handed straight to the first waiter, so a newcomer can never overtake
the queue, and the count of active calls never goes above ``max_concurrent``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

from ._config import Duration, duration, required_integer
from ._config import name as check_name
from ._deadline import _exceeded, remaining
from ._errors import BulkheadFull
from ._events import BulkheadRejected, emit
from ._timeout import decorate

__all__ = ["Bulkhead", "bulkhead"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_WAITING = 0
"""By default a full bulkhead rejects at once (fail fast), as resilience4j's does."""

_WAITING_WHERE = "waiting for a bulkhead slot"


class _ThreadWaiter:
    """A thread waiting for a permit; it blocks on a lock that the releaser unlocks."""

    __slots__ = ("granted", "lock")

    def __init__(self) -> None:
        self.granted = False
        self.lock = threading.Lock()
        self.lock.acquire()

    def wake(self) -> bool:
        self.lock.release()
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _TaskWaiter:
    """A task waiting for a permit, on a future of its own event loop."""

    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.granted = False
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def wake(self) -> bool:
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:
            # The loop is closed: its task will never resume to use (or return) the permit.
            return False
        return True


class Bulkhead:
    """Let at most *max_concurrent* calls run at once; up to *max_waiting* more wait.

    Callers beyond that, and waiters that waited *wait_timeout* seconds (None: as long as the
    active deadline allows), get `BulkheadFull`. A wait never outlasts the active deadline:
    when the deadline ends first, the waiter gets `DeadlineExceeded`. One bulkhead caps threads
    and asyncio tasks together, from any number of event loops.

    Use it as a decorator (sync or async), as ``with bh:`` / ``async with bh:``, or through
    ``bh.call(fn, ...)`` / ``await bh.call_async(fn, ...)``. Do not use ``with bh:`` in async
    code when callers may wait: a thread wait would block the event loop.

    Example:
        >>> from resilience import Bulkhead, BulkheadFull
        >>> db = Bulkhead(2, max_waiting=10, wait_timeout=1.0, name="db")
        >>> @db
        ... def query() -> str:
        ...     return "rows"
        >>> query()
        'rows'
        >>> with db:
        ...     db.active
        1
    """

    __slots__ = (
        "_active",
        "_lock",
        "_waiters",
        "max_concurrent",
        "max_waiting",
        "name",
        "wait_timeout",
    )

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int = DEFAULT_MAX_WAITING,
        wait_timeout: Duration | None = None,
        name: str | None = None,
    ) -> None:
        self.max_concurrent: int = required_integer("max_concurrent", max_concurrent)
        self.max_waiting: int = required_integer("max_waiting", max_waiting, minimum=0)
        self.wait_timeout: float | None = duration(
            "wait_timeout", wait_timeout, allow_zero=True, allow_none=True
        )
        self.name: str | None = check_name("name", name, allow_none=True)
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: deque[_ThreadWaiter | _TaskWaiter] = deque()

    # -- state ---------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Calls holding a permit right now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Callers waiting for a permit right now."""
        return len(self._waiters)

    @property
    def available(self) -> int:
        """Permits free right now."""
        return self.max_concurrent - self._active

    # -- permits -------------------------------------------------------------------------

    def _release_locked(self) -> None:
        """Give a permit back: straight to the first live waiter, else to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if waiter.wake():
                waiter.granted = True  # under the lock: a timed-out waiter checks it there
                return
        self._active -= 1

    def release(self) -> None:
        """Give back a permit taken with `acquire` or `aacquire`."""
        with self._lock:
            if self._active <= 0:
                msg = "Bulkhead.release() called without a permit held"
                raise RuntimeError(msg)
            self._release_locked()

    def _wait_limit(self) -> tuple[float | None, bool]:
        """How long a waiter may wait, and whether the active deadline is what limits it."""
        limit = self.wait_timeout
        left = remaining()
        if left is not None and (limit is None or left < limit):
            return left, True
        return limit, False

    def _reject(self, reason: str) -> BulkheadFull:
        emit(
            BulkheadRejected(
                name=self.name,
                max_concurrent=self.max_concurrent,
                max_waiting=self.max_waiting,
                reason=reason,
            )
        )
        if reason == "full":
            return BulkheadFull(self.name)
        label = f"bulkhead {self.name!r}" if self.name else "bulkhead"
        return BulkheadFull(self.name, f"{label} had no free slot within {self.wait_timeout:g} s")

    def acquire(self) -> None:
        """Take a permit, waiting if allowed; raise `BulkheadFull` when there is none.

        Pair it with `release` (``with bh:`` does both).
        """
        waiter = None
        with self._lock:
            if self._active < self.max_concurrent:
                self._active += 1
                return
            if len(self._waiters) < self.max_waiting:
                waiter = _ThreadWaiter()
                self._waiters.append(waiter)
        if waiter is None:
            raise self._reject("full")
        self._wait_thread(waiter)

    def _wait_thread(self, waiter: _ThreadWaiter) -> None:
        limit, by_deadline = self._wait_limit()
        try:
            got = waiter.lock.acquire(timeout=-1 if limit is None else limit)
        except BaseException:
            self._abandon(waiter)
            raise
        if got or not self._abandon(waiter):
            return
        if by_deadline:
            raise _exceeded(_WAITING_WHERE)
        raise self._reject("wait_timeout")

    def _abandon(self, waiter: _ThreadWaiter | _TaskWaiter) -> bool:
        """Take *waiter* out of the queue; return False when it was granted a permit after all."""
        with self._lock:
            if waiter.granted:
                return False
            if waiter in self._waiters:  # not when it was dropped as dead (its loop closed)
                self._waiters.remove(waiter)
            return True

    async def aacquire(self) -> None:
        """Take a permit from async code, waiting if allowed; raise `BulkheadFull` if none.

        A cancelled waiter leaves the queue, and a permit granted to it is passed on.
        """
        waiter = None
        with self._lock:
            if self._active < self.max_concurrent:
                self._active += 1
                return
            if len(self._waiters) < self.max_waiting:
                waiter = _TaskWaiter(asyncio.get_running_loop())
                self._waiters.append(waiter)
        if waiter is None:
            raise self._reject("full")
        limit, by_deadline = self._wait_limit()
        try:
            if limit is None:
                await waiter.future
            else:
                async with asyncio.timeout(limit):
                    await waiter.future
        except TimeoutError:
            if not self._abandon(waiter):
                return  # the permit came just as the wait timed out: keep it
            if by_deadline:
                raise _exceeded(_WAITING_WHERE) from None
            raise self._reject("wait_timeout") from None
        except BaseException:
            if not self._abandon(waiter):
                self.release()  # granted, but the caller is gone: pass the permit on
            raise

    # -- ways to use it ------------------------------------------------------------------

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call sync *fn* holding a permit.

        Example:
            >>> from resilience import Bulkhead
            >>> Bulkhead(1).call(max, 1, 2)
            2
        """
        lock = self._lock
        with lock:
            free = self._active < self.max_concurrent
            if free:
                self._active += 1
        if not free:
            self.acquire()
        try:
            return fn(*args, **kwargs)
        finally:
            with lock:
                if self._waiters:
                    self._release_locked()
                else:
                    self._active -= 1

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await *fn* holding a permit.

        Example:
            >>> import asyncio
            >>> from resilience import Bulkhead
            >>> async def ping() -> str:
            ...     return "pong"
            >>> asyncio.run(Bulkhead(1).call_async(ping))
            'pong'
        """
        await self.aacquire()
        try:
            return await fn(*args, **kwargs)
        finally:
            with self._lock:
                self._release_locked()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function: each call holds a permit while it runs."""
        return decorate(fn, self.call, self.call_async)

    def __enter__(self) -> Bulkhead:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> Bulkhead:
        await self.aacquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.max_concurrent}, max_waiting={self.max_waiting}, "
            f"wait_timeout={self.wait_timeout!r}, name={self.name!r}, "
            f"active={self._active}, waiting={len(self._waiters)})"
        )


def bulkhead(
    max_concurrent: int,
    *,
    max_waiting: int = DEFAULT_MAX_WAITING,
    wait_timeout: Duration | None = None,
    name: str | None = None,
) -> Bulkhead:
    """Decorator: let at most *max_concurrent* calls of the function run at once.

    Same arguments as `Bulkhead`; each decorated function gets a bulkhead of its own (build
    one `Bulkhead` and decorate several functions with it to share one limit).

    Example:
        >>> from resilience import bulkhead
        >>> @bulkhead(4, max_waiting=8, wait_timeout=0.5)
        ... async def render(page: str) -> str:
        ...     return page.upper()
    """
    return Bulkhead(max_concurrent, max_waiting=max_waiting, wait_timeout=wait_timeout, name=name)
