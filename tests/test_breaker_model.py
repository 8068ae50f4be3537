"""A hypothesis state machine checks the breaker against a plain reference model."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resilience import CircuitBreaker, CircuitOpenError, CircuitState
from resilience.testing import FakeClock


class Model:
    """The spec in the simplest words: a list of outcomes and a state."""

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
        self._state = CircuitState.CLOSED
        self.open_until = 0.0
        self.now = 0.0

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self.now >= self.open_until:
            self._state = CircuitState.HALF_OPEN
            self.probe_outcomes = []
        return self._state

    def go(self, state: CircuitState) -> None:
        self._state = state
        if state is CircuitState.OPEN:
            self.open_until = self.now + 30.0
        if state is CircuitState.CLOSED:
            self.outcomes = []

    def call(self, failed: bool) -> str:
        state = self.state
        if state in (CircuitState.OPEN, CircuitState.FORCED_OPEN):
            return "rejected"
        if state is CircuitState.DISABLED:
            return "ran"
        if state is CircuitState.HALF_OPEN:
            self.probe_outcomes.append(failed)
            if len(self.probe_outcomes) < self.probes:
                return "ran"  # the verdict comes when every probe has finished
            fails = sum(self.probe_outcomes)
            if (self.consecutive is not None and fails) or (
                self.consecutive is None and fails / self.probes >= self.rate
            ):
                self.go(CircuitState.OPEN)
            else:
                self.go(CircuitState.CLOSED)
            return "ran"
        self.outcomes.append(failed)
        if self.consecutive is not None:
            run = 0
            for outcome in reversed(self.outcomes):
                if not outcome:
                    break
                run += 1
            if run >= self.consecutive:
                self.go(CircuitState.OPEN)
                return "ran"
        recent = self.outcomes[-self.window :]
        if not self.rate_trips:
            return "ran"
        if len(recent) >= self.minimum and sum(recent) / len(recent) >= self.rate:
            self.go(CircuitState.OPEN)
        return "ran"


class BreakerMachine(RuleBasedStateMachine):
    @initialize(
        window=st.integers(1, 8),
        minimum=st.integers(1, 10),
        rate=st.sampled_from([None, 0.25, 0.5, 1.0]),
        consecutive=st.none() | st.integers(1, 4),
        probes=st.integers(1, 3),
    )
    def build(
        self, window: int, minimum: int, rate: float | None, consecutive: int | None, probes: int
    ) -> None:
        self.clock = FakeClock(0.0)
        # rate None: failure_rate not passed (with consecutive_failures, the run alone trips).
        given: dict[str, float] = {} if rate is None else {"failure_rate": rate}
        self.breaker = CircuitBreaker(
            "model",
            window=window,
            minimum_calls=minimum,
            **given,
            consecutive_failures=consecutive,
            half_open_calls=probes,
            open_duration=30.0,
            clock=self.clock,
        )
        self.model = Model(
            window=window, minimum=minimum, rate=rate, consecutive=consecutive, probes=probes
        )

    @rule(failed=st.booleans())
    def call(self, failed: bool) -> None:
        expected = self.model.call(failed)

        def dependency() -> None:
            if failed:
                raise ConnectionError

        try:
            self.breaker.call(dependency)
            got = "ran"
        except ConnectionError:
            got = "ran"
        except CircuitOpenError:
            got = "rejected"
        assert got == expected

    @rule(seconds=st.sampled_from([1.0, 10.0, 29.0, 30.0, 100.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now += seconds

    @rule()
    def reset(self) -> None:
        self.breaker.reset()
        self.model.go(CircuitState.CLOSED)

    @rule()
    def force_open(self) -> None:
        self.breaker.force_open()
        self.model.go(CircuitState.FORCED_OPEN)

    @rule()
    def disable(self) -> None:
        self.breaker.disable()
        self.model.go(CircuitState.DISABLED)

    @invariant()
    def same_state(self) -> None:
        if hasattr(self, "breaker"):
            assert self.breaker.state is self.model.state


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_breaker_matches_model = BreakerMachine.TestCase
