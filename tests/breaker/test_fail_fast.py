"""The fail-fast path: an OPEN breaker rejects from the driver, still telling whoever listens."""

from __future__ import annotations

import asyncio
import logging
import pickle

import pytest

from resilience import CircuitBreaker, CircuitOpenError
from resilience.events import CallRejected, Event
from resilience.testing import FakeClock, capture_events


def boom() -> None:
    raise ConnectionError


async def aboom() -> None:
    raise ConnectionError


def tripped(clock: FakeClock, name: str) -> CircuitBreaker:
    breaker = CircuitBreaker(name, consecutive_failures=1, open_duration=30, clock=clock)
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    clock.advance(10)
    return breaker


def test_decorated_rejection_carries_retry_after_and_tells_listeners(clock: FakeClock) -> None:
    """A rejected decorated call raises with retry_after; breaker and global listeners hear it."""
    breaker = tripped(clock, "ff-sync")
    heard: list[Event] = []
    breaker.add_listener(heard.append)
    guarded = breaker(boom)
    with capture_events() as captured, pytest.raises(CircuitOpenError) as info:
        guarded()
    assert (info.value.breaker, info.value.retry_after) == ("ff-sync", pytest.approx(20.0))
    for events in (heard, captured):
        rejected = [e for e in events if isinstance(e, CallRejected)]
        assert [(e.breaker, e.state, e.retry_after) for e in rejected] == [
            ("ff-sync", "open", pytest.approx(20.0))
        ]


def test_async_decorated_rejection_tells_listeners(clock: FakeClock) -> None:
    """The async driver rejects the same way."""
    breaker = CircuitBreaker("ff-async", consecutive_failures=1, open_duration=30, clock=clock)
    guarded = breaker(aboom)
    with pytest.raises(ConnectionError):
        asyncio.run(guarded())
    with capture_events() as captured, pytest.raises(CircuitOpenError) as info:
        asyncio.run(guarded())
    assert info.value.retry_after == pytest.approx(30.0)
    assert [type(e) for e in captured] == [CallRejected]


def test_rejections_reach_the_log_once_debug_is_turned_on(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A quiet log costs no event; turning DEBUG on is seen by the very next rejection."""
    breaker = tripped(clock, "ff-log")
    guarded = breaker(boom)
    quiet = caplog.at_level(logging.WARNING, logger="resilience")
    with quiet, pytest.raises(CircuitOpenError):
        guarded()  # the logger's answer for DEBUG is now cached: no
    assert not [r for r in caplog.records if "call_rejected" in r.getMessage()]
    loud = caplog.at_level(logging.DEBUG, logger="resilience")  # setLevel clears that cache
    with loud, pytest.raises(CircuitOpenError):
        guarded()
    assert [r for r in caplog.records if "call_rejected" in r.getMessage()]


def test_circuit_open_error_keeps_its_data_however_it_was_built() -> None:
    """Keyword or positional, the error has both fields in args, repr and a pickle."""
    for exc in (CircuitOpenError("p", retry_after=1.5), CircuitOpenError("p", 1.5)):
        assert exc.args == ("p", 1.5)
        copy = pickle.loads(pickle.dumps(exc))
        assert (copy.breaker, copy.retry_after, repr(copy)) == (
            "p",
            1.5,
            "CircuitOpenError('p', 1.5)",
        )
    forced = CircuitOpenError("p")
    assert (forced.retry_after, forced.args) == (None, ("p", None))
    assert "forced open" in str(forced)
