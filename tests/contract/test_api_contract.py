"""API.md, statement by statement, with exactly the names and signatures it promises.

Each test quotes the promise it checks. The component test files go deeper; this file is the
contract that must never drift.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import tenacity

from resilience import (
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    ConfigError,
    DeadlineExceeded,
    Policy,
    Retry,
    RetryBudget,
    backoff,
    bulkhead,
    deadline,
    fallback,
    remaining,
    retry,
    timeout,
)
from resilience.testing import FakeClock


class Recorder:
    """An injectable sleep that records the waits instead of waiting."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.waits: list[float] = []
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self(seconds)


def flaky(
    failures: int, exc: type[Exception] = ConnectionError
) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise exc(f"failure {len(calls)}")
        return "ok"

    return calls, fn


# ------------------------------------------------------------------------------ Retry


def test_retry_decorator_form() -> None:
    """`@retry(on=ConnectionError, attempts=3)` retries up to 3 calls in all."""
    calls: list[int] = []

    @retry(on=ConnectionError, attempts=3, backoff=backoff.none())
    def fetch() -> str:
        calls.append(1)
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        fetch()
    assert len(calls) == 3


def test_last_exception_propagates_same_object_with_note() -> None:
    """When attempts run out, the last attempt's exception propagates with a PEP 678 note."""
    raised: list[BaseException] = []

    @Retry(on=ConnectionError, attempts=3, backoff=backoff.none())
    def fetch() -> None:
        exc = ConnectionError(len(raised))
        raised.append(exc)
        raise exc

    with pytest.raises(ConnectionError) as info:
        fetch()
    assert info.value is raised[-1]
    assert any("3" in note and "attempt" in note for note in info.value.__notes__)


def test_on_result_returns_last_result() -> None:
    """For `on_result`, the last result is returned when attempts run out."""
    results = iter([1, 2, 3, 4])
    r = Retry(on=ConnectionError, attempts=3, on_result=lambda v: v < 10, backoff=backoff.none())
    assert r(lambda: next(results))() == 3


def test_default_backoff_spelled_out_and_injected_sleep() -> None:
    """backoff.exponential(initial, maximum, multiplier, jitter) with an injected sleep."""
    sleep = Recorder()
    r = Retry(
        on=(ConnectionError, TimeoutError),
        attempts=4,
        backoff=backoff.exponential(initial=0.1, maximum=10.0, multiplier=2.0, jitter=False),
        sleep=sleep,
    )
    _, fn = flaky(3)
    assert r(fn)() == "ok"
    assert sleep.waits == pytest.approx([0.1, 0.2, 0.4])


def test_jittered_waits_stay_under_the_exponential_curve() -> None:
    """Full jitter: each wait is in [0, the exponential value]."""
    sleep = Recorder()
    r = Retry(
        on=ConnectionError,
        attempts=6,
        backoff=backoff.exponential(initial=0.1, maximum=10.0, multiplier=2.0, jitter=True),
        sleep=sleep,
    )
    _, fn = flaky(5)
    r(fn)()
    for i, wait in enumerate(sleep.waits):
        assert 0.0 <= wait <= 0.1 * 2**i + 1e-9


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (backoff.constant(0.5), [0.5, 0.5]),
        (backoff.none(), [0.0, 0.0]),
        (tenacity.wait_exponential(multiplier=1, min=0, max=10), [1.0, 2.0]),
        (tenacity.wait_chain(tenacity.wait_fixed(3), tenacity.wait_fixed(7)), [3.0, 7.0]),
    ],
)
def test_backoff_strategies_and_tenacity_waits(strategy: object, expected: list[float]) -> None:
    """`constant`, `none`, and any tenacity wait object give the waits between attempts."""
    sleep = Recorder()
    r = Retry(on=ConnectionError, attempts=3, backoff=strategy, sleep=sleep)  # type: ignore[arg-type]
    _, fn = flaky(2)
    r(fn)()
    assert [w for w in sleep.waits if w > 0] == [w for w in expected if w > 0]


