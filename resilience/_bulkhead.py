"""Bulkhead: at most N calls at once, shared by threads and asyncio tasks alike.

The permits are tokens in a list: taking one is ``list.pop()`` and giving one back is
``list.append()``, both atomic, so the happy path takes no lock at all. Callers that may wait
queue up in one FIFO under a `threading.Lock`: a thread waits on a lock of its own, a task on a
future of its own loop that the releaser resolves with ``loop.call_soon_threadsafe``. Nothing
is bound to an event loop when the bulkhead is built, so one bulkhead serves several loops in
turn (or at once, from several threads), and it caps threads and tasks together.

No wake-up is lost: a releaser appends its token *then* looks for waiters; a waiter enqueues
itself *then* tries for a token once more, under the lock. Whichever comes second sees the
other. A token freed while callers wait is handed straight to the first of them.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from ._deadline import _exceeded, remaining
from ._errors import BulkheadFull
from ._observe._events import BulkheadRejected, emit
from ._public import public
from ._validate import MAX_CONCURRENT, Duration, duration, required_integer
from ._validate import name as check_name
from ._wrapping import wrap_async_generator, wrap_generator, wraps

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
        "_lock",
        "_tokens",
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
        self.max_concurrent: int = required_integer(
            "max_concurrent", max_concurrent, maximum=MAX_CONCURRENT
        )
        self.max_waiting: int = required_integer("max_waiting", max_waiting, minimum=0)
        self.wait_timeout: float | None = duration(
            "wait_timeout", wait_timeout, allow_zero=True, allow_none=True
        )
        self.name: str | None = check_name("name", name, allow_none=True)
        self._lock = threading.Lock()
        self._tokens: list[None] = [None] * self.max_concurrent
        self._waiters: deque[_ThreadWaiter | _TaskWaiter] = deque()

    # -- state ---------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Calls holding a permit right now."""
        return self.max_concurrent - len(self._tokens)

    @property
    def waiting(self) -> int:
        """Callers waiting for a permit right now."""
        return len(self._waiters)

    @property
    def available(self) -> int:
        """Permits free right now."""
        return len(self._tokens)

    # -- permits -------------------------------------------------------------------------

    def _hand_over(self) -> None:
        """Give free tokens to the first live waiters (called when someone may wait)."""
        with self._lock:
            waiters = self._waiters
            tokens = self._tokens
            while waiters and tokens:
                tokens.pop()
                waiter = waiters.popleft()
                if waiter.wake():
                    waiter.granted = True  # under the lock: a timed-out waiter checks it there
                else:
                    tokens.append(None)  # its loop is closed: try the next waiter

    def release(self) -> None:
        """Give back a permit taken with `acquire` or `aacquire`."""
        if len(self._tokens) >= self.max_concurrent:
            msg = "Bulkhead.release() called without a permit held"
            raise RuntimeError(msg)
        self._tokens.append(None)
        if self._waiters:
            self._hand_over()

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
        try:
            self._tokens.pop()
        except IndexError:
            self._acquire_slow()

    def _enqueue(self, waiter: _ThreadWaiter | _TaskWaiter) -> bool:
        """Queue *waiter* and return True, or False when a token was free after all.

        Raises `BulkheadFull` when the queue has no room and no token is free.
        """
        with self._lock:
            waiters = self._waiters
            room = len(waiters) < self.max_waiting
            if room:
                waiters.append(waiter)
            try:
                self._tokens.pop()
            except IndexError:
                if room:
                    return True
            else:
                if room:
                    waiters.pop()  # nobody else appends while we hold the lock: it is ours
                return False
        raise self._reject("full")

    def _acquire_slow(self) -> None:
        if self.max_waiting == 0:
            # Fail fast, but a token may have come back since the first try.
            try:
                self._tokens.pop()
            except IndexError:
                raise self._reject("full") from None
            return
        waiter = _ThreadWaiter()
        if not self._enqueue(waiter):
            return
        limit, by_deadline = self._wait_limit()
        try:
            got = waiter.lock.acquire(timeout=-1 if limit is None else limit)
        except BaseException:
            if not self._abandon(waiter):
                self.release()
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
        try:
            self._tokens.pop()
        except IndexError:
            await self._aacquire_slow()

    async def _aacquire_slow(self) -> None:
        if self.max_waiting == 0:
            self._acquire_slow()
            return
        waiter = _TaskWaiter(asyncio.get_running_loop())
        if not self._enqueue(waiter):
            return
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
        try:
            self._tokens.pop()
        except IndexError:
            self._acquire_slow()
        try:
            return fn(*args, **kwargs)
        finally:
            self._tokens.append(None)
            if self._waiters:
                self._hand_over()

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
        try:
            self._tokens.pop()
        except IndexError:
            await self._aacquire_slow()
        try:
            return await fn(*args, **kwargs)
        finally:
            self._tokens.append(None)
            if self._waiters:
                self._hand_over()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a function, an async function or a (sync or async) generator function.

        Each call holds a permit while it runs. For a generator function the call is the
        whole iteration: the permit is taken at the first ``next()`` (a full bulkhead raises
        `BulkheadFull` there) and given back when the generator finishes, fails or is
        closed. A generator left suspended keeps its permit until it is closed or
        garbage-collected: iterate it to its end, or close it (``contextlib.closing``,
        ``contextlib.aclosing``).
        """
        if inspect.isasyncgenfunction(fn):
            return cast(Callable[P, R], wrap_async_generator(fn, lambda: _AsyncIteration(self)))
        if inspect.isgeneratorfunction(fn):
            return cast(Callable[P, R], wrap_generator(fn, lambda: _Iteration(self)))
        # The hot path, inlined: two atomic list operations around the call.
        pop = self._tokens.pop
        push = self._tokens.append
        waiters = self._waiters
        hand_over = self._hand_over
        if inspect.iscoroutinefunction(fn):
            afn = fn
            aacquire_slow = self._aacquire_slow

            @wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    pop()
                except IndexError:
                    await aacquire_slow()
                try:
                    return await afn(*args, **kwargs)
                finally:
                    push(None)
                    if waiters:
                        hand_over()

            return cast(Callable[P, R], async_wrapper)
        acquire_slow = self._acquire_slow

        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                pop()
            except IndexError:
                acquire_slow()
            try:
                return fn(*args, **kwargs)
            finally:
                push(None)
                if waiters:
                    hand_over()

        return wrapper

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
            f"active={self.active}, waiting={len(self._waiters)})"
        )


class _Iteration:
    """One iteration of a generator holding a permit of *bulkhead* from start to finish."""

    __slots__ = ("_bulkhead",)

    def __init__(self, bulkhead: Bulkhead) -> None:
        self._bulkhead = bulkhead

    def start(self) -> None:
        self._bulkhead.acquire()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def finish(self, error: BaseException | None) -> None:
        self._bulkhead.release()


class _AsyncIteration:
    """One iteration of an async generator holding a permit of *bulkhead*."""

    __slots__ = ("_bulkhead",)

    def __init__(self, bulkhead: Bulkhead) -> None:
        self._bulkhead = bulkhead

    async def start(self) -> None:
        await self._bulkhead.aacquire()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def finish(self, error: BaseException | None) -> None:
        self._bulkhead.release()


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


public("resilience", Bulkhead, bulkhead)
