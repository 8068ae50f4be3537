"""The transports' quick path and their general loop do the same thing.

A plain request (no deadline, no override, no planning header, a body in memory) takes the
quick path: its first attempt runs without a per-request plan, and only a failed or
retryable attempt hands over to the general loop. The same request under a long deadline
takes the general loop from the start. Each scenario runs both ways, sync and async, and
the attempts made, the final outcome, the events and the host breaker's counts must match.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from resilience import CircuitBreaker, CircuitState, Policy, Retry, RetryBudget, backoff, deadline
from resilience.events import Event, add_listener, remove_listener
from resilience.httpx import AsyncResilientTransport, ResilientTransport, Upstream
from resilience.testing import FakeClock

URL = "http://api.test/items"
UPSTREAM_URL = "http://svc/items"


@dataclass
class Script:
    """Answers in order (a status, or an exception class to raise), then 200."""

    steps: list[int | type[Exception]]
    seen: list[str] = field(default_factory=list)

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.method)
        step = self.steps.pop(0) if self.steps else 200
        if isinstance(step, int):
            return httpx.Response(step, headers={"retry-after": "0"}, content=b"x")
        raise step("scripted", request=request)  # type: ignore[call-arg]


SCENARIOS: dict[str, tuple[str, list[int | type[Exception]]]] = {
    "ok": ("GET", []),
    "503 then ok": ("GET", [503]),
    "429 twice then ok": ("GET", [429, 429]),
    "connect error then ok": ("GET", [httpx.ConnectError]),
    "read error then ok": ("GET", [httpx.ReadError]),
    "500 is not retried": ("GET", [500]),
    "503 every time": ("GET", [503, 503, 503, 503]),
    "POST 503 is not resent": ("POST", [503]),
    "POST connect error is resent": ("POST", [httpx.ConnectError]),
    "POST read error is not resent": ("POST", [httpx.ReadError]),
}

Outcome = tuple[int, str, list[tuple[str, ...]], tuple[int, int]]
"""(attempts, final status or error name, events, (breaker calls, failures))."""


def _policy() -> Policy:
    return Policy(
        retry=Retry(
            on=httpx.TransportError, attempts=3, backoff=backoff.constant(0), budget=RetryBudget()
        ),
        breaker=CircuitBreaker("quick", minimum_calls=100, window=100),
    )


def _event_key(event: Event) -> tuple[str, ...]:
    fields = [type(event).__name__]
    for name in ("attempt", "error", "reason"):
        value = getattr(event, name, None)
        if value is not None:
            fields.append(f"{name}={value}")
    return tuple(fields)


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def __call__(self, event: Event) -> None:
        self.seen.append(_event_key(event))


def _finish(transport: Any, script: Script, events: _Events, result: str, routed: bool) -> Outcome:
    if routed:
        endpoints = transport.upstreams["svc"].endpoints
        assert all(e.in_flight == 0 for e in endpoints)
        breakers = [e.breaker for e in endpoints]
    else:
        breakers = list(transport.breakers.values())
    calls = sum(b.metrics().calls for b in breakers)
    failures = sum(b.metrics().failures for b in breakers)
    return len(script.seen), result, events.seen, (calls, failures)


def _svc() -> Upstream:
    # round_robin: both runs visit the endpoints in the same order.
    return Upstream(
        "svc", endpoints=["http://127.0.0.1:9001", "http://127.0.0.1:9002"], balancer="round_robin"
    )


def _options(script: Script, policy: bool, routed: bool) -> dict[str, Any]:
    return {
        "inner": httpx.MockTransport(script.answer),
        "policy": _policy() if policy else None,
        "upstreams": [_svc()] if routed else [],
    }


def _sync(
    method: str,
    steps: list[int | type[Exception]],
    scoped: bool,
    policy: bool = False,
    routed: bool = False,
) -> Outcome:
    """One request through a sync transport: quick path, or (*scoped*) the general loop."""
    script = Script(list(steps))
    transport = ResilientTransport(**_options(script, policy, routed), sleep=lambda s: None)
    events = _Events()
    add_listener(events)
    try:
        with httpx.Client(transport=transport) as client:
            request = client.build_request(method, UPSTREAM_URL if routed else URL, content=b"{}")
            with deadline(3600) if scoped else contextlib.nullcontext():
                assert (transport._core.quick(request) is None) is scoped
                try:
                    result = str(client.send(request).status_code)
                except httpx.HTTPError as exc:
                    result = type(exc).__name__
            assert request.url == httpx.URL(UPSTREAM_URL if routed else URL)
    finally:
        remove_listener(events)
    return _finish(transport, script, events, result, routed)


async def _async(
    method: str,
    steps: list[int | type[Exception]],
    scoped: bool,
    policy: bool = False,
    routed: bool = False,
) -> Outcome:
    """The async twin of `_sync`."""
    script = Script(list(steps))

    async def no_wait(seconds: float) -> None:
        return None

    transport = AsyncResilientTransport(**_options(script, policy, routed), sleep=no_wait)
    events = _Events()
    add_listener(events)
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            request = client.build_request(method, UPSTREAM_URL if routed else URL, content=b"{}")
            async with deadline(3600) if scoped else contextlib.nullcontext():
                assert (transport._core.quick(request) is None) is scoped
                try:
                    result = str((await client.send(request)).status_code)
                except httpx.HTTPError as exc:
                    result = type(exc).__name__
    finally:
        remove_listener(events)
    return _finish(transport, script, events, result, routed)


@pytest.fixture(params=[False, True], ids=["default", "policy"])
def with_policy(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.mark.parametrize("name", SCENARIOS)
def test_quick_path_matches_general_loop_sync(name: str, with_policy: bool) -> None:
    """Sync: the same attempts, outcome, events and breaker counts either way."""
    method, steps = SCENARIOS[name]
    quick = _sync(method, steps, scoped=False, policy=with_policy)
    general = _sync(method, steps, scoped=True, policy=with_policy)
    assert quick == general
    assert quick[0] >= 1


@pytest.mark.parametrize("name", SCENARIOS)
def test_quick_path_matches_general_loop_async(name: str, with_policy: bool) -> None:
    """Async: the same attempts, outcome, events and breaker counts either way."""
    method, steps = SCENARIOS[name]
    quick = asyncio.run(_async(method, steps, scoped=False, policy=with_policy))
    general = asyncio.run(_async(method, steps, scoped=True, policy=with_policy))
    assert quick == general


def test_quick_path_outcomes_are_the_rules() -> None:
    """Spot checks that the shared outcome is the right one, not merely the same."""
    assert _sync("GET", [503], scoped=False, policy=False)[:2] == (2, "200")
    assert _sync("GET", [500], scoped=False, policy=False)[:2] == (1, "500")
    assert _sync("POST", [503], scoped=False, policy=False)[:2] == (1, "503")
    assert _sync("POST", [httpx.ReadError], scoped=False, policy=False)[:2] == (1, "ReadError")
    assert _sync("POST", [httpx.ConnectError], scoped=False, policy=False)[:2] == (2, "200")


def test_quick_path_is_not_taken_when_something_is_planned() -> None:
    """Overrides, an idempotency key, a streamed body or automatic keys: the general loop."""
    transport = ResilientTransport(inner=httpx.MockTransport(lambda r: httpx.Response(200)))
    core = transport._core
    plain = httpx.Request("GET", URL)
    assert core.quick(plain) is not None
    keyed = httpx.Request("POST", URL, headers={"Idempotency-Key": '"k"'})
    assert core.quick(keyed) is None
    sdk = httpx.Request("POST", URL, headers={"x-stainless-retry-count": "1"})
    assert core.quick(sdk) is None
    override = httpx.Request("GET", URL, extensions={"resilience": {"retry": False}})
    assert core.quick(override) is None
    streamed = httpx.Request("POST", URL, content=iter([b"a"]))
    assert core.quick(streamed) is None
    keys = ResilientTransport(idempotency_keys=True)
    assert keys._core.quick(plain) is None
    timed = ResilientTransport(policy=Policy(timeout=5.0))
    assert timed._core.quick(plain) is None


@pytest.mark.parametrize("name", SCENARIOS)
def test_quick_path_matches_general_loop_for_upstreams(name: str) -> None:
    """Routed through an upstream: the same attempts, outcome, events and endpoint counts."""
    method, steps = SCENARIOS[name]
    quick = _sync(method, steps, scoped=False, routed=True)
    assert quick == _sync(method, steps, scoped=True, routed=True)
    assert quick == asyncio.run(_async(method, steps, scoped=False, routed=True))
    assert quick == asyncio.run(_async(method, steps, scoped=True, routed=True))


@pytest.mark.parametrize("scoped", [False, True], ids=["quick", "general"])
def test_slow_calls_are_timed_either_way(scoped: bool) -> None:
    """A host breaker that times slow calls is timed on its own clock on both paths; one that
    does not is not (then no clock is read for it)."""
    clock = FakeClock()

    def answer(request: httpx.Request) -> httpx.Response:
        clock.advance(2.0)  # the attempt takes 2 s on the breaker's clock
        return httpx.Response(200)

    breaker = CircuitBreaker("slowhost", slow_call_duration=1.0, minimum_calls=1, clock=clock)
    transport = ResilientTransport(httpx.MockTransport(answer), policy=Policy(breaker=breaker))
    with httpx.Client(transport=transport) as client:
        if scoped:
            with deadline(3600):
                client.get(URL)
        else:
            client.get(URL)
    (host,) = transport.breakers.values()
    assert host.state is CircuitState.OPEN  # the one call was slow
