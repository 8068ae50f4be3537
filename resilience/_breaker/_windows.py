"""Sliding windows of call outcomes: a count window and a bucketed time window.

Both are pure data structures: they take outcomes (and, for the time window, ``now``) and keep
running totals, so every record and every read is O(1) amortised with memory bounded by the
window's size, whatever the traffic. Neither is thread-safe: the breaker guards them with its
lock.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

__all__ = ["FAILURE", "SLOW", "SUCCESS", "CountWindow", "TimeWindow"]

# Outcome codes: a bit set, so a call can be both failed and slow.
SUCCESS: Final = 0
FAILURE: Final = 1
SLOW: Final = 2

_MAX_BUCKETS: Final = 100
_MIN_BUCKETS: Final = 10


class CountWindow:
    """The last *size* outcomes, in a ring (a bounded deque of outcome codes).

    Recording is one ``deque.append``, which is atomic, so the breaker records successes
    without taking its lock. Counting failures walks the ring in C (a few ns per slot), and
    only happens when a failure or slow call is recorded, or metrics are read.

    The ring may *keep* more outcomes than the window counts, so that a run of failures
    longer than the window (``consecutive_failures`` above ``window``) is still seen; the
    counts cover the newest *size* outcomes only.

    Example:
        >>> w = CountWindow(3)
        >>> for outcome in (FAILURE, SUCCESS, SUCCESS, SUCCESS):
        ...     w.record(outcome)
        >>> w.counts()
        (3, 0, 0)
    """

    __slots__ = ("ring", "size")

    def __init__(self, size: int, keep: int = 0) -> None:
        self.size = size
        self.ring: deque[int] = deque(maxlen=max(size, keep))

    def record(self, outcome: int, now: float = 0.0) -> None:
        """Add one outcome, evicting the oldest once the window is full."""
        self.ring.append(outcome)

    def counts(self, now: float = 0.0) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the window."""
        ring = self.ring
        if len(ring) > self.size:
            # A copy (atomic) then a slice: successes are appended without the lock.
            recent = list(ring.copy())[-self.size :]
            both = recent.count(FAILURE | SLOW)
            return self.size, recent.count(FAILURE) + both, recent.count(SLOW) + both
        both = ring.count(FAILURE | SLOW)
        return len(ring), ring.count(FAILURE) + both, ring.count(SLOW) + both

    def trailing_failures(self) -> int:
        """How many of the newest outcomes in a row are failures."""
        run = 0
        # Iterate a copy: successes are appended without the breaker's lock.
        for outcome in reversed(self.ring.copy()):
            if not outcome & FAILURE:
                break
            run += 1
        return run

    def clear(self) -> None:
        """Forget every outcome (in place: the breaker keeps a reference to the ring)."""
        self.ring.clear()


class TimeWindow:
    """Outcomes of the last *seconds*, in a ring of fixed-width buckets.

    The window is split into 10 to 100 buckets (one per second for windows of 10 to 100
    seconds); a bucket that falls out of the window is subtracted from the running totals.

    Example:
        >>> w = TimeWindow(10.0)
        >>> w.record(FAILURE, now=100.0)
        >>> w.record(SUCCESS, now=105.0)
        >>> w.counts(now=105.0)
        (2, 1, 0)
        >>> w.counts(now=111.0)
        (1, 0, 0)
    """

    __slots__ = (
        "_bucket_calls",
        "_bucket_failures",
        "_bucket_slow",
        "_current",
        "_current_end",
        "_current_slot",
        "_width",
        "buckets",
        "calls",
        "failures",
        "seconds",
        "slow_calls",
    )

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.buckets = min(_MAX_BUCKETS, max(_MIN_BUCKETS, math.ceil(seconds)))
        self._width = seconds / self.buckets
        self._bucket_calls = [0] * self.buckets
        self._bucket_failures = [0] * self.buckets
        self._bucket_slow = [0] * self.buckets
        self._current: int | None = None  # absolute index of the newest bucket
        self._current_slot = 0
        # End of the newest bucket: a record before it lands in that bucket, no expiry needed.
        self._current_end = -math.inf
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0

    def expire(self, now: float) -> None:
        """Drop the buckets that have fallen out of the window at *now*."""
        absolute = int(now // self._width)
        current = self._current
        if current is None:
            self._current = absolute
            self._current_slot = absolute % self.buckets
            self._current_end = (absolute + 1) * self._width
            return
        if absolute <= current:
            return
        # Clear every bucket between the newest one and now (at most the whole ring).
        steps = min(absolute - current, self.buckets)
        for step in range(1, steps + 1):
            slot = (current + step) % self.buckets
            if self._bucket_calls[slot]:
                self.calls -= self._bucket_calls[slot]
                self.failures -= self._bucket_failures[slot]
                self.slow_calls -= self._bucket_slow[slot]
                self._bucket_calls[slot] = 0
                self._bucket_failures[slot] = 0
                self._bucket_slow[slot] = 0
        self._current = absolute
        self._current_slot = absolute % self.buckets
        self._current_end = (absolute + 1) * self._width

    def counts(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the window at *now*."""
        self.expire(now)
        return self.calls, self.failures, self.slow_calls

    def record(self, outcome: int, now: float = 0.0) -> None:
        """Add one outcome at time *now*."""
        if now >= self._current_end:
            self.expire(now)
        slot = self._current_slot
        self._bucket_calls[slot] += 1
        self.calls += 1
        if outcome:
            if outcome & FAILURE:
                self._bucket_failures[slot] += 1
                self.failures += 1
            if outcome & SLOW:
                self._bucket_slow[slot] += 1
                self.slow_calls += 1

    def clear(self) -> None:
        """Forget every outcome."""
        self._bucket_calls = [0] * self.buckets
        self._bucket_failures = [0] * self.buckets
        self._bucket_slow = [0] * self.buckets
        self._current = None
        self._current_end = -math.inf
        self.calls = self.failures = self.slow_calls = 0
