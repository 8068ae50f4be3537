"""The one "what next?" after a failed attempt, for `Retry` and the HTTP transports alike.

tenacity's ``iter()`` is the model: one pure decision (``DoAttempt`` / ``DoSleep`` there,
`Wait` / `Stop` here) consumed by thin drivers. `Retry`'s sync and async loops and the httpx
transports each classify a failure themselves (is this error or status worth another
attempt?), then ask `decide` what to do, then write their own events and notes from its
verdict. Because every driver asks the same function, a rule such as "test mode zeroes the
wait before the deadline judges it" holds everywhere at once.

`decide` never sleeps, reads no clock and no global: the caller passes the attempt count, the
limit, the backoff, a server's hint, test mode and the time left. Its only side effect is the
one it exists to make: taking a retry from the budget, last, when everything else says go.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

__all__ = [
    "DEFAULT_ATTEMPTS",
    "MAX_RETRY_AFTER",
    "Spender",
    "Stop",
    "StopReason",
    "Wait",
    "decide",
]

DEFAULT_ATTEMPTS: Final = 3
"""Total attempts, the first included, of a `Retry` and of a transport with no policy."""

MAX_RETRY_AFTER: Final = 60.0
"""Longest server hint honoured (an exception's ``retry_after``, a `Retry-After` header), in
seconds; longer hints are capped to this. The transports' ``max_retry_after`` default."""


class Spender(Protocol):
    """What `decide` needs of a retry budget (`RetryBudget` and its subclasses)."""

    def try_spend(self) -> bool:
        """Take one retry if the budget allows it; return whether it did."""
        ...


class StopReason(enum.Enum):
    """Why no further attempt is made."""

    EXHAUSTED = "attempts exhausted"
    DEADLINE = "the next wait would cross the deadline"
    BUDGET = "the retry budget is exhausted"


class Wait(NamedTuple):
    """Verdict: wait *seconds*, then make the next attempt.

    A named tuple rather than a frozen dataclass: as immutable, and about three times
    cheaper to make, which matters on the path every retry takes.
    """

    seconds: float


@dataclass(frozen=True, slots=True)
class Stop:
    """Verdict: make no further attempt, because of *reason*.

    For `StopReason.DEADLINE`, *wait* is the wait that was refused and *left* the seconds
    the deadline had left.
    """

    reason: StopReason
    wait: float = 0.0
    left: float = 0.0

    def note(self, attempts: int) -> str:
        """The PEP 678 note body a driver adds to the error it lets propagate.

        Example:
            >>> Stop(StopReason.BUDGET).note(2)
            'gave up after 2 attempts: the retry budget is exhausted'
            >>> Stop(StopReason.DEADLINE, wait=30.0, left=5.0).note(1)
            'gave up after 1 attempt: the next wait (30 s) would cross the deadline (5 s left)'
        """
        done = (
            f"gave up after {attempts} attempt"
            if attempts == 1
            else f"gave up after {attempts} attempts"
        )
        reason = self.reason
        if reason is StopReason.EXHAUSTED:
            return done
        if reason is StopReason.DEADLINE:
            return (
                f"{done}: the next wait ({self.wait:.3g} s) would cross the deadline "
                f"({self.left:.3g} s left)"
            )
        return f"{done}: {reason.value}"


# Verdicts without data are shared: stopping allocates nothing.
_EXHAUSTED: Final = Stop(StopReason.EXHAUSTED)
_BUDGET: Final = Stop(StopReason.BUDGET)


def decide(
    attempt: int,
    max_attempts: int,
    backoff: Callable[[int], float],
    *,
    hint: float | None = None,
    hint_cap: float = MAX_RETRY_AFTER,
    testing: bool = False,
    deadline_left: float | None = None,
    budget: Spender | None = None,
) -> Wait | Stop:
    """What next after *attempt* attempts (1-based) failed in a way worth retrying.

    Args:
        attempt: attempts made so far, the one that just failed included.
        max_attempts: the limit (test mode may already have capped it).
        backoff: ``attempt -> seconds``, asked only when a wait is needed.
        hint: a server's or component's own wait (an exception's ``retry_after``, a
            response's `Retry-After`), in seconds; None, NaN or <= 0: no hint.
        hint_cap: the longest *hint* honoured; longer ones count as this much.
        testing: test mode: the wait is zero (backoff and hint alike), and that zero wait
            is what the deadline judges.
        deadline_left: seconds the active deadline leaves, or None without one.
        budget: asked for one retry last, only when nothing else stops the retry.

    The wait is the larger of the backoff and the capped hint. A wait that would reach the
    deadline is not taken: stop now rather than wake up to no time.

    Example:
        >>> decide(1, 3, lambda n: 0.5, hint=2.0)
        Wait(seconds=2.0)
        >>> decide(3, 3, lambda n: 0.5).reason
        <StopReason.EXHAUSTED: 'attempts exhausted'>
        >>> decide(1, 3, lambda n: 0.5, hint=30.0, deadline_left=5.0).reason
        <StopReason.DEADLINE: 'the next wait would cross the deadline'>
        >>> decide(1, 3, lambda n: 0.5, hint=30.0, deadline_left=5.0, testing=True)
        Wait(seconds=0.0)
    """
    if attempt >= max_attempts:
        return _EXHAUSTED
    if testing:
        wait = 0.0
    else:
        wait = backoff(attempt)
        if hint is not None and hint > 0.0:  # NaN is no hint
            if hint > hint_cap:
                hint = hint_cap
            if hint > wait:
                wait = hint
    if deadline_left is not None and wait >= deadline_left:
        return Stop(StopReason.DEADLINE, wait, deadline_left)
    if budget is not None and not budget.try_spend():
        return _BUDGET
    return Wait(wait)
