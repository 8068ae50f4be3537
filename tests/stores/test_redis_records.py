"""Values read from Redis are validated before use (resilience/_redis_records.py): pure tests."""

from __future__ import annotations

import logging

import pytest

from resilience._stores._records import (
    EPOCH_SLACK_MS,
    BadRecord,
    FleetState,
    ProblemLog,
    Window,
    budget_window,
    fleet_state,
    message_name,
    open_seconds,
    peer_window,
    script_reply,
    uint,
)

NOW = 1_700_000_000_000  # Redis time in ms


@pytest.mark.parametrize("raw", [b"0", b"7", b"1700000000000", 0, 12])
def test_uint_accepts_what_we_write(raw: object) -> None:
    """ASCII digits (and a script's integers) parse to the same number."""
    assert uint(raw, "x") == int(raw)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"-1",
        b"+1",
        b" 1",
        b"1_000",
        b"1e9",
        b"1.5",
        b"inf",
        b"nan",
        "\u0661".encode(),  # an Arabic-Indic digit: str.isdigit() says yes, bytes do not
        b"9" * 17,
        -1,
        True,
        1.0,
        None,
        "7",
    ],
)
def test_uint_rejects_anything_else(raw: object) -> None:
    """Signs, exponents, floats, non-ASCII digits, huge values and other types are rejected."""
    with pytest.raises(BadRecord) as caught:
        uint(raw, "calls")
    assert caught.value.what == "calls"


def test_uint_limit() -> None:
    """A value above the limit is rejected."""
    assert uint(b"20", "calls", limit=20) == 20
    with pytest.raises(BadRecord):
        uint(b"21", "calls", limit=20)


def test_fleet_state_parses_a_sane_hash() -> None:
    """state, epoch and until come back typed; missing fields mean CLOSED at epoch 0."""
    fields = {b"state": b"open", b"epoch": str(NOW).encode(), b"until": str(NOW + 5).encode()}
    assert fleet_state(fields, NOW) == FleetState("open", NOW, NOW + 5)
    assert fleet_state({b"w:1": b"junk"}, NOW) == FleetState("closed", 0, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (b"state", b"half_open"),  # derived, never written
        (b"state", b"melted"),
        (b"epoch", b"not-a-number"),
        (b"epoch", b"-5"),
        (b"epoch", str(NOW + EPOCH_SLACK_MS + 1).encode()),  # from the future
        (b"until", b"inf"),
    ],
)
def test_fleet_state_rejects_what_we_never_write(field: bytes, value: bytes) -> None:
    """Unknown states, garbage numbers and epochs ahead of Redis's clock are rejected."""
    fields = {b"state": b"open", b"epoch": str(NOW).encode(), b"until": str(NOW).encode()}
    fields[field] = value
    with pytest.raises(BadRecord) as caught:
        fleet_state(fields, NOW)
    assert caught.value.what == field.decode()


def test_fleet_state_allows_an_epoch_slightly_ahead() -> None:
    """Epochs bumped within one millisecond run a little ahead of the clock: accepted."""
    assert fleet_state({b"epoch": str(NOW + 3).encode()}, NOW).epoch == NOW + 3


def test_peer_window_parses_and_filters_by_epoch() -> None:
    """A peer's window counts only under the current epoch."""
    assert peer_window(b"9:10:4:1:2:77", 9, 100) == Window(10, 4, 1, 2)
    assert peer_window(b"8:10:4:1:2:77", 9, 100) is None


@pytest.mark.parametrize(
    "value",
    [
        b"9:-1000000:0:0:0:1",  # negative calls: would keep a breaker closed for ever
        b"9:10:11:0:0:1",  # more failures than calls
        b"9:10:0:11:0:1",  # more slow calls than calls
        b"9:10:4:1:2",  # a field short
        b"9:10:4:1:2:3:4",
        b"a:b:c:d:e:f",
        b"9:10:4:1:2:x",
    ],
)
def test_peer_window_rejects_impossible_windows(value: bytes) -> None:
    """Negative, inconsistent or malformed windows are rejected, one field at a time."""
    with pytest.raises(BadRecord, match="peer window"):
        peer_window(value, 9, 100)


def test_peer_window_is_capped_by_the_window_size() -> None:
    """No peer outweighs the window: counts are capped at what this breaker's window holds."""
    assert peer_window(b"9:1000000:0:0:0:1", 9, 20) == Window(20, 0, 0, 0)
    assert peer_window(b"9:1000:1000:0:500:1", 9, 20) == Window(20, 20, 0, 20)


def test_budget_window() -> None:
    """A retry budget's "calls:retries:version" parses; anything else is rejected."""
    assert budget_window(b"100:3:1") == (100, 3)
    for bad in (b"100:-3:1", b"100:3", b"x:y:z"):
        with pytest.raises(BadRecord):
            budget_window(bad)


def test_script_reply() -> None:
    """Script replies are typed; epoch -1 means "unusable state"; other values are rejected."""
    assert script_reply(b"closed", NOW, 0) == ("closed", NOW, 0)
    assert script_reply(b"open", -1, -20) == ("open", -1, -20)
    for bad in ((b"weird", 1, 0), (b"open", -2, 0), (b"open", 1, True), (b"open", 1, 1.5)):
        with pytest.raises(BadRecord):
            script_reply(*bad)


def test_message_name() -> None:
    """Only the breaker's name is taken from a pub/sub message; garbage gives None."""
    assert message_name(b"open 99999999999999 inf payments") == "payments"
    assert message_name(b"closed 1 0 name with spaces") == "name with spaces"
    for bad in (b"hello", b"a b c", b"a b c ", b"a b c \xff", "str"):
        assert message_name(bad) is None


def test_open_seconds_is_capped_by_open_duration() -> None:
    """Remaining open time from Redis never exceeds the breaker's own open_duration."""
    assert open_seconds(float("inf"), 30.0) == 30.0
    assert open_seconds(1e15, 30.0) == 30.0
    assert open_seconds(float("nan"), 30.0) == 0.0
    assert open_seconds(-1.0, 30.0) == 0.0
    assert open_seconds(2500.0, 30.0) == 2.5


def test_problem_log_reports_once_per_key_then_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first problem of a key is a WARNING; repeats within a minute are DEBUG."""
    problems = ProblemLog(logging.getLogger("resilience"))
    with caplog.at_level(logging.DEBUG, logger="resilience"):
        for _ in range(5):
            problems.report("app:", "payments", "epoch")
        problems.report("app:", "orders", "epoch")
        problems.report("app:", "payments", "peer window")
    levels = [
        (record.levelname, record.args[1:] if isinstance(record.args, tuple) else ())
        for record in caplog.records
    ]
    warnings = [args for level, args in levels if level == "WARNING"]
    assert warnings == [("epoch", "payments"), ("epoch", "orders"), ("peer window", "payments")]
    assert sum(level == "DEBUG" for level, _ in levels) == 4
