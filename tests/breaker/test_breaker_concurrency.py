"""The breaker under many threads and many tasks: probes, parallelism, consistent counts."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState
from resilience.testing import FakeClock

THREADS = 16
TASKS = 200


def open_then_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.force_open()
    breaker.reset()
    permit = breaker.acquire()
    breaker.record_failure(permit)
    clock.advance(breaker.config.open_duration)
    assert breaker.state is CircuitState.HALF_OPEN


@pytest.mark.parametrize("half_open_calls", [1, 3])
def test_threads_exactly_half_open_calls_probes_reach_the_function(
    clock: FakeClock, half_open_calls: int
) -> None:
    """16 threads hit a half-open breaker at once: exactly half_open_calls get through."""
    b = CircuitBreaker(
        "t-probes", consecutive_failures=1, half_open_calls=half_open_calls, clock=clock
    )
    open_then_half_open(b, clock)
    entered = 0
    entered_lock = threading.Lock()
    release = threading.Event()
    start = threading.Barrier(THREADS)

    @b
    def dependency() -> None:
        nonlocal entered
        with entered_lock:
            entered += 1
        assert release.wait(10)
        raise ConnectionError("still down")

    def worker() -> str:
        start.wait(10)
        try:
            dependency()
        except CircuitOpenError:
            return "rejected"
        except ConnectionError:
            return "probed"
        return "?"

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(worker) for _ in range(THREADS)]
        # Every non-probe is rejected while the probes are still blocked.
        rejected = 0
        for _ in range(10_000):  # at most ~10 s, then the assertions below report it
            rejected = sum(1 for f in futures if f.done() and f.result() == "rejected")
            if rejected >= THREADS - half_open_calls:
                break
            threading.Event().wait(0.001)
        release.set()
        results = [f.result() for f in futures]
    assert results.count("probed") == half_open_calls == entered
    assert results.count("rejected") == THREADS - half_open_calls
    assert b.state is CircuitState.OPEN


def test_threads_closed_calls_run_in_parallel(clock: FakeClock) -> None:
    """In CLOSED, 16 calls are inside the function at the same time (no lock held across)."""
    b = CircuitBreaker("t-parallel", clock=clock)
    inside = threading.Barrier(THREADS)

    @b
    def dependency() -> int:
        # Each call waits until all 16 are inside: impossible if calls were serialised.
        return inside.wait(10)

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda _: dependency(), range(THREADS)))
    assert sorted(results) == list(range(THREADS))
    assert b.metrics().calls == THREADS


def test_threads_counts_stay_consistent(clock: FakeClock) -> None:
    """Thousands of concurrent outcomes leave the window full with exact counts."""
    b = CircuitBreaker("t-counts", window=1000, minimum_calls=1000, failure_rate=1.0, clock=clock)
    per_thread = 500
    start = threading.Barrier(THREADS)

    @b
    def dependency(fail: bool) -> None:
        if fail:
            raise ConnectionError

    def worker(index: int) -> None:
        start.wait(10)
        for i in range(per_thread):
            try:
                dependency(i % 4 == 0)
            except ConnectionError:
                pass

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    m = b.metrics()
    assert m.calls == 1000
    # Each thread adds a contiguous run of its 1-in-4 pattern: 250 +- 1 per thread.
    assert 250 - THREADS <= m.failures <= 250 + THREADS
    assert b.state is CircuitState.CLOSED


def test_threads_time_window_counts_every_call(clock: FakeClock) -> None:
    """A time window under 16 threads counts every call exactly once."""
    b = CircuitBreaker("t-time", window_seconds=60, clock=clock)
    per_thread = 300

    @b
    def dependency() -> None:
        return None

    def worker(_: int) -> None:
        for _ in range(per_thread):
            dependency()

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    assert b.metrics().calls == THREADS * per_thread


@pytest.mark.parametrize("half_open_calls", [1, 5])
async def test_tasks_exactly_half_open_calls_probes_reach_the_function(
    clock: FakeClock, half_open_calls: int
) -> None:
    """200 tasks hit a half-open breaker at once: exactly half_open_calls get through."""
    b = CircuitBreaker(
        "a-probes", consecutive_failures=1, half_open_calls=half_open_calls, clock=clock
    )
    open_then_half_open(b, clock)
    entered = 0
    release = asyncio.Event()

    @b
    async def dependency() -> None:
        nonlocal entered
        entered += 1
        await release.wait()
        raise ConnectionError("still down")

    async def worker() -> str:
        try:
            await dependency()
        except CircuitOpenError:
            return "rejected"
        except ConnectionError:
            return "probed"
        return "?"

    tasks = [asyncio.create_task(worker()) for _ in range(TASKS)]
    # Wait until every non-probe has been rejected while the probes are still blocked.
    rejected_all = asyncio.Event()

    def check(_: asyncio.Task[str]) -> None:
        if sum(t.done() for t in tasks) >= TASKS - half_open_calls:
            rejected_all.set()

    for t in tasks:
        t.add_done_callback(check)
    await asyncio.wait_for(rejected_all.wait(), 10)
    release.set()
    results = await asyncio.gather(*tasks)
    assert results.count("probed") == half_open_calls == entered
    assert results.count("rejected") == TASKS - half_open_calls


async def test_tasks_closed_calls_run_concurrently(clock: FakeClock) -> None:
    """In CLOSED, 200 tasks are inside the function at the same time."""
    b = CircuitBreaker("a-parallel", clock=clock)
    inside = 0
    all_inside = asyncio.Event()

    @b
    async def dependency() -> None:
        nonlocal inside
        inside += 1
        if inside == TASKS:
            all_inside.set()
        await all_inside.wait()

    await asyncio.wait_for(asyncio.gather(*(dependency() for _ in range(TASKS))), 10)
    assert b.metrics().calls == 100  # the default count window holds the last 100


async def test_tasks_cancelled_probes_leave_no_permit(clock: FakeClock) -> None:
    """Cancelling every probe in flight leaves the half-open slots free."""
    b = CircuitBreaker("a-cancel", consecutive_failures=1, half_open_calls=5, clock=clock)
    open_then_half_open(b, clock)
    entered = asyncio.Event()
    inside = 0

    @b
    async def dependency() -> None:
        nonlocal inside
        inside += 1
        if inside == 5:
            entered.set()
        await asyncio.Event().wait()

    tasks = [asyncio.create_task(dependency()) for _ in range(TASKS)]
    await entered.wait()
    for t in tasks:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 5
    assert sum(isinstance(r, CircuitOpenError) for r in results) == TASKS - 5
    assert b.metrics().half_open_in_flight == 0
    assert b.state is CircuitState.HALF_OPEN
