"""The fleet's verdict on a HALF_OPEN round (Lua, in Redis) is the breaker's own (Python)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest

from resilience import CircuitBreaker, CircuitState
from resilience._breaker._windows import FAILURE, SLOW, SUCCESS
from resilience._stores._lua import Scripts
from resilience.testing import FakeClock
from tests.redis_support import needs_redis

pytestmark = [pytest.mark.redis, needs_redis]
# The fixtures client and prefix.
pytest_plugins = ["tests.redis_fixtures"]

OUTCOMES = (SUCCESS, FAILURE, SLOW, FAILURE | SLOW)
CONFIGS: list[dict[str, Any]] = [
    {"consecutive_failures": 1, "half_open_calls": 1},
    {"consecutive_failures": 1, "half_open_calls": 3},
    {"failure_rate": 0.5, "half_open_calls": 1},
    {"failure_rate": 0.5, "half_open_calls": 2},
    {"failure_rate": 0.34, "half_open_calls": 3},
    {"failure_rate": 1.0, "half_open_calls": 3},
    {"consecutive_failures": 2, "failure_rate": 0.5, "half_open_calls": 3},
    {"failure_rate": 1.0, "slow_call_rate": 0.5, "half_open_calls": 2},
    {"consecutive_failures": 5, "slow_call_rate": 0.34, "half_open_calls": 3},
]


@dataclass(frozen=True)
class Target:
    """The keys a script works on (a `resilience._stores._lua.ScriptTarget`)."""

    key: str
    probes_key: str
    name: str
    ttl_ms: int = 60_000


def python_verdict(settings: dict[str, Any], outcomes: tuple[int, ...]) -> str:
    """The state a local breaker reaches once it has judged *outcomes* as its probes."""
    breaker = CircuitBreaker(
        "parity", slow_call_duration=1.0, open_duration=60, clock=FakeClock(), **settings
    )
    breaker._machine.adopt_state(CircuitState.OPEN, 0.0, "parity")  # OPEN, time up
    permits = [breaker.acquire() for _ in outcomes]
    for permit, outcome in zip(permits, outcomes, strict=True):
        duration = 2.0 if outcome & SLOW else 0.0
        if outcome & FAILURE:
            breaker.record_failure(permit, duration)
        else:
            breaker.record_success(permit, duration)
    return breaker._machine.state.value


def lua_verdict(
    scripts: Scripts, target: Target, settings: dict[str, Any], outcomes: tuple[int, ...]
) -> str:
    """The fleet state PROBE_DONE_SCRIPT writes once it has tallied *outcomes*."""
    config = CircuitBreaker("parity", slow_call_duration=1.0, open_duration=60, **settings).config
    _, epoch, *_ = scripts.transition(target, "open", "", 60_000)
    reply: Any = None
    for outcome in outcomes:
        reply = scripts.probe_done(target, int(epoch), outcome, config)
    state = reply[0]
    return str(state.decode() if isinstance(state, bytes) else state)


@pytest.mark.parametrize(
    "settings", CONFIGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_lua_judges_every_round_as_the_breaker_does(
    client: Any, prefix: str, settings: dict[str, Any]
) -> None:
    """For every mix of probe outcomes, Redis's verdict equals the local one."""
    scripts = Scripts(client, f"{prefix}events")
    rounds = itertools.product(OUTCOMES, repeat=settings["half_open_calls"])
    for index, outcomes in enumerate(rounds):
        target = Target(f"{prefix}{{p{index}}}", f"{prefix}{{p{index}}}:probes", f"p{index}")
        local = python_verdict(settings, outcomes)
        fleet = lua_verdict(scripts, target, settings, outcomes)
        assert local in ("open", "closed")
        assert fleet == local, (outcomes, local, fleet)
