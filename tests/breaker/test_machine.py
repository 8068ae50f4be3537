"""The state machine's own rules: how successes are counted, probe permits, late outcomes."""

from __future__ import annotations

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState
from resilience._breaker._machine import FAST_IDLE, FAST_NONE, FAST_TICK
from resilience.testing import FakeClock


def ok() -> None:
    return None


def fail() -> None:
    raise ConnectionError


def test_successes_stop_costing_once_the_window_is_full_of_them(clock: FakeClock) -> None:
    """A count window full of successes records nothing more; a failure makes it count again."""
    b = CircuitBreaker("m-idle", window=10, minimum_calls=5, clock=clock)
    guarded = b(ok)
    machine = b._machine
    for _ in range(9):
        guarded()
    assert machine.fast == FAST_TICK
    guarded()  # the tenth: the window is full of successes
    assert machine.fast == FAST_IDLE
    for _ in range(100):
        guarded()
    assert b.metrics().calls == 10
    with pytest.raises(ConnectionError):
        b(fail)()
    assert machine.fast == FAST_TICK
    assert (b.metrics().calls, b.metrics().failures) == (10, 1)
    for _ in range(9):
        guarded()
    assert b.metrics().failures == 1  # nine successes: the failure is still in the window
    guarded()
    assert (b.metrics().failures, machine.fast) == (0, FAST_IDLE)


def test_below_minimum_calls_with_a_failure_successes_take_the_lock(clock: FakeClock) -> None:
    """A success that may reach minimum_calls and trip the breaker is judged under the lock."""
    b = CircuitBreaker("m-lock", failure_rate=0.5, window=10, minimum_calls=4, clock=clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            b.call(fail)
    assert b._machine.fast == FAST_NONE
    b.call(ok)
    b.call(ok)  # 2 failures in 4 calls: the rate is reached by this success
    assert b.state is CircuitState.OPEN


def test_a_late_outcome_from_an_earlier_round_is_dropped(clock: FakeClock) -> None:
    """Probe permits are never reused: a hung probe of round one cannot close round two."""
    b = CircuitBreaker("m-rounds", consecutive_failures=1, open_duration=10, clock=clock)
    with pytest.raises(ConnectionError):
        b.call(fail)
    clock.advance(10)
    hung = b.acquire()  # round one's probe, which hangs
    clock.advance(10)  # held for open_duration: its slot is given back
    replacement = b.acquire()
    b.record_failure(replacement)  # round one fails: OPEN again
    assert b.state is CircuitState.OPEN
    clock.advance(10)
    probe = b.acquire()  # round two
    assert probe != hung
    b.record_success(hung)  # the hung probe finally answers: too late to count
    assert b.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        b.acquire()  # round two's only slot is still taken
    b.record_success(probe)
    assert b.state is CircuitState.CLOSED


def test_reopened_breaker_shows_the_failed_round(clock: FakeClock) -> None:
    """While OPEN after a failed round, metrics show the round's numbers, not the window's."""
    b = CircuitBreaker(
        "m-shown", failure_rate=0.5, window=10, minimum_calls=2, half_open_calls=2, clock=clock
    )
    for _ in range(2):
        with pytest.raises(ConnectionError):
            b.call(fail)
    clock.advance(30)
    first, second = b.acquire(), b.acquire()
    b.record_failure(first)
    b.record_success(second)
    m = b.metrics()
    assert (m.state, m.calls, m.failures, m.consecutive_failures) == (
        CircuitState.OPEN,
        2,
        1,
        0,
    )
    assert m.half_open_in_flight == 0
