"""RetryBudget: ratio of calls plus a reserve, over a ttl, in bounded memory."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import ConfigError, RetryBudget
from resilience.testing import FakeClock


def spend_all(budget: RetryBudget, limit: int = 10_000) -> int:
    """Spend until refused; return how many retries were granted."""
    granted = 0
    while granted < limit and budget.try_spend():
        granted += 1
    return granted


def test_defaults_follow_finagle() -> None:
    """Defaults: 20 % of calls plus 10 retries a second over 10 s."""
    budget = RetryBudget()
    assert (budget.ratio, budget.min_per_second, budget.ttl) == (0.2, 10.0, 10.0)
    assert budget.available() == 100


def test_reserve_alone_allows_min_per_second_times_ttl(clock: FakeClock) -> None:
    """With no calls, exactly min_per_second * ttl retries are allowed."""
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, ttl=10.0, clock=clock)
    assert spend_all(budget) == 10
    assert budget.try_spend() is False


def test_ratio_of_calls_is_allowed_at_the_edge(clock: FakeClock) -> None:
    """ratio * calls retries are allowed, the next one is refused."""
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, ttl=10.0, clock=clock)
    for _ in range(10):
        budget.record_call()
    assert spend_all(budget) == 2
    for _ in range(5):
        budget.record_call()
    assert spend_all(budget) == 1


def test_no_calls_and_no_reserve_allows_nothing(clock: FakeClock) -> None:
    """A zero reserve and no calls refuse the first retry."""
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, clock=clock)
    assert budget.try_spend() is False
    assert budget.available() == 0


def test_float_ratios_do_not_lose_a_retry_to_rounding(clock: FakeClock) -> None:
    """0.1 * 30 calls allows 3 retries, although 0.1 * 30 is a hair below 3 in floats."""
    budget = RetryBudget(ratio=0.1, min_per_second=0.0, clock=clock)
    for _ in range(30):
        budget.record_call()
    assert spend_all(budget) == 3


def test_calls_and_reserve_add_up(clock: FakeClock) -> None:
    """The limit is ratio * calls + min_per_second * ttl."""
    budget = RetryBudget(ratio=0.5, min_per_second=0.2, ttl=10.0, clock=clock)
    for _ in range(4):
        budget.record_call()
    assert budget.available() == 4
    assert spend_all(budget) == 4


def test_retries_stop_counting_after_ttl(clock: FakeClock) -> None:
    """Spent retries come back once ttl seconds have passed, not before."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.5, ttl=10.0, clock=clock)
    assert spend_all(budget) == 5
    clock.advance(9.99)
    assert budget.try_spend() is False
    clock.advance(0.01)
    assert spend_all(budget) == 5


def test_calls_stop_counting_after_ttl(clock: FakeClock) -> None:
    """Calls older than ttl no longer earn retries."""
    budget = RetryBudget(ratio=1.0, min_per_second=0.0, ttl=10.0, clock=clock)
    for _ in range(3):
        budget.record_call()
    clock.advance(10.0)
    assert budget.try_spend() is False


def test_counts_slide_bucket_by_bucket(clock: FakeClock) -> None:
    """Events expire one bucket (ttl / 10) at a time, oldest first."""
    budget = RetryBudget(ratio=1.0, min_per_second=0.0, ttl=10.0, clock=clock)
    budget.record_call()  # t = 0
    clock.advance(5.0)
    budget.record_call()  # t = 5
    assert budget.available() == 2
    clock.advance(5.0)  # t = 10: the first call is gone
    assert budget.available() == 1
    clock.advance(5.0)  # t = 15: both gone
    assert budget.available() == 0


