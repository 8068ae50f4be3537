"""Retry on async functions: the async twin of the sync driver, plus cancellation."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from resilience import (
    CircuitOpenError,
    DeadlineExceeded,
    Retry,
    RetryBudget,
    backoff,
    deadline,
    remaining,
    retry,
)
from resilience._observe._events import (
    Event,
    RetryExhausted,
    RetryScheduled,
    add_listener,
    remove_listener,
)
from resilience.testing import FakeClock, set_testing

STEADY = backoff.exponential(initial=0.1, maximum=1.0, jitter=False)


class AsyncSleeps(list[float]):
    """An async sleep function that records each wait and moves the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
def asleeps(clock: FakeClock) -> AsyncSleeps:
    """Recorded async sleeps on the test's fake clock."""
    return AsyncSleeps(clock)


@pytest.fixture
def events() -> Iterator[list[Event]]:
    """Every event emitted during the test."""
    seen: list[Event] = []
    add_listener(seen.append)
    yield seen
    remove_listener(seen.append)


def failing(times: int, error: type[Exception] = ConnectionError) -> Callable[[], Awaitable[str]]:
    """A coroutine function that raises a fresh error *times* times, then returns "ok"."""
    calls: list[Exception] = []

    async def fn() -> str:
        await asyncio.sleep(0)
        if len(calls) < times:
            exc = error()
            calls.append(exc)
            raise exc
        return "ok"

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


async def test_first_try_success_awaits_once(asleeps: AsyncSleeps, events: list[Event]) -> None:
    """A coroutine that succeeds at once is awaited once, with no sleep and no event."""
    assert await retry(on=ConnectionError, asleep=asleeps)(failing(0))() == "ok"
    assert asleeps == []
    assert events == []


async def test_retries_until_success_with_the_backoff_sequence(asleeps: AsyncSleeps) -> None:
    """Failures are retried, awaiting the backoff's sequence between attempts."""
    wrapped = retry(on=ConnectionError, attempts=5, backoff=STEADY, asleep=asleeps)(failing(3))
    assert await wrapped() == "ok"
    assert asleeps == pytest.approx([0.1, 0.2, 0.4])


async def test_exhaustion_reraises_the_last_exception_with_a_note(asleeps: AsyncSleeps) -> None:
    """When attempts run out, the last attempt's own exception propagates, with a note."""
    fn = failing(10)
    with pytest.raises(ConnectionError) as caught:
        await retry(on=ConnectionError, attempts=3, backoff=STEADY, asleep=asleeps)(fn)()
    calls = fn.calls  # type: ignore[attr-defined]
    assert len(calls) == 3
    assert caught.value is calls[-1]
    assert caught.value.__notes__ == ["resilience: retry gave up after 3 attempts"]


async def test_sync_sleep_is_never_used_by_async_functions(clock: FakeClock) -> None:
    """Async code waits through asleep, never the blocking sleep."""
    blocking: list[float] = []
    recorded = AsyncSleeps(clock)
    wrapped = retry(on=ConnectionError, backoff=STEADY, sleep=blocking.append, asleep=recorded)(
        failing(1)
    )
    assert await wrapped() == "ok"
    assert (blocking, list(recorded)) == ([], [0.1])


async def test_cancellation_is_never_retried(asleeps: AsyncSleeps) -> None:
    """CancelledError propagates at once, even with a broad on."""
    calls = []

    async def cancelled() -> None:
        calls.append(1)
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry(on=BaseException, attempts=5, asleep=asleeps)(cancelled)()
    assert len(calls) == 1


