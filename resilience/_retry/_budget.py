"""A retry budget: retries may add only a bounded share of load, across many call sites.

Finagle's ``RetryBudget`` is the model (20 % of calls plus 10 retries a second, over 10 s).
Counts live in a fixed ring of buckets, so memory stays the same however many calls pass.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Final

from .._public import public
from .._validate import (
    MAX_PER_SECOND,
    MAX_RATIO,
    MIN_WINDOW,
    Clock,
    Duration,
    number,
    required_duration,
)
from .._validate import clock as check_clock

__all__ = ["RetryBudget"]

DEFAULT_RATIO: Final = 0.2
DEFAULT_MIN_PER_SECOND: Final = 10.0
DEFAULT_TTL: Final = 10.0
BUCKETS: Final = 10
# Float sums such as 0.1 * 30 land a hair below the integer they stand for.
_EPSILON: Final = 1e-9


class RetryBudget:
    """Caps retries at ``ratio`` of calls plus ``min_per_second`` retries a second.

    A retry is allowed while the retries of the last ``ttl`` seconds, this one included,
    stay within ``ratio * calls + min_per_second * ttl``, where *calls* are the logical
    calls of those seconds (first attempts only). Beyond that, a `Retry` lets the error
    propagate at once with a note saying the budget is exhausted. Share one budget between
    many `Retry` objects and transports to bound the extra load a whole client can cause.

    Counts are kept in 10 buckets of ``ttl / 10`` seconds: a call or retry stops counting
    between ``0.9 * ttl`` and ``ttl`` seconds after it happened. Thread-safe.

    Example:
        >>> from resilience import Retry, RetryBudget
        >>> budget = RetryBudget(ratio=0.1, min_per_second=1.0)
        >>> reads = Retry(on=ConnectionError, budget=budget)
        >>> writes = Retry(on=ConnectionError, attempts=2, budget=budget)  # the same budget
        >>> budget.available()
        10
    """

    __slots__ = (
        "_begin",
        "_calls",
        "_clock",
        "_end",
        "_epoch",
        "_epochs",
        "_lock",
        "_min_per_second",
        "_ratio",
        "_reserve",
        "_retries",
        "_slot_index",
        "_ttl",
        "_width",
    )

    def __init__(
        self,
        ratio: float = DEFAULT_RATIO,
        min_per_second: float = DEFAULT_MIN_PER_SECOND,
        ttl: Duration = DEFAULT_TTL,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._ratio = number("ratio", ratio, minimum=0.0, maximum=MAX_RATIO)
        self._min_per_second = number(
            "min_per_second", min_per_second, minimum=0.0, maximum=MAX_PER_SECOND
        )
        self._ttl = required_duration("ttl", ttl, minimum=MIN_WINDOW)
        self._clock = check_clock("clock", clock)
        self._reserve = self._min_per_second * self._ttl
        self._width = self._ttl / BUCKETS
        self._lock = threading.Lock()
        self._calls = [0] * BUCKETS
        self._retries = [0] * BUCKETS
        # The absolute bucket number each slot holds; a stale slot is reset on first use.
        self._epochs = [-BUCKETS - 1] * BUCKETS
        # The current bucket, cached: most events land in it, and need no arithmetic.
        self._epoch = -BUCKETS - 1
        self._slot_index = 0
        self._begin = self._end = -math.inf

    @property
    def ratio(self) -> float:
        """Retries allowed per logical call, on top of the reserve."""
        return self._ratio

    @property
    def min_per_second(self) -> float:
        """Retries allowed per second whatever the traffic (the reserve)."""
        return self._min_per_second

    @property
    def ttl(self) -> float:
        """Seconds a call or retry keeps counting."""
        return self._ttl

    def _slot(self, now: float) -> tuple[int, int]:
        """Rotate to the bucket of *now*; return (absolute bucket number, slot). Hold the lock."""
        if self._begin <= now < self._end:
            return self._epoch, self._slot_index
        epoch = int(now // self._width)
        slot = epoch % BUCKETS
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._calls[slot] = 0
            self._retries[slot] = 0
        if epoch >= self._epoch:  # a clock that steps back must not rewind the cache
            self._epoch, self._slot_index = epoch, slot
            self._begin, self._end = epoch * self._width, (epoch + 1) * self._width
        return epoch, slot

    def _totals(self, epoch: int) -> tuple[int, int]:
        """Calls and retries in the buckets still inside the ttl. Hold the lock."""
        oldest = epoch - BUCKETS
        calls = retries = 0
        for index, seen in enumerate(self._epochs):
            if seen > oldest:
                calls += self._calls[index]
                retries += self._retries[index]
        return calls, retries

    def record_call(self) -> None:
        """Count one logical call (a first attempt; retries are not calls)."""
        now = self._clock()
        lock = self._lock
        # acquire/release rather than ``with``: this runs on every call, and the context
        # manager protocol costs more than the counting itself.
        lock.acquire()
        try:
            if self._begin <= now < self._end:
                self._calls[self._slot_index] += 1
            else:
                self._calls[self._slot(now)[1]] += 1
        finally:
            lock.release()

    def try_spend(self) -> bool:
        """Take one retry if the budget allows it; return whether it did."""
        now = self._clock()
        with self._lock:
            epoch, slot = self._slot(now)
            calls, retries = self._totals(epoch)
            if retries + 1 > self._ratio * calls + self._reserve + _EPSILON:
                return False
            self._retries[slot] += 1
            return True

    def available(self) -> int:
        """How many retries the budget would allow right now.

        Example:
            >>> from resilience import RetryBudget
            >>> RetryBudget(ratio=0.5, min_per_second=0.0).available()
            0
        """
        now = self._clock()
        with self._lock:
            epoch, _ = self._slot(now)
            calls, retries = self._totals(epoch)
        return max(0, math.floor(self._ratio * calls + self._reserve + _EPSILON) - retries)

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self._ratio!r}, min_per_second={self._min_per_second!r}, "
            f"ttl={self._ttl!r}, available={self.available()})"
        )


public("resilience", RetryBudget)
