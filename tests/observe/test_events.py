"""Events: frozen records of every decision, listeners that cannot break calls, and the log."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from resilience import CircuitBreaker, events
from resilience._observe import _events as internal
from resilience.testing import FakeClock, capture_events

ALL_EVENTS: list[events.Event] = [
    events.CircuitStateChanged(
        breaker="b",
        old_state="closed",
        new_state="open",
        reason="failure_rate",
        calls=10,
        failures=5,
        failure_rate=0.5,
    ),
    events.CallRejected(breaker="b", state="open", retry_after=3.0),
    events.RetryScheduled(name="fetch", attempt=1, wait=0.5, error="ConnectError"),
    events.RetryExhausted(name="fetch", attempts=3, error="ConnectError"),
    events.RetryBudgetExhausted(name="fetch", attempt=2, error="ConnectError"),
    events.BulkheadRejected(name="pool", max_concurrent=4, max_waiting=0),
    events.DeadlineExceededEvent(where="retry wait", seconds=2.0),
    events.FallbackUsed(name="fetch", error="ConnectError"),
    events.EndpointEjected(name="payments", endpoint="http://10.0.0.5:80", ejections=1),
    events.EndpointReturned(name="payments", endpoint="http://10.0.0.5:80", ejected_for=30.0),
    events.UpstreamEndpointsChanged(name="payments", added=1, removed=0, endpoints=3),
    events.UpstreamResolveFailed(name="payments", error="OSError", endpoints=2),
]


@pytest.fixture
def structlog_configured() -> Iterator[None]:
    """An application that configured structlog (reset afterwards)."""
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    yield
    structlog.reset_defaults()


@pytest.fixture
def listen() -> Iterator[list[events.Event]]:
    """Every event emitted during the test (the module name `events` is taken here)."""
    with capture_events() as captured:
        yield captured


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_events_are_frozen_with_a_name(event: events.Event) -> None:
    """Every event is a frozen dataclass with a dotted event name and plain-value fields."""
    assert dataclasses.is_dataclass(event)
    assert "." in event.event
    first = dataclasses.fields(event)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, first, None)
    for value in event.as_dict().values():
        assert value is None or type(value) in (str, int, float, bool)


def test_trip_event_carries_the_window_numbers(
    listen: list[events.Event], clock: FakeClock
) -> None:
    """A trip reports the failure rate and the window that decided it."""
    breaker = CircuitBreaker("ev-trip", failure_rate=0.5, window=4, minimum_calls=4, clock=clock)

    def fail() -> None:
        raise ConnectionError

    for _ in range(2):
        breaker.call(lambda: None)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(fail)
    trips = [e for e in listen if isinstance(e, events.CircuitStateChanged)]
    assert len(trips) == 1
    trip = trips[0]
    assert (trip.breaker, trip.old_state, trip.new_state) == ("ev-trip", "closed", "open")
    assert (trip.calls, trip.failures, trip.failure_rate) == (4, 2, 0.5)


def test_process_wide_and_per_breaker_listeners(listen: list[events.Event]) -> None:
    """A breaker's own listeners and the process-wide ones both get its events."""
    own: list[events.Event] = []
    listener = own.append  # one object: a breaker removes listeners by identity
    breaker = CircuitBreaker("ev-local")
    breaker.add_listener(listener)
    breaker.force_open()
    breaker.remove_listener(listener)
    breaker.reset()
    assert [e.new_state for e in own if isinstance(e, events.CircuitStateChanged)] == [
        "forced_open"
    ]
    mine = [
        e for e in listen if isinstance(e, events.CircuitStateChanged) and e.breaker == "ev-local"
    ]
    assert [e.new_state for e in mine] == ["forced_open", "closed"]


def test_removed_listener_is_not_called() -> None:
    """remove_listener stops the calls; removing an unknown listener is harmless."""
    seen: list[events.Event] = []
    events.add_listener(seen.append)
    events.remove_listener(seen.append)
    events.remove_listener(seen.append)
    internal.emit(ALL_EVENTS[0])
    assert seen == []


def test_raising_listener_is_logged_and_never_breaks_the_call(
    caplog: pytest.LogCaptureFixture, listen: list[events.Event]
) -> None:
    """A listener that raises is logged on `resilience`; the call and other listeners go on."""

    def broken(event: events.Event) -> None:
        raise RuntimeError("listener bug")

    breaker = CircuitBreaker("ev-broken", consecutive_failures=1)
    breaker.add_listener(broken)
    events.add_listener(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="resilience"):
            breaker.force_open()
            assert breaker.call_async is not None
            breaker.reset()
            assert breaker.call(lambda: 42) == 42
    finally:
        events.remove_listener(broken)
    failures = [
        r for r in caplog.records if getattr(r, "resilience_event", "") == "listener.failed"
    ]
    assert len(failures) == 4  # two events, each to the breaker's and the global listener
    assert failures[0].exc_info is not None
    assert [e.new_state for e in listen if isinstance(e, events.CircuitStateChanged)] == [
        "forced_open",
        "closed",
    ]


class BrokenSink:
    """A sink that raises on every event."""

    name = "broken"

    def wants(self, level: int) -> bool:
        return True

    def send(self, event: events.Event) -> None:
        raise RuntimeError("backend bug")


