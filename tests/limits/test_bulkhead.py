"""Bulkhead: one limit for threads and tasks, a bounded FIFO of waiters, nothing leaked."""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from resilience import Bulkhead, BulkheadFull, ConfigError, DeadlineExceeded, bulkhead, deadline
from resilience.events import BulkheadRejected, Event


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until *condition* holds (threads need real time to arrive); generous timeout."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.001)


async def _auntil(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


class _Gauge:
    """Counts calls running at once and remembers the most seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def exit(self) -> None:
        with self.lock:
            self.now -= 1


def test_call_returns_the_result_and_gives_the_permit_back() -> None:
    """A call runs with a permit held and returns it afterwards."""
    bh = Bulkhead(2)
    seen = bh.call(lambda: bh.active)
    assert seen == 1
    assert bh.active == 0
    assert bh.available == 2


def test_full_bulkhead_rejects_at_once(events: list[Event]) -> None:
    """With no room to wait, a call beyond the limit gets BulkheadFull and an event."""
    bh = Bulkhead(1, name="db")
    called: list[int] = []
    with bh:
        with pytest.raises(BulkheadFull) as info:
            bh.call(called.append, 1)
        assert info.value.name == "db"
    assert called == []
    assert bh.active == 0
    rejected = [e for e in events if isinstance(e, BulkheadRejected)]
    assert rejected == [BulkheadRejected(name="db", max_concurrent=1, max_waiting=0)]


def test_exception_gives_the_permit_back() -> None:
    """A failing call propagates its error and frees the permit."""
    bh = Bulkhead(1)

    @bh
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        boom()
    assert bh.active == 0


def test_release_without_a_permit_is_an_error() -> None:
    """release() with no permit held is a RuntimeError, not a silent corruption."""
    with pytest.raises(RuntimeError):
        Bulkhead(1).release()


def test_32_threads_never_exceed_the_limit() -> None:
    """32 threads through a bulkhead of 4: never more than 4 run, all finish."""
    bh = Bulkhead(4, max_waiting=32)
    gauge = _Gauge()
    gate = threading.Event()

    @bh
    def work(i: int) -> int:
        gauge.enter()
        gate.wait(10)
        gauge.exit()
        return i

    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(work(i))) for i in range(32)]
    for t in threads:
        t.start()
    _until(lambda: bh.waiting == 28)
    assert bh.active == 4
    assert gauge.now == 4
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(results) == list(range(32))
    assert gauge.most == 4
    assert (bh.active, bh.waiting) == (0, 0)


def test_32_threads_churning_never_exceed_the_limit() -> None:
    """Many short calls from 32 threads: the limit holds at every moment."""
    bh = Bulkhead(3, max_waiting=32)
    gauge = _Gauge()

    def work() -> None:
        gauge.enter()
        time.sleep(0)
        gauge.exit()

    def loop() -> None:
        for _ in range(200):
            bh.call(work)

    threads = [threading.Thread(target=loop) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert gauge.most <= 3
    assert (bh.active, bh.waiting) == (0, 0)


async def test_200_tasks_never_exceed_the_limit() -> None:
    """200 tasks through a bulkhead of 5: never more than 5 run, all finish."""
    bh = Bulkhead(5, max_waiting=200)
    gauge = _Gauge()
    gate = asyncio.Event()

    @bh
    async def work(i: int) -> int:
        gauge.enter()
        await gate.wait()
        gauge.exit()
        return i

    tasks = [asyncio.create_task(work(i)) for i in range(200)]
    await _auntil(lambda: bh.waiting == 195)
    assert gauge.now == 5
    gate.set()
    assert await asyncio.gather(*tasks) == list(range(200))
    assert gauge.most == 5
    assert (bh.active, bh.waiting) == (0, 0)


async def test_threads_and_tasks_share_one_limit() -> None:
    """Threads and tasks together never exceed the one limit."""
    bh = Bulkhead(3, max_waiting=100)
    gauge = _Gauge()

    async def task_work() -> None:
        async with bh:
            gauge.enter()
            await asyncio.sleep(0)
            gauge.exit()

    def thread_work() -> None:
        for _ in range(100):
            with bh:
                gauge.enter()
                time.sleep(0)
                gauge.exit()

    threads = [threading.Thread(target=thread_work) for _ in range(8)]
    for t in threads:
        t.start()
    for _ in range(10):
        await asyncio.gather(*(task_work() for _ in range(50)))

    def join_all() -> None:
        for t in threads:
            t.join(30)

    await asyncio.to_thread(join_all)
    assert gauge.most <= 3
    assert (bh.active, bh.waiting) == (0, 0)


async def test_waiters_are_served_in_arrival_order() -> None:
    """Waiting tasks get permits first come, first served."""
    bh = Bulkhead(1, max_waiting=5)
    order: list[int] = []
    await bh.aacquire()

    async def work(i: int) -> None:
        async with bh:
            order.append(i)

    tasks = [asyncio.create_task(work(i)) for i in range(5)]
    await _auntil(lambda: bh.waiting == 5)
    bh.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_queue_beyond_max_waiting_is_rejected() -> None:
    """When max_waiting callers already wait, the next one is rejected at once."""
    bh = Bulkhead(1, max_waiting=1)
    await bh.aacquire()
    waiter = asyncio.create_task(bh.aacquire())
    await _auntil(lambda: bh.waiting == 1)
    with pytest.raises(BulkheadFull):
        await bh.aacquire()
    bh.release()
    await waiter
    assert bh.active == 1
    bh.release()


async def test_task_wait_timeout_rejects(events: list[Event]) -> None:
    """A task that waits longer than wait_timeout gets BulkheadFull and leaves the queue."""
    bh = Bulkhead(1, max_waiting=1, wait_timeout=timedelta(milliseconds=10), name="q")
    async with bh:
        with pytest.raises(BulkheadFull, match=r"within 0\.01 s"):
            await bh.aacquire()
        assert bh.waiting == 0
    assert bh.active == 0
    assert [e.reason for e in events if isinstance(e, BulkheadRejected)] == ["wait_timeout"]


def test_thread_wait_timeout_rejects() -> None:
    """A thread that waits longer than wait_timeout gets BulkheadFull and leaves the queue."""
    bh = Bulkhead(1, max_waiting=1, wait_timeout=0.01)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            bh.acquire()
        except BulkheadFull as exc:
            errors.append(exc)

    with bh:
        t = threading.Thread(target=other)
        t.start()
        t.join(10)
    assert len(errors) == 1
    assert (bh.active, bh.waiting) == (0, 0)


def test_thread_waiter_gets_the_permit_on_release() -> None:
    """A waiting thread runs as soon as the holder releases."""
    bh = Bulkhead(1, max_waiting=1, wait_timeout=10.0)
    ran = threading.Event()
    bh.acquire()
    t = threading.Thread(target=lambda: bh.call(ran.set))
    t.start()
    _until(lambda: bh.waiting == 1)
    assert not ran.is_set()
    bh.release()
    t.join(10)
    assert ran.is_set()
    assert bh.active == 0


def test_thread_wait_never_crosses_the_deadline() -> None:
    """A thread wait is cut at the active deadline, with DeadlineExceeded."""
    bh = Bulkhead(1, max_waiting=1, wait_timeout=60.0)
    errors: list[BaseException] = []

    def other() -> None:
        with deadline(0.01):
            try:
                bh.acquire()
            except DeadlineExceeded as exc:
                errors.append(exc)

    with bh:
        t = threading.Thread(target=other)
        t.start()
        t.join(10)
    assert len(errors) == 1
    assert (bh.active, bh.waiting) == (0, 0)


async def test_task_wait_never_crosses_a_cooperative_deadline() -> None:
    """A task wait is cut at the active deadline even when nothing else enforces it."""
    bh = Bulkhead(1, max_waiting=1)
    async with bh:
        with deadline(0.01), pytest.raises(DeadlineExceeded):
            await bh.aacquire()
    assert (bh.active, bh.waiting) == (0, 0)


async def test_cancelled_waiter_leaves_no_trace() -> None:
    """Cancelling a waiting task takes it out of the queue without a permit."""
    bh = Bulkhead(1, max_waiting=2)
    await bh.aacquire()
    task = asyncio.create_task(bh.aacquire())
    await _auntil(lambda: bh.waiting == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bh.waiting == 0
    bh.release()
    assert bh.active == 0


async def test_waiter_cancelled_after_grant_passes_the_permit_on() -> None:
    """A waiter granted a permit but cancelled before it resumed gives the permit back."""
    bh = Bulkhead(1, max_waiting=2)
    await bh.aacquire()
    task = asyncio.create_task(bh.aacquire())
    await _auntil(lambda: bh.waiting == 1)
    bh.release()  # granted to the waiting task, which has not resumed yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (bh.active, bh.waiting) == (0, 0)


async def test_cancelled_running_task_gives_the_permit_back() -> None:
    """Cancelling a task while it runs inside the bulkhead frees its permit."""
    bh = Bulkhead(1)
    started = asyncio.Event()

    @bh
    async def work() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bh.active == 0


async def test_deadline_cancels_a_waiter_cleanly() -> None:
    """An async deadline that fires while a task waits leaves the queue clean."""
    bh = Bulkhead(1, max_waiting=1)
    async with bh:
        with pytest.raises(DeadlineExceeded):
            async with deadline(0.01):
                await bh.aacquire()
        assert bh.waiting == 0
    assert bh.active == 0


def test_one_bulkhead_serves_several_event_loops_in_turn() -> None:
    """The same bulkhead works from one asyncio.run to the next, waiting included."""
    bh = Bulkhead(1, max_waiting=10)

    async def main() -> list[int]:
        async def work(i: int) -> int:
            async with bh:
                await asyncio.sleep(0)
                return i

        return await asyncio.gather(*(work(i) for i in range(10)))

    for _ in range(3):
        assert asyncio.run(main()) == list(range(10))
        assert (bh.active, bh.waiting) == (0, 0)


def test_loops_in_two_threads_share_one_bulkhead() -> None:
    """Tasks of two event loops in two threads wake each other across loops."""
    bh = Bulkhead(1, max_waiting=100)
    gauge = _Gauge()

    async def main() -> None:
        async def work() -> None:
            async with bh:
                gauge.enter()
                await asyncio.sleep(0)
                gauge.exit()

        await asyncio.gather(*(work() for _ in range(40)))

    threads = [threading.Thread(target=asyncio.run, args=(main(),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert gauge.most == 1
    assert (bh.active, bh.waiting) == (0, 0)


def test_waiter_of_a_closed_loop_is_skipped() -> None:
    """A permit is never handed to a task whose event loop has closed."""
    bh = Bulkhead(1, max_waiting=2)
    bh.acquire()
    loop = asyncio.new_event_loop()
    task = loop.create_task(bh.aacquire())
    loop.run_until_complete(asyncio.sleep(0))
    assert bh.waiting == 1
    loop.close()
    bh.release()  # the dead waiter is dropped and the permit goes back to the pool
    assert (bh.active, bh.waiting) == (0, 0)
    del task
    gc.collect()
    assert (bh.active, bh.waiting) == (0, 0)


async def test_decorator_on_async_and_methods() -> None:
    """bulkhead() decorates async functions and methods and keeps their metadata."""

    class Service:
        @bulkhead(2)
        async def get(self, x: int) -> int:
            """Get."""
            return x

        @bulkhead(2)
        def sync_get(self, x: int) -> int:
            return x

    assert await Service().get(3) == 3
    assert Service().sync_get(4) == 4
    assert inspect.iscoroutinefunction(Service.get)
    assert Service.get.__doc__ == "Get."
    assert Service.sync_get.__name__ == "sync_get"


async def test_call_async_with_arguments() -> None:
    """call_async passes arguments through."""

    async def add(a: int, b: int = 0) -> int:
        return a + b

    assert await Bulkhead(1).call_async(add, 1, b=2) == 3


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": 1.5}, "max_concurrent"),
        ({"max_concurrent": True}, "max_concurrent"),
        ({"max_concurrent": 1, "max_waiting": -1}, "max_waiting"),
        ({"max_concurrent": 1, "wait_timeout": -1}, "wait_timeout"),
        ({"max_concurrent": 1, "name": ""}, "name"),
    ],
)
def test_invalid_settings_are_config_errors(kwargs: dict[str, object], setting: str) -> None:
    """Bad settings fail at construction with ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=setting):
        Bulkhead(**kwargs)  # type: ignore[arg-type]


