"""`Retry` and the httpx transports ask one decision and report its verdicts alike.

Each scenario runs through four drivers: `Retry` (sync and async) around a function raising
an error with a ``retry_after`` hint, and the transports (sync and async) in front of an
`httpx.MockTransport` answering 503 with the same hint as `Retry-After`. The retry events
(kind, attempt, wait) and the number of attempts must be the same for all four.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import tenacity

from resilience import Policy, Retry, RetryBudget, backoff, deadline
from resilience.events import (
    Event,
    RetryBudgetExhausted,
    RetryExhausted,
    RetryScheduled,
    add_listener,
    remove_listener,
)
from resilience.httpx import AsyncResilientTransport, ResilientTransport
from resilience.testing import FakeClock, set_testing

URL = "https://api.example.com/v1/items"

Trace = tuple[int, list[tuple[str, int, float]]]
"""(attempts made, [(event kind, attempt, wait)]) for one logical call."""


@dataclass(frozen=True)
class Scenario:
    """One situation, as both engines see it."""

    attempts: int = 3
    wait: float = 0.5
    hint: int | None = None
    deadline: float | None = None
    testing: bool = False
    testing_attempts: int | None = None
    reserve: float | None = None  # a budget with ratio 0 allowing this many retries


SCENARIOS: dict[str, tuple[Scenario, list[tuple[str, int, float]]]] = {
    "attempts exhausted": (
        Scenario(),
        [("scheduled", 1, 0.5), ("scheduled", 2, 0.5), ("exhausted", 3, 0.0)],
    ),
    "hint beyond the cap": (
        Scenario(attempts=2, hint=3600),
        [("scheduled", 1, 60.0), ("exhausted", 2, 0.0)],
    ),
    "hint shorter than the backoff": (
        Scenario(attempts=2, wait=2.0, hint=1),
        [("scheduled", 1, 2.0), ("exhausted", 2, 0.0)],
    ),
    "wait crossing the deadline": (
        Scenario(hint=30, deadline=5.0),
        [("exhausted", 1, 0.0)],
    ),
    "test mode inside the deadline": (
        Scenario(hint=30, deadline=5.0, testing=True),
        [("scheduled", 1, 0.0), ("scheduled", 2, 0.0), ("exhausted", 3, 0.0)],
    ),
    "test mode capping attempts": (
        Scenario(attempts=5, testing=True, testing_attempts=2),
        [("scheduled", 1, 0.0), ("exhausted", 2, 0.0)],
    ),
    "budget exhausted": (
        Scenario(reserve=1.0),
        [("scheduled", 1, 0.5), ("budget", 2, 0.0)],
    ),
}


class Busy(Exception):
    """An error carrying a server's wait hint, like a throttled API client raises."""

    def __init__(self, retry_after: int | None) -> None:
        super().__init__("busy")
        self.retry_after = retry_after


def _kind(event: Event) -> tuple[str, int, float] | None:
    if isinstance(event, RetryScheduled):
        return ("scheduled", event.attempt, event.wait)
    if isinstance(event, RetryExhausted):
        return ("exhausted", event.attempts, 0.0)
    if isinstance(event, RetryBudgetExhausted):
        return ("budget", event.attempt, 0.0)
    return None


@contextlib.contextmanager
def _recorded() -> Iterator[list[tuple[str, int, float]]]:
    seen: list[Event] = []
    add_listener(seen.append)
    kinds: list[tuple[str, int, float]] = []
    try:
        yield kinds
    finally:
        remove_listener(seen.append)
        kinds.extend(k for k in map(_kind, seen) if k is not None)


@contextlib.contextmanager
def _situation(scenario: Scenario, clock: FakeClock) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        if scenario.testing:
            stack.enter_context(set_testing(True, attempts=scenario.testing_attempts))
        if scenario.deadline is not None:
            stack.enter_context(deadline(scenario.deadline, clock=clock))
        yield


def _retry(scenario: Scenario, clock: FakeClock, on: object = Busy) -> Retry:
    budget = None
    if scenario.reserve is not None:
        budget = RetryBudget(ratio=0.0, min_per_second=scenario.reserve / 10.0, clock=clock)
    return Retry(
        on=on,  # type: ignore[arg-type]  # Busy, or () for the transports
        attempts=scenario.attempts,
        backoff=backoff.constant(scenario.wait),
        budget=budget,
        clock=clock,
        sleep=lambda seconds: None,
        asleep=_nap,
    )


async def _nap(seconds: float) -> None:
    return None


