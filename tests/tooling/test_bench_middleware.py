"""Smoke tests of the bench's middleware case, and of writing one case's tables into the docs."""

from __future__ import annotations

import pytest

from bench import case_middleware
from bench._cli import SPEED_HEADING, merge_report
from bench._harness import Row, Settings

TINY = Settings(quick=True, number=20, repeat=1, rounds=1, seed=1)


@pytest.mark.parametrize("kind", ["asgi", "fastapi"])
def test_asgi_contenders_answer_and_get_a_figure(kind: str) -> None:
    """Every ASGI contender answers 200 "ok" in process and gets a figure, ours a note."""
    rows = case_middleware.run_asgi(TINY, kind)
    assert [r.error for r in rows] == [False] * 5
    assert all(r.value is not None and r.value > 0 for r in rows)
    assert all("ns over bare" in r.note for r in rows if r.role == "us")


@pytest.mark.parametrize("kind", ["wsgi", "flask"])
def test_wsgi_contenders_answer_and_get_a_figure(kind: str) -> None:
    """Every WSGI contender answers 200 "ok" in process and gets a figure, ours a note."""
    rows = case_middleware.run_wsgi(TINY, kind)
    assert [r.error for r in rows] == [False] * 5
    assert all(r.value is not None and r.value > 0 for r in rows)
    assert all("ns over bare" in r.note for r in rows if r.role == "us")


@pytest.mark.network
def test_servers_answer_through_the_plain_client() -> None:
    """Both servers of one variant answer the plain-socket client (kept alive or not)."""
    rows = case_middleware.run_servers(TINY)
    assert rows
    assert not [r.note for r in rows if r.error]


def _row(case: str, value: float) -> Row:
    return Row(
        case=case,
        variant="v",
        library="resilience",
        role="us",
        value=value,
        unit="ns/call",
        better="lower",
    )


def test_one_case_replaces_its_own_tables_and_keeps_the_others() -> None:
    """`--only X --update-docs`: X's table and summary lines change, nothing else does."""
    speed = "- kept / v: 1.00x the best peer (x) [even]\n- mine / v: 1.00x the best peer (x)"
    old = "\n\n".join(
        [
            "Latest full run, 400 s:\n\n- **date**: then",
            "#### kept (ns/call, lower is better)\n\n| kept table |",
            "#### mine (ns/call, lower is better)\n\n| old table |",
            SPEED_HEADING,
            speed,
        ]
    )
    new = merge_report(old, "full", {"date": "now", "commit": "abc"}, [_row("mine", 5.0)])
    assert "| kept table |" in new
    assert "- kept / v:" in new
    assert "| old table |" not in new
    assert "- mine / v:" not in new  # no peer in the new run: no summary line for it
    assert new.count("#### mine (") == 1
    assert "**date**: then" in new
    assert merge_report(new, "full", {"date": "now", "commit": "abc"}, [_row("mine", 5.0)]) == new
    added = merge_report(old, "full", {}, [_row("fresh", 1.0)])
    assert added.index("#### fresh (") < added.index(SPEED_HEADING)
    assert "| old table |" in added
