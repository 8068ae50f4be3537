"""Deadlines: a context variable holding the earliest expiry, cooperative in sync code."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from datetime import timedelta

import pytest

from resilience import ConfigError, DeadlineExceeded, deadline, remaining
from resilience._deadline import Deadline, check_deadline, current_deadline
from resilience.events import DeadlineExceededEvent, Event
from resilience.testing import FakeClock


async def _forever() -> None:
    await asyncio.Event().wait()


def test_remaining_is_none_outside_any_deadline() -> None:
    """remaining() is None when no deadline is active."""
    assert remaining() is None
    assert current_deadline() is None


def test_remaining_counts_down_on_the_clock(clock: FakeClock) -> None:
    """remaining() is the scope's seconds minus the time that has passed."""
    with deadline(2.0, clock=clock) as scope:
        assert remaining() == 2.0
        clock.advance(0.5)
        assert remaining() == 1.5
        assert scope.remaining() == 1.5
        clock.advance(5)
        assert remaining() == 0.0
    assert remaining() is None


def test_timedelta_is_accepted(clock: FakeClock) -> None:
    """A timedelta works as the duration."""
    with deadline(timedelta(milliseconds=250), clock=clock):
        assert remaining() == 0.25


@pytest.mark.parametrize(
    "bad", [-1, -0.5, float("nan"), "1", None, float("inf"), True, 30 * 86_400 + 1, 10**400]
)
def test_invalid_seconds_is_a_config_error(bad: object) -> None:
    """A negative, non-finite, non-numeric or over-30-days duration fails with ConfigError."""
    with pytest.raises(ConfigError, match="seconds"):
        deadline(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", [0, 3, 2.5, 30 * 86_400, timedelta(seconds=4)])
def test_valid_seconds_become_float(good: float | timedelta) -> None:
    """Ints, floats and timedeltas up to 30 days are taken, as float seconds."""
    seconds = deadline(good).seconds
    assert type(seconds) is float
    assert seconds == (good.total_seconds() if isinstance(good, timedelta) else good)


def test_nested_deadline_keeps_the_earlier_outer(clock: FakeClock) -> None:
    """An inner, later deadline does not extend the outer one."""
    with deadline(1.0, clock=clock):
        with deadline(10.0, clock=clock):
            assert remaining() == 1.0
        assert remaining() == 1.0


def test_nested_deadline_keeps_the_earlier_inner(clock: FakeClock) -> None:
    """An inner, earlier deadline wins inside, and the outer one is back after it."""
    with deadline(10.0, clock=clock):
        with deadline(1.0, clock=clock):
            assert remaining() == 1.0
        assert remaining() == 10.0


def test_check_deadline_raises_once_expired(clock: FakeClock, events: list[Event]) -> None:
    """check_deadline returns what remains, then raises DeadlineExceeded and emits an event."""
    assert check_deadline() is None
    with deadline(1.0, clock=clock):
        assert check_deadline() == 1.0
        clock.advance(1.0)
        with pytest.raises(DeadlineExceeded, match="the query"):
            check_deadline("the query")
    assert [e.where for e in events if isinstance(e, DeadlineExceededEvent)] == ["the query"]


def test_deadline_exceeded_is_a_timeout_error() -> None:
    """Code that handles TimeoutError handles DeadlineExceeded too."""
    assert issubclass(DeadlineExceeded, TimeoutError)


def test_sync_deadline_does_not_interrupt(clock: FakeClock) -> None:
    """A sync scope never raises on its own: it is cooperative."""
    with deadline(1.0, clock=clock):
        clock.advance(5.0)
    assert remaining() is None


def test_scope_cannot_be_entered_twice_at_once(clock: FakeClock) -> None:
    """Entering an active scope again is a RuntimeError; re-entering after exit works."""
    scope = Deadline(1.0, clock=clock)
    with scope, pytest.raises(RuntimeError), scope:
        pass
    with scope:
        assert remaining() == 1.0


def test_deadline_flows_into_threads_through_copied_context(clock: FakeClock) -> None:
    """A thread run in a copy of the context sees the same deadline."""
    seen: list[float | None] = []
    with deadline(3.0, clock=clock):
        ctx = contextvars.copy_context()
    thread = threading.Thread(target=ctx.run, args=(lambda: seen.append(remaining()),))
    thread.start()
    thread.join()
    assert seen == [3.0]


async def test_deadline_flows_into_tasks_and_to_thread(clock: FakeClock) -> None:
    """Tasks and asyncio.to_thread inherit the active deadline."""
    with deadline(3.0, clock=clock):
        in_task = await asyncio.create_task(asyncio.sleep(0, remaining()))
        in_thread = await asyncio.to_thread(remaining)
    assert in_task == 3.0
    assert in_thread == 3.0


async def test_async_deadline_cancels_at_expiry(events: list[Event]) -> None:
    """async with deadline cancels the block at expiry and raises DeadlineExceeded."""
    with pytest.raises(DeadlineExceeded):
        async with deadline(0.01):
            await _forever()
    assert remaining() is None
    assert any(isinstance(e, DeadlineExceededEvent) for e in events)


async def test_async_deadline_returns_normally_in_time() -> None:
    """A block that finishes in time is untouched."""
    async with deadline(5.0) as scope:
        await asyncio.sleep(0)
        left = scope.remaining()
    assert left is not None
    assert 0 < left <= 5.0


async def test_async_deadline_zero_cancels_at_first_await() -> None:
    """deadline(0) cancels the block at its first suspension."""
    with pytest.raises(DeadlineExceeded):
        async with deadline(0):
            await asyncio.sleep(1)


async def test_outside_cancellation_is_not_a_deadline() -> None:
    """A cancellation from outside propagates as CancelledError, not DeadlineExceeded."""
    started = asyncio.Event()

    async def worker() -> None:
        async with deadline(10.0):
            started.set()
            await _forever()

    task = asyncio.create_task(worker())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_own_timeout_error_is_not_converted() -> None:
    """A TimeoutError raised by the block itself propagates unchanged."""
    with pytest.raises(TimeoutError) as info:
        async with deadline(5.0):
            raise TimeoutError("socket")
    assert not isinstance(info.value, DeadlineExceeded)


async def test_nested_async_deadlines_outer_earlier() -> None:
    """An inner async scope keeps the outer, earlier expiry; DeadlineExceeded comes once."""

    async def run() -> None:
        async with deadline(0.01), deadline(10.0):
            await _forever()

    with pytest.raises(DeadlineExceeded):
        await run()


async def test_nested_async_deadlines_inner_earlier_outer_continues() -> None:
    """An inner, earlier async scope raises; the outer scope carries on."""
    async with deadline(10.0):
        with pytest.raises(DeadlineExceeded):
            async with deadline(0.01):
                await _forever()
        left = remaining()
    assert left is not None
    assert left > 5.0


async def test_async_scope_inside_sync_scope_enforces_the_earlier_expiry() -> None:
    """An async scope inside an earlier cooperative scope cancels at that earlier time."""
    with deadline(0.01), pytest.raises(DeadlineExceeded):
        async with deadline(10.0):
            await _forever()


async def test_child_task_is_cancelled_by_its_own_scope() -> None:
    """A child task that inherits an armed deadline arms its own timer."""

    async def child() -> None:
        async with deadline(10.0):
            await _forever()

    with pytest.raises(DeadlineExceeded):
        async with deadline(0.02):
            await asyncio.create_task(child())


async def test_many_concurrent_tasks_each_get_their_own_deadline() -> None:
    """Deadlines of concurrent tasks do not leak into each other."""

    async def one(seconds: float) -> float | None:
        async with deadline(seconds):
            await asyncio.sleep(0)
            return remaining()

    results = await asyncio.gather(*(one(1.0 + i) for i in range(100)))
    for i, left in enumerate(results):
        assert left is not None
        assert i < left <= 1.0 + i
    assert remaining() is None


def test_repr_shows_seconds(clock: FakeClock) -> None:
    """The repr shows the requested seconds and what remains."""
    assert repr(deadline(1.5, clock=clock)) == "deadline(1.5, remaining=None)"


async def test_outside_cancellation_racing_the_deadline_propagates() -> None:
    """When the deadline and an outside cancel land together, CancelledError wins."""
    task = asyncio.current_task()
    assert task is not None

    async def body() -> None:
        async with deadline(10.0) as scope:
            scope._on_expiry()  # our timer fires...
            task.cancel()  # ...and the caller is cancelled in the same loop iteration
            await asyncio.sleep(0)

    with pytest.raises(asyncio.CancelledError):
        await body()
    assert task.uncancel() == 0  # only the outside request was left standing


async def test_work_that_never_suspends_is_not_cancelled() -> None:
    """Cancellation needs a suspension point: work that never awaits runs to its end."""
    async with deadline(0):
        value = sum(range(10))
    assert value == 45


async def test_timer_is_armed_once_the_work_suspends() -> None:
    """A block that suspends gets a real timer: it is cancelled at the deadline."""

    async def body() -> None:
        async with deadline(0.02):
            await asyncio.sleep(0)  # the lazy arming runs here
            await asyncio.sleep(5)

    with pytest.raises(DeadlineExceeded):
        await body()


async def test_scope_can_be_reused_after_a_timeout() -> None:
    """One Deadline object works again after it timed out."""
    scope = Deadline(0.01)
    for _ in range(2):
        with pytest.raises(DeadlineExceeded):
            async with scope:
                await _forever()
    async with scope:
        await asyncio.sleep(0)
