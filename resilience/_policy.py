"""Policy: every pattern around one call, in one fixed order.

Outermost first::

    fallback -> bulkhead -> timeout (total) -> retry -> breaker -> attempt_timeout -> call

Why this order: the fallback sees every failure, rejections included; the bulkhead caps the
whole call, waits and retries included, so a retry storm cannot take more slots; the total
timeout bounds every attempt and every wait of the retry; each attempt passes the breaker on
its own, so the breaker counts attempts, and an attempt that overruns ``attempt_timeout``
counts as a breaker failure while the total timeout does not.

The chain is built once, when a function is decorated, by stacking the components' own
decorators; a call goes straight through them with nothing of the policy's own in between.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._bulkhead import Bulkhead
from ._errors import ConfigError
from ._fallback import Fallback
from ._public import public
from ._timeout import Timeout
from ._validate import Clock, Duration, duration
from ._validate import clock as check_clock
from ._wrapping import CANNOT_REPEAT, CANNOT_REPLACE, is_generator, refuse_generator

if TYPE_CHECKING:
    from ._breaker._breaker import CircuitBreaker
    from ._retry._retry import Retry

__all__ = ["Policy"]

P = ParamSpec("P")
R = TypeVar("R")


def _seconds(setting: str, value: object) -> float | None:
    if isinstance(value, Timeout):
        return value.seconds
    return duration(setting, value, allow_none=True)


def _check(setting: str, value: object, kind: type, what: str) -> None:
    """Refuse a slot value of the wrong kind (type hints do not reach every caller)."""
    if value is not None and not isinstance(value, kind):
        msg = f"{setting} must be {what}, got {value!r}"
        raise ConfigError(msg)


def _as_timeout(value: object, seconds: float | None, clock: Clock) -> Timeout | None:
    if seconds is None:
        return None
    return value if isinstance(value, Timeout) else Timeout(seconds, clock=clock)


class Policy:
    """Compose fallback, bulkhead, total timeout, retry, breaker and attempt timeout.

    Every slot is optional. ``timeout`` and ``attempt_timeout`` take seconds (a float or a
    `timedelta`, or a `timeout(...)`); ``bulkhead`` takes a `Bulkhead` or an int
    (``Bulkhead(n)``); ``retry`` a `Retry`; ``breaker`` a `CircuitBreaker`; ``fallback`` what
    `fallback(...)` returns. ``attempt_timeout`` longer than ``timeout`` (or than the retry's
    own ``timeout``) is a `ConfigError`. ``clock`` is the clock the two timeouts read (inject a
    `resilience.testing.FakeClock` in tests; the other slots take their own).

    In async code both timeouts cancel the work. In sync code they are cooperative: the
    deadline is set, and retries, transports and policies inside check it.

    A policy holds live state (the breaker's window, the bulkhead's permits, the retry
    budget): every function decorated with one policy object shares it. Build one policy per
    dependency and keep it, never one per request.

    Example:
        >>> from resilience import Bulkhead, CircuitBreaker, Policy, Retry, backoff
        >>> payments = Policy(
        ...     timeout=5.0,
        ...     retry=Retry(on=ConnectionError, backoff=backoff.none()),
        ...     breaker=CircuitBreaker("doc-payments"),
        ...     attempt_timeout=1.0,
        ...     bulkhead=Bulkhead(20),
        ... )
        >>> @payments
        ... def charge(cents: int) -> str:
        ...     return f"charged {cents}"
        >>> charge(250)
        'charged 250'
    """

    __slots__ = (
        "_attempt_timeout",
        "_breaker",
        "_bulkhead",
        "_fallback",
        "_retry",
        "_timeout",
        "_timeouts",
    )

    def __init__(
        self,
        *,
        timeout: Duration | Timeout | None = None,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        attempt_timeout: Duration | Timeout | None = None,
        bulkhead: Bulkhead | int | None = None,
        fallback: Fallback | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        from ._breaker._breaker import CircuitBreaker
        from ._retry._retry import Retry

        clock = check_clock("clock", clock)
        total = _seconds("timeout", timeout)
        attempt = _seconds("attempt_timeout", attempt_timeout)
        _check("retry", retry, Retry, "a Retry (e.g. Retry(on=ConnectionError))")
        _check("breaker", breaker, CircuitBreaker, "a CircuitBreaker")
        if isinstance(bulkhead, int) and not isinstance(bulkhead, bool):
            bulkhead = Bulkhead(bulkhead)
        _check("bulkhead", bulkhead, Bulkhead, "a Bulkhead or a number of concurrent calls")
        assert bulkhead is None or isinstance(bulkhead, Bulkhead)
        _check("fallback", fallback, Fallback, "what fallback(value_or_callable, on=...) returns")
        if attempt is not None:
            if total is not None and attempt > total:
                msg = f"attempt_timeout must be <= timeout ({total:g} s), got {attempt:g}"
                raise ConfigError(msg)
            retry_total = retry.timeout if retry is not None else None
            if retry_total is not None and attempt > retry_total:
                msg = (
                    f"attempt_timeout must be <= the retry's timeout ({retry_total:g} s), "
                    f"got {attempt:g}"
                )
                raise ConfigError(msg)
        self._timeout = total
        self._attempt_timeout = attempt
        self._retry = retry
        self._breaker = breaker
        self._bulkhead = bulkhead
        self._fallback = fallback
        self._timeouts = (
            _as_timeout(timeout, total, clock),
            _as_timeout(attempt_timeout, attempt, clock),
        )

    # -- the slots, read by the httpx transports and the integrations ----------------------

    @property
    def timeout(self) -> float | None:
        """Total seconds for the whole call, retries and waits included, or None."""
        return self._timeout

    @property
    def attempt_timeout(self) -> float | None:
        """Seconds for each attempt, or None."""
        return self._attempt_timeout

    @property
    def retry(self) -> Retry | None:
        """The `Retry`, or None."""
        return self._retry

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The `CircuitBreaker`, or None."""
        return self._breaker

    @property
    def bulkhead(self) -> Bulkhead | None:
        """The `Bulkhead`, or None."""
        return self._bulkhead

    @property
    def fallback(self) -> Fallback | None:
        """The fallback, or None."""
        return self._fallback

    # -- use -------------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function with the whole chain, built once here.

        A generator function (sync or async) is guarded as a whole iteration by the timeout,
        bulkhead, breaker and attempt_timeout slots; a policy with a ``retry`` or a
        ``fallback`` refuses it with `ConfigError` (items already yielded cannot be taken
        back, so nothing can repeat or replace a failed iteration).
        """
        if is_generator(fn) and (self._retry is not None or self._fallback is not None):
            slots = [name for name in ("retry", "fallback") if getattr(self, name) is not None]
            refuse_generator(
                fn,
                f"Policy({', '.join(f'{name}=...' for name in slots)})",
                CANNOT_REPEAT if self._retry is not None else CANNOT_REPLACE,
                f"Use a Policy without {' or '.join(slots)} for generators (its timeout, "
                "bulkhead, breaker and attempt_timeout guard the whole iteration), and put "
                f"the {' and '.join(slots)} around the code that consumes the items.",
            )
        total, attempt = self._timeouts
        # Innermost first: each slot wraps what is already there.
        layers: tuple[Callable[[Callable[..., Any]], Callable[..., Any]] | None, ...] = (
            attempt,
            self._breaker,
            self._retry,
            total,
            self._bulkhead,
            self._fallback,
        )
        wrapped: Callable[..., Any] = fn
        for layer in layers:
            if layer is not None:
                wrapped = layer(wrapped)
        return wrapped

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call sync *fn* through the policy (decorating is faster for repeated calls).

        Example:
            >>> from resilience import Policy
            >>> Policy(timeout=1.0, bulkhead=2).call(max, 3, 4)
            4
        """
        return self(fn)(*args, **kwargs)

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await *fn* through the policy (decorating is faster for repeated calls)."""
        return await self(fn)(*args, **kwargs)

    def __repr__(self) -> str:
        parts: list[str] = []
        slots: tuple[tuple[str, Any], ...] = (
            ("fallback", self._fallback),
            ("bulkhead", self._bulkhead),
            ("timeout", self._timeout),
            ("retry", self._retry),
            ("breaker", self._breaker),
            ("attempt_timeout", self._attempt_timeout),
        )
        for name, value in slots:
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"Policy({', '.join(parts)})"


public("resilience", Policy)
