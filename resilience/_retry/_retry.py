"""Retry: call again after a failure, with backoff, within attempts, a timeout and a budget.

Anatomy: a validated `Retry` (immutable after construction, so one object serves every
thread and task), a pure decision step (`Retry._after_error` / `_after_result`: retry after
how long, or give up), and twin sync/async drivers that only call, sleep and loop.

The happy path allocates nothing of ours: the decorator's wrapper calls the function inside
a ``try``; everything else (test mode, backoff, deadline, budget, events) happens only after
a failure. The original exception always propagates, as the same object, with a PEP 678
note when retrying gave up.

Interface for other components (the httpx transports run their own HTTP-aware loop from a
`Retry`'s settings; the `Policy` drives the call through `call` / `call_async`):

- ``retry.attempts`` (int): total attempts, the first included, as configured.
- ``retry.max_attempts() -> int``: the attempts to make now (test mode may cap them).
- ``retry.timeout`` (float | None): total seconds for all attempts and waits.
- ``retry.budget`` (`RetryBudget` | None): call ``budget.record_call()`` once per logical
  call, and ``budget.try_spend() -> bool`` before each retry (False: give up now).
- ``retry.should_retry(exc) -> bool``: the ``on`` filter, never true for `CircuitOpenError`
  or `BulkheadFull` unless ``on`` names them, never true for a `BaseException` that is not
  an `Exception`.
- ``retry.compute_wait(attempt, error=None) -> float``: the backoff after *attempt* attempts
  (1-based), jitter applied; 0.0 in test mode. Pass the failed attempt's exception as
  *error* when there is one (``tenacity.wait_exception`` needs it).
- ``retry.sleep`` / ``retry.asleep`` / ``retry.clock`` / ``retry.name``: the injected sleep
  functions, clock and event name.
- ``retry.call(fn, *args, **kwargs)`` and ``await retry.call_async(fn, *args, **kwargs)``.
- Test mode is `resilience._testmode` (``wait(seconds)``, ``max_attempts(n)``): a wait
  computed outside `compute_wait` (a ``Retry-After``) should go through ``_testmode.wait``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast

from .. import _testmode
from .._deadline import Deadline, current_deadline
from .._errors import BulkheadFull, CircuitOpenError, ConfigError
from .._observe._events import (
    RetryBudgetExhausted,
    RetryExhausted,
    RetryScheduled,
    emit,
    error_name,
)
from .._public import public
from .._validate import (
    NO_TIMEOUT_HINT,
    Clock,
    Duration,
    ExceptionFilter,
    duration,
    exception_filter,
    required_integer,
)
from .._validate import (
    clock as check_clock,
)
from .._validate import (
    name as check_name,
)
from ..backoff import Backoff, TenacityWait, as_backoff, exponential
from ._budget import RetryBudget

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = ["DEFAULT_ATTEMPTS", "DEFAULT_BACKOFF", "MAX_RETRY_AFTER", "Retry", "retry"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_ATTEMPTS: Final = 3
DEFAULT_BACKOFF: Final = exponential(initial=0.1, maximum=10.0, multiplier=2.0, jitter=True)
MAX_RETRY_AFTER: Final = 60.0
"""Longest wait honoured from an exception's ``retry_after`` hint (seconds)."""

# Rejections by our own guards: retrying them only spins against the open breaker or the
# full bulkhead, so a broad ``on`` (Exception) must not pick them up by accident.
_GUARDS: Final = (CircuitOpenError, BulkheadFull)

Sleep = Callable[[float], object]
AsyncSleep = Callable[[float], Awaitable[object]]


def _callable(setting: str, value: object) -> Any:
    if not callable(value):
        msg = f"{setting} must be callable, got {value!r}"
        raise ConfigError(msg)
    return value


def _check_budget(value: object) -> RetryBudget | None:
    if value is not None and not isinstance(value, RetryBudget):
        msg = f"budget must be a RetryBudget or None, got {value!r}"
        raise ConfigError(msg)
    return value


def _hint(exc: BaseException) -> float | None:
    """A server's or component's own wait hint: a numeric ``retry_after`` attribute."""
    hint = getattr(exc, "retry_after", None)
    if isinstance(hint, int | float) and not isinstance(hint, bool) and hint > 0.0:
        return float(hint) if hint < MAX_RETRY_AFTER else MAX_RETRY_AFTER
    return None


