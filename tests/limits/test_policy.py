"""Policy: one fixed order of slots, shorthands, cross-slot checks, shared live state."""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from resilience import (
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    DeadlineExceeded,
    Policy,
    Retry,
    backoff,
    fallback,
    remaining,
    timeout,
)
from resilience._fallback import Fallback
from resilience._timeout import Timeout
from resilience.testing import FakeClock

T = TypeVar("T")
_names = itertools.count()


def _name(prefix: str = "policy-test") -> str:
    """A breaker name no other test uses (the registry is process-wide)."""
    return f"{prefix}-{next(_names)}"


async def _forever() -> None:
    await asyncio.Event().wait()


async def _auntil(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def _recording(cls: type[T], label: str, log: list[str]) -> type[T]:
    """A subclass of *cls* whose decorator logs *label* each time a call passes through it."""

    class Recording(cls):  # type: ignore[valid-type,misc]
        def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
            inner = super().__call__(fn)
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_logged(*args: Any, **kwargs: Any) -> Any:
                    log.append(label)
                    return await inner(*args, **kwargs)

                return async_logged

            @functools.wraps(fn)
            def logged(*args: Any, **kwargs: Any) -> Any:
                log.append(label)
                return inner(*args, **kwargs)

            return logged

    return Recording


def _recorded_policy(log: list[str], clock: FakeClock) -> Policy:
    return Policy(
        fallback=_recording(Fallback, "fallback", log)("fallback value"),
        bulkhead=_recording(Bulkhead, "bulkhead", log)(2),
        timeout=_recording(Timeout, "timeout", log)(10.0, clock=clock),
        retry=_recording(Retry, "retry", log)(
            on=ConnectionError, attempts=2, backoff=backoff.none(), clock=clock
        ),
        breaker=_recording(CircuitBreaker, "breaker", log)(_name(), clock=clock),
        attempt_timeout=_recording(Timeout, "attempt_timeout", log)(1.0, clock=clock),
    )


ORDER = ["fallback", "bulkhead", "timeout", "retry", "breaker", "attempt_timeout", "call"]
RETRIED = ["breaker", "attempt_timeout", "call"]


def test_slots_act_in_the_documented_order(clock: FakeClock) -> None:
    """Outermost first: fallback, bulkhead, timeout, retry, breaker, attempt_timeout, call."""
    log: list[str] = []
    attempts = iter([ConnectionError("refused"), None])

    @_recorded_policy(log, clock)
    def call() -> str:
        log.append("call")
        error = next(attempts)
        if error is not None:
            raise error
        return "ok"

    assert call() == "ok"
    # The retry repeats only what is inside it: the breaker, the attempt timeout, the call.
    assert log == ORDER + RETRIED


async def test_async_slots_act_in_the_documented_order(clock: FakeClock) -> None:
    """The async chain has the same order as the sync one."""
    log: list[str] = []
    attempts = iter([ConnectionError("refused"), ConnectionError("refused")])

    @_recorded_policy(log, clock)
    async def call() -> str:
        log.append("call")
        raise next(attempts)

    assert await call() == "fallback value"
    assert log == ORDER + RETRIED


def test_attempt_sees_the_attempt_deadline_inside_the_total(clock: FakeClock) -> None:
    """Inside an attempt, remaining() is the attempt timeout; the total bounds the retry."""
    seen: list[float | None] = []
    policy = Policy(timeout=5.0, attempt_timeout=timedelta(seconds=1), clock=clock)

    @policy
    def call() -> None:
        seen.append(remaining())

    call()
    assert seen == [1.0]
    assert remaining() is None


def test_retry_wait_never_crosses_the_total_timeout(clock: FakeClock) -> None:
    """A retry inside the total timeout gives up when its next wait would cross it."""
    calls: list[float] = []
    policy = Policy(
        timeout=1.0,
        retry=Retry(
            on=ConnectionError,
            attempts=10,
            backoff=backoff.constant(0.4),
            clock=clock,
            sleep=clock.sleep,
        ),
        clock=clock,
    )

    @policy
    def call() -> None:
        calls.append(clock())
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError) as info:
        call()
    # Waits at 0.4 and 0.8 fit; the next would end at 1.2, past the deadline at 1.0.
    assert len(calls) == 3
    assert any("deadline" in note for note in info.value.__notes__)


def test_breaker_counts_each_attempt(clock: FakeClock) -> None:
    """The breaker sits inside the retry: every attempt is one breaker call."""
    breaker = CircuitBreaker(_name(), consecutive_failures=10, clock=clock)
    policy = Policy(
        retry=Retry(on=ConnectionError, attempts=3, backoff=backoff.none()), breaker=breaker
    )

    @policy
    def call() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        call()
    assert breaker.metrics()["failures"] == 3


