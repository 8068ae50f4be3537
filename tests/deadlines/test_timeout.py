"""The timeout decorator: cancellation for async functions, a cooperative deadline for sync."""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta

import pytest

from resilience import ConfigError, DeadlineExceeded, deadline, remaining, timeout
from resilience._timeout import Timeout
from resilience.testing import FakeClock


async def _forever() -> None:
    await asyncio.Event().wait()


def test_sync_call_runs_under_a_deadline(clock: FakeClock) -> None:
    """A sync function sees remaining() of the timeout, and none after it returns."""

    @timeout(2.0, clock=clock)
    def work() -> float | None:
        clock.advance(0.5)
        return remaining()

    assert work() == 1.5
    assert remaining() is None


def test_sync_timeout_is_cooperative(clock: FakeClock) -> None:
    """A sync call that overruns is not interrupted and its result is kept."""

    @timeout(1.0, clock=clock)
    def slow() -> str:
        clock.advance(5.0)
        return "done"

    assert slow() == "done"


def test_sync_timeout_keeps_an_earlier_outer_deadline(clock: FakeClock) -> None:
    """Inside an earlier deadline, the timeout does not extend it."""
    work = timeout(10.0, clock=clock)(remaining)
    with deadline(1.0, clock=clock):
        assert work() == 1.0


def test_sync_timeout_shortens_a_later_outer_deadline(clock: FakeClock) -> None:
    """Inside a later deadline, the timeout's own shorter deadline applies."""
    work = timeout(1.0, clock=clock)(remaining)
    with deadline(10.0, clock=clock):
        assert work() == 1.0
        assert remaining() == 10.0


def test_sync_call_is_not_started_after_the_deadline(clock: FakeClock) -> None:
    """When the outer deadline has passed, the call is not made."""
    calls: list[int] = []
    work = timeout(1.0, clock=clock)(lambda: calls.append(1))
    with deadline(1.0, clock=clock):
        clock.advance(2.0)
        with pytest.raises(DeadlineExceeded):
            work()
    assert calls == []


def test_sync_exception_propagates_and_deadline_is_reset(clock: FakeClock) -> None:
    """An exception leaves unchanged, and the deadline is gone afterwards."""

    @timeout(1.0, clock=clock)
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        boom()
    assert remaining() is None


async def test_async_function_is_cancelled_at_the_deadline() -> None:
    """An async function that overruns is cancelled and raises DeadlineExceeded."""
    cancelled = []

    @timeout(0.01)
    async def slow() -> None:
        try:
            await _forever()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(DeadlineExceeded) as info:
        await slow()
    assert isinstance(info.value, TimeoutError)
    assert cancelled == [True]


async def test_async_function_in_time_returns_its_result() -> None:
    """A fast async function returns its value and sees the deadline."""

    @timeout(timedelta(seconds=5))
    async def fast(x: int) -> tuple[int, float | None]:
        await asyncio.sleep(0)
        return x * 2, remaining()

    value, left = await fast(21)
    assert value == 42
    assert left is not None
    assert 0 < left <= 5.0


async def test_outside_cancellation_propagates_as_cancelled_error() -> None:
    """Cancelling the caller is told apart from the timeout: CancelledError propagates."""
    started = asyncio.Event()

    @timeout(10.0)
    async def slow() -> None:
        started.set()
        await _forever()

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_many_tasks_time_out_independently() -> None:
    """200 tasks with mixed timeouts: only the slow ones time out."""

    @timeout(0.05)
    async def work(i: int) -> int:
        if i % 2:
            await _forever()
        await asyncio.sleep(0)
        return i

    results = await asyncio.gather(*(work(i) for i in range(200)), return_exceptions=True)
    for i, result in enumerate(results):
        if i % 2:
            assert isinstance(result, DeadlineExceeded)
        else:
            assert result == i


def test_decorator_keeps_metadata_and_kind() -> None:
    """functools.wraps metadata is kept; async stays a coroutine function."""

    @timeout(1.0)
    def sync_fn(a: int) -> int:
        """Doc."""
        return a

    @timeout(1.0)
    async def async_fn(a: int) -> int:
        return a

    assert sync_fn.__name__ == "sync_fn"
    assert sync_fn.__doc__ == "Doc."
    assert inspect.signature(sync_fn) == inspect.signature(sync_fn.__wrapped__)  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(async_fn)
    assert not inspect.iscoroutinefunction(sync_fn)


async def test_methods_can_be_decorated(clock: FakeClock) -> None:
    """Methods, sync and async, work under the decorator."""

    class Client:
        @timeout(1.0, clock=clock)
        def get(self) -> float | None:
            return remaining()

        @timeout(1.0)
        async def aget(self) -> str:
            return "ok"

    assert Client().get() == 1.0
    assert await Client().aget() == "ok"


@pytest.mark.parametrize("bad", [0, -1, "1", None])
def test_invalid_seconds_is_a_config_error(bad: object) -> None:
    """timeout() needs a positive duration."""
    with pytest.raises(ConfigError, match="seconds"):
        timeout(bad)  # type: ignore[arg-type]


def test_repr_and_seconds() -> None:
    """The object exposes its seconds and a readable repr."""
    t = timeout(timedelta(seconds=3))
    assert isinstance(t, Timeout)
    assert t.seconds == 3.0
    assert repr(t) == "timeout(3.0)"
