"""The shared timers behind async deadlines: slots, filing, precision, and what a call costs."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from resilience import DeadlineExceeded, deadline, timeout
from resilience._deadline import (
    _FIRED,
    _GONE,
    _WHEELS,
    SLOT,
    _Alarm,
    _fire,
    _forget_wheels,
    _Wheel,
    current_deadline,
)

# -- a fake loop: time moves by hand, timers are run by hand ----------------------------------


class FakeLoop:
    """The three loop methods a wheel uses, with a settable time and recorded timers."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.timers: list[tuple[float, Callable[..., object], tuple[Any, ...]]] = []
        self.soon: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.contexts: list[object] = []

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[..., object], *args: Any, context: object) -> None:
        self.soon.append((callback, args))
        self.contexts.append(context)

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, context: object
    ) -> None:
        self.timers.append((when, callback, args))
        self.contexts.append(context)

    def run_soon(self) -> None:
        soon, self.soon = self.soon, []
        for callback, args in soon:
            callback(*args)

    def run_until(self, until: float) -> int:
        """Run the timers due by *until* in time order, moving the time; return how many."""
        ran = 0
        while True:
            due = [t for t in self.timers if t[0] <= until]
            if not due:
                self.now = max(self.now, until)
                return ran
            first = min(due, key=lambda t: t[0])
            self.timers.remove(first)
            self.now = max(self.now, first[0])
            first[1](*first[2])
            ran += 1


class FakeTask:
    """Counts the cancellations it gets."""

    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> bool:
        self.cancels += 1
        return True


def _wheel(loop: FakeLoop) -> _Wheel:
    return _Wheel(cast(asyncio.AbstractEventLoop, loop))


def _alarm(loop: FakeLoop, seconds: float) -> tuple[_Alarm, FakeTask]:
    task = FakeTask()
    alarm = _Alarm(loop.now + seconds, loop.time, cast("asyncio.Task[Any]", task))
    return alarm, task


def _filed(loop: FakeLoop, seconds: float) -> tuple[_Wheel, _Alarm, FakeTask]:
    wheel = _wheel(loop)
    alarm, task = _alarm(loop, seconds)
    wheel.add(alarm)
    loop.run_soon()  # the flush at the loop's next turn
    return wheel, alarm, task


# -- unit tests on the fake loop ---------------------------------------------------------------


def test_slot_is_under_ten_milliseconds() -> None:
    """The documented precision: a slot is 1/128 s, under 10 ms."""
    assert SLOT == 1 / 128
    assert SLOT < 0.010


@pytest.mark.parametrize("seconds", [0.001, 0.0123, 0.1, 0.2499, 0.3, 1.0, 7.7, 300.0, 86400.0])
def test_alarm_fires_at_most_one_slot_late_and_never_early(seconds: float) -> None:
    """Near or far, the task is cancelled in [deadline, deadline + SLOT] of loop time."""
    loop = FakeLoop(now=1234.5678)
    due = loop.now + seconds
    _, alarm, task = _filed(loop, seconds)
    loop.run_until(due - 1e-9)
    assert task.cancels == 0
    assert alarm.slot is not _FIRED
    loop.run_until(due + SLOT)
    assert task.cancels == 1
    assert alarm.slot is _FIRED


def test_far_alarm_is_filed_again_a_few_times_only() -> None:
    """A deadline a day away rings a handful of coarse slots before its own."""
    loop = FakeLoop()
    _filed(loop, 86400.0)
    assert loop.run_until(loop.now + 86400.0 + SLOT) <= 12


def test_a_late_ring_fires_what_is_already_due() -> None:
    """A busy loop that runs a coarse slot after the deadline fires the alarm right there."""
    loop = FakeLoop()
    due = loop.now + 5.0
    _, alarm, task = _filed(loop, 5.0)
    loop.now = due + 3.0  # the loop was blocked past the deadline
    assert loop.run_until(loop.now) == 1  # the coarse slot's ring, no further filing
    assert task.cancels == 1
    assert alarm.slot is _FIRED


