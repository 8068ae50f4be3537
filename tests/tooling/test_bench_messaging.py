"""The messaging bench case's plumbing (the case itself runs in CI's `python -m bench --quick`)."""

from __future__ import annotations

import pytest

from bench import case_messaging
from bench._harness import Settings

TINY = Settings(quick=True, number=20, repeat=2, rounds=1, seed=1)


def test_without_the_services_the_case_says_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RabbitMQ (or no Redis): one n/a row, no error, nothing started."""
    monkeypatch.setattr(case_messaging, "_listening", lambda port: port != 5672)
    [row] = case_messaging.run(TINY)
    assert row.value is None
    assert row.note == "n/a: no RabbitMQ on 127.0.0.1:5672"
    assert not row.error


def test_campaign_rows_report_each_figure() -> None:
    """Ours get lost / twice / dead-lettered rows; the poison row wants all poison dead."""
    outcome = case_messaging.Outcome(published=1000, poison={"a", "b"}, cuts=4, kills=2)
    outcome.dead_poison = 2
    outcome.counts = {"duplicate": 17}
    rows = case_messaging._campaign_rows("resilience", outcome)
    figures = {row.case.rsplit(": ", 1)[1]: row for row in rows}
    assert set(figures) == {
        "lost",
        "effects run twice",
        "dead-lettered, not poison",
        "dead-lettered, poison",
    }
    assert figures["dead-lettered, poison"].better == "higher"
    assert figures["dead-lettered, poison"].value == 2
    assert figures["effects run twice"].note == "17 redeliveries skipped as duplicates"
    assert figures["lost"].note.startswith("4 cuts, 2 SIGKILLs")
    bare = case_messaging._campaign_rows("bare", outcome)
    assert [row.role for row in bare] == ["baseline", "baseline"]