def test_repr_shows_settings_and_state() -> None:
    """The repr shows the settings and the live counts."""
    assert repr(Bulkhead(2, name="db")) == (
        "Bulkhead(2, max_waiting=0, wait_timeout=None, name='db', active=0, waiting=0)"
    )


def test_32_threads_with_short_waits_and_rejections_stay_consistent() -> None:
    """Waiters that time out, get rejected or get served never break the limit or leak."""
    bh = Bulkhead(2, max_waiting=4, wait_timeout=0.002)
    gauge = _Gauge()
    outcomes = {"ok": 0, "full": 0}
    count = threading.Lock()

    def work() -> None:
        gauge.enter()
        time.sleep(0)
        gauge.exit()

    def loop() -> None:
        for _ in range(100):
            try:
                bh.call(work)
                key = "ok"
            except BulkheadFull:
                key = "full"
            with count:
                outcomes[key] += 1

    threads = [threading.Thread(target=loop) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert gauge.most <= 2
    assert outcomes["ok"] + outcomes["full"] == 3200
    assert outcomes["ok"] > 0
    assert (bh.active, bh.waiting) == (0, 0)


async def test_200_tasks_cancelled_at_random_leave_no_permit_behind() -> None:
    """Tasks cancelled while waiting or running give every permit back."""
    bh = Bulkhead(3, max_waiting=200)
    gate = asyncio.Event()

    async def work() -> None:
        async with bh:
            await gate.wait()

    tasks = [asyncio.create_task(work()) for _ in range(200)]
    await _auntil(lambda: bh.waiting == 197)
    for task in tasks[::3]:
        task.cancel()
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
    assert len(cancelled) == len(tasks[::3])
    assert (bh.active, bh.waiting) == (0, 0)