def test_alarms_due_together_share_one_timer() -> None:
    """A thousand alarms in one slot arm one loop timer, and all fire."""
    loop = FakeLoop(now=50.0)
    wheel = _wheel(loop)
    tasks = []
    for i in range(1000):
        alarm, task = _alarm(loop, 0.1 + i * 1e-6)
        wheel.add(alarm)
        tasks.append(task)
    loop.run_soon()
    assert len(loop.soon) == 0
    assert len(loop.timers) == 1
    loop.run_until(loop.now + 0.2)
    assert all(task.cancels == 1 for task in tasks)


def test_live_slots_stay_few_under_a_steady_stream_of_long_timeouts() -> None:
    """A call every 100 ms for two hours, each with an hour's timeout: few live slots."""
    loop = FakeLoop()
    wheel = _wheel(loop)
    kept: list[FakeTask] = []
    most = 0
    for i in range(72_000):
        loop.now += 0.1
        alarm, task = _alarm(loop, 3600.0)
        wheel.add(alarm)
        loop.run_soon()  # every call suspends once: its alarm is filed in a slot
        if i % 1000:
            wheel.remove(alarm)
        else:
            kept.append(task)  # a few run into their deadline: they are filed again, nearer
        if not i % 100:
            loop.run_until(loop.now)
        most = max(most, len(wheel.slots))
    assert most < 100  # one 7.8 ms slot each would be 36,000
    assert [task.cancels for task in kept[:36]] == [1] * 36
    assert sum(task.cancels for task in kept[37:]) == 0


def test_removed_alarm_does_not_fire() -> None:
    """An alarm taken out of its slot leaves its task alone."""
    loop = FakeLoop()
    wheel, alarm, task = _filed(loop, 0.05)
    assert alarm.slot is not None
    wheel.remove(alarm)
    loop.run_until(loop.now + 1.0)
    assert task.cancels == 0


def test_pending_alarm_that_never_suspended_is_popped() -> None:
    """Scopes that end before the loop's next turn leave nothing for the flush."""
    loop = FakeLoop()
    wheel = _wheel(loop)
    outer, _ = _alarm(loop, 1.0)
    inner, _ = _alarm(loop, 0.5)
    wheel.add(outer)
    wheel.add(inner)
    assert len(loop.soon) == 1  # one flush for every alarm added in this turn
    wheel.remove(inner)
    wheel.remove(outer)
    assert wheel.pending == []
    loop.run_soon()
    assert loop.timers == []
    assert wheel.slots == {}


def test_pending_alarm_ended_out_of_order_is_skipped_by_the_flush() -> None:
    """An alarm that ends while pending but not last is marked gone, and never filed."""
    loop = FakeLoop()
    wheel = _wheel(loop)
    first, first_task = _alarm(loop, 0.05)
    second, second_task = _alarm(loop, 0.05)
    wheel.add(first)
    wheel.add(second)
    wheel.remove(first)
    assert first.slot is _GONE
    loop.run_soon()
    assert second.slot is not None
    assert second.slot is not _FIRED
    loop.run_until(loop.now + 1.0)
    assert (first_task.cancels, second_task.cancels) == (0, 1)


def test_alarm_already_due_fires_at_the_flush() -> None:
    """An alarm whose deadline passed before the loop's next turn fires then, with no timer."""
    loop = FakeLoop()
    wheel = _wheel(loop)
    alarm, task = _alarm(loop, 0.0)
    wheel.add(alarm)
    loop.run_soon()
    assert task.cancels == 1
    assert loop.timers == []


def test_callbacks_run_in_the_wheels_own_empty_context() -> None:
    """The wheel's callbacks keep no copy of the context of the request that armed them."""
    loop = FakeLoop()
    wheel, _, _ = _filed(loop, 5.0)
    assert loop.contexts
    assert all(context is wheel.context for context in loop.contexts)
    assert isinstance(wheel.context, contextvars.Context)
    assert len(wheel.context) == 0


def test_forked_child_forgets_the_parents_wheels() -> None:
    """After a fork the cached wheels are dropped: the parent's loops do not run there."""

    async def arm() -> None:
        async with deadline(5.0):
            await asyncio.sleep(0)

    asyncio.run(arm())
    assert _WHEELS
    _forget_wheels()
    assert not _WHEELS
    asyncio.run(arm())  # a new wheel is made on demand


