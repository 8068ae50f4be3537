"""Smoke tests of the benchmark harness (bench/); CI also runs `python -m bench --quick`."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

# bench/ is a top-level folder of the repository, not part of the installed package; pytest
# puts the root on sys.path (pythonpath in pyproject.toml).
from bench import _cli, case_breaker, case_import
from bench._faultserver import GET_BODY, FaultServer
from bench._harness import (
    Contender,
    Row,
    Settings,
    Unsupported,
    bench_async,
    bench_sync,
    ratio,
    render_markdown,
    render_text,
    summary,
)

TINY = Settings(quick=True, number=20, repeat=2, rounds=2, seed=1)


def _unsupported() -> object:
    raise Unsupported("no asyncio support")


def _broken() -> object:
    raise RuntimeError("boom")


def _ok() -> None:
    return None


async def _aok() -> None:
    return None


def test_bench_sync_reports_values_na_and_errors() -> None:
    """Built contenders get a median, unsupported ones n/a, broken ones an error row."""
    rows = bench_sync(
        "case",
        "sync",
        [
            Contender("bare", "baseline", lambda: _ok),
            Contender("us", "us", lambda: _ok),
            Contender("no", "peer", _unsupported),
            Contender("bad", "peer", _broken),
        ],
        TINY,
    )
    by_name = {row.library: row for row in rows}
    assert [row.library for row in rows] == ["bare", "us", "no", "bad"]
    assert by_name["bare"].value is not None
    assert by_name["bare"].value > 0
    assert by_name["no"].value is None
    assert by_name["no"].note == "n/a: no asyncio support"
    assert not by_name["no"].error
    assert by_name["bad"].error
    assert "RuntimeError" in by_name["bad"].note


def test_bench_async_times_awaits_and_accepts_async_builders() -> None:
    """Async contenders may be built inside the loop; each gets a median in ns per call."""

    async def build() -> object:
        await asyncio.sleep(0)
        return _aok

    rows = bench_async(
        "case",
        "async",
        [Contender("plain", "us", lambda: _aok), Contender("built", "peer", build)],
        TINY,
    )
    assert all(row.value is not None and row.value > 0 for row in rows)
    assert {row.unit for row in rows} == {"ns/call"}


def test_failing_calls_are_timed_without_escaping() -> None:
    """failing=True times calls that raise (the fail-fast path) and swallows the error."""
    rows = bench_sync(
        "c", "sync", [Contender("boom", "us", lambda: case_breaker.boom)], TINY, failing=True
    )
    assert rows[0].value is not None
    assert not rows[0].error


def _row(library: str, role: str, value: float | None, better: str = "lower") -> Row:
    return Row(
        case="c",
        variant="v",
        library=library,
        role=role,  # type: ignore[arg-type]  # literal checked by the test data
        value=value,
        unit="ns/call",
        better=better,  # type: ignore[arg-type]  # literal checked by the test data
    )


def test_ratio_divides_by_ours_in_the_same_group() -> None:
    """The ratio column is value / our value in the same case and variant."""
    rows = [_row("us", "us", 100.0), _row("peer", "peer", 350.0), _row("na", "peer", None)]
    assert ratio(rows[1], rows) == pytest.approx(3.5)
    assert ratio(rows[0], rows) == pytest.approx(1.0)
    assert ratio(rows[2], rows) is None


def test_summary_flags_where_we_miss_the_2x_goal() -> None:
    """The summary names the fastest peer and says whether we are 2x better."""
    fast = summary(
        [_row("resilience", "us", 100.0), _row("a", "peer", 250.0), _row("b", "peer", 900.0)]
    )
    slow = summary([_row("resilience (x)", "us", 100.0), _row("a", "peer", 50.0)])
    assert fast == ["c / v: 2.50x the best peer (a) [2x goal met]"]
    assert slow == ["c / v / resilience (x): 0.50x the best peer (a) [WORSE]"]


def test_tables_show_every_row() -> None:
    """Text and markdown tables carry every library, with ours in bold in markdown."""
    rows = [_row("resilience", "us", 100.0), _row("peer", "peer", 300.0), _row("x", "peer", None)]
    text = render_text(rows)
    markdown = render_markdown(rows)
    for name in ("resilience", "peer", "x"):
        assert name in text
        assert name in markdown
    assert "**resilience**" in markdown
    assert "3.00x" in text


def test_one_tiny_case_runs_clean() -> None:
    """The closed-breaker case runs end to end: no contender errors out."""
    settings = Settings(quick=True, number=50, repeat=1, rounds=1, seed=1)
    rows = case_breaker.run_closed(settings)
    assert rows
    assert not [row for row in rows if row.error]
    assert {row.variant for row in rows} == {"sync", "async"}


def test_cli_lists_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m bench --list` names every case of the issue."""
    assert _cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for key in ("breaker-closed", "retry-ok", "policy", "breaker-open", "threads", "stampede"):
        assert key in out
    for key in ("httpx-server", "memory-breakers", "memory-calls", "faults"):
        assert key in out


def test_cli_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one JSON document with the environment and the rows."""
    assert _cli.main(["--quick", "--json", "--only", "breaker-open"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["mode"] == "quick"
    assert "python" in document["environment"]
    assert {row["case"] for row in document["rows"]} == {"breaker open (fail fast)"}


@pytest.mark.network
def test_fault_server_breaks_the_seeded_share_of_responses() -> None:
    """Bare httpx sees exactly the faults the seed decides; the same seed gives the same fates."""
    outcomes = []
    with FaultServer(close=0.2, cut=0.2, seed=7) as server:
        for _ in range(2):
            server.reset()
            ok = 0
            with httpx.Client(trust_env=False) as client:
                for _ in range(50):
                    try:
                        ok += client.get(server.url + "get").content == GET_BODY
                    except httpx.HTTPError:
                        continue
            outcomes.append((ok, server.requests))
    assert outcomes[0] == outcomes[1]
    ok, sent = outcomes[0]
    assert sent == 50
    assert 10 < ok < 45


@pytest.mark.network
def test_fault_server_runs_a_keyed_post_once() -> None:
    """A POST resent with the same Idempotency-Key does not run its side effect again."""
    with FaultServer(close=0.0, cut=0.0, seed=1) as server, httpx.Client(trust_env=False) as c:
        headers = {"x-request-id": "a", "idempotency-key": "k1"}
        c.post(server.url + "post", content=b"{}", headers=headers)
        c.post(server.url + "post", content=b"{}", headers=headers)
        c.post(server.url + "post", content=b"{}", headers={"x-request-id": "b"})
        c.post(server.url + "post", content=b"{}", headers={"x-request-id": "b"})
        assert server.side_effects == {"a": 1, "b": 2}


def test_start_up_rows_give_the_ratio_to_the_bare_interpreter() -> None:
    """The import case times fresh interpreters and notes our ratio to the bare one."""
    snippets: list[case_import.Snippet] = [
        ("python -c pass", "baseline", "pass", "a bare interpreter"),
        ("resilience", "us", "import resilience", ""),
        ("missing", "peer", "import resilience_no_such_peer", ""),
    ]
    rows = case_import.measure_starts(case_import.BREAKER_VARIANT, snippets, runs=2, seed=1)
    bare, ours, missing = rows
    assert bare.value is not None
    assert ours.value is not None
    assert bare.value > 0
    assert ours.note == f"{ours.value / bare.value:.2f}x python -c pass (target <= 4x)"
    assert missing.value is None
    assert missing.error