def test_a_long_idle_gap_forgets_everything(clock: FakeClock) -> None:
    """After a gap many times the ttl, stale buckets are not mistaken for fresh ones."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10.0, clock=clock)
    assert spend_all(budget) == 1
    clock.advance(10.0 * 10 + 3.0)
    assert spend_all(budget) == 1


def test_memory_is_bounded(clock: FakeClock) -> None:
    """A long run of calls keeps the same fixed number of buckets."""
    budget = RetryBudget(clock=clock)
    for _ in range(20_000):
        budget.record_call()
        clock.advance(0.013)
    assert len(budget._calls) == len(budget._retries) == 10


def test_thread_safe_spending_never_exceeds_the_limit() -> None:
    """Many threads spending at once get exactly the limit between them."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, ttl=10.0, clock=clock)
    calls_per_thread = 500
    granted: list[int] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        mine = 0
        for _ in range(calls_per_thread):
            budget.record_call()
            if budget.try_spend():
                mine += 1
        granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limit = int(0.2 * 16 * calls_per_thread + 10)
    assert sum(granted) <= limit
    # No lost update: what was granted plus what is left is exactly the limit.
    assert sum(granted) + budget.available() == limit


def test_timedelta_ttl_is_accepted(clock: FakeClock) -> None:
    """ttl may be a timedelta."""
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, ttl=timedelta(seconds=3), clock=clock)
    assert budget.ttl == 3.0
    assert budget.available() == 3


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": float("nan")}, "ratio"),
        ({"ratio": "0.2"}, "ratio"),
        ({"min_per_second": -1}, "min_per_second"),
        ({"min_per_second": float("inf")}, "min_per_second"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": -5}, "ttl"),
        ({"clock": 3}, "clock"),
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, object], setting: str) -> None:
    """A bad setting fails at construction with ConfigError naming it."""
    with pytest.raises(ConfigError, match=setting):
        RetryBudget(**kwargs)  # type: ignore[arg-type]


def test_repr_shows_settings_and_what_is_available(clock: FakeClock) -> None:
    """The repr names the settings and the retries available now."""
    text = repr(RetryBudget(ratio=0.1, min_per_second=1.0, ttl=5.0, clock=clock))
    assert text == "RetryBudget(ratio=0.1, min_per_second=1.0, ttl=5.0, available=5)"


@given(
    ops=st.lists(
        st.one_of(
            st.just("call"),
            st.just("spend"),
            st.floats(min_value=0.0, max_value=25.0, allow_nan=False),
        ),
        max_size=200,
    ),
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0, 3.0]),
    reserve=st.sampled_from([0.0, 0.1, 0.3, 1.0]),
)
@settings(max_examples=200, deadline=None)
def test_budget_matches_a_model_that_keeps_every_event(
    ops: list[str | float], ratio: float, reserve: float
) -> None:
    """The bucketed budget decides exactly like a model that remembers every event."""
    clock = FakeClock()
    ttl = 10.0
    budget = RetryBudget(ratio=ratio, min_per_second=reserve, ttl=ttl, clock=clock)
    width = ttl / 10
    calls: list[int] = []
    retries: list[int] = []

    def live(events: list[int]) -> int:
        current = int(clock() // width)
        return sum(1 for bucket in events if bucket > current - 10)

    for op in ops:
        if op == "call":
            budget.record_call()
            calls.append(int(clock() // width))
        elif op == "spend":
            allowed = live(retries) + 1 <= ratio * live(calls) + reserve * ttl + 1e-9
            assert budget.try_spend() is allowed
            if allowed:
                retries.append(int(clock() // width))
        else:
            assert isinstance(op, float)
            clock.advance(op)


def test_a_clock_that_steps_back_does_not_lose_counts() -> None:
    """A clock stepping back into an older bucket still counts, and the cache stays current."""
    now = [1000.0]
    budget = RetryBudget(ratio=1.0, min_per_second=0.0, ttl=10.0, clock=lambda: now[0])
    budget.record_call()
    now[0] = 998.5  # an earlier bucket, still inside the ttl
    budget.record_call()
    now[0] = 1000.2  # back in the current bucket
    budget.record_call()
    assert budget.available() == 3