def _plural(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


class Retry:
    """Call a function again when it fails with one of the ``on`` errors.

    Args:
        on: required and keyword-only (a bare ``@retry`` fails loudly instead of taking the
            function for a predicate). Exception types, a tuple of them, or a predicate
            ``exc -> bool``: which errors are worth another attempt. `CircuitOpenError` and
            `BulkheadFull` are never retried unless ``on`` names them (a type in ``on``).
        attempts: total calls, the first included (default 3).
        backoff: a strategy from `resilience.backoff` or any tenacity wait object
            (default: exponential from 0.1 s, doubling, up to 10 s, full jitter).
        on_result: predicate ``result -> bool``: retry when it returns True. When attempts
            run out, the last result is returned.
        timeout: total seconds for all attempts and waits; the call runs inside a
            ``deadline(timeout)`` (in async code an attempt still running then is cancelled
            and `DeadlineExceeded` raised).
        budget: a `RetryBudget`, shared with other retries.
        name: name used in events (default: the wrapped function's qualified name).
        clock, sleep, asleep: injectable time source and sleep functions (sync and async).

    A wait never crosses the active deadline: if the next wait would, retrying stops at once
    and the last error propagates, with a note. An exception with a numeric
    ``retry_after`` attribute (seconds) waits at least that long (at most 60 s). When
    attempts run out, the last exception propagates as the same object with a PEP 678 note
    saying how many attempts were made. Only `Exception` is ever retried: cancellation and
    ``KeyboardInterrupt`` propagate at once.

    A `Retry` holds no per-call state: one object can decorate many functions and serve
    every thread and task.

    Example:
        >>> from resilience import Retry, backoff
        >>> calls = []
        >>> policy = Retry(on=ConnectionError, attempts=3, backoff=backoff.none())
        >>> @policy
        ... def fetch() -> str:
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise ConnectionError("refused")
        ...     return "ok"
        >>> fetch(), len(calls)
        ('ok', 3)
    """

    __slots__ = (
        "_asleep",
        "_attempts",
        "_backoff",
        "_budget",
        "_clock",
        "_guards",
        "_name",
        "_on",
        "_on_result",
        "_on_setting",
        "_sleep",
        "_tenacity",
        "_timeout",
    )

    def __init__(
        self,
        *,
        on: ExceptionFilter,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: Backoff | Callable[[Any], float] = DEFAULT_BACKOFF,
        on_result: Callable[[Any], bool] | None = None,
        timeout: Duration | None = None,
        budget: RetryBudget | None = None,
        name: str | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        asleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        self._on_setting = on
        self._on = exception_filter("on", on)
        types: tuple[type[BaseException], ...] | None = getattr(self._on, "types", None)
        if types is None:
            self._guards: tuple[type[BaseException], ...] = _GUARDS
        else:
            # A guard is let through only when ``on`` names it (or a subclass) itself.
            self._guards = tuple(
                guard for guard in _GUARDS if not any(issubclass(t, guard) for t in types)
            )
        self._attempts = required_integer("attempts", attempts)
        self._backoff = as_backoff(backoff)
        # A tenacity wait gets a full RetryCallState per call (fn, args, start time...).
        self._tenacity = self._backoff if isinstance(self._backoff, TenacityWait) else None
        self._on_result: Callable[[Any], bool] | None = (
            None if on_result is None else _callable("on_result", on_result)
        )
        self._timeout = duration("timeout", timeout, allow_none=True, hint=NO_TIMEOUT_HINT)
        self._budget = _check_budget(budget)
        self._name = check_name("name", name, allow_none=True)
        self._clock = check_clock("clock", clock)
        self._sleep: Sleep = _callable("sleep", sleep)
        self._asleep: AsyncSleep = _callable("asleep", asleep)

    # -- settings, read by the transports and the policy ---------------------------------

    @property
    def attempts(self) -> int:
        """Total attempts, the first included, as configured (see `max_attempts`)."""
        return self._attempts

    @property
    def timeout(self) -> float | None:
        """Total seconds for all attempts and waits, or None."""
        return self._timeout

    @property
    def budget(self) -> RetryBudget | None:
        """The shared `RetryBudget`, or None."""
        return self._budget

    @property
    def backoff(self) -> Backoff:
        """The backoff strategy (a tenacity wait object comes back wrapped)."""
        return self._backoff

    @property
    def on_result(self) -> Callable[[Any], bool] | None:
        """The result predicate, or None."""
        return self._on_result

    @property
    def name(self) -> str | None:
        """The name used in events, or None (then the function's name is used)."""
        return self._name

    @property
    def clock(self) -> Clock:
        """The clock that measures ``timeout``."""
        return self._clock

    @property
    def sleep(self) -> Sleep:
        """The sync sleep function."""
        return self._sleep

    @property
    def asleep(self) -> AsyncSleep:
        """The async sleep function."""
        return self._asleep

    def should_retry(self, exc: BaseException) -> bool:
        """Whether *exc* is worth another attempt according to ``on``.

        Example:
            >>> from resilience import CircuitOpenError, Retry
            >>> r = Retry(on=Exception)
            >>> r.should_retry(ConnectionError()), r.should_retry(CircuitOpenError("x", 1.0))
            (True, False)
        """
        if not isinstance(exc, Exception):
            return False
        if self._guards and isinstance(exc, self._guards):
            return False
        return bool(self._on(exc))

    def max_attempts(self) -> int:
        """The attempts to make now: ``attempts``, unless test mode caps or sets them."""
        return _testmode.max_attempts(self._attempts)

    def compute_wait(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after *attempt* attempts (1-based): the backoff, or 0 in test mode.

        *error*, the failed attempt's exception, is handed to backoffs that use it
        (``tenacity.wait_exception``); hints such as ``retry_after`` are not applied here.

        Example:
            >>> from resilience import Retry, backoff
            >>> Retry(on=OSError, backoff=backoff.constant(0.5)).compute_wait(1)
            0.5
        """
        if _testmode.settings() is not None:
            return 0.0
        return self._backoff.compute(attempt, error)

    # -- the pure decision step ------------------------------------------------------------

    def _event_name(self, fn: Callable[..., object]) -> str | None:
        if self._name is not None:
            return self._name
        return getattr(fn, "__qualname__", None)

    def _wait_or_limit(
        self,
        attempt: int,
        error: BaseException | None,
        state: RetryCallState | None = None,
        result: object = None,
    ) -> tuple[float, str | None]:
        """The next wait, and why retrying must stop instead (None: it may go on).

        *state* is the call's tenacity state when the backoff is a tenacity wait.
        """
        if attempt >= _testmode.max_attempts(self._attempts):
            return 0.0, ""
        if _testmode.settings() is not None:
            wait = 0.0
        elif state is not None and self._tenacity is not None:
            wait = self._tenacity.compute_for(state, attempt, error, result, self._clock())
        else:
            wait = self._backoff.compute(attempt, error)
            if error is not None:
                hint = _hint(error)
                if hint is not None and hint > wait:
                    wait = hint
        expiry = current_deadline()
        if expiry is not None:
            left = expiry.remaining()
            if wait >= left:
                return wait, (
                    f"the next wait ({wait:.3g} s) would cross the deadline ({left:.3g} s left)"
                )
        return wait, None

    def _after_error(
        self,
        attempt: int,
        exc: BaseException,
        fn: Callable[..., object],
        state: RetryCallState | None = None,
    ) -> float | None:
        """After a failed *attempt*: the wait before the next one, or None to give up.

        Giving up annotates *exc* (the caller re-raises it) and emits the event.
        """
        if not self.should_retry(exc):
            return None
        wait, stop = self._wait_or_limit(attempt, exc, state)
        if stop is None and self._budget is not None and not self._budget.try_spend():
            exc.add_note(
                f"resilience: retry gave up after {_plural(attempt)}: the retry budget is exhausted"
            )
            emit(
                RetryBudgetExhausted(
                    name=self._event_name(fn), attempt=attempt, error=error_name(exc)
                )
            )
            return None
        if stop is not None:
            reason = f": {stop}" if stop else ""
            exc.add_note(f"resilience: retry gave up after {_plural(attempt)}{reason}")
            emit(RetryExhausted(name=self._event_name(fn), attempts=attempt, error=error_name(exc)))
            return None
        emit(
            RetryScheduled(
                name=self._event_name(fn), attempt=attempt, wait=wait, error=error_name(exc)
            )
        )
        return wait

    def _after_result(
        self,
        attempt: int,
        fn: Callable[..., object],
        state: RetryCallState | None = None,
        result: object = None,
    ) -> float | None:
        """After an attempt whose result ``on_result`` rejected: the wait, or None to return it."""
        wait, stop = self._wait_or_limit(attempt, None, state, result)
        if stop is None and self._budget is not None and not self._budget.try_spend():
            emit(RetryBudgetExhausted(name=self._event_name(fn), attempt=attempt, error="result"))
            return None
        if stop is not None:
            emit(RetryExhausted(name=self._event_name(fn), attempts=attempt, error="result"))
            return None
        emit(RetryScheduled(name=self._event_name(fn), attempt=attempt, wait=wait, error="result"))
        return wait

    # -- drivers -----------------------------------------------------------------------------

    def _loop_sync(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attempt: int,
        wait: float,
        state: RetryCallState | None = None,
    ) -> T:
        on_result = self._on_result
        while True:
            if wait > 0.0:
                self._sleep(wait)
                if state is not None:
                    state.idle_for += wait
            attempt += 1
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                next_wait = self._after_error(attempt, exc, fn, state)
                if next_wait is None:
                    raise
                wait = next_wait
                continue
            if on_result is None or not on_result(result):
                return result
            next_wait = self._after_result(attempt, fn, state, result)
            if next_wait is None:
                return result
            wait = next_wait

    async def _loop_async(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attempt: int,
        wait: float,
        state: RetryCallState | None = None,
    ) -> T:
        on_result = self._on_result
        while True:
            if wait > 0.0:
                await self._asleep(wait)
                if state is not None:
                    state.idle_for += wait
            attempt += 1
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                next_wait = self._after_error(attempt, exc, fn, state)
                if next_wait is None:
                    raise
                wait = next_wait
                continue
            if on_result is None or not on_result(result):
                return result
            next_wait = self._after_result(attempt, fn, state, result)
            if next_wait is None:
                return result
            wait = next_wait

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` with retries (sync).

        Example:
            >>> from resilience import Retry
            >>> Retry(on=ConnectionError).call(int, "42")
            42
        """
        if self._budget is not None:
            self._budget.record_call()
        state = (
            None
            if self._tenacity is None
            else self._tenacity.start(fn, args, kwargs, self._clock())
        )
        if self._timeout is not None:
            with Deadline(self._timeout, clock=self._clock):
                return self._loop_sync(fn, args, kwargs, 0, 0.0, state)
        return self._loop_sync(fn, args, kwargs, 0, 0.0, state)

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` with retries (async).

        Example:
            >>> import asyncio
            >>> from resilience import Retry
            >>> async def answer() -> int:
            ...     return 42
            >>> asyncio.run(Retry(on=ConnectionError).call_async(answer))
            42
        """
        if self._budget is not None:
            self._budget.record_call()
        state = (
            None
            if self._tenacity is None
            else self._tenacity.start(fn, args, kwargs, self._clock())
        )
        if self._timeout is not None:
            async with Deadline(self._timeout, clock=self._clock):
                return await self._loop_async(fn, args, kwargs, 0, 0.0, state)
        return await self._loop_async(fn, args, kwargs, 0, 0.0, state)

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate a function or an ``async def`` function with this retry."""
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, T], self._wrap_async(fn))
        return self._wrap_sync(fn)

    def _slow_path(self) -> bool:
        """Whether a decorated call must go through `call`: the fast path inlines none of
        the budget, the timeout, ``on_result`` or a tenacity wait's call state."""
        return (
            self._budget is not None
            or self._timeout is not None
            or self._on_result is not None
            or self._tenacity is not None
        )

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        if self._slow_path():
            call = self.call

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return call(fn, *args, **kwargs)

            return wrapper

        after_error = self._after_error
        loop = self._loop_sync

        # The common case, inlined: the first attempt costs one call and a zero-cost ``try``.
        @functools.wraps(fn)
        def fast(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                wait = after_error(1, exc, fn)
                if wait is None:
                    raise
            return loop(fn, args, kwargs, 1, wait)

        return fast

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        if self._slow_path():
            call_async = self.call_async

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return await call_async(fn, *args, **kwargs)

            return wrapper

        after_error = self._after_error
        loop = self._loop_async

        @functools.wraps(fn)
        async def fast(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                wait = after_error(1, exc, fn)
                if wait is None:
                    raise
            return await loop(fn, args, kwargs, 1, wait)

        return fast

    def __repr__(self) -> str:
        parts = [f"on={self._on_setting!r}", f"attempts={self._attempts!r}"]
        parts.append(f"backoff={self._backoff!r}")
        if self._on_result is not None:
            parts.append(f"on_result={self._on_result!r}")
        if self._timeout is not None:
            parts.append(f"timeout={self._timeout!r}")
        if self._budget is not None:
            parts.append(f"budget={self._budget!r}")
        if self._name is not None:
            parts.append(f"name={self._name!r}")
        return f"Retry({', '.join(parts)})"


def retry(
    *,
    on: ExceptionFilter,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: Backoff | Callable[[Any], float] = DEFAULT_BACKOFF,
    on_result: Callable[[Any], bool] | None = None,
    timeout: Duration | None = None,
    budget: RetryBudget | None = None,
    name: str | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    asleep: AsyncSleep = asyncio.sleep,
) -> Retry:
    """`Retry(...)` as a decorator: retry the function when it fails with an ``on`` error.

    Works on plain functions, methods and ``async def`` functions; the signature is kept.

    Example:
        >>> from resilience import backoff, retry
        >>> attempts = []
        >>> @retry(on=TimeoutError, attempts=2, backoff=backoff.none())
        ... def lookup(key: str) -> str:
        ...     attempts.append(key)
        ...     if len(attempts) == 1:
        ...         raise TimeoutError
        ...     return key.upper()
        >>> lookup("a"), attempts
        ('A', ['a', 'a'])
    """
    return Retry(
        on=on,
        attempts=attempts,
        backoff=backoff,
        on_result=on_result,
        timeout=timeout,
        budget=budget,
        name=name,
        clock=clock,
        sleep=sleep,
        asleep=asleep,
    )


public("resilience", Retry, retry)