def test_open_breaker_is_not_retried_and_fallback_catches_it(clock: FakeClock) -> None:
    """CircuitOpenError skips the retry and reaches the fallback outside."""
    breaker = CircuitBreaker(_name(), clock=clock)
    breaker.force_open()
    calls: list[int] = []
    policy = Policy(
        retry=Retry(on=Exception, attempts=5, backoff=backoff.none()),
        breaker=breaker,
        fallback=fallback(lambda exc: type(exc).__name__),
    )
    assert policy.call(calls.append, 1) == "CircuitOpenError"
    assert calls == []


def test_fallback_catches_a_full_bulkhead() -> None:
    """The fallback sits outside the bulkhead: a rejection gets the fallback value."""
    policy = Policy(bulkhead=1, fallback=fallback("busy", on=BulkheadFull))
    inner: list[str] = []

    @policy
    def call() -> str:
        inner.append(call())  # re-entering finds the only slot taken
        return "ok"

    assert call() == "ok"
    assert inner == ["busy"]


def test_bulkhead_holds_one_permit_across_retries() -> None:
    """Retries run inside the bulkhead: one call keeps one permit through every attempt."""
    bh = Bulkhead(1)
    seen: list[int] = []
    attempts = iter([ConnectionError(), ConnectionError(), None])
    policy = Policy(
        bulkhead=bh, retry=Retry(on=ConnectionError, attempts=3, backoff=backoff.none())
    )

    @policy
    def call() -> None:
        seen.append(bh.active)
        error = next(attempts)
        if error is not None:
            raise error

    call()
    assert seen == [1, 1, 1]
    assert bh.active == 0


async def test_timed_out_attempt_counts_as_a_breaker_failure() -> None:
    """An attempt cancelled by attempt_timeout is a breaker failure."""
    breaker = CircuitBreaker(_name(), consecutive_failures=1)
    policy = Policy(timeout=5.0, breaker=breaker, attempt_timeout=0.01)

    @policy
    async def call() -> None:
        await _forever()

    with pytest.raises(DeadlineExceeded):
        await call()
    assert breaker.state is CircuitState.OPEN


async def test_total_timeout_is_not_a_breaker_failure() -> None:
    """The total timeout cancels from outside the breaker: nothing is recorded."""
    breaker = CircuitBreaker(_name(), consecutive_failures=1)
    policy = Policy(timeout=0.01, breaker=breaker)

    @policy
    async def call() -> None:
        await _forever()

    with pytest.raises(DeadlineExceeded):
        await call()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics()["failures"] == 0


async def test_total_timeout_equal_to_attempt_timeout_is_not_a_breaker_failure() -> None:
    """When the attempt deadline is the total one, the total deadline is what fires."""
    breaker = CircuitBreaker(_name(), consecutive_failures=1)
    policy = Policy(timeout=0.02, breaker=breaker, attempt_timeout=0.02)

    @policy
    async def call() -> None:
        await _forever()

    with pytest.raises(DeadlineExceeded):
        await call()
    assert breaker.metrics()["failures"] == 0


async def test_timed_out_attempts_are_retried_within_the_total() -> None:
    """Attempts that time out are retried (when `on` says so) until one fits."""
    attempts = iter([True, True, False])
    policy = Policy(
        timeout=5.0,
        retry=Retry(on=TimeoutError, attempts=3, backoff=backoff.none()),
        attempt_timeout=0.01,
    )

    @policy
    async def call() -> str:
        if next(attempts):
            await _forever()
        return "ok"

    assert await call() == "ok"