def test_random_exponential_tenacity_wait_is_accepted() -> None:
    """`tenacity.wait_random_exponential` is accepted as a backoff."""
    sleep = Recorder()
    r = Retry(
        on=ConnectionError,
        attempts=3,
        backoff=tenacity.wait_random_exponential(multiplier=0.5, max=4),
        sleep=sleep,
    )
    _, fn = flaky(2)
    assert r(fn)() == "ok"
    assert len(sleep.waits) == 2
    assert all(0 <= w <= 4 for w in sleep.waits)


def test_guards_are_not_retried_unless_named() -> None:
    """`CircuitOpenError` and `BulkheadFull` are not retried unless `on` names them."""
    for exc in (CircuitOpenError("b", 1.0), BulkheadFull("x")):
        calls: list[int] = []

        def fn(exc: Exception = exc, calls: list[int] = calls) -> None:
            calls.append(1)
            raise exc

        with pytest.raises(type(exc)):
            Retry(on=Exception, attempts=3, backoff=backoff.none())(fn)()
        assert len(calls) == 1
        calls.clear()
        with pytest.raises(type(exc)):
            Retry(on=type(exc), attempts=3, backoff=backoff.none())(fn)()
        assert len(calls) == 3


def test_retry_predicate_on() -> None:
    """`on` may be a predicate exc -> bool."""
    calls, fn = flaky(1, OSError)
    r = Retry(on=lambda e: isinstance(e, OSError), attempts=2, backoff=backoff.none())
    assert r(fn)() == "ok"
    assert len(calls) == 2


def test_wait_never_crosses_the_deadline() -> None:
    """When the next wait would cross the active deadline, give up now (no sleep)."""
    clock = FakeClock()
    sleep = Recorder(clock)
    r = Retry(on=ConnectionError, attempts=5, backoff=backoff.constant(1.0), sleep=sleep)
    calls, fn = flaky(10)
    with deadline(1.5, clock=clock), pytest.raises(ConnectionError):
        r(fn)()
    assert sleep.waits == [1.0]
    assert len(calls) == 2


def test_retry_timeout_bounds_attempts_and_waits() -> None:
    """`timeout`: total seconds for all attempts and waits."""
    clock = FakeClock()
    sleep = Recorder(clock)
    r = Retry(
        on=ConnectionError,
        attempts=100,
        backoff=backoff.constant(1.0),
        timeout=3.5,
        clock=clock,
        sleep=sleep,
    )
    calls, fn = flaky(1000)
    with pytest.raises(ConnectionError):
        r(fn)()
    assert sum(sleep.waits) <= 3.5
    assert len(calls) == 4


async def test_retry_on_async_functions() -> None:
    """Retry works on `async def` functions."""
    calls: list[int] = []
    sleep = Recorder()

    @retry(on=ConnectionError, attempts=3, backoff=backoff.constant(0.25), asleep=sleep.asleep)
    async def fetch() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    assert await fetch() == "ok"
    assert sleep.waits == [0.25, 0.25]


