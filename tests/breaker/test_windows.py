"""The windows on their own: counts, the run of failures, the lock-free success path."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from resilience._breaker._windows import FAILURE, SLOW, SUCCESS, CountWindow, TimeWindow


def test_count_window_counts_the_newest_outcomes_only() -> None:
    """Outcomes older than the window's size leave the counts."""
    w = CountWindow(4)
    for outcome in (FAILURE, FAILURE | SLOW, SUCCESS, SLOW, SUCCESS, SUCCESS):
        w.record(outcome)
    assert w.counts() == (4, 0, 1)


def test_count_window_run_outlives_the_window() -> None:
    """The run of trailing failures is a counter: it can be longer than the window."""
    w = CountWindow(3)
    for _ in range(10):
        w.record(FAILURE)
    assert (w.counts(), w.run) == ((3, 3, 0), 10)
    w.record(SLOW)  # slow but not failed: ends the run
    assert w.run == 0


def test_count_window_run_costs_the_same_for_any_window() -> None:
    """Reading the run does not scan the window: a huge window holds a long run in O(1)."""
    w = CountWindow(100_000)
    for _ in range(50):
        w.record(SUCCESS)
    for _ in range(7):
        w.record(FAILURE)
    assert w.run == 7
    assert w.counts() == (57, 7, 0)


def test_ticks_are_successes_folded_in_order() -> None:
    """Lock-free successes count as if recorded between the records around them."""
    w = CountWindow(4)
    w.record(FAILURE)
    next(w.ticks)
    next(w.ticks)
    w.record(FAILURE)
    assert (w.counts(), w.run) == ((4, 2, 0), 1)
    next(w.ticks)  # the first failure leaves the window
    assert (w.counts(), w.run) == ((4, 1, 0), 0)


def test_clear_forgets_successes_not_yet_folded() -> None:
    """Ticks taken before a clear belong to the old window."""
    w = CountWindow(5)
    next(w.ticks)
    next(w.ticks)
    w.clear()
    next(w.ticks)
    assert w.counts() == (1, 0, 0)


@pytest.mark.parametrize(
    ("outcomes", "needed"),
    [
        ((), 4),  # an empty window fills after `size` successes
        ((SUCCESS, SUCCESS), 2),
        ((FAILURE, SUCCESS), 3),  # the failure (bit 1) leaves after 3 more
        ((SUCCESS, SLOW), 4),  # the newest outcome was slow: a whole window to push it out
    ],
)
def test_settle_at_is_the_tick_that_fills_the_window_with_successes(
    outcomes: tuple[int, ...], needed: int
) -> None:
    """Drawing settle_at means the window is full of successes once folded."""
    w = CountWindow(4)
    for outcome in outcomes:
        w.record(outcome)
    for index in range(1, needed + 1):
        drawn = next(w.ticks)
        assert (drawn == w.settle_at) is (index == needed)
    assert w.counts()[1:] == (0, 0)
    assert w.settled


def test_concurrent_ticks_are_each_counted_once() -> None:
    """Ticks from many threads and folds under a lock lose no success and count none twice."""
    w = CountWindow(100_000)
    lock = threading.Lock()

    def work(_: int) -> None:
        for i in range(2_000):
            if i % 100 == 0:
                with lock:
                    w.counts()  # a fold racing with the ticks
            next(w.ticks)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    with lock:
        assert w.counts() == (16_000, 0, 0)


def test_time_window_fast_success_only_in_a_clean_current_bucket() -> None:
    """The one-increment path refuses a new bucket or a window with failures."""
    w = TimeWindow(10.0)
    w.record(SUCCESS, now=100.0)
    assert w.record_fast_success(100.5)
    assert not w.record_fast_success(101.0)  # the next bucket: expiry first
    w.record(FAILURE, now=101.0)
    assert not w.record_fast_success(101.2)  # a failure: the rate must be looked at
    assert w.counts(101.2) == (3, 1, 0)
    assert w.run == 1


def test_time_window_run_ends_with_a_success() -> None:
    """A time window keeps its own run of failures."""
    w = TimeWindow(10.0)
    w.record(FAILURE, now=1.0)
    w.record(FAILURE | SLOW, now=1.0)
    assert w.run == 2
    w.record(SUCCESS, now=1.0)
    assert w.run == 0