async def test_outside_cancellation_propagates_through_the_policy() -> None:
    """Cancelling the caller is a CancelledError, never a DeadlineExceeded or a fallback."""
    started = asyncio.Event()
    policy = Policy(timeout=10.0, attempt_timeout=5.0, fallback=fallback("x"))

    @policy
    async def call() -> None:
        started.set()
        await _forever()

    task = asyncio.create_task(call())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancellation_in_every_slot_leaves_no_permit_behind(clock: FakeClock) -> None:
    """Tasks cancelled while waiting for the bulkhead, sleeping in the retry or running
    inside the breaker's half-open probe give every permit back."""
    bh = Bulkhead(1, max_waiting=10)
    breaker = CircuitBreaker(_name(), consecutive_failures=1, open_duration=1.0, clock=clock)
    breaker.force_open()
    breaker.reset()
    sleeping = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        sleeping.set()
        await _forever()

    policy = Policy(
        bulkhead=bh,
        timeout=30.0,
        retry=Retry(
            on=ConnectionError, attempts=3, backoff=backoff.constant(1.0), asleep=slow_sleep
        ),
        breaker=breaker,
        attempt_timeout=20.0,
    )
    running = asyncio.Event()
    fail_first = [True]

    @policy
    async def call() -> None:
        if fail_first and fail_first.pop():
            raise ConnectionError("refused")
        running.set()
        await _forever()

    # 1: cancelled while the retry sleeps, holding the bulkhead; 2: cancelled waiting for it.
    sleeper = asyncio.create_task(call())
    await sleeping.wait()
    waiter = asyncio.create_task(call())
    await _auntil(lambda: bh.waiting == 1)
    waiter.cancel()
    sleeper.cancel()
    for task in (waiter, sleeper):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (bh.active, bh.waiting) == (0, 0)

    # 3: cancelled while running as the breaker's only half-open probe.
    breaker.reset()
    with pytest.raises(ConnectionError):
        await Policy(breaker=breaker)(_refuse)()
    assert breaker.state is CircuitState.OPEN
    clock.advance(1.0)
    assert breaker.state is CircuitState.HALF_OPEN
    probe = asyncio.create_task(call())
    await running.wait()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert (bh.active, bh.waiting) == (0, 0)
    # The probe slot came back: the next call is let through as a probe.
    assert await Policy(breaker=breaker)(_ok)() == "ok"
    assert breaker.state is CircuitState.CLOSED


async def _refuse() -> None:
    raise ConnectionError("refused")


async def _ok() -> str:
    return "ok"


def test_one_policy_shares_its_state_between_functions() -> None:
    """Two functions decorated with one policy share its bulkhead."""
    policy = Policy(bulkhead=1)
    assert policy.bulkhead is not None

    @policy
    def outer() -> str:
        return inner()

    @policy
    def inner() -> str:
        return "never"

    with pytest.raises(BulkheadFull):
        outer()
    assert policy.bulkhead.active == 0


async def test_async_policy_with_every_slot_returns_the_result() -> None:
    """A full policy on an async function passes arguments and returns the result."""
    policy = Policy(
        timeout=5.0,
        retry=Retry(on=ConnectionError),
        breaker=CircuitBreaker(_name()),
        attempt_timeout=1.0,
        bulkhead=Bulkhead(20),
        fallback=fallback(None),
    )

    @policy
    async def charge(cents: int, *, currency: str = "EUR") -> str:
        """Charge."""
        await asyncio.sleep(0)
        return f"{cents} {currency}"

    assert await charge(250, currency="USD") == "250 USD"
    assert inspect.iscoroutinefunction(charge)
    assert charge.__name__ == "charge"
    assert charge.__doc__ == "Charge."
    assert await policy.call_async(charge, 1) == "1 EUR"


async def test_many_tasks_through_one_policy() -> None:
    """200 concurrent tasks through one policy never exceed its bulkhead."""
    bh = Bulkhead(5, max_waiting=200)
    most = [0]
    policy = Policy(timeout=5.0, bulkhead=bh, breaker=CircuitBreaker(_name()))

    @policy
    async def work(i: int) -> int:
        most[0] = max(most[0], bh.active)
        await asyncio.sleep(0)
        return i

    assert await asyncio.gather(*(work(i) for i in range(200))) == list(range(200))
    assert most[0] == 5


def test_sync_policy_keeps_signature_and_methods() -> None:
    """A sync function and a method keep their metadata and work."""
    policy = Policy(timeout=1.0, bulkhead=2)

    class Client:
        @policy
        def get(self, key: str) -> str:
            """Get."""
            return key.upper()

    assert Client().get("a") == "A"
    assert Client.get.__doc__ == "Get."
    assert list(inspect.signature(Client.get).parameters) == ["self", "key"]


def test_empty_policy_returns_the_function_itself() -> None:
    """With no slots, the policy adds nothing to the call."""

    def fn() -> int:
        return 1

    assert Policy()(fn) is fn


