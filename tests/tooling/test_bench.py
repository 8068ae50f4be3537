"""Smoke tests of the benchmark harness (bench/); CI also runs `python -m bench --quick`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import httpx
import pytest

# bench/ is a top-level folder of the repository, not part of the installed package; pytest
# puts the root on sys.path (pythonpath in pyproject.toml).
from bench import _cli, case_breaker, case_import
from bench._faultserver import GET_BODY, FaultServer
from bench._harness import (
    Case,
    Change,
    Contender,
    Row,
    Settings,
    Unsupported,
    bench_async,
    bench_sync,
    compare,
    ratio,
    render_comparison,
    render_markdown,
    render_text,
    rows_from_document,
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


def _fake_run(values: dict[str, float | None]) -> list[Row]:
    """A tiny run: one row per library of one case, with a req/s row where higher is better."""
    rows = [_row(library, "us" if library == "us" else "peer", v) for library, v in values.items()]
    return [*rows, _row("throughput", "us", 1000.0, better="higher")]


def test_compare_matches_rows_and_gives_each_its_ratio_to_the_saved_run() -> None:
    """Rows are matched by case, library and variant; the factor is now / saved."""
    saved = _fake_run({"us": 100.0, "peer": 400.0, "gone": 5.0})
    now = _fake_run({"peer": 400.0, "us": 150.0, "fresh": 7.0})
    changes = {c.row.library: c for c in compare(now, saved)}
    assert changes["us"].factor == pytest.approx(1.5)
    assert changes["peer"].factor == pytest.approx(1.0)
    assert changes["fresh"].base is None
    assert changes["fresh"].verdict(0.2) == "new"
    assert "gone" not in changes  # a row this run did not measure is not reported


def test_verdict_follows_which_way_is_better_and_the_tolerance() -> None:
    """Slower is WORSE for ns/call, lower is WORSE for req/s; small moves get no verdict."""
    base = _row("us", "us", 100.0)
    assert Change(_row("us", "us", 150.0), base).verdict(0.2) == "WORSE"
    assert Change(_row("us", "us", 150.0), base).verdict(0.6) == ""
    assert Change(_row("us", "us", 70.0), base).verdict(0.2) == "better"
    high = _row("rps", "us", 1000.0, better="higher")
    assert Change(_row("rps", "us", 700.0, better="higher"), high).verdict(0.2) == "WORSE"
    assert Change(_row("rps", "us", 1300.0, better="higher"), high).verdict(0.2) == "better"
    assert Change(_row("us", "us", None), base).verdict(0.2) == "n/a"


def test_rows_survive_a_round_trip_through_the_saved_document() -> None:
    """What --save writes reads back as the same rows (the extra ratio field is ignored)."""
    rows = _fake_run({"us": 100.0, "peer": None})
    document = json.loads(
        json.dumps({"rows": [{**dataclasses.asdict(r), "ratio_to_ours": 1.0} for r in rows]})
    )
    assert rows_from_document(document) == rows
    with pytest.raises(ValueError, match="not a saved bench run"):
        rows_from_document({"no": "rows"})


def test_comparison_table_shows_saved_now_and_ratio() -> None:
    """The comparison table carries both figures, the ratio and the verdict."""
    text = render_comparison(compare(_fake_run({"us": 150.0}), _fake_run({"us": 100.0})))
    assert "now ÷ saved" in text
    assert "100" in text
    assert "150" in text
    assert "1.50x" in text
    assert "WORSE" in text


def test_cli_saves_a_run_and_compares_the_next_one_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--save writes a run; --compare prints each row's ratio to it (two tiny fake runs)."""
    runs = iter([_fake_run({"us": 100.0, "peer": 300.0}), _fake_run({"us": 200.0, "peer": 300.0})])
    monkeypatch.setattr(_cli, "CASES", [Case("fake", "a fake case", lambda _: next(runs))])
    saved = tmp_path / "base.json"
    assert _cli.main(["--quick", "--save", str(saved)]) == 0
    assert rows_from_document(json.loads(saved.read_text()))[0].value == 100.0
    capsys.readouterr()
    assert _cli.main(["--quick", "--compare", str(saved)]) == 0  # a regression is no error
    out = capsys.readouterr().out
    comparison = out[out.index("Against the saved run") :]
    us_line = next(line for line in comparison.splitlines() if line.split()[:2] == ["v", "us"])
    assert us_line.split()[2:] == ["100", "200", "2.00x", "WORSE"]
    assert "1.00x" in comparison


def test_cli_compare_with_json_keeps_stdout_a_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --json, the comparison goes to stderr and stdout stays one JSON document."""
    monkeypatch.setattr(
        _cli, "CASES", [Case("fake", "a fake case", lambda _: _fake_run({"us": 1.0}))]
    )
    saved = tmp_path / "base.json"
    assert _cli.main(["--quick", "--json", "--save", str(saved)]) == 0
    capsys.readouterr()
    assert _cli.main(["--quick", "--json", "--compare", str(saved)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["mode"] == "quick"
    assert "now ÷ saved" in captured.err


def test_cli_compare_with_an_unreadable_file_stops_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing or foreign --compare file is a clear error, and no case runs."""
    ran: list[Settings] = []

    def run(settings: Settings) -> list[Row]:
        ran.append(settings)
        return []

    monkeypatch.setattr(_cli, "CASES", [Case("fake", "fake", run)])
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"not": "a run"}')
    for path in (tmp_path / "missing.json", foreign):
        with pytest.raises(SystemExit, match="--compare"):
            _cli.main(["--quick", "--compare", str(path)])
    assert ran == []


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