# -- on a real event loop ----------------------------------------------------------------------


async def test_real_deadline_is_never_early_and_at_most_about_a_slot_late() -> None:
    """On asyncio's loop, a 50 ms deadline cancels the block after 50 ms, not much later."""
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        async with deadline(0.05):
            await asyncio.Event().wait()
    elapsed = time.monotonic() - started
    assert elapsed >= 0.05
    assert elapsed < 0.05 + SLOT + 0.5  # wide: a loaded machine runs the loop late


async def test_timeout_racing_an_outside_cancel_lets_cancelled_error_through() -> None:
    """@timeout: when its alarm and an outside cancel land together, CancelledError wins."""
    task = asyncio.current_task()
    assert task is not None

    @timeout(10.0)
    async def body() -> None:
        alarm = current_deadline()
        assert isinstance(alarm, _Alarm)
        _fire(alarm)  # our alarm fires...
        task.cancel()  # ...and the caller is cancelled in the same loop iteration
        await asyncio.sleep(0)

    with pytest.raises(asyncio.CancelledError):
        await body()
    assert task.uncancel() == 0  # only the outside request was left standing


async def test_timeout_whose_call_swallows_the_cancel_takes_its_cancel_back() -> None:
    """@timeout: a call that absorbs our cancellation and returns leaves no cancel count."""
    task = asyncio.current_task()
    assert task is not None
    before = task.cancelling()

    @timeout(0.01)
    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "kept going"
        return "unreachable"

    assert await stubborn() == "kept going"
    assert task.cancelling() == before


async def test_timeout_that_never_suspends_leaves_nothing_pending() -> None:
    """A thousand calls that never suspend leave the wheel's pending list empty."""

    @timeout(5.0)
    async def cached() -> int:
        return 1

    assert sum([await cached() for _ in range(1000)]) == 1000
    loop = asyncio.get_running_loop()
    assert _WHEELS[loop].pending == []


async def test_scope_entered_and_left_out_of_order_is_not_armed() -> None:
    """Two scopes of one task driven by hand, the first ending first: neither fires later."""
    loop = asyncio.get_running_loop()
    gates: list[asyncio.Future[None]] = [loop.create_future(), loop.create_future()]

    alarms: list[object] = []

    async def scoped(gate: asyncio.Future[None]) -> str:
        async with deadline(0.02):
            alarms.append(current_deadline())
            await gate
        return "done"

    # Each coroutine in a context of its own, as two tasks would be.
    first, second = scoped(gates[0]), scoped(gates[1])
    first_context, second_context = contextvars.copy_context(), contextvars.copy_context()
    assert first_context.run(first.send, None) is gates[0]  # both scopes entered, pending
    assert second_context.run(second.send, None) is gates[1]
    for gate in gates:
        gate.set_result(None)
    with pytest.raises(StopIteration):
        first_context.run(first.send, None)  # ends while the second is the last pending
    first_alarm = alarms[0]
    assert isinstance(first_alarm, _Alarm)
    assert first_alarm.slot is _GONE
    with pytest.raises(StopIteration):
        second_context.run(second.send, None)
    await asyncio.sleep(0.05)  # past both deadlines: no cancellation reaches this task
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


def test_loops_in_two_threads_each_enforce_their_own_deadlines() -> None:
    """Two event loops running at once in two threads: each task times out on its own."""
    results: list[str] = []
    barrier = threading.Barrier(2)

    async def one() -> None:
        barrier.wait(timeout=5)
        for _ in range(3):
            try:
                async with deadline(0.02):
                    await asyncio.Event().wait()
            except DeadlineExceeded:
                results.append("timed out")

    threads = [threading.Thread(target=asyncio.run, args=(one(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == ["timed out"] * 6


def test_wheels_of_closed_loops_are_dropped() -> None:
    """A wheel is kept per loop, and a closed loop's wheel goes when the next loop arms one."""

    async def arm() -> asyncio.AbstractEventLoop:
        async with deadline(1.0):
            await asyncio.sleep(0)
        return asyncio.get_running_loop()

    first = asyncio.run(arm())
    second = asyncio.run(arm())
    assert first not in _WHEELS
    assert second in _WHEELS