def test_shorthands_and_slots_read_back(clock: FakeClock) -> None:
    """Seconds, timedeltas, timeout objects and an int bulkhead are accepted and read back."""
    policy = Policy(
        timeout=timedelta(seconds=5), attempt_timeout=timeout(1.0, clock=clock), bulkhead=3
    )
    assert policy.timeout == 5.0
    assert policy.attempt_timeout == 1.0
    assert isinstance(policy.bulkhead, Bulkhead)
    assert policy.bulkhead.max_concurrent == 3
    assert policy.retry is None
    assert policy.breaker is None
    assert policy.fallback is None
    assert "timeout=5.0" in repr(policy)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 1.0, "attempt_timeout": 2.0}, r"attempt_timeout must be <= timeout"),
        ({"retry": "x"}, r"retry must be a Retry"),
        ({"breaker": "payments"}, r"breaker must be a CircuitBreaker"),
        ({"bulkhead": 0}, r"max_concurrent"),
        ({"bulkhead": "big"}, r"bulkhead must be"),
        ({"fallback": 42}, r"fallback must be"),
        ({"timeout": -1}, r"timeout"),
        ({"attempt_timeout": 0}, r"attempt_timeout"),
    ],
)
def test_invalid_slots_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    """Bad slot values fail at construction with a ConfigError naming the slot."""
    with pytest.raises(ConfigError, match=match):
        Policy(**kwargs)


def test_attempt_timeout_longer_than_the_retry_timeout_is_a_config_error() -> None:
    """The retry's own total timeout is checked against attempt_timeout too."""
    with pytest.raises(ConfigError, match="retry's timeout"):
        Policy(retry=Retry(on=OSError, timeout=1.0), attempt_timeout=2.0)


def test_open_breaker_rejects_without_calling(clock: FakeClock) -> None:
    """An open breaker in the policy rejects with CircuitOpenError, the call never runs."""
    breaker = CircuitBreaker(_name(), clock=clock)
    breaker.force_open()
    calls: list[int] = []
    with pytest.raises(CircuitOpenError):
        Policy(timeout=1.0, breaker=breaker).call(calls.append, 1)
    assert calls == []


def test_keyboard_interrupt_in_a_sync_call_leaves_no_permit_behind(clock: FakeClock) -> None:
    """A BaseException inside a sync call frees the bulkhead slot and the half-open probe."""
    bh = Bulkhead(1)
    breaker = CircuitBreaker(_name(), consecutive_failures=1, open_duration=1.0, clock=clock)
    policy = Policy(
        fallback=fallback("x"),
        bulkhead=bh,
        timeout=5.0,
        retry=Retry(on=Exception, attempts=3, backoff=backoff.none()),
        breaker=breaker,
        attempt_timeout=1.0,
    )
    with pytest.raises(ConnectionError):
        Policy(breaker=breaker).call(_refuse_sync)
    clock.advance(1.0)
    assert breaker.state is CircuitState.HALF_OPEN

    @policy
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert bh.active == 0
    assert remaining() is None
    assert policy.call(lambda: "probe ok") == "probe ok"
    assert breaker.state is CircuitState.CLOSED


def _refuse_sync() -> None:
    raise ConnectionError("refused")


# ---------------------------------------------------------------- one call, one outcome


def test_policy_around_a_function_its_breaker_decorates_counts_once(clock: FakeClock) -> None:
    """Policy(breaker=b) over a function b decorates: each attempt is one breaker call."""
    breaker = CircuitBreaker(_name(), consecutive_failures=4, clock=clock)
    policy = Policy(
        retry=Retry(on=ConnectionError, attempts=3, backoff=backoff.none()), breaker=breaker
    )

    @breaker
    def charge() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        policy(charge)()
    m = breaker.metrics()
    assert (m.calls, m.failures, m.state) == (3, 3, CircuitState.CLOSED)
    assert policy.call(breaker(len), "abc") == 3
    assert breaker.metrics().calls == 4


async def test_async_policy_around_a_decorated_function_counts_once(clock: FakeClock) -> None:
    """The async twin: one attempt, one permit, one outcome."""
    breaker = CircuitBreaker(_name(), consecutive_failures=2, clock=clock)

    @breaker
    async def charge() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        await Policy(breaker=breaker, attempt_timeout=5.0)(charge)()
    m = breaker.metrics()
    assert (m.calls, m.consecutive_failures, m.state) == (1, 1, CircuitState.CLOSED)


async def test_timed_out_attempt_of_a_decorated_function_is_one_failure() -> None:
    """attempt_timeout over a function the breaker decorates: the timeout is one failure."""
    breaker = CircuitBreaker(_name(), consecutive_failures=2)

    @breaker
    async def hang() -> None:
        await _forever()

    with pytest.raises(DeadlineExceeded):
        await Policy(breaker=breaker, attempt_timeout=0.01)(hang)()
    m = breaker.metrics()
    assert (m.calls, m.failures, m.state) == (1, 1, CircuitState.CLOSED)
