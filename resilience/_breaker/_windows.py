"""Sliding windows of call outcomes: a count window and a bucketed time window.

Both keep running totals and the run of trailing failures, so every record and every read is
O(1) (amortised) with memory bounded by the window's size, whatever the traffic. Each owns its
fast path for a success, the one outcome a healthy dependency produces:

- `CountWindow`: a success is one ``next(window.ticks)``, atomic and lock-free, folded into
  the window the next time it is read or an outcome is recorded under the breaker's lock;
  once the window is full of successes, a success costs nothing at all.
- `TimeWindow`: `TimeWindow.record_fast_success` is one increment under the breaker's lock
  (lent to the window for that path alone): buckets move with time, so no count is atomic.

Otherwise neither takes a lock: the breaker's state machine guards them with its own.
"""

from __future__ import annotations

import itertools
import math
import threading
from typing import Final

__all__ = ["FAILURE", "SLOW", "SUCCESS", "CountWindow", "TimeWindow"]

# Outcome codes: a bit set, so a call can be both failed and slow.
SUCCESS: Final = 0
FAILURE: Final = 1
SLOW: Final = 2

_MAX_BUCKETS: Final = 100
_MIN_BUCKETS: Final = 10


class CountWindow:
    """The last *size* outcomes, bit-packed: bit *i* of ``failed`` (``slow``) is the outcome
    *i* calls ago.

    Memory is two ints of *size* bits (zero, and so shared, while every outcome in the
    window is a success) and a counter: a few hundred bytes whatever the size. Recording
    shifts the bits by one; counting is ``int.bit_count``, in C.

    **The fast path.** A success recorded without the lock is ``next(window.ticks)``: an
    `itertools.count` step is atomic. Those successes are folded in, in order, before any
    other record or read (under the breaker's lock). Once the window is `settled` (full of
    successes), a success changes nothing at all, so the breaker stops counting them; the
    tick numbered `settle_at` is the one after which the window would be settled, so the
    caller that draws it asks the breaker to fold (and stop counting).

    Example:
        >>> w = CountWindow(3)
        >>> for outcome in (FAILURE, SUCCESS, FAILURE | SLOW):
        ...     w.record(outcome)
        >>> w.counts(), w.run
        ((3, 2, 1), 1)
        >>> _ = next(w.ticks); _ = next(w.ticks)  # two lock-free successes
        >>> w.counts(), w.run
        ((3, 1, 1), 0)
        >>> w.settled, next(w.ticks) == w.settle_at
        (False, True)
        >>> w.counts(), w.settled
        ((3, 0, 0), True)
    """

    __slots__ = (
        "_failed",
        "_folded",
        "_mask",
        "_run",
        "_slow",
        "calls",
        "settle_at",
        "size",
        "ticks",
    )

    def __init__(self, size: int) -> None:
        self.size = size
        self._mask = _mask(size)
        self.calls = 0
        self._failed = 0
        self._slow = 0
        self._run = 0
        #: One step per success recorded without the lock (see the class docstring).
        self.ticks = itertools.count()
        self._folded = 0  # the ticks taken so far, folds included
        #: The tick that completes the window, if every tick until then is a success.
        self.settle_at = size - 1

    @property
    def settled(self) -> bool:
        """True when the window is full of successes: one more success changes nothing."""
        return self.calls == self.size and not (self._failed or self._slow)

    def _fold(self) -> None:
        """Add the successes counted by ``ticks`` since the last fold."""
        taken = next(self.ticks)  # this step is the fold's own, not a success
        successes = taken - self._folded
        self._folded = taken + 1
        if successes:
            self._run = 0
            self.calls = min(self.size, self.calls + successes)
            if self._failed or self._slow:
                if successes >= self.size:
                    self._failed = self._slow = 0
                else:
                    self._failed = (self._failed << successes) & self._mask
                    self._slow = (self._slow << successes) & self._mask

    def _plan(self) -> None:
        """Set `settle_at`: the successes it takes to push every failure or slow call out
        and fill the window (bit *i* leaves after ``size - i`` successes)."""
        bad = self._failed | self._slow
        needed = self.size - bad.bit_length() + 1 if bad else self.size - self.calls
        self.settle_at = self._folded + needed - 1

    def record(self, outcome: int, now: float = 0.0) -> None:
        """Add one outcome, evicting the oldest once the window is full."""
        self._fold()
        self.calls = min(self.size, self.calls + 1)
        if outcome or self._failed or self._slow:
            self._failed = ((self._failed << 1) | (outcome & FAILURE)) & self._mask
            self._slow = ((self._slow << 1) | (outcome >> 1)) & self._mask
        self._run = self._run + 1 if outcome & FAILURE else 0
        self._plan()

    def counts(self, now: float = 0.0) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the window."""
        self._fold()
        self._plan()
        return self.calls, self._failed.bit_count(), self._slow.bit_count()

    @property
    def run(self) -> int:
        """How many of the newest outcomes in a row are failures (may exceed the window)."""
        self._fold()
        self._plan()
        return self._run

    def clear(self) -> None:
        """Forget every outcome, successes counted but not yet folded included."""
        self._folded = next(self.ticks) + 1
        self.calls = self._failed = self._slow = self._run = 0
        self._plan()


_masks: dict[int, int] = {}


def _mask(size: int) -> int:
    """``2**size - 1``, one object per size: windows of one size share it."""
    mask = _masks.get(size)
    if mask is None:
        mask = _masks.setdefault(size, (1 << size) - 1)
    return mask


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
        "_lock",
        "_width",
        "buckets",
        "calls",
        "failures",
        "run",
        "seconds",
        "slow_calls",
    )

    #: No lock-free fast path: buckets move with time (see `record_fast_success`).
    ticks: Final = None

    def __init__(self, seconds: float, lock: threading.Lock | None = None) -> None:
        self.seconds = seconds
        self._lock = threading.Lock() if lock is None else lock  # for the fast path only
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
        #: How many of the newest outcomes in a row are failures (never expires with time).
        self.run = 0

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
                self.run += 1
            else:
                self.run = 0
            if outcome & SLOW:
                self._bucket_slow[slot] += 1
                self.slow_calls += 1
        else:
            self.run = 0

    def record_fast_success(self, now: float) -> bool:
        """Count a success as one increment if nothing else can change; False otherwise.

        The common case: *now* falls in the newest bucket and the window holds no failure
        or slow call (so no expiry can make it decisive). Anything else needs `record`, under
        the breaker's lock, and a look at the rates. Takes the lock given at construction
        (the breaker's), so the breaker's drivers call it without a frame of their own.
        """
        with self._lock:
            if now >= self._current_end or self.failures or self.slow_calls:
                return False
            self._bucket_calls[self._current_slot] += 1
            self.calls += 1
            self.run = 0
            return True

    def clear(self) -> None:
        """Forget every outcome."""
        self._bucket_calls = [0] * self.buckets
        self._bucket_failures = [0] * self.buckets
        self._bucket_slow = [0] * self.buckets
        self._current = None
        self._current_end = -math.inf
        self.calls = self.failures = self.slow_calls = self.run = 0