async def test_cancelling_the_task_during_a_wait_stops_retrying(clock: FakeClock) -> None:
    """A task cancelled while waiting between attempts ends with CancelledError."""
    calls = []
    waiting = asyncio.Event()

    async def hang(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    async def flaky() -> None:
        calls.append(1)
        raise ConnectionError

    task = asyncio.create_task(retry(on=ConnectionError, asleep=hang)(flaky)())
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(calls) == 1


async def test_guards_are_not_retried_by_a_broad_on(asleeps: AsyncSleeps) -> None:
    """CircuitOpenError is not retried by on=Exception in async code either."""
    calls = []

    async def rejected() -> None:
        calls.append(1)
        raise CircuitOpenError("svc", 1.0)

    with pytest.raises(CircuitOpenError):
        await retry(on=Exception, asleep=asleeps)(rejected)()
    assert len(calls) == 1


async def test_on_result_exhaustion_returns_the_last_result(asleeps: AsyncSleeps) -> None:
    """Async on_result retries, then returns the last result."""
    results = iter([1, 2, 3])

    async def poll() -> int:
        return next(results)

    wrapped = retry(on=(), on_result=lambda v: v < 10, attempts=3, asleep=asleeps)(poll)
    assert await wrapped() == 3
    assert len(asleeps) == 2


async def test_a_wait_that_would_cross_the_deadline_is_not_taken(
    clock: FakeClock, asleeps: AsyncSleeps, events: list[Event]
) -> None:
    """Inside deadline(), a wait longer than what remains gives up at once, with a note."""
    fn = failing(10)
    wrapped = retry(on=ConnectionError, backoff=backoff.constant(5.0), asleep=asleeps)(fn)
    with deadline(2.0, clock=clock), pytest.raises(ConnectionError) as caught:
        await wrapped()
    assert asleeps == []
    assert "would cross the deadline" in caught.value.__notes__[0]
    assert [type(e) for e in events] == [RetryExhausted]


async def test_timeout_bounds_all_attempts_and_waits(
    clock: FakeClock, asleeps: AsyncSleeps
) -> None:
    """timeout is the total: attempts see what remains, waits never cross it."""
    seen: list[float | None] = []

    async def fn() -> None:
        seen.append(remaining())
        clock.advance(1.0)
        raise ConnectionError

    wrapped = retry(
        on=ConnectionError,
        attempts=10,
        backoff=backoff.constant(1.0),
        timeout=4.5,
        asleep=asleeps,
        clock=clock,
    )(fn)
    with pytest.raises(ConnectionError) as caught:
        await wrapped()
    assert seen == [4.5, 2.5, 0.5]
    assert asleeps == [1.0, 1.0]
    assert "would cross the deadline" in caught.value.__notes__[0]
    assert remaining() is None


async def test_timeout_cancels_an_attempt_still_running() -> None:
    """In async code, an attempt still running when the timeout ends is cancelled."""
    started = []

    async def hang() -> None:
        started.append(1)
        await asyncio.Event().wait()

    with pytest.raises(DeadlineExceeded):
        await retry(on=ConnectionError, timeout=0.01)(hang)()
    assert started == [1]


async def test_budget_refusal_propagates_at_once(clock: FakeClock, asleeps: AsyncSleeps) -> None:
    """A refused retry lets the error propagate with a budget note."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, clock=clock)
    fn = failing(5)
    with pytest.raises(ConnectionError) as caught:
        await retry(on=ConnectionError, budget=budget, asleep=asleeps)(fn)()
    assert len(fn.calls) == 1  # type: ignore[attr-defined]
    assert "retry budget is exhausted" in caught.value.__notes__[0]


async def test_call_async_runs_a_coroutine_function_with_retries(asleeps: AsyncSleeps) -> None:
    """await retry.call_async(fn, *args, **kwargs) retries like the decorator."""

    async def add(a: int, *, b: int) -> int:
        return a + b

    policy = Retry(on=ConnectionError, asleep=asleeps, backoff=STEADY)
    assert await policy.call_async(failing(2)) == "ok"
    assert await policy.call_async(add, 1, b=2) == 3
    assert asleeps == pytest.approx([0.1, 0.2])


@pytest.mark.parametrize(
    "options",
    [{}, {"timeout": 5.0}, {"on_result": lambda v: False}, {"budget": RetryBudget()}],
    ids=["fast", "timeout", "on_result", "budget"],
)
async def test_async_methods_keep_metadata_and_arguments(
    options: dict[str, Any], asleeps: AsyncSleeps
) -> None:
    """Decorated async methods stay coroutine functions with their signature and self."""

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @Retry(on=ConnectionError, asleep=asleeps, **options)
        async def get(self, path: str, *, query: str = "") -> str:
            """Get a path."""
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError
            return f"{path}?{query}"

    assert inspect.iscoroutinefunction(Client.get)
    assert Client.get.__doc__ == "Get a path."
    assert list(inspect.signature(Client.get).parameters) == ["self", "path", "query"]
    client = Client()
    assert await client.get("/a", query="b") == "/a?b"
    assert client.calls == 2


async def test_many_tasks_share_one_retry(clock: FakeClock, events: list[Event]) -> None:
    """Hundreds of concurrent tasks through one Retry each get their own attempt count."""
    policy = Retry(on=ConnectionError, attempts=3, backoff=backoff.none())

    async def one(index: int) -> tuple[int, int]:
        calls = [0]

        @policy
        async def flaky() -> int:
            calls[0] += 1
            await asyncio.sleep(0)
            if calls[0] <= index % 3:
                raise ConnectionError
            return index

        return await flaky(), calls[0]

    results = await asyncio.gather(*(one(i) for i in range(300)))
    assert results == [(i, i % 3 + 1) for i in range(300)]
    assert sum(isinstance(e, RetryScheduled) for e in events) == sum(i % 3 for i in range(300))


async def test_test_mode_reaches_async_retries(asleeps: AsyncSleeps) -> None:
    """In test mode, async retries do not wait and respect the attempts cap."""
    fn = failing(10)
    with set_testing(True, attempts=2), pytest.raises(ConnectionError):
        await retry(on=ConnectionError, attempts=5, backoff=STEADY, asleep=asleeps)(fn)()
    assert asleeps == []
    assert len(fn.calls) == 2  # type: ignore[attr-defined]