def through_retry(scenario: Scenario, asynchronous: bool) -> Trace:
    """Run the scenario through `Retry` around a function raising `Busy`."""
    clock = FakeClock()
    policy = _retry(scenario, clock)
    calls: list[int] = []

    def fail() -> None:
        calls.append(1)
        raise Busy(scenario.hint)

    async def afail() -> None:
        fail()

    def run() -> None:
        if asynchronous:
            asyncio.run(policy.call_async(afail))
        else:
            policy.call(fail)

    with _recorded() as kinds, _situation(scenario, clock), pytest.raises(Busy):
        run()
    return len(calls), kinds


def through_transport(scenario: Scenario, asynchronous: bool) -> Trace:
    """Run the scenario through a transport whose upstream answers 503 with Retry-After."""
    clock = FakeClock()
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        headers = {} if scenario.hint is None else {"Retry-After": str(scenario.hint)}
        return httpx.Response(503, headers=headers)

    policy = Policy(retry=_retry(scenario, clock, on=()))
    with _recorded() as kinds, _situation(scenario, clock):
        if asynchronous:
            transport = AsyncResilientTransport(
                httpx.MockTransport(answer), policy=policy, clock=clock, sleep=_nap
            )

            async def get() -> int:
                async with httpx.AsyncClient(transport=transport) as client:
                    return (await client.get(URL)).status_code

            status = asyncio.run(get())
        else:
            sync = ResilientTransport(
                httpx.MockTransport(answer), policy=policy, clock=clock, sleep=lambda s: None
            )
            with httpx.Client(transport=sync) as client:
                status = client.get(URL).status_code
    assert status == 503  # retries ended on a retryable status: the last response returned
    return len(calls), kinds


DRIVERS: dict[str, Callable[[Scenario], Trace]] = {
    "Retry sync": lambda s: through_retry(s, asynchronous=False),
    "Retry async": lambda s: through_retry(s, asynchronous=True),
    "transport sync": lambda s: through_transport(s, asynchronous=False),
    "transport async": lambda s: through_transport(s, asynchronous=True),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_retry_and_transports_reach_the_same_verdicts(name: str) -> None:
    """Same scenario, same decisions: Retry and both transports emit the same retry events."""
    scenario, expected = SCENARIOS[name]
    traces = {driver: run(scenario) for driver, run in DRIVERS.items()}
    attempts = 1 + sum(kind == "scheduled" for kind, _, _ in expected)
    assert traces == dict.fromkeys(DRIVERS, (attempts, expected))


def test_transport_notes_a_deadline_stop_like_retry() -> None:
    """A transport error stopped by the deadline carries the same note body as Retry's."""
    clock = FakeClock()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    retry = Retry(on=(), attempts=3, backoff=backoff.constant(10.0), clock=clock)
    transport = ResilientTransport(
        httpx.MockTransport(refuse), policy=Policy(retry=retry), clock=clock
    )
    with (
        _recorded() as kinds,
        httpx.Client(transport=transport) as client,
        deadline(5.0, clock=clock),
        pytest.raises(httpx.ConnectError) as caught,
    ):
        client.get(URL)
    assert caught.value.__notes__ == [
        "resilience.httpx: gave up after 1 attempt: the next wait (10 s) would cross the "
        "deadline (5 s left)"
    ]
    assert kinds == [("exhausted", 1, 0.0)]


def test_transport_tenacity_wait_sees_the_full_call_state() -> None:
    """A tenacity wait in a transport's Retry sees the outcome, the request and the sleeps."""
    clock = FakeClock()
    seen: list[tuple[int, object, tuple[object, ...], float]] = []

    def by_outcome(state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None
        failed = state.outcome.failed
        outcome = state.outcome.exception() if failed else state.outcome.result()
        seen.append((state.attempt_number, outcome, state.args, state.idle_for))
        return 1.5

    answers: Iterator[httpx.Response | Exception] = iter(
        [httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(200)]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        outcome = next(answers)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    retry = Retry(on=(), attempts=3, backoff=by_outcome, clock=clock)
    waits: list[float] = []
    transport = ResilientTransport(
        httpx.MockTransport(answer), policy=Policy(retry=retry), clock=clock, sleep=waits.append
    )
    with httpx.Client(transport=transport) as client:
        assert client.get(URL).status_code == 200
    assert waits == [1.5, 1.5]
    (first, error, args, idle), (second, response, _, idle_after) = seen
    assert (first, type(error), idle) == (1, httpx.ConnectError, 0.0)
    assert (second, getattr(response, "status_code", None), idle_after) == (2, 503, 1.5)
    assert isinstance(args[0], httpx.Request)
    assert str(args[0].url) == URL
