"""The transports' default per-host breaker (API.md, "Transport defaults"), checked with the
simulation of bench/case_defaults.py and end to end through the transports.

A host failing 35 % of requests at random still answers two in three: the breaker must leave
it alone (under 1 % of calls rejected). A host failing every request must be cut within 20
calls, and one failing 60 % must be cut too.
"""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from bench import _cli, case_defaults
from bench.case_defaults import WAVE_ONE, Candidate, evaluate, simulate
from resilience import CircuitOpenError
from resilience._http._hosts import DEFAULT_HOST_BREAKER
from resilience.httpx import AsyncResilientTransport, ResilientTransport
from resilience.testing import FakeClock, set_testing

SEED = case_defaults.SEED
# A seed where CircuitBreaker's own defaults (what the transports used before) cut the host
# through ResilientTransport(): they reject 687 of the 1,000 GETs below, as in the issue.
E2E_SEED = SEED + 3
DEFAULTS = Candidate("transport default", DEFAULT_HOST_BREAKER)
URL = "https://api.example.com/items"
CALLS = 1_000
STEP = 1.0 / case_defaults.PER_SECOND


def test_defaults_reject_under_1_percent_at_35_percent_failures() -> None:
    """At 35 % random failures the default breaker rejects under 1 % of 1,000 calls."""
    run = simulate(DEFAULT_HOST_BREAKER, failing=0.35, seed=SEED, calls=CALLS)
    assert run.rejected_share < 0.01
    assert run.openings == 0


def test_defaults_hold_across_seeds_at_30_and_35_percent() -> None:
    """Across 20 seeds, at 30 % and 35 % random failures, no run rejects 1 % of its calls."""
    summary = evaluate(DEFAULTS, seeds=20, rates=(0.3, 0.35), outage=False)
    assert summary.worst_rejected[0.3] < 0.01
    assert summary.worst_rejected[0.35] < 0.01


def test_the_old_defaults_fail_the_same_check() -> None:
    """CircuitBreaker's own defaults (what the transports used) cut that host: why they changed."""
    summary = evaluate(Candidate("old", WAVE_ONE), seeds=5, rates=(0.35,), outage=False)
    assert summary.opened_in[0.35] >= 1
    assert summary.worst_rejected[0.35] > 0.25


def test_defaults_cut_a_dead_host_within_20_calls() -> None:
    """At 100 % failures the default breaker opens within 20 calls."""
    run = simulate(DEFAULT_HOST_BREAKER, failing=1.0, seed=SEED, calls=CALLS)
    assert run.first_opening is not None
    assert run.first_opening <= 20


def test_defaults_open_at_60_percent_failures() -> None:
    """At 60 % random failures the default breaker opens, in every seed."""
    summary = evaluate(DEFAULTS, seeds=20, rates=(0.6,), outage=False)
    assert summary.opens_always(0.6)


def test_simulation_counts_rejections_and_the_first_opening() -> None:
    """The simulation reports what a breaker did: 5 failures open it, the rest are rejected."""
    run = simulate({"consecutive_failures": 5, "open_duration": 1000.0}, failing=1.0, seed=1)
    assert (run.first_opening, run.openings, run.rejected) == (5, 1, CALLS - 5)
    outage = simulate(
        {"consecutive_failures": 5}, failing=0.0, seed=1, calls=400, per_second=4, down_for=100
    )
    # Opened by call 5, open for 30 s (120 calls): calls 6 to 124 rejected, 24 of them after
    # the outage; call 125 is a probe, which succeeds.
    assert (outage.openings, outage.rejected, outage.rejected_after_outage) == (1, 119, 24)


def test_bench_case_reports_every_candidate() -> None:
    """`python -m bench --only defaults` has rows for every candidate and the docs a line each."""
    assert [c.key for c in _cli.CASES if c.key == "defaults"] == ["defaults"]
    candidates = case_defaults.candidates()
    summaries = [evaluate(c, seeds=1, calls=200) for c in candidates]
    rows = case_defaults.rows(summaries)
    labels = {c.label for c in candidates}
    assert "transport default" in labels
    assert {row.library for row in rows} == labels
    assert {row.variant for row in rows} >= {"35 % failing", "100 % failing"}
    assert len(case_defaults.markdown(summaries).splitlines()) == 2 + len(labels)
    assert len(case_defaults.settings_table(candidates).splitlines()) == 2 + len(labels)


def test_docs_show_the_transport_defaults() -> None:
    """docs/choosing-settings.md lists the settings DEFAULT_HOST_BREAKER really has."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "choosing-settings.md").read_text()
    line = case_defaults.settings_table([Candidate("transport default", DEFAULT_HOST_BREAKER)])
    assert line.splitlines()[-1] in page


def test_transport_builds_its_host_breakers_with_the_defaults() -> None:
    """ResilientTransport() makes each per-host breaker with DEFAULT_HOST_BREAKER."""
    transport = ResilientTransport(httpx.MockTransport(lambda request: httpx.Response(200)))
    with httpx.Client(transport=transport) as client:
        client.get(URL)
    config = transport.breakers["https://api.example.com"].config
    for key, value in DEFAULT_HOST_BREAKER.items():
        assert getattr(config, key) == value, key


class Upstream:
    """A host that answers 503 to a seeded share of requests, counting what it receives."""

    def __init__(self, failing: float, seed: int = E2E_SEED) -> None:
        self.failing = failing
        self.fates = random.Random(seed)
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(503 if self.fates.random() < self.failing else 200)


def _sync_gets(upstream: Upstream, clock: FakeClock, count: int) -> int:
    """Send *count* GETs, one every STEP seconds; return how many were rejected."""
    rejected = 0
    transport = ResilientTransport(httpx.MockTransport(upstream), clock=clock)
    with set_testing(True), httpx.Client(transport=transport) as client:
        for _ in range(count):
            clock.advance(STEP)
            try:
                client.get(URL)
            except CircuitOpenError:
                rejected += 1
    return rejected


async def _async_gets(upstream: Upstream, clock: FakeClock, count: int) -> int:
    """The async twin of _sync_gets."""
    rejected = 0
    transport = AsyncResilientTransport(httpx.MockTransport(upstream), clock=clock)
    with set_testing(True):
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(count):
                clock.advance(STEP)
                try:
                    await client.get(URL)
                except CircuitOpenError:
                    rejected += 1
    return rejected


async def _gets(mode: str, upstream: Upstream, count: int) -> int:
    clock = FakeClock()
    if mode == "sync":
        return _sync_gets(upstream, clock, count)
    return await _async_gets(upstream, clock, count)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_transport_rejects_under_1_percent_at_35_percent_failures(mode: str) -> None:
    """Through ResilientTransport(), 1,000 GETs to a host failing 35 %: under 1 % rejected."""
    upstream = Upstream(0.35)
    rejected = await _gets(mode, upstream, CALLS)
    assert rejected < CALLS // 100
    # Retries of the 503s went to the host too: the breaker judged ~1,500 attempts.
    assert upstream.requests > 1.3 * CALLS


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_transport_cuts_a_dead_host_within_20_attempts(mode: str) -> None:
    """Through ResilientTransport(), a host answering 503 to everything gets at most 20 attempts."""
    upstream = Upstream(1.0)
    rejected = await _gets(mode, upstream, 50)
    assert upstream.requests <= 20
    assert rejected >= 50 - 20 // 3
