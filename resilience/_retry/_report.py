"""A retry verdict as the outside world sees it: an event, and a note on the error.

Every driver of `resilience._retry._decision.decide` (the `Retry` loops, the httpx
transports) reports through `announce`, so one verdict always reads the same whoever asked.
"""

from __future__ import annotations

from .._observe._events import RetryBudgetExhausted, RetryExhausted, RetryScheduled, emit
from ._decision import Stop, StopReason, Wait

__all__ = ["announce"]


def announce(
    verdict: Wait | Stop,
    name: str | None,
    attempt: int,
    error: str,
    exc: BaseException | None,
    prefix: str,
) -> float | None:
    """Write a verdict's event (and, when stopping, *exc*'s note); return the wait or None.

    Every driver of `decide` (the `Retry` loops, the httpx transports) reports through this,
    so one verdict always reads the same: `RetryScheduled` for a wait, `RetryExhausted` when
    the attempts ran out or the next wait would cross the deadline, `RetryBudgetExhausted`
    when the budget said no. *error* names what failed (an exception's type name,
    ``"result"``, ``"HTTP 503"``); *prefix* starts the note (``"resilience: retry "``).
    """
    if isinstance(verdict, Wait):
        emit(RetryScheduled(name=name, attempt=attempt, wait=verdict.seconds, error=error))
        return verdict.seconds
    if exc is not None:
        exc.add_note(prefix + verdict.note(attempt))
    if verdict.reason is StopReason.BUDGET:
        emit(RetryBudgetExhausted(name=name, attempt=attempt, error=error))
    else:
        emit(RetryExhausted(name=name, attempts=attempt, error=error))
    return None
