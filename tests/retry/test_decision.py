"""The one what-next decision shared by `Retry` and the HTTP transports: pure, no I/O."""

from __future__ import annotations

import math

import pytest

from resilience import RetryBudget
from resilience._retry import _decision, _retry
from resilience._retry._decision import (
    DEFAULT_ATTEMPTS,
    MAX_RETRY_AFTER,
    Stop,
    StopReason,
    Wait,
    decide,
)
from resilience.testing import FakeClock


def reason(verdict: Wait | Stop) -> StopReason:
    """The reason of a verdict that must be a stop."""
    assert isinstance(verdict, Stop), verdict
    return verdict.reason


def half(attempt: int) -> float:
    """A backoff of half a second per attempt made."""
    return 0.5 * attempt


class Asked:
    """A backoff that records being asked."""

    def __init__(self) -> None:
        self.attempts: list[int] = []

    def __call__(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return 1.0


class Budget:
    """A budget that allows *allowed* retries and counts the asks."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.asked = 0

    def try_spend(self) -> bool:
        self.asked += 1
        if self.allowed <= 0:
            return False
        self.allowed -= 1
        return True


def test_waits_the_backoff_for_the_attempts_made() -> None:
    """Without a hint the wait is the backoff for the attempts made so far."""
    assert decide(2, 3, half) == Wait(1.0)


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (5.0, 5.0),  # the hint lengthens the wait
        (0.1, 0.5),  # but never shortens the backoff
        (None, 0.5),
        (0.0, 0.5),
        (-3.0, 0.5),
        (math.nan, 0.5),  # NaN is no hint, not the cap
        (3600.0, 60.0),  # capped
        (math.inf, 60.0),
    ],
)
def test_wait_is_the_larger_of_backoff_and_capped_hint(hint: float | None, expected: float) -> None:
    """The hint is a lower bound on the wait, capped at hint_cap; junk hints are ignored."""
    assert decide(1, 3, half, hint=hint, hint_cap=60.0) == Wait(expected)


def test_default_hint_cap_is_the_shared_constant() -> None:
    """Both engines cap hints at one constant, 60 s, and default to 3 attempts."""
    assert decide(1, 3, half, hint=1e9) == Wait(MAX_RETRY_AFTER)
    assert (MAX_RETRY_AFTER, DEFAULT_ATTEMPTS) == (60.0, 3)
    assert _retry.MAX_RETRY_AFTER is _decision.MAX_RETRY_AFTER
    assert _retry.DEFAULT_ATTEMPTS is _decision.DEFAULT_ATTEMPTS


def test_stops_when_attempts_are_used_up_without_asking_the_backoff() -> None:
    """At the limit the verdict is EXHAUSTED; the backoff and the budget are not asked."""
    backoff, budget = Asked(), Budget(5)
    assert decide(3, 3, backoff, budget=budget) == Stop(StopReason.EXHAUSTED)
    assert reason(decide(4, 3, backoff, budget=budget)) is StopReason.EXHAUSTED
    assert (backoff.attempts, budget.asked) == ([], 0)


def test_never_waits_across_the_deadline() -> None:
    """A wait that would reach the deadline is refused, and the verdict says by how much."""
    assert decide(1, 3, half, hint=5.0, deadline_left=4.0) == Stop(StopReason.DEADLINE, 5.0, 4.0)
    assert reason(decide(1, 3, half, deadline_left=0.5)) is StopReason.DEADLINE  # equal: stop
    assert decide(1, 3, half, deadline_left=0.6) == Wait(0.5)


def test_test_mode_zeroes_the_wait_before_the_deadline_judges_it() -> None:
    """In test mode a 30 s hint inside a 5 s deadline is a zero wait, not a stop."""
    backoff = Asked()
    assert decide(1, 3, backoff, hint=30.0, testing=True, deadline_left=5.0) == Wait(0.0)
    assert backoff.attempts == []  # a jittered or user backoff is not even computed


def test_test_mode_still_stops_at_an_expired_deadline() -> None:
    """A zero wait still crosses a deadline with no time left."""
    verdict = decide(1, 3, half, testing=True, deadline_left=0.0)
    assert verdict == Stop(StopReason.DEADLINE, 0.0, 0.0)


def test_budget_is_asked_last_and_only_to_go_on() -> None:
    """The budget is spent only when nothing else stops; a refusal stops with BUDGET."""
    budget = Budget(1)
    assert reason(decide(1, 3, half, deadline_left=0.1, budget=budget)) is StopReason.DEADLINE
    assert budget.asked == 0
    assert decide(1, 3, half, budget=budget) == Wait(0.5)
    assert decide(2, 3, half, budget=budget) == Stop(StopReason.BUDGET)
    assert budget.asked == 2


def test_a_real_retry_budget_fits_the_protocol() -> None:
    """RetryBudget is what decide spends from: its reserve allows exactly that many retries."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10.0, clock=FakeClock())
    verdicts = [decide(1, 3, half, budget=budget) for _ in range(2)]
    assert verdicts == [Wait(0.5), Stop(StopReason.BUDGET)]


@pytest.mark.parametrize(
    ("verdict", "attempts", "note"),
    [
        (Stop(StopReason.EXHAUSTED), 3, "gave up after 3 attempts"),
        (Stop(StopReason.EXHAUSTED), 1, "gave up after 1 attempt"),
        (
            Stop(StopReason.DEADLINE, 2.5, 1.25),
            2,
            "gave up after 2 attempts: the next wait (2.5 s) would cross the deadline "
            "(1.25 s left)",
        ),
        (Stop(StopReason.BUDGET), 2, "gave up after 2 attempts: the retry budget is exhausted"),
    ],
)
def test_stop_notes_say_how_many_attempts_and_why(verdict: Stop, attempts: int, note: str) -> None:
    """Every driver writes the same note body from a stop verdict."""
    assert verdict.note(attempts) == note


def test_verdicts_are_immutable() -> None:
    """A verdict is a frozen value: drivers cannot change what was decided."""
    verdict = decide(1, 3, half)
    assert isinstance(verdict, Wait)
    with pytest.raises(AttributeError):
        verdict.seconds = 9.0  # type: ignore[misc]  # frozen on purpose
