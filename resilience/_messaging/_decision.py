"""What to do with a message, decided from facts alone: no I/O, no clock, no broker.

Two moments need a decision:

- after the dedupe claim (`after_claim`): run the handler (`Run`), skip a message already
  handled (`Skip`: ack it), or look again later at one another consumer holds (`Defer`);
- after the handler failed (`after_failure`): the message goes back to the queue without
  counting as a try and the consumer pauses (`Requeue`: an open breaker, an unreachable
  dedupe store), comes back later without counting as a try (`Defer`: a full bulkhead),
  comes back after the next redelivery delay (`Redeliver`), or is dead-lettered
  (`DeadLetter`: poison, expired, or out of tries).

The handling core (`_handling.py`) asks, then carries the answer out through the broker
adapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, TypeAlias

from .._errors import BulkheadFull, CircuitOpenError
from .._idempotency._backend import Busy, Claimed, ClaimResult, Done, StoreUnavailable
from ._settings import Consumer

__all__ = [
    "DeadLetter",
    "Defer",
    "Redeliver",
    "Requeue",
    "Run",
    "Skip",
    "after_claim",
    "after_failure",
    "defer_delay",
]

FORCED_OPEN_POLL: Final = 5.0
"""Seconds between looks at a breaker forced open (it gives no time for a probe)."""
MIN_PAUSE: Final = 0.01
DEFER_STEP: Final = 0.1
"""Deferred messages wait in delay queues of 0.1 s x 2^k: a few queues serve any wait."""
MAX_DEFER: Final = DEFER_STEP * 2**10
MAX_STORE_PAUSE: Final = 30.0


@dataclass(frozen=True, slots=True)
class Run:
    """Run the handler; ``token`` owns the claim (None without dedupe)."""

    token: str | None


@dataclass(frozen=True, slots=True)
class Skip:
    """The message id was handled already: ack without running."""


@dataclass(frozen=True, slots=True)
class Defer:
    """Look at the message again after ``delay`` seconds; not a try."""

    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class Requeue:
    """Back to the queue now, not a try; pause the consumer for ``pause`` seconds."""

    pause: float
    reason: str


@dataclass(frozen=True, slots=True)
class Redeliver:
    """Try number ``attempts`` failed: deliver again after ``delay`` seconds."""

    delay: float
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Give up after ``attempts`` tries: ``reason`` is poison, expired or exhausted."""

    attempts: int
    reason: str


AfterClaim: TypeAlias = Run | Skip | Defer
AfterFailure: TypeAlias = Requeue | Defer | Redeliver | DeadLetter


def defer_delay(wait: float) -> float:
    """The delay-queue wait that covers *wait* seconds: the next 0.1 s x 2^k, bounded.

    Example:
        >>> defer_delay(0.05), defer_delay(0.3), defer_delay(1e9)
        (0.1, 0.4, 102.4)
    """
    if not wait > DEFER_STEP:
        return DEFER_STEP
    steps = math.ceil(math.log2(wait / DEFER_STEP) - 1e-9)
    return min(DEFER_STEP * 2.0**steps, MAX_DEFER)


def after_claim(result: ClaimResult, deferrals: int = 0) -> AfterClaim:
    """What the dedupe claim means for the message (*deferrals*: times it was deferred already).

    A message held by another consumer is looked at again after 0.1 s, then 0.2, 0.4...:
    that consumer is most likely alive and about to finish (the message was published
    twice), and if it died, its lock's expiry (``retry_after``) bounds the wait.

    Example:
        >>> from resilience._idempotency._backend import Busy, Claimed, Done
        >>> after_claim(Claimed("t")), after_claim(Done("", b""))
        (Run(token='t'), Skip())
        >>> after_claim(Busy("", retry_after=50.0)), after_claim(Busy("", 50.0), deferrals=3)
        (Defer(delay=0.1, reason='busy'), Defer(delay=0.8, reason='busy'))
        >>> after_claim(Busy("", retry_after=0.3), deferrals=9)
        Defer(delay=0.4, reason='busy')
    """
    if isinstance(result, Claimed):
        return Run(result.token)
    if isinstance(result, Done):
        return Skip()
    assert isinstance(result, Busy)
    backoff = DEFER_STEP * 2.0 ** min(max(deferrals, 0), 16)
    return Defer(defer_delay(min(result.retry_after, backoff)), "busy")


def pause_for(exc: CircuitOpenError) -> float:
    """How long to pause for an open breaker: until it lets a probe through.

    Example:
        >>> from resilience import CircuitOpenError
        >>> pause_for(CircuitOpenError("db", 2.5)), pause_for(CircuitOpenError("db", None))
        (2.5, 5.0)
    """
    if exc.retry_after is None:
        return FORCED_OPEN_POLL
    return max(float(exc.retry_after), MIN_PAUSE)


def store_pause(exc: StoreUnavailable, outages: int) -> float:
    """How long to pause while the dedupe store is unreachable: doubling, bounded.

    Example:
        >>> from resilience._idempotency._backend import StoreUnavailable
        >>> [store_pause(StoreUnavailable("s", retry_after=1.0), n) for n in (1, 2, 3, 9)]
        [1.0, 2.0, 4.0, 30.0]
    """
    base = max(float(exc.retry_after), MIN_PAUSE)
    return min(base * 2.0 ** min(max(outages - 1, 0), 16), MAX_STORE_PAUSE)


def after_failure(
    exc: Exception, *, tried: int, consumer: Consumer, expired: bool = False
) -> AfterFailure:
    """What a failed handling means, given the tries made before this one.

    ``expired``: the message's own deadline has passed (trying again is pointless).

    Example:
        >>> from resilience.messaging import Consumer
        >>> c = Consumer("doc", redelivery=(1.0, 5.0), poison=(ValueError,))
        >>> after_failure(OSError(), tried=0, consumer=c)
        Redeliver(delay=1.0, attempts=1)
        >>> after_failure(OSError(), tried=2, consumer=c)
        DeadLetter(attempts=3, reason='exhausted')
        >>> after_failure(ValueError(), tried=0, consumer=c)
        DeadLetter(attempts=1, reason='poison')
    """
    if isinstance(exc, CircuitOpenError):
        return Requeue(pause_for(exc), "breaker")
    if isinstance(exc, BulkheadFull):
        return Defer(DEFER_STEP, "bulkhead")
    attempts = tried + 1
    if consumer.is_poison(exc):
        return DeadLetter(attempts, "poison")
    if expired:
        return DeadLetter(attempts, "expired")
    delays = consumer.redelivery
    if attempts <= len(delays):
        return Redeliver(delays[attempts - 1], attempts)
    return DeadLetter(attempts, "exhausted")