def test_retry_budget_math() -> None:
    """Retries stay within ratio * calls + min_per_second * ttl over the last ttl seconds."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_second=0.1, ttl=10.0, clock=clock)
    r = Retry(on=ConnectionError, attempts=2, backoff=backoff.none(), budget=budget)
    # Allowed after n logical calls: 0.5 * n + 0.1 * 10. Call 3 would make 3 retries > 2.5;
    # call 4 makes 3 retries <= 3.
    outcomes = []
    for _ in range(4):
        calls, fn = flaky(10)
        try:
            r(fn)()
        except ConnectionError as exc:
            outcomes.append((len(calls), any("budget" in n for n in getattr(exc, "__notes__", []))))
    assert [c for c, _ in outcomes] == [2, 2, 1, 2]
    assert [noted for _, noted in outcomes] == [False, False, True, False]
    calls, fn = flaky(10)
    with pytest.raises(ConnectionError):
        r(fn)()
    assert len(calls) == 1  # 5 calls allow 3.5: the 4th retry is refused
    clock.advance(10.01)
    calls, fn = flaky(10)
    with pytest.raises(ConnectionError):
        r(fn)()
    assert len(calls) == 2  # the window moved on: a retry is allowed again


def test_retry_budget_shared_by_many_retries() -> None:
    """One budget can be shared by many `Retry`s."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10.0, clock=clock)  # 1 retry
    a = Retry(on=ConnectionError, attempts=3, backoff=backoff.none(), budget=budget)
    b = Retry(on=ConnectionError, attempts=3, backoff=backoff.none(), budget=budget)
    calls_a, fa = flaky(10)
    calls_b, fb = flaky(10)
    with pytest.raises(ConnectionError):
        a(fa)()
    with pytest.raises(ConnectionError):
        b(fb)()
    assert len(calls_a) + len(calls_b) == 3


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"on": ConnectionError, "attempts": 0}, "attempts"),
        ({"on": "ConnectionError"}, "on"),
        ({"on": ConnectionError, "timeout": -1}, "timeout"),
        ({"on": ConnectionError, "backoff": 3}, "backoff"),
    ],
)
def test_retry_bad_settings(kwargs: dict[str, object], setting: str) -> None:
    """Invalid settings fail at construction with ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=setting):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_retry_requires_on() -> None:
    """`on` is required."""
    with pytest.raises(TypeError):
        Retry()  # type: ignore[call-arg]


# ------------------------------------------------------------------------------ deadlines


def test_remaining_and_nesting() -> None:
    """`remaining()` is None outside; nested deadlines keep the earlier one."""
    assert remaining() is None
    with deadline(2.0):
        left = remaining()
        assert left is not None
        assert 0 < left <= 2.0
        with deadline(10.0):
            inner = remaining()
            assert inner is not None
            assert inner <= 2.0
        with deadline(timedelta(seconds=0.5)):
            inner = remaining()
            assert inner is not None
            assert inner <= 0.5
    assert remaining() is None


async def test_async_with_deadline_cancels_and_raises() -> None:
    """`async with deadline(s)` cancels the work at the deadline and raises DeadlineExceeded."""
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        async with deadline(0.05):
            await asyncio.sleep(30)
    assert time.monotonic() - started < 5


async def test_timeout_decorator_async() -> None:
    """`@timeout(s)` on async code cancels at the deadline and raises DeadlineExceeded."""

    @timeout(0.05)
    async def slow() -> None:
        await asyncio.sleep(30)

    with pytest.raises(DeadlineExceeded):
        await slow()


async def test_outside_cancellation_stays_cancelled_error() -> None:
    """A cancellation from outside propagates as CancelledError, not DeadlineExceeded."""

    @timeout(30)
    async def slow() -> None:
        await asyncio.sleep(30)

    task = asyncio.create_task(slow())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_deadline_flows_into_threads_via_to_thread() -> None:
    """The deadline is a contextvar: asyncio.to_thread sees it."""

    async def main() -> float | None:
        async with deadline(5.0):
            return await asyncio.to_thread(remaining)

    left = asyncio.run(main())
    assert left is not None
    assert 0 < left <= 5.0


def test_deadline_exceeded_is_a_timeout_error() -> None:
    """`DeadlineExceeded` is also a `TimeoutError`."""
    assert issubclass(DeadlineExceeded, TimeoutError)


# ------------------------------------------------------------------------------ bulkhead


def test_bulkhead_limits_threads() -> None:
    """At most `max_concurrent` calls at once; the rest get BulkheadFull with `.name`."""
    bh = Bulkhead(2, name="db")
    inside = threading.Barrier(3)
    release = threading.Event()

    @bh
    def work() -> None:
        inside.wait(10)
        release.wait(10)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait(10)
    with pytest.raises(BulkheadFull) as info:
        work()
    assert info.value.name == "db"
    release.set()
    for t in threads:
        t.join(10)


async def test_bulkhead_decorator_waits_then_rejects() -> None:
    """`bulkhead(n, max_waiting=, wait_timeout=)`: waiters queue, the rest are rejected."""
    release = asyncio.Event()

    @bulkhead(1, max_waiting=1, wait_timeout=10.0)
    async def work() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(work())
    await asyncio.sleep(0)
    second = asyncio.create_task(work())  # waits
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFull):
        await work()  # no room to wait
    release.set()
    assert await first == "done"
    assert await second == "done"


# ------------------------------------------------------------------------------ fallback


def test_fallback_value_and_callable() -> None:
    """`fallback(value)` returns the value; `fallback(callable)` calls it with the exception."""

    @fallback("cached", on=ConnectionError)
    def a() -> str:
        raise ConnectionError

    @fallback(lambda exc: f"fallback for {type(exc).__name__}")
    def b() -> str:
        raise KeyError("x")

    @fallback("never", on=ConnectionError)
    def c() -> str:
        raise KeyError("x")

    assert a() == "cached"
    assert b() == "fallback for KeyError"
    with pytest.raises(KeyError):
        c()


async def test_fallback_async_callable() -> None:
    """An async callable serves async functions."""

    async def handler(exc: BaseException) -> str:
        return "async fallback"

    @fallback(handler)
    async def f() -> str:
        raise ConnectionError

    assert await f() == "async fallback"


# ------------------------------------------------------------------------------ Policy


def test_policy_example_from_api_md_builds() -> None:
    """The API.md example builds and decorates an async function."""
    payments = Policy(
        timeout=5.0,
        retry=Retry(on=ConnectionError),
        breaker=CircuitBreaker("contract-payments"),
        attempt_timeout=1.0,
        bulkhead=Bulkhead(20),
        fallback=None,
    )

    @payments
    async def charge(amount: int) -> int:
        return amount

    assert asyncio.run(charge(3)) == 3


def test_policy_attempt_timeout_greater_than_timeout_is_config_error() -> None:
    """`attempt_timeout` greater than `timeout` raises ConfigError."""
    with pytest.raises(ConfigError, match="attempt_timeout"):
        Policy(timeout=1.0, attempt_timeout=2.0)


async def test_policy_attempt_timeout_counts_as_breaker_failure() -> None:
    """A timed-out attempt counts as a breaker failure; the total timeout does not."""
    breaker = CircuitBreaker("contract-attempt", consecutive_failures=2)
    p = Policy(
        retry=Retry(on=TimeoutError, attempts=2, backoff=backoff.none()),
        breaker=breaker,
        attempt_timeout=0.02,
    )

    @p
    async def slow() -> None:
        await asyncio.sleep(30)

    with pytest.raises(TimeoutError):
        await slow()
    assert breaker.state == "open"

    breaker2 = CircuitBreaker("contract-total", consecutive_failures=1)
    p2 = Policy(timeout=0.02, breaker=breaker2)

    @p2
    async def slow2() -> None:
        await asyncio.sleep(30)

    with pytest.raises(DeadlineExceeded):
        await slow2()
    assert breaker2.state == "closed"


def test_policy_fallback_slot_is_outermost() -> None:
    """`fallback=` takes what fallback(...) returns and sees rejections too."""
    breaker = CircuitBreaker("contract-fb")
    breaker.force_open()
    p = Policy(breaker=breaker, fallback=fallback("cached", on=CircuitOpenError))

    @p
    def get() -> str:
        return "live"

    assert get() == "cached"


def test_policy_shares_state() -> None:
    """A Policy holds live state: one object shared means state shared."""
    breaker = CircuitBreaker("contract-shared", consecutive_failures=2)
    p = Policy(breaker=breaker)

    @p
    def a() -> None:
        raise ConnectionError

    @p
    def b() -> None:
        raise ConnectionError

    for fn in (a, b):
        with pytest.raises(ConnectionError):
            fn()
    with pytest.raises(CircuitOpenError):
        a()
