"""A breaker's open_duration as a strategy: the OPEN time grows with consecutive openings."""

from __future__ import annotations

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, ConfigError, backoff
from resilience._validate import MAX_DURATION
from resilience.testing import FakeClock


def trip(breaker: CircuitBreaker) -> None:
    permit = breaker.acquire()
    breaker.record_failure(permit)


def probe(breaker: CircuitBreaker, *, ok: bool) -> None:
    permit = breaker.acquire()
    if ok:
        breaker.record_success(permit)
    else:
        breaker.record_failure(permit)


def open_for(breaker: CircuitBreaker) -> float:
    with pytest.raises(CircuitOpenError) as caught:
        breaker.acquire()
    retry_after = caught.value.retry_after
    assert retry_after is not None
    return retry_after


def test_exponential_open_duration_grows_with_each_failed_probe(clock: FakeClock) -> None:
    """Each reopening after a failed probe stays OPEN twice as long, up to the maximum."""
    b = CircuitBreaker(
        "grow",
        consecutive_failures=1,
        open_duration=backoff.exponential(10, 35, jitter=False),
        clock=clock,
    )
    trip(b)
    seen = []
    for _ in range(4):
        seen.append(open_for(b))
        clock.advance(seen[-1])
        assert b.state is CircuitState.HALF_OPEN
        probe(b, ok=False)
    assert seen == [10.0, 20.0, 35.0, 35.0]


def test_close_resets_the_strategy_to_its_first_step(clock: FakeClock) -> None:
    """After a successful probe closes the breaker, the next opening uses the first step."""
    b = CircuitBreaker(
        "reset-step",
        consecutive_failures=1,
        open_duration=backoff.exponential(5, 100, jitter=False),
        clock=clock,
    )
    trip(b)
    clock.advance(5)
    probe(b, ok=False)
    assert open_for(b) == 10.0
    clock.advance(10)
    probe(b, ok=True)
    assert b.state is CircuitState.CLOSED
    trip(b)
    assert open_for(b) == 5.0


def test_plain_function_gets_the_number_of_openings(clock: FakeClock) -> None:
    """A function n -> seconds is called with 1, 2, 3... for consecutive openings."""
    calls: list[int] = []

    def linear(n: int) -> float:
        calls.append(n)
        return 3.0 * n

    b = CircuitBreaker("linear", consecutive_failures=1, open_duration=linear, clock=clock)
    trip(b)
    assert open_for(b) == 3.0
    clock.advance(3)
    probe(b, ok=False)
    assert open_for(b) == 6.0
    assert calls == [1, 2]
    assert b.config.open_duration == MAX_DURATION
    assert b.config.open_backoff is linear


def test_reset_restarts_the_steps(clock: FakeClock) -> None:
    """reset() is a close: the next opening starts from the first step again."""
    b = CircuitBreaker(
        "reset-manual", consecutive_failures=1, open_duration=lambda n: 2.0**n, clock=clock
    )
    trip(b)
    clock.advance(2)
    probe(b, ok=False)
    assert open_for(b) == 4.0
    b.reset()
    trip(b)
    assert open_for(b) == 2.0


def test_broken_strategy_falls_back_to_the_default(clock: FakeClock) -> None:
    """A strategy that raises still opens the breaker, for the default 30 s."""

    def broken(n: int) -> float:
        raise RuntimeError("bug")

    b = CircuitBreaker("broken-open", consecutive_failures=1, open_duration=broken, clock=clock)
    trip(b)
    assert b.state is CircuitState.OPEN
    assert open_for(b) == 30.0


def test_negative_or_nan_step_means_no_wait(clock: FakeClock) -> None:
    """A step that is negative or NaN counts as 0 s: the next look moves to HALF_OPEN."""
    b = CircuitBreaker(
        "nan-open", consecutive_failures=1, open_duration=lambda n: float("nan"), clock=clock
    )
    trip(b)
    assert b.state is CircuitState.HALF_OPEN


def test_constant_strategy_reports_its_seconds_as_the_longest() -> None:
    """config.open_duration is the longest OPEN time: a constant strategy's seconds."""
    b = CircuitBreaker("const-open", open_duration=backoff.constant(7))
    assert b.config.open_duration == 7.0
    assert CircuitBreaker("fixed-open", open_duration=12).config.open_backoff is None


def test_clone_keeps_the_strategy_but_not_the_count(clock: FakeClock) -> None:
    """A clone uses the template's strategy with its own count of openings."""
    template = CircuitBreaker(
        "tmpl-open",
        consecutive_failures=1,
        open_duration=backoff.exponential(1, 8, jitter=False),
        clock=clock,
    )
    trip(template)
    clock.advance(1)
    probe(template, ok=False)
    twin = template.clone("tmpl-open:twin")
    trip(twin)
    assert open_for(twin) == 1.0


def test_bad_open_duration_still_rejected() -> None:
    """A value that is neither a duration nor a strategy is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="open_duration"):
        CircuitBreaker("bad-open", open_duration="30s")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="open_duration"):
        CircuitBreaker("bad-open", open_duration=int)


def test_probe_slot_is_held_for_the_current_step(clock: FakeClock) -> None:
    """A hung probe's slot is given back after this opening's step, not the longest one."""
    b = CircuitBreaker(
        "probe-step",
        consecutive_failures=1,
        open_duration=backoff.exponential(10, 40, jitter=False),
        clock=clock,
    )
    trip(b)
    clock.advance(10)
    b.acquire()  # the probe, which never reports back
    clock.advance(9)
    with pytest.raises(CircuitOpenError):
        b.acquire()
    clock.advance(1)
    b.acquire()  # the hung probe's slot was given back after 10 s
