"""Retry: call again after a failure, with backoff, within attempts, a timeout and a budget.

Anatomy: a validated `Retry` (immutable after construction, so one object serves every
thread and task), the pure decision `._decision.decide` (wait how long, or stop why), its
report `._report.announce` (events and notes), and twin sync/async drivers that only call,
sleep and loop. The httpx transports ask the same decision and report the same way.

The happy path allocates nothing of ours: the decorator's wrapper calls the function inside
a ``try``; everything else (test mode, backoff, deadline, budget, events) happens only after
a failure. The original exception always propagates, as the same object, with a PEP 678
note when retrying gave up.

Other components read a `Retry`'s settings through its properties (``attempts``,
``timeout``, ``budget``, ``clock``...), ``max_attempts()`` (test mode applied),
``should_retry(exc)`` (the ``on`` filter with the guards), and ask the backoff through
``new_state`` / ``backoff_for``; the `Policy` drives a call through ``call`` /
``call_async``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast

from .. import _testmode
from .._deadline import Deadline, current_deadline
from .._errors import BulkheadFull, CircuitOpenError, ConfigError
from .._observe._events import error_name
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
from .._wrapping import CANNOT_REPEAT, is_generator, refuse_generator, wraps
from ..backoff import (
    Backoff,
    Constant,
    Exponential,
    NoBackoff,
    TenacityWait,
    as_backoff,
    exponential,
)
from ._budget import RetryBudget
from ._decision import DEFAULT_ATTEMPTS, MAX_RETRY_AFTER, decide
from ._report import announce
from ._shape import check_arity, check_callable

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = ["DEFAULT_ATTEMPTS", "DEFAULT_BACKOFF", "MAX_RETRY_AFTER", "Retry", "retry"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_BACKOFF: Final = exponential(initial=0.1, maximum=10.0, multiplier=2.0, jitter=True)

_NOTE: Final = "resilience: retry "
_ERRORLESS: Final = (Exponential, Constant, NoBackoff)
_ON_FIX: Final = "write it as e.g. lambda exc: isinstance(exc, ConnectionError)"
_RESULT_FIX: Final = "write it as e.g. lambda result: result is None"

# Rejections by our own guards: retrying them only spins against the open breaker or the
# full bulkhead, so a broad ``on`` (Exception) must not pick them up by accident.
_GUARDS: Final = (CircuitOpenError, BulkheadFull)

Sleep = Callable[[float], object]
AsyncSleep = Callable[[float], Awaitable[object]]


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
        "_compute",
        "_errorless",
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
            check_arity("on", on, args=1, takes="the exception", fix=_ON_FIX)
            self._guards: tuple[type[BaseException], ...] = _GUARDS
        else:
            # A guard is let through only when ``on`` names it (or a subclass) itself.
            self._guards = tuple(
                guard for guard in _GUARDS if not any(issubclass(t, guard) for t in types)
            )
        self._attempts = required_integer("attempts", attempts)
        self._backoff = as_backoff(backoff)
        self._compute = self._backoff.compute
        # Our own strategies never read the error: no partial to build per retry.
        self._errorless = type(self._backoff) in _ERRORLESS
        # A tenacity wait gets a full RetryCallState per call (fn, args, start time...).
        self._tenacity = self._backoff if isinstance(self._backoff, TenacityWait) else None
        self._on_result: Callable[[Any], bool] | None = (
            None
            if on_result is None
            else check_callable("on_result", on_result, args=1, takes="the result", fix=_RESULT_FIX)
        )
        self._timeout = duration("timeout", timeout, allow_none=True, hint=NO_TIMEOUT_HINT)
        self._budget = _check_budget(budget)
        self._name = check_name("name", name, allow_none=True)
        self._clock = check_clock("clock", clock)
        self._sleep: Sleep = check_callable("sleep", sleep, args=1, takes="the seconds")
        self._asleep: AsyncSleep = check_callable("asleep", asleep, args=1, takes="the seconds")

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

    def new_state(
        self, fn: Callable[..., object] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> RetryCallState | None:
        """A tenacity state for one logical call of *fn*, or None unless the backoff is a
        tenacity wait (which then sees ``fn``, ``args``, the start time, the sleeps...)."""
        tenacity = self._tenacity
        if tenacity is None:
            return None
        return tenacity.start(fn, args, kwargs, self._clock())

    def backoff_for(
        self,
        error: BaseException | None = None,
        result: object = None,
        state: RetryCallState | None = None,
    ) -> Callable[[int], float]:
        """The backoff as `decide` asks it, ``attempt -> seconds``, for one failure: *error*
        (or the *result* ``on_result`` rejected), recorded in *state* for tenacity waits."""
        tenacity = self._tenacity
        if state is not None and tenacity is not None:
            clock = self._clock
            return lambda attempt: tenacity.compute_for(state, attempt, error, result, clock())
        if error is None or self._errorless:
            return self._compute
        return partial(self._compute, error=error)

    # -- asking the decision -------------------------------------------------------------

    def _event_name(self, fn: Callable[..., object]) -> str | None:
        if self._name is not None:
            return self._name
        return getattr(fn, "__qualname__", None)

    def _after(
        self,
        attempt: int,
        fn: Callable[..., object],
        exc: BaseException | None,
        state: RetryCallState | None = None,
        result: object = None,
    ) -> float | None:
        """After a failed *attempt*: the wait before the next one, or None to stop.

        The failure is *exc*, or (*exc* None) the *result* that ``on_result`` rejected.
        Stopping annotates *exc* (the caller re-raises it); the events are emitted here.
        """
        if exc is not None and not self.should_retry(exc):
            return None
        expiry = current_deadline()
        verdict = decide(
            attempt,
            _testmode.max_attempts(self._attempts),
            self.backoff_for(exc, result, state),
            hint=None if exc is None else _hint(exc),
            testing=_testmode.settings() is not None,
            deadline_left=None if expiry is None else expiry.remaining(),
            budget=self._budget,
        )
        error = "result" if exc is None else error_name(exc)
        wait = announce(verdict, self._event_name(fn), attempt, error, exc, _NOTE)
        if wait is not None and state is not None:
            state.idle_for += wait
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
            attempt += 1
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                next_wait = self._after(attempt, fn, exc, state)
                if next_wait is None:
                    raise
                wait = next_wait
                continue
            if on_result is None or not on_result(result):
                return result
            next_wait = self._after(attempt, fn, None, state, result)
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
            attempt += 1
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                next_wait = self._after(attempt, fn, exc, state)
                if next_wait is None:
                    raise
                wait = next_wait
                continue
            if on_result is None or not on_result(result):
                return result
            next_wait = self._after(attempt, fn, None, state, result)
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
        state = None if self._tenacity is None else self.new_state(fn, args, kwargs)
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
        state = None if self._tenacity is None else self.new_state(fn, args, kwargs)
        if self._timeout is not None:
            async with Deadline(self._timeout, clock=self._clock):
                return await self._loop_async(fn, args, kwargs, 0, 0.0, state)
        return await self._loop_async(fn, args, kwargs, 0, 0.0, state)

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate a function or an ``async def`` function with this retry.

        Generator functions are refused with `ConfigError`: items already handed to the
        consumer cannot be taken back, so a failed iteration cannot be run again. Retry the
        call that opens the stream instead, or a function that returns the items as a list.
        """
        if is_generator(fn):
            refuse_generator(
                fn,
                "retry",
                CANNOT_REPEAT,
                "Retry the call that opens the stream instead, or decorate a function that "
                "returns the items as a list.",
            )
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

            @wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return call(fn, *args, **kwargs)

            return wrapper

        after = self._after
        loop = self._loop_sync

        # The common case, inlined: the first attempt costs one call and a zero-cost ``try``.
        @wraps(fn)
        def fast(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                wait = after(1, fn, exc)
                if wait is None:
                    raise
            return loop(fn, args, kwargs, 1, wait)

        return fast

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        if self._slow_path():
            call_async = self.call_async

            @wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return await call_async(fn, *args, **kwargs)

            return wrapper

        after = self._after
        loop = self._loop_async

        @wraps(fn)
        async def fast(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                wait = after(1, fn, exc)
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
