"""The breaker's state controller: permits, outcomes, transitions and verdicts, under one lock.

CLOSED counts outcomes in a sliding window and opens when the failure (or slow-call) rate
reaches its threshold, or after N failures in a row. OPEN rejects at once until
``open_duration`` has passed; the next look at the breaker moves it to HALF_OPEN, which lets
``half_open_calls`` probes through and judges them as a round: open again, or close with an
empty window. FORCED_OPEN and DISABLED are manual states left only through a reset.

Concurrency model (resilience4j's and Polly's): a permit is taken under the lock, the user's
call runs outside it, and the outcome is recorded under the lock. A permit carries the
machine's *generation*, bumped on every transition, so an outcome that arrives after the state
moved on (a slow call started before a trip or a reset) is dropped instead of polluting the new
state. Methods named ``*_locked`` run with the lock held; events are emitted after it is
released.

The machine is also the breaker's port for a shared store (`resilience.stores.BreakerPort`):
a store adopts the fleet's state and counts through `snapshot`, `adopt_counts`,
`adopt_state` and `judge_locally`, and is told about this process's moves through the binding
it returned from ``bind``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING, Final

from .._errors import CircuitOpenError
from .._observe._events import CallRejected, CircuitStateChanged, Event, Listener, emit, wanted
from .._validate import Clock
from ._config import BreakerConfig
from ._state import (
    CLOSED,
    DISABLED,
    FIRST_PROBE_PERMIT,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    BreakerMetrics,
    CircuitState,
    ProbeRound,
)
from ._windows import FAILURE, SLOW, SUCCESS, CountWindow, TimeWindow

if TYPE_CHECKING:
    from .._stores._protocol import BreakerBinding, BreakerStore

__all__ = [
    "DISABLED_PERMIT",
    "FAST_IDLE",
    "FAST_NONE",
    "FAST_TICK",
    "FIRST_PROBE_PERMIT",
    "NO_COUNTS",
    "REJECTED_LEVEL",
    "BreakerMachine",
]

DISABLED_PERMIT: Final = -1  # never equal to a generation: its outcome is never recorded
# Probe permits (see FIRST_PROBE_PERMIT): one counter for the process, atomic.
_probe_permits: Final = itertools.count(-FIRST_PROBE_PERMIT)
# A window's totals as a store sees them: (calls, failures, slow calls, failure run).
NO_COUNTS: Final = (0, 0, 0, 0)

# How a success that holds the current generation is recorded (`BreakerMachine.fast`):
FAST_NONE: Final = 0  # under the lock (`record_success`): it may trip, or a time window
FAST_TICK: Final = 1  # lock-free, ``next(window.ticks)``: it cannot trip a count window
FAST_IDLE: Final = 2  # not at all: the count window is full of successes already

REJECTED_LEVEL: Final = CallRejected.level
"""The level of `CallRejected`: the drivers ask `wanted` for it before building the event."""

_log = logging.getLogger("resilience")


class BreakerMachine:
    """The state, the window and the lock of one breaker (see the module docstring).

    The hot paths (`CircuitBreaker`'s drivers) read ``gen``, ``state``, ``fast`` and
    ``open_until`` without the lock: each is one attribute, replaced atomically, and a stale
    read only sends one call down the slow path, or counts (or skips) one success the window
    would not have noticed anyway.
    """

    __slots__ = (
        "__weakref__",
        "_round",
        "binding",
        "clock",
        "config",
        "fast",
        "gen",
        "listeners",
        "lock",
        "name",
        "open_for",
        "open_until",
        "openings",
        "remote",
        "state",
        "window",
    )

    def __init__(self, name: str, config: BreakerConfig, clock: Clock) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self.lock = threading.Lock()
        self.listeners: tuple[Listener, ...] = ()
        self.window: CountWindow | TimeWindow = (
            CountWindow(config.window)
            if config.window_seconds is None
            else TimeWindow(config.window_seconds, self.lock)
        )
        self.state = CLOSED
        self.gen = 0
        self.open_until = 0.0
        # Openings in a row (a strategy's step), 0 once closed; this opening's duration, also
        # how long a probe may hold its slot.
        self.openings = 0
        self.open_for = config.open_duration
        # How a success is recorded (FAST_*): lock-free while CLOSED with a count window,
        # and either enough calls for a decision or nothing bad in the window (a success
        # cannot trip the breaker then).
        self.fast = FAST_TICK if self.window.ticks is not None else FAST_NONE
        # The HALF_OPEN round, or the failed one while OPEN after it; None otherwise.
        self._round: ProbeRound | None = None
        # Other processes' window totals, from a shared store (see `adopt_counts`).
        self.remote = NO_COUNTS
        self.binding: BreakerBinding | None = None

    def bind(self, store: BreakerStore | None) -> None:
        """Link to *store* (None or an in-memory store: no binding, no extra work)."""
        self.binding = None if store is None else store.bind(self)

    # ---------------------------------------------------------------- state

    def current_state(self) -> CircuitState:
        """The state; OPEN becomes HALF_OPEN here once ``open_duration`` has passed."""
        if self.state is OPEN:
            event = None
            with self.lock:
                # Another thread may have moved it on since the unlocked read above.
                still_open: bool = self.state is OPEN
                if still_open and self.clock() >= self.open_until:
                    event = self._transition_locked(HALF_OPEN, "open_duration elapsed")
            if event is not None:
                self.emit(event)
        return self.state

    def emit(self, event: Event) -> None:
        """Deliver *event* to the breaker's listeners and the process-wide ones (no lock held)."""
        emit(event, self.listeners)

    def reject(self, retry_after: float | None) -> CircuitOpenError:
        """The error of a rejected call (for the caller to raise); `CallRejected` if wanted."""
        if wanted(REJECTED_LEVEL, self.listeners):
            self.note_rejection(retry_after)
        return CircuitOpenError(self.name, retry_after)

    def note_rejection(self, retry_after: float | None) -> None:
        """Emit `CallRejected` (the caller checked that someone wants it)."""
        self.emit(CallRejected(breaker=self.name, state=self.state.value, retry_after=retry_after))

    # ---------------------------------------------------------------- permits

    def acquire(self) -> int:
        """A permit to call (the generation, a probe's own, or the disabled one), or raise
        `CircuitOpenError`."""
        if self.state is CLOSED:
            return self.gen
        return self.acquire_slow()

    def acquire_slow(self) -> int:
        """`acquire` outside CLOSED: fail fast while OPEN, take a probe slot in HALF_OPEN."""
        if self.state is OPEN:
            # Fail fast without the lock: only time (under the lock, below) or a manual
            # command moves OPEN on, and a stale read just rejects one more call.
            left = self.open_until - self.clock()
            if left > 0.0:
                raise self.reject(left)
        event: Event | None = None
        rejected = False
        retry_after: float | None = 0.0  # of a rejection; None while forced open
        reclaimed = 0
        permit = DISABLED_PERMIT
        with self.lock:
            state = self.state
            if state is CLOSED:
                return self.gen
            if state is DISABLED:
                return DISABLED_PERMIT
            if state is OPEN:
                now = self.clock()
                if now < self.open_until:
                    rejected, retry_after = True, self.open_until - now
                else:
                    event = self._transition_locked(HALF_OPEN, "open_duration elapsed")
                    state = HALF_OPEN
            if state is HALF_OPEN:
                now = self.clock()
                reclaimed = self._reclaim_hung_probes_locked(now)
                probes = self._probes_locked()
                if len(probes.in_flight) + probes.done < self.config.half_open_calls:
                    permit = -next(_probe_permits)
                    probes.in_flight[permit] = now
                else:
                    # Every probe slot is taken; one frees when a probe finishes, or when the
                    # oldest has been held for open_duration.
                    rejected, retry_after = True, self._probe_wait_locked(now)
            elif state is FORCED_OPEN:
                rejected, retry_after = True, None
        if event is not None:
            self.emit(event)
        # Outside the lock: the fleet-wide probe slot may cost a Redis round trip.
        binding = self.binding
        if binding is not None:
            for _ in range(reclaimed):
                binding.probe_released()
            if not rejected and state is HALF_OPEN and not binding.take_probe():
                self._give_back_probe(permit)
                if self.state is CLOSED:
                    return self.gen  # the fleet closed meanwhile
                rejected, retry_after = True, 0.0
        if rejected:
            raise self.reject(retry_after)
        return permit

    def _probes_locked(self) -> ProbeRound:
        probes = self._round
        if probes is None:
            probes = self._round = ProbeRound()
        return probes

    def _reclaim_hung_probes_locked(self, now: float) -> int:
        """Free the slots of probes held for ``open_duration`` or longer.

        A probe that hangs (or a permit never given back) would otherwise keep the breaker
        HALF_OPEN, rejecting everything, for ever. Its late outcome is dropped (its permit is
        no longer listed) and the round's verdict waits for the probe that takes its slot.
        Returns how many slots were freed.
        """
        probes = self._round
        if probes is None:
            return 0
        in_flight = probes.in_flight
        freed = 0
        while in_flight:
            permit, started = next(iter(in_flight.items()))
            if now - started < self.open_for:
                break
            del in_flight[permit]
            freed += 1
        return freed

    def _probe_wait_locked(self, now: float) -> float:
        """Seconds until a HALF_OPEN probe slot frees, at the latest.

        0.0 while a slot is free, or when every slot has finished and only the (fleet's)
        verdict is awaited.
        """
        probes = self._round
        if probes is None or not probes.in_flight:
            return 0.0
        if len(probes.in_flight) + probes.done < self.config.half_open_calls:
            return 0.0
        oldest = next(iter(probes.in_flight.values()))
        return max(0.0, oldest + self.open_for - now)

    # ---------------------------------------------------------------- outcomes

    def record_success(self, permit: int, duration: float = 0.0) -> None:
        """Record that the call holding *permit* succeeded (slow if *duration* is long)."""
        if duration >= self.config.slow_threshold:
            if permit == self.gen or permit <= FIRST_PROBE_PERMIT:
                self.record(permit, SLOW)
            return
        if permit == self.gen:
            fast = self.fast
            if fast == FAST_IDLE:
                return
            if fast == FAST_TICK:
                window = self.window
                assert isinstance(window, CountWindow)  # only a count window ticks
                if next(window.ticks) == window.settle_at:
                    self.settle()
                return
            window = self.window
            if (
                isinstance(window, TimeWindow)
                and self.state is CLOSED
                and window.record_fast_success(self.clock())
            ):
                return  # one increment (a stale state or generation: a success in a new window)
        self.record_plain_success(permit)

    def record_plain_success(self, permit: int) -> None:
        """Record a success that is not slow under the lock (the drivers' path when a count
        window cannot take it lock-free)."""
        if permit == self.gen or permit <= FIRST_PROBE_PERMIT:
            self.record(permit, SUCCESS)
        # else: disabled, or the state moved on while the call ran

    def settle(self) -> None:
        """The count window may be full of successes now: fold them, and stop counting
        successes if it is (called by whoever drew the tick `CountWindow.settle_at`)."""
        window = self.window
        if not isinstance(window, CountWindow):
            return
        with self.lock:
            if self.state is CLOSED and self.fast == FAST_TICK:
                window.counts()  # folds the ticks
                if window.settled:
                    self.fast = FAST_IDLE

    def record_failure(self, permit: int, duration: float = 0.0) -> None:
        """Record that the call holding *permit* failed."""
        if permit != self.gen and permit > FIRST_PROBE_PERMIT:
            return
        self.record(permit, FAILURE | SLOW if duration >= self.config.slow_threshold else FAILURE)

    def release(self, permit: int) -> None:
        """Give back *permit* without recording anything (cancelled or ignored calls)."""
        if permit > FIRST_PROBE_PERMIT:
            return  # only a probe holds something to give back
        if self._give_back_probe(permit) and self.binding is not None:
            self.binding.probe_released()

    def _give_back_probe(self, permit: int) -> bool:
        with self.lock:
            probes = self._round
            return (
                self.state is HALF_OPEN
                and probes is not None
                and probes.in_flight.pop(permit, None) is not None
            )

    def classify(self, exc: BaseException) -> bool | None:
        """True if *exc* counts as a failure, False as a success, None as neither."""
        if not isinstance(exc, Exception):
            return None
        ignore = self.config.ignore
        if ignore and isinstance(exc, ignore):
            return None
        try:
            return bool(self.config.is_failure(exc))
        except Exception:
            _log.exception("failure_on predicate of breaker %r raised", self.name)
            return True

    def record_exception(self, permit: int, exc: BaseException, duration: float = 0.0) -> None:
        """Record the call holding *permit* as its exception *exc* says (see `classify`)."""
        verdict = self.classify(exc)
        if verdict is None:
            self.release(permit)
        elif verdict:
            self.record_failure(permit, duration)
        else:
            self.record_success(permit, duration)

    def record(self, permit: int, outcome: int) -> None:
        """Record *outcome* for *permit* under the lock; trip or judge the round if due."""
        event: Event | None = None
        judged_by: BreakerBinding | None = None
        with self.lock:
            state = self.state
            if state is CLOSED:
                if permit != self.gen:
                    return
                window = self.window
                if isinstance(window, CountWindow):
                    window.record(outcome)
                    event = self._check_closed_locked(0.0)
                else:
                    now = self.clock()
                    window.record(outcome, now)
                    # With no failure or slow call in a time window, nothing can trip it.
                    if outcome or window.failures or window.slow_calls:
                        event = self._check_closed_locked(now)
            elif state is HALF_OPEN:
                probes = self._round
                if probes is None or probes.in_flight.pop(permit, None) is None:
                    return  # a late outcome: its slot was reclaimed, or from another round
                probes.done += 1
                if outcome & FAILURE:
                    probes.failures += 1
                    probes.run += 1
                else:
                    probes.run = 0
                if outcome & SLOW:
                    probes.slow += 1
                binding = self.binding
                # A shared store judges the whole fleet's probes; its verdict comes back.
                if binding is None or not binding.probe_done(outcome):
                    event = self._check_half_open_locked()
                else:
                    judged_by = binding
        if event is not None:
            self.emit(event)
        if judged_by is not None:
            judged_by.settle()  # outside the lock: a deciding probe applies its verdict now

    # ---------------------------------------------------------------- verdicts

    def _check_closed_locked(self, now: float) -> Event | None:
        config = self.config
        remote = self.remote
        limit = config.consecutive_failures
        if limit is not None:
            run = self.window.run + remote[3]
            if run >= limit:
                return self._to_open_locked(f"{run} consecutive failures")
        calls, failures, slow_calls = self.window.counts(now)
        if remote is not NO_COUNTS:
            calls += remote[0]
            failures += remote[1]
            slow_calls += remote[2]
        window = self.window
        if calls < config.decisive_calls:
            # Until minimum_calls is reached, the success that reaches it may trip.
            lock_free = window.ticks is not None and not (failures or slow_calls)
            self.fast = FAST_TICK if lock_free else FAST_NONE
            return None
        if config.rate_trips and failures / calls >= config.failure_rate:
            return self._to_open_locked("failure rate reached the threshold")
        if slow_calls and slow_calls / calls >= config.slow_call_rate:
            return self._to_open_locked("slow-call rate reached the threshold")
        if isinstance(window, CountWindow):
            self.fast = FAST_IDLE if window.settled else FAST_TICK
        return None

    def _check_half_open_locked(self) -> Event | None:
        config = self.config
        planned = config.half_open_calls
        probes = self._round
        if probes is None or probes.done < planned:
            return None  # the verdict comes once every probe has finished (API.md)
        # Probes are judged by the rate whenever the rate trips the breaker (both triggers):
        # one unlucky probe of several must not reopen a host that mostly works.
        if not config.rate_trips:
            if probes.failures:
                return self._to_open_locked("a probe failed")
        elif probes.failures / planned >= config.failure_rate:
            return self._to_open_locked("probe failure rate reached the threshold")
        if probes.slow / planned >= config.slow_call_rate:
            return self._to_open_locked("probe slow-call rate reached the threshold")
        return self._transition_locked(CLOSED, "the probes succeeded")

    def _to_open_locked(self, reason: str) -> CircuitStateChanged:
        self.openings += 1
        seconds, self.open_for = self.config.open_time(self.openings, self.name)
        self.open_until = self.clock() + seconds
        return self._transition_locked(OPEN, reason)

    def _transition_locked(
        self, new: CircuitState, reason: str, *, remote: bool = False, manual: bool = False
    ) -> CircuitStateChanged:
        """Move to *new*; returns the event to emit once the lock is released.

        A local transition (not *remote*, i.e. not adopted from the store) goes to the store.
        """
        calls, failures, slow = self._numbers_locked(self.clock())
        old = self.state
        probes = self._round
        # A failed round's numbers stay on show while OPEN; any other move forgets them.
        if probes is not None and old is HALF_OPEN and new is OPEN:
            probes.in_flight.clear()  # their outcomes are late now: dropped
        else:
            self._round = None
        self.state = new
        self.fast = FAST_TICK if new is CLOSED and self.window.ticks is not None else FAST_NONE
        self.gen += 1
        if new is CLOSED:
            self.openings = 0  # a strategy's open_duration starts again from its first step
        if new is CLOSED or new is HALF_OPEN:
            self.window.clear()
            self.remote = NO_COUNTS
        if self.binding is not None and not remote:
            self.binding.transition(new, manual)
        return CircuitStateChanged(
            breaker=self.name,
            old_state=old.value,
            new_state=new.value,
            reason=reason,
            calls=calls,
            failures=failures,
            slow_calls=slow,
            failure_rate=failures / calls if calls else 0.0,
            slow_call_rate=slow / calls if calls else 0.0,
        )

    def _numbers_locked(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) on show: the round's, else the window's (+ fleet's)."""
        probes = self._round
        if probes is not None and self.state is not CLOSED:
            return probes.numbers()
        calls, failures, slow = self.window.counts(now)
        remote = self.remote
        if remote is not NO_COUNTS and self.state is CLOSED:
            return calls + remote[0], failures + remote[1], slow + remote[2]
        return calls, failures, slow

    def _run_locked(self) -> int:
        """The run of trailing failures on show (the round's while HALF_OPEN or reopened)."""
        probes = self._round
        if probes is not None and self.state is not CLOSED:
            return probes.run
        return self.window.run

    def _retry_after_locked(self, now: float) -> float | None:
        state = self.state
        if state is OPEN:
            return max(0.0, self.open_until - now)
        if state is FORCED_OPEN:
            return None
        if state is HALF_OPEN:
            return self._probe_wait_locked(now)
        return 0.0

    # ---------------------------------------------------------------- control and reading

    def manual(self, new: CircuitState, reason: str) -> None:
        """An operator's move (force_open, disable, reset): always taken, and shared."""
        with self.lock:
            event = self._transition_locked(new, reason, manual=True)
        self.emit(event)

    def metrics(self) -> BreakerMetrics:
        """A consistent snapshot of the state and the window."""
        self.current_state()  # moves OPEN -> HALF_OPEN when due
        with self.lock:
            now = self.clock()
            calls, failures, slow = self._numbers_locked(now)
            probes = self._round
            return BreakerMetrics(
                name=self.name,
                state=self.state,
                calls=calls,
                failures=failures,
                slow_calls=slow,
                failure_rate=failures / calls if calls else 0.0,
                slow_call_rate=slow / calls if calls else 0.0,
                consecutive_failures=self._run_locked(),
                half_open_in_flight=0
                if probes is None or self.state is not HALF_OPEN
                else len(probes.in_flight),
                retry_after=self._retry_after_locked(now),
            )

    # ---------------------------------------------------------------- the store port
    # Called by a shared store's threads (see resilience/_stores/), never per call.

    def snapshot(self) -> tuple[int, int, int, int]:
        """This process's own window: (calls, failures, slow calls, failure run)."""
        with self.lock:
            if self.state is not CLOSED:
                return NO_COUNTS
            calls, failures, slow = self.window.counts(self.clock())
            return calls, failures, slow, self.window.run

    def adopt_counts(self, remote: tuple[int, int, int, int]) -> None:
        """Take the other processes' totals; trip if the fleet's window says so."""
        event = None
        with self.lock:
            self.remote = NO_COUNTS if remote == NO_COUNTS else remote
            if self.state is CLOSED and (remote[1] or remote[2] or remote[3]):
                event = self._check_closed_locked(self.clock())
        if event is not None:
            self.emit(event)

    def adopt_state(self, new: CircuitState, remaining: float, reason: str) -> None:
        """Adopt the fleet's newer state (OPEN for *remaining* seconds) without sharing it."""
        event = None
        with self.lock:
            if new is OPEN:
                self.open_until = self.clock() + max(0.0, remaining)
                if self.state is not OPEN:
                    event = self._transition_locked(OPEN, reason, remote=True)
            else:
                # CLOSED -> CLOSED too: the fleet moved on, so this window is stale.
                event = self._transition_locked(new, reason, remote=True)
        if event is not None and event.old_state != event.new_state:
            self.emit(event)

    def judge_locally(self) -> None:
        """The store stopped judging probes (Redis lost): judge the finished ones here."""
        event = None
        with self.lock:
            probes = self._round
            if self.state is HALF_OPEN and probes is not None and probes.done:
                event = self._check_half_open_locked()
        if event is not None:
            self.emit(event)
