"""Smoke tests of the bench's upstream case: its endpoint server and its figures."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bench import case_upstream
from bench._harness import Contender, Settings

TINY = Settings(quick=True, number=20, repeat=2, rounds=1, seed=1)

pytestmark = pytest.mark.network


def test_endpoint_server_answers_with_each_spec() -> None:
    """Each endpoint of the child process answers with its own failure share."""
    with (
        case_upstream.endpoints([(0.0, 0.0), (0.0, 1.0)], seed=1) as urls,
        httpx.Client(trust_env=False) as client,
    ):
        assert client.get(urls[0] + "/x").status_code == 200
        assert client.get(urls[1] + "/x").status_code == 503


def test_ours_hides_a_failing_endpoint_the_naive_client_shows() -> None:
    """Through our transport a failing endpoint costs no error; a naive client sees them."""
    with case_upstream.endpoints([(0.0, 0.0), (0.0, 1.0)], seed=1) as urls:
        contenders = [
            Contender("ours", "us", case_upstream._ours(urls, "random")),
            Contender("naive", "baseline", lambda: case_upstream.Naive(urls, seed=1)),
        ]
        ours, naive = asyncio.run(case_upstream._drive(contenders, 10, 2, 2, seed=1))
    assert len(ours.latencies) == len(naive.latencies) == 40  # warm-up not counted
    assert ours.errors == 0
    assert naive.errors > 5


def test_overhead_rows_are_differences() -> None:
    """The routing cost rows are each balancer's time minus the plain transport's."""
    rows = case_upstream._overhead(TINY)
    calls = {r.library: r.value for r in rows if r.case == case_upstream.CALL}
    costs = {r.library: r.value for r in rows if r.case == case_upstream.OVERHEAD}
    assert set(costs) == {f"resilience (upstream, {b})" for b in case_upstream.BALANCERS}
    plain = calls["resilience (plain host)"]
    assert plain is not None
    for library, cost in costs.items():
        routed = calls[library]
        assert routed is not None
        assert cost == pytest.approx(routed - plain)
