"""A hypothesis state machine checks the breaker against a plain reference model."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from resilience import CircuitBreaker, CircuitOpenError, CircuitState
from resilience.testing import FakeClock

OPEN_DURATION = 30.0

# A model permit: ("closed", generation), ("probe", probe id) or ("disabled", 0).
Permit = tuple[str, int]


class Model:
    """The spec in the simplest words: a list of outcomes, the probes in flight and a state."""

    def __init__(
        self,
        *,
        window: int,
        minimum: int,
        rate: float | None,
        consecutive: int | None,
        probes: int,
    ) -> None:
        self.window, self.minimum = window, min(minimum, window)
        # The rate trips unless consecutive_failures is given without failure_rate.
        self.rate_trips = rate is not None or consecutive is None
        self.rate = 0.5 if rate is None else rate
        self.consecutive, self.probes = consecutive, probes
        self.outcomes: list[bool] = []
        self.probe_outcomes: list[bool] = []
        self.in_flight: dict[int, float] = {}  # probe id -> when its slot was taken
        self.next_probe = 0
        self.generation = 0  # bumped by every transition: older permits count for nothing
        self._state = CircuitState.CLOSED
        self.open_until = 0.0
        self.now = 0.0
        self.retry_after: float | None = None  # of the last rejection

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self.now >= self.open_until:
            self.go(CircuitState.HALF_OPEN)
        return self._state

    def go(self, state: CircuitState) -> None:
        self._state = state
        self.generation += 1
        self.probe_outcomes = []
        self.in_flight = {}
        if state is CircuitState.OPEN:
            self.open_until = self.now + OPEN_DURATION
        if state is CircuitState.CLOSED:
            self.outcomes = []

    def acquire(self) -> Permit | None:
        """A permit, or None for a rejection (its retry_after in ``self.retry_after``)."""
        state = self.state
        if state is CircuitState.OPEN:
            self.retry_after = self.open_until - self.now
            return None
        if state is CircuitState.FORCED_OPEN:
            self.retry_after = None
            return None
        if state is CircuitState.DISABLED:
            return "disabled", 0
        if state is CircuitState.CLOSED:
            return "closed", self.generation
        # HALF_OPEN: a slot held for open_duration is given back (its outcome will not count).
        self.in_flight = {
            probe: taken
            for probe, taken in self.in_flight.items()
            if self.now - taken < OPEN_DURATION
        }
        if len(self.in_flight) + len(self.probe_outcomes) < self.probes:
            self.next_probe += 1
            self.in_flight[self.next_probe] = self.now
            return "probe", self.next_probe
        self.retry_after = min(self.in_flight.values()) + OPEN_DURATION - self.now
        return None

    def finish(self, permit: Permit, failed: bool) -> None:
        kind, key = permit
        if kind == "closed" and key == self.generation:
            self.record(failed)
        elif kind == "probe" and key in self.in_flight:
            del self.in_flight[key]
            self.judge(failed)

    def judge(self, failed: bool) -> None:
        self.probe_outcomes.append(failed)
        if len(self.probe_outcomes) < self.probes:
            return  # the verdict comes when every probe has finished
        fails = sum(self.probe_outcomes)
        # Probes are judged by the rate whenever the rate trips; by "any failed" otherwise.
        if (not self.rate_trips and fails) or (
            self.rate_trips and fails / self.probes >= self.rate
        ):
            self.go(CircuitState.OPEN)
        else:
            self.go(CircuitState.CLOSED)

    def record(self, failed: bool) -> None:
        self.outcomes.append(failed)
        if self.consecutive is not None:
            run = 0
            for outcome in reversed(self.outcomes):
                if not outcome:
                    break
                run += 1
            if run >= self.consecutive:
                self.go(CircuitState.OPEN)
                return
        if not self.rate_trips:
            return
        recent = self.outcomes[-self.window :]
        if len(recent) >= self.minimum and sum(recent) / len(recent) >= self.rate:
            self.go(CircuitState.OPEN)


class BreakerMachine(RuleBasedStateMachine):
    @initialize(
        window=st.integers(1, 8),
        minimum=st.integers(1, 5),
        rate=st.sampled_from([None, 0.25, 0.5, 1.0]),
        consecutive=st.none() | st.integers(1, 4),
        probes=st.integers(1, 3),
        half_open=st.booleans(),
    )
    def build(
        self,
        window: int,
        minimum: int,
        rate: float | None,
        consecutive: int | None,
        probes: int,
        half_open: bool,
    ) -> None:
        self.clock = FakeClock(0.0)
        # rate None: failure_rate not passed (with consecutive_failures, the run alone trips).
        rate_setting: dict[str, Any] = {} if rate is None else {"failure_rate": rate}
        self.breaker = CircuitBreaker(
            "model",
            window=window,
            minimum_calls=minimum,
            consecutive_failures=consecutive,
            half_open_calls=probes,
            open_duration=OPEN_DURATION,
            clock=self.clock,
            **rate_setting,
        )
        self.model = Model(
            window=window, minimum=minimum, rate=rate, consecutive=consecutive, probes=probes
        )
        # Calls in flight (a probe may hang): the breaker's permit and the model's.
        self.held: list[tuple[int, Permit]] = []
        if half_open:
            # Half the runs start in HALF_OPEN, where probes can hang: reaching it by chance
            # (trip, then wait) would leave that part of the machine rarely explored.
            for _ in range(window + minimum):
                if self.model.state is CircuitState.OPEN:
                    break
                self.call(failed=True)
            self.advance(OPEN_DURATION)

    def check_rejection(self, exc: CircuitOpenError) -> None:
        """The breaker rejected: so does the model, with the same retry_after."""
        expected = self.model.retry_after
        if expected is None:
            assert exc.retry_after is None
        else:
            assert exc.retry_after == pytest.approx(expected)

    @rule(failed=st.booleans())
    def call(self, failed: bool) -> None:
        expected = self.model.acquire()
        ran = False

        def dependency() -> None:
            nonlocal ran
            ran = True
            if failed:
                raise ConnectionError

        try:
            self.breaker.call(dependency)
        except ConnectionError:
            pass
        except CircuitOpenError as exc:
            assert expected is None
            self.check_rejection(exc)
        assert ran is (expected is not None)
        if expected is not None:
            self.model.finish(expected, failed)

    @precondition(lambda self: len(self.held) < 4)
    @rule()
    def start_call(self) -> None:
        """A call that takes its permit and keeps running (it may hang for ever)."""
        expected = self.model.acquire()
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError as exc:
            assert expected is None
            self.check_rejection(exc)
            return
        assert expected is not None
        self.held.append((permit, expected))

    @precondition(lambda self: len(self.held) < 4)
    @rule()
    def hang(self) -> None:
        """A call starts and is still running open_duration later (a hung probe, in HALF_OPEN)."""
        self.start_call()
        self.advance(OPEN_DURATION)

    @precondition(lambda self: bool(self.held))
    @rule(index=st.integers(0, 3), failed=st.booleans())
    def end_call(self, index: int, failed: bool) -> None:
        """A call started earlier ends; its outcome counts only if its permit still does."""
        permit, expected = self.held.pop(index % len(self.held))
        if failed:
            self.breaker.record_failure(permit)
        else:
            self.breaker.record_success(permit)
        self.model.finish(expected, failed)

    @rule(seconds=st.sampled_from([1.0, 10.0, 29.0, 30.0, 100.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now += seconds

    # One rule for the three manual commands: each would otherwise be drawn as often as a
    # call, and sequences that reach (and outlast) HALF_OPEN would be rare.
    @rule(command=st.sampled_from(["reset", "force_open", "disable"]))
    def manual(self, command: str) -> None:
        getattr(self.breaker, command)()
        self.model.go(
            {
                "reset": CircuitState.CLOSED,
                "force_open": CircuitState.FORCED_OPEN,
                "disable": CircuitState.DISABLED,
            }[command]
        )

    @invariant()
    def same_state(self) -> None:
        if hasattr(self, "breaker"):
            assert self.breaker.state is self.model.state
            if self.model.state is CircuitState.HALF_OPEN:
                in_flight = self.breaker.metrics().half_open_in_flight
                live = sum(
                    1
                    for taken in self.model.in_flight.values()
                    if self.model.now - taken < OPEN_DURATION
                )
                # Slots of hung probes are given back lazily, on the next acquire.
                assert live <= in_flight <= len(self.model.in_flight)


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_breaker_matches_model = BreakerMachine.TestCase
