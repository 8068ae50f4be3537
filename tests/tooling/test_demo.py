"""`python -m resilience demo`: the pieces, and the whole demo run end to end."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from resilience import __main__ as cli
from resilience._demo import (
    DEADLINE,
    FAILED,
    FAST_FAIL,
    OK,
    ClientLog,
    OrderBook,
    Outcome,
    Style,
    Upstream,
    banner,
    header_lines,
    legend_lines,
    phase_at,
    summary_lines,
    tick_line,
)
from resilience.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("elapsed", "phase"),
    [
        (0.0, "healthy"),
        (2.49, "healthy"),
        (2.5, "failing"),
        (5.49, "failing"),
        (5.5, "slow"),
        (8.5, "recovering"),
        (30.0, "recovering"),
    ],
)
def test_phases_follow_the_script(elapsed: float, phase: str) -> None:
    """The upstream goes healthy -> failing -> slow -> recovering on schedule."""
    assert phase_at(elapsed) == phase


async def test_upstream_fails_two_requests_in_five_while_failing() -> None:
    """In the failing phase each client meets 503s on 2 requests of every 5."""
    clock = FakeClock()
    upstream = Upstream(clock=clock)
    transport = httpx.ASGITransport(app=upstream)
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream") as client:
        healthy = [(await client.get("/", headers={"x-demo-client": "a"})).status_code]
        clock.advance(3.0)
        statuses = [
            (await client.get("/", headers={"x-demo-client": "a"})).status_code for _ in range(10)
        ]
        other = [
            (await client.get("/", headers={"x-demo-client": "b"})).status_code for _ in range(5)
        ]
    assert healthy == [200]
    assert statuses.count(503) == 4
    assert other.count(503) == 2
    assert upstream.hits["a", "failing"] == 10
    assert upstream.hits["a", "healthy"] == 1


def outcome(kind: str, phase: str = "slow", latency: float = 0.1) -> Outcome:
    """A finished request for the display tests."""
    return Outcome(sent_at=6.0, phase=phase, kind=kind, latency=latency)


def test_plain_style_for_pipes() -> None:
    """Output to a pipe has no colour codes and plain symbols when not UTF-8."""
    style = Style(io.StringIO())
    assert not style.colour
    line = tick_line(6.0, [outcome(OK), outcome(FAST_FAIL)], 2, "open", [outcome(FAILED)], 7, style)
    assert "\033[" not in line
    assert "slow" in line
    assert "open" in line
    assert "|" in line  # StringIO has no encoding: ASCII fallback
    assert all(line.isascii() for line in header_lines(style))
    assert "failing" in banner(2.5, "failing", "fails", style)


def test_tick_line_counts_each_kind() -> None:
    """A tick row shows ok, failed, fast-fail, deadline and retry counts, then the bare client."""
    style = Style(io.StringIO())
    resilient = [outcome(OK)] * 3 + [outcome(FAILED)] + [outcome(FAST_FAIL)] * 5
    resilient += [outcome(DEADLINE)] * 2
    line = tick_line(6.5, resilient, 4, "half_open", [outcome(OK)] * 6, 12, style)
    numbers = [part for part in line.replace("|", " ").split() if part.isdigit()]
    assert numbers == ["3", "1", "5", "2", "4", "6", "0", "12"]


def test_summary_compares_both_clients() -> None:
    """The summary puts the resilient and the bare client side by side and tells the story."""
    resilient, bare = ClientLog("resilient"), ClientLog("bare")
    for log, kinds, latency in [
        (resilient, [OK, OK, FAST_FAIL, DEADLINE], 0.01),
        (bare, [OK, FAILED, FAILED, FAILED], 5.0),
    ]:
        for kind in kinds:
            log.started()
            log.finished(outcome(kind, latency=latency))
    hits = Counter({("resilient", "slow"): 2, ("bare", "slow"): 4})
    text = "\n".join(summary_lines(resilient, bare, hits, Style(io.StringIO())))
    assert "Summary" in text
    assert "rejected at once" in text
    assert "5.00 s" in text  # the bare client's longest wait
    assert "got 2 requests instead of 4" in " ".join(text.split())


def test_cli_without_a_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m resilience` alone lists the commands and exits 2."""
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().out


@pytest.mark.network
def test_demo_runs_end_to_end_in_under_20_seconds() -> None:
    """The README's first command runs by itself, shows the story, and exits 0 within 20 s."""
    env = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "resilience", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 20.0
    out = result.stdout
    assert "\033[" not in out
    for phase in ("healthy", "failing", "slow", "recovering"):
        assert f"{phase}: the upstream" in out
    assert "closed → open" in out  # the breaker opened...
    assert "→ closed" in out  # ...and closed again after the recovery
    assert "Summary" in out
    assert "bare httpx" in out
    assert "fast: rejected at once by" in " ".join(out.split())  # the legend
    twice = next(line for line in out.splitlines() if "recorded twice" in line)
    assert twice.split()[-2] == "0"  # no POST ran twice, even while answers were lost
    assert "Read on: " in out
    assert "_demo.py" not in out  # no pointer at a private module
    assert result.stderr == ""


def test_orders_recorded_twice_are_counted_and_shown() -> None:
    """The summary shows POSTed orders, what the upstream recorded, and any recorded twice."""
    orders = OrderBook(sent=3)
    orders.recorded.update({"0": 1, "1": 2})
    assert orders.twice == 1
    text = "\n".join(
        summary_lines(ClientLog("r"), ClientLog("b"), Counter(), Style(io.StringIO()), orders)
    )
    assert "recorded twice" in text
    assert "3 orders were POSTed" in " ".join(text.split())


def test_legend_names_every_column() -> None:
    """The legend explains each column of the live table, in ASCII when the terminal needs it."""
    lines = legend_lines(Style(io.StringIO()))
    text = " ".join(lines)
    for column in ("ok:", "fail:", "fast:", "dline:", "retry:", "breaker:", "waiting:"):
        assert column in text
    assert all(line.isascii() for line in lines)