def test_failing_sink_is_logged_and_never_breaks_the_call(
    caplog: pytest.LogCaptureFixture, listen: list[events.Event]
) -> None:
    """A sink that raises is logged by name; listeners and the other sinks still get the event."""
    broken = BrokenSink()
    internal.add_sink(broken)
    internal.add_sink(broken)  # added once only
    try:
        with caplog.at_level(logging.DEBUG, logger="resilience"):
            internal.emit(ALL_EVENTS[0])
    finally:
        internal.remove_sink(broken)
    assert listen == [ALL_EVENTS[0]]
    failures = [
        r for r in caplog.records if getattr(r, "resilience_event", "") == "listener.failed"
    ]
    assert [r.resilience["part"] for r in failures] == ["broken"]  # type: ignore[attr-defined]
    logged = [
        r
        for r in caplog.records
        if getattr(r, "resilience_event", "") == "circuit_breaker.state_changed"
    ]
    assert len(logged) == 1  # the log sink, registered before, still logged the event
    assert broken not in internal._sinks


def test_wanted_asks_listeners_then_sinks(caplog: pytest.LogCaptureFixture) -> None:
    """An event is wanted when a listener or a sink would take it, and not otherwise."""
    with caplog.at_level(logging.WARNING, logger="resilience"):
        assert not internal.wanted(logging.DEBUG)  # quiet log, no SDK, no listener
        assert internal.wanted(logging.DEBUG, (print,))
        assert internal.wanted(logging.WARNING)  # the log sink takes warnings now
        broken = BrokenSink()
        internal.add_sink(broken)
        try:
            assert internal.wanted(logging.DEBUG)
        finally:
            internal.remove_sink(broken)


def test_faulty_structlog_processor_never_breaks_the_call() -> None:
    """A structlog processor that raises does not reach the caller."""

    def broken(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        raise RuntimeError("processor bug")

    structlog.configure(processors=[broken])
    try:
        internal.emit(ALL_EVENTS[0])
    finally:
        structlog.reset_defaults()


@pytest.mark.usefixtures("structlog_configured")
@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_structlog_gets_event_name_level_and_keys(event: events.Event) -> None:
    """With structlog configured, each event is logged under its name with structured keys."""
    with capture_logs() as logs:
        internal.emit(event)
    assert len(logs) == 1
    entry = logs[0]
    assert entry["event"] == event.event
    assert entry["log_level"] == logging.getLevelName(event.level).lower()
    expected = event.as_dict()
    if "name" in expected:
        expected[event.event.partition(".")[0]] = expected.pop("name")
    assert {k: entry[k] for k in expected} == expected


@pytest.mark.usefixtures("structlog_configured")
def test_api_md_keys_for_state_changes_and_retries() -> None:
    """state_changed has breaker/old_state/new_state; retry.scheduled has attempt/wait/error."""
    with capture_logs() as logs:
        internal.emit(ALL_EVENTS[0])
        internal.emit(ALL_EVENTS[2])
    assert {"breaker", "old_state", "new_state"} <= set(logs[0])
    assert {"attempt", "wait", "error", "retry"} <= set(logs[1])


def test_unconfigured_goes_to_stdlib_logger_silently(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without structlog configuration events go to stdlib `resilience`, which prints nothing."""
    assert not structlog.is_configured()
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("resilience").handlers)
    with caplog.at_level(logging.DEBUG, logger="resilience"):
        internal.emit(ALL_EVENTS[2])
    record = caplog.records[-1]
    assert record.name == "resilience"
    assert record.levelno == events.RetryScheduled.level
    assert record.resilience_event == "retry.scheduled"  # type: ignore[attr-defined]
    assert record.resilience["attempt"] == 1  # type: ignore[attr-defined]
    assert "retry.scheduled" in record.getMessage()
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", "")


def test_below_level_builds_no_log_record(caplog: pytest.LogCaptureFixture) -> None:
    """A DEBUG event is not formatted when the stdlib logger is at INFO."""
    with caplog.at_level(logging.INFO, logger="resilience"):
        internal.emit(ALL_EVENTS[1])  # CallRejected is DEBUG
    assert not [r for r in caplog.records if r.name == "resilience"]


def test_error_name_is_the_type_only() -> None:
    """error_name gives the exception type, never its message."""
    assert internal.error_name(ValueError("password=hunter2")) == "ValueError"


def test_listeners_change_while_events_flow() -> None:
    """Adding and removing listeners from many threads while emitting loses no listener call."""
    stop = threading.Event()
    steady: list[events.Event] = []
    events.add_listener(steady.append)
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                seen: list[events.Event] = []
                events.add_listener(seen.append)
                events.remove_listener(seen.append)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def emitter() -> None:
        for _ in range(500):
            internal.emit(ALL_EVENTS[1])

    churners = [threading.Thread(target=churn) for _ in range(4)]
    emitters = [threading.Thread(target=emitter) for _ in range(8)]
    try:
        for t in churners + emitters:
            t.start()
        for t in emitters:
            t.join()
    finally:
        stop.set()
        for t in churners:
            t.join()
        events.remove_listener(steady.append)
    assert errors == []
    assert len(steady) == 8 * 500
    assert events.add_listener not in internal._listeners  # nothing stray left behind
    assert all(getattr(x, "__self__", None) is not steady for x in internal._listeners)


def test_capture_events_collects_from_every_thread_and_stops_after() -> None:
    """capture_events gets each event once, from any thread, and nothing after the block."""
    before = internal._listeners

    def emit_many() -> None:
        for _ in range(200):
            internal.emit(ALL_EVENTS[1])

    with capture_events() as captured:
        threads = [threading.Thread(target=emit_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        internal.emit(ALL_EVENTS[0])
    internal.emit(ALL_EVENTS[2])
    assert len(captured) == 4 * 200 + 1
    assert captured[-1] is ALL_EVENTS[0]
    assert ALL_EVENTS[2] not in captured
    assert internal._listeners == before  # the listener left with the block


def test_capture_events_leaves_on_error() -> None:
    """An exception inside the block still removes the listener."""
    before = internal._listeners
    with pytest.raises(RuntimeError), capture_events():
        raise RuntimeError
    assert internal._listeners == before
