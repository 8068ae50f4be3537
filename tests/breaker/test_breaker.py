"""Behaviour of CircuitBreaker with a fake clock: windows, states, settings, errors."""

from __future__ import annotations

import asyncio
import functools
import inspect
from datetime import timedelta
from typing import Any

import pytest

import resilience
from resilience import CircuitBreaker, CircuitOpenError, CircuitState, ConfigError
from resilience._observe._events import CircuitStateChanged, Event
from resilience.testing import FakeClock


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


def run_failures(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            breaker.call(fail)


def run_successes(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        assert breaker.call(ok) == "ok"


# ---------------------------------------------------------------- count window and rates


def test_opens_when_failure_rate_reaches_threshold(clock: FakeClock) -> None:
    """With 10 calls in the window and half failed, the breaker opens."""
    b = CircuitBreaker("rate", failure_rate=0.5, window=10, minimum_calls=10, clock=clock)
    run_successes(b, 5)
    run_failures(b, 4)
    assert b.state is CircuitState.CLOSED
    run_failures(b, 1)
    assert b.state is CircuitState.OPEN


def test_no_decision_before_minimum_calls(clock: FakeClock) -> None:
    """Failures below minimum_calls never open the breaker, whatever the rate."""
    b = CircuitBreaker("min", minimum_calls=5, clock=clock)
    run_failures(b, 4)
    assert b.state is CircuitState.CLOSED
    run_failures(b, 1)
    assert b.state is CircuitState.OPEN


def test_count_window_forgets_old_failures(clock: FakeClock) -> None:
    """Only the last `window` calls count: old failures slide out."""
    b = CircuitBreaker("slide", failure_rate=0.5, window=4, minimum_calls=4, clock=clock)
    run_failures(b, 1)
    run_successes(b, 3)
    m = b.metrics()
    assert (m.calls, m.failures) == (4, 1)
    run_successes(b, 1)
    m = b.metrics()
    assert (m.calls, m.failures, m.failure_rate) == (4, 0, 0.0)


def test_minimum_calls_is_capped_by_count_window(clock: FakeClock) -> None:
    """A count window smaller than minimum_calls still decides once full."""
    b = CircuitBreaker("cap", window=3, minimum_calls=10, clock=clock)
    run_failures(b, 3)
    assert b.state is CircuitState.OPEN


def test_consecutive_failures_mode(clock: FakeClock) -> None:
    """consecutive_failures opens after N failures in a row; a success resets the run."""
    b = CircuitBreaker("consec", consecutive_failures=3, clock=clock)
    run_failures(b, 2)
    run_successes(b, 1)
    run_failures(b, 2)
    assert b.state is CircuitState.CLOSED
    assert b.metrics().consecutive_failures == 2
    run_failures(b, 1)
    assert b.state is CircuitState.OPEN


@pytest.mark.parametrize("window", [{"window": 10}, {"window_seconds": 60}], ids=["count", "time"])
def test_both_triggers_open_on_the_rate(clock: FakeClock, window: dict[str, float]) -> None:
    """consecutive_failures with an explicit failure_rate: the rate alone can open it."""
    b = CircuitBreaker(
        "both-rate",
        consecutive_failures=3,
        failure_rate=0.5,
        minimum_calls=4,
        clock=clock,
        **window,  # type: ignore[arg-type]
    )
    for _ in range(2):
        run_failures(b, 1)
        run_successes(b, 1)
        assert b.metrics().consecutive_failures == 0
    assert b.state is CircuitState.OPEN  # 2 of 4 failed, never 2 in a row


def test_both_triggers_rate_counts_only_the_window(clock: FakeClock) -> None:
    """A run longer than the window is kept, but the rate still covers the last `window` calls."""
    b = CircuitBreaker(
        "both-window", consecutive_failures=4, failure_rate=1.0, window=2, clock=clock
    )
    run_successes(b, 1)
    run_failures(b, 1)
    assert b.metrics().calls == 2
    run_failures(b, 1)  # the last 2 calls both failed
    assert b.state is CircuitState.OPEN


def test_both_triggers_open_on_the_run_before_minimum_calls(clock: FakeClock) -> None:
    """consecutive_failures with an explicit failure_rate: a run opens it before minimum_calls."""
    b = CircuitBreaker(
        "both-run", consecutive_failures=2, failure_rate=0.9, minimum_calls=50, clock=clock
    )
    run_successes(b, 5)
    run_failures(b, 2)
    assert b.state is CircuitState.OPEN


def test_consecutive_alone_ignores_the_default_rate(clock: FakeClock) -> None:
    """consecutive_failures without failure_rate keeps its meaning: no rate decision at all."""
    b = CircuitBreaker("consec-only", consecutive_failures=3, minimum_calls=4, clock=clock)
    for _ in range(20):
        run_failures(b, 2)
        run_successes(b, 1)
    assert b.state is CircuitState.CLOSED
    assert b.metrics().failure_rate > 0.5
    assert b.config.failure_rate_explicit is False


def test_both_triggers_survive_clone_and_judge_probes_by_the_rate(clock: FakeClock) -> None:
    """A clone keeps both triggers; in HALF_OPEN the probes' failure rate decides, not one probe."""
    template = CircuitBreaker(
        "both-tmpl",
        consecutive_failures=5,
        failure_rate=0.5,
        minimum_calls=2,
        half_open_calls=4,
        clock=clock,
    )
    twin = template.clone("both-tmpl:host")
    assert twin.config.failure_rate_explicit is True
    run_failures(twin, 1)
    run_successes(twin, 1)
    assert twin.state is CircuitState.OPEN
    clock.advance(30)
    run_successes(twin, 3)
    run_failures(twin, 1)  # 1 of 4 probes failed: 25 % < 50 %
    assert twin.state is CircuitState.CLOSED
    run_failures(twin, 2)
    assert twin.state is CircuitState.OPEN  # a fresh window: 2 of 2 calls failed
    clock.advance(30)
    run_successes(twin, 2)
    run_failures(twin, 2)  # 2 of 4 probes failed: the rate is reached
    assert twin.state is CircuitState.OPEN


def test_consecutive_longer_than_window(clock: FakeClock) -> None:
    """A run longer than the count window is still seen."""
    b = CircuitBreaker("consec-long", consecutive_failures=8, window=5, clock=clock)
    run_failures(b, 7)
    assert b.state is CircuitState.CLOSED
    run_failures(b, 1)
    assert b.state is CircuitState.OPEN


def test_slow_calls_open_the_breaker(clock: FakeClock) -> None:
    """Calls slower than slow_call_duration count as slow and can open the breaker."""
    b = CircuitBreaker(
        "slow", slow_call_duration=1.0, slow_call_rate=0.5, window=4, minimum_calls=4, clock=clock
    )

    def slow() -> str:
        clock.advance(2.0)
        return "late"

    for _ in range(2):
        assert b.call(ok) == "ok"
    assert b.call(slow) == "late"
    assert b.state is CircuitState.CLOSED
    assert b.call(slow) == "late"
    assert b.state is CircuitState.OPEN
    assert b.metrics().slow_calls == 2


def test_slow_failures_count_both(clock: FakeClock) -> None:
    """A slow failure counts as a failure and as a slow call."""
    b = CircuitBreaker("slowfail", slow_call_duration=1.0, window=10, minimum_calls=10, clock=clock)

    def slow_fail() -> None:
        clock.advance(1.5)
        raise Boom

    with pytest.raises(Boom):
        b.call(slow_fail)
    m = b.metrics()
    assert (m.calls, m.failures, m.slow_calls) == (1, 1, 1)


# ---------------------------------------------------------------- time window


def test_time_window_expires_old_calls(clock: FakeClock) -> None:
    """Calls older than window_seconds leave the window without any new call."""
    b = CircuitBreaker("tw", window_seconds=10, minimum_calls=1, failure_rate=1.0, clock=clock)
    run_successes(b, 3)
    clock.advance(5)
    run_successes(b, 2)
    assert b.metrics().calls == 5
    clock.advance(6)
    assert b.metrics().calls == 2
    clock.advance(10)
    assert b.metrics().calls == 0


def test_time_window_opens_on_rate(clock: FakeClock) -> None:
    """A time window opens once the failure share of recent calls reaches the rate."""
    b = CircuitBreaker(
        "tw-rate", window_seconds=timedelta(seconds=30), minimum_calls=4, clock=clock
    )
    run_successes(b, 2)
    run_failures(b, 1)
    assert b.state is CircuitState.CLOSED
    run_failures(b, 1)
    assert b.state is CircuitState.OPEN


def test_time_window_old_successes_expire_before_failures(clock: FakeClock) -> None:
    """After old successes expire, a few recent failures are the whole window."""
    b = CircuitBreaker("tw-expire", window_seconds=10, minimum_calls=2, clock=clock)
    run_successes(b, 50)
    clock.advance(9)
    run_failures(b, 1)
    assert b.state is CircuitState.CLOSED
    clock.advance(2)  # the 50 successes are now older than 10 s
    run_failures(b, 1)
    assert b.state is CircuitState.OPEN


def test_time_window_memory_is_bounded(clock: FakeClock) -> None:
    """A time window keeps a fixed number of buckets however many calls it sees."""
    b = CircuitBreaker("tw-mem", window_seconds=60, clock=clock)
    window = b._machine.window
    for _ in range(5_000):
        clock.advance(0.01)
        b.call(ok)
    assert len(window._bucket_calls) == 60  # type: ignore[union-attr]
    assert b.metrics().calls == 5_000


# ---------------------------------------------------------------- open and half-open


def test_open_rejects_without_calling(clock: FakeClock) -> None:
    """OPEN raises CircuitOpenError at once and never calls the function."""
    b = CircuitBreaker("open", consecutive_failures=1, open_duration=30, clock=clock)
    run_failures(b, 1)
    calls: list[int] = []
    clock.advance(12)
    with pytest.raises(CircuitOpenError) as info:
        b.call(calls.append, 1)
    assert calls == []
    assert info.value.breaker == "open"
    assert info.value.retry_after == pytest.approx(18.0)


def test_open_moves_to_half_open_after_open_duration(clock: FakeClock) -> None:
    """Reading state after open_duration moves OPEN to HALF_OPEN (no timer thread)."""
    b = CircuitBreaker("ho", consecutive_failures=1, open_duration=5, clock=clock)
    run_failures(b, 1)
    clock.advance(4.999)
    assert b.state is CircuitState.OPEN
    clock.advance(0.001)
    assert b.state is CircuitState.HALF_OPEN


def test_half_open_success_closes_with_empty_window(clock: FakeClock) -> None:
    """A successful probe closes the breaker and empties the window."""
    b = CircuitBreaker("close", consecutive_failures=2, open_duration=1, clock=clock)
    run_failures(b, 2)
    clock.advance(1)
    run_successes(b, 1)
    assert b.state is CircuitState.CLOSED
    m = b.metrics()
    assert (m.calls, m.failures, m.consecutive_failures) == (0, 0, 0)


def test_half_open_failure_reopens(clock: FakeClock) -> None:
    """A failed probe opens the breaker again for a full open_duration."""
    b = CircuitBreaker("reopen", consecutive_failures=1, open_duration=10, clock=clock)
    run_failures(b, 1)
    clock.advance(10)
    run_failures(b, 1)
    assert b.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        b.call(ok)
    assert info.value.retry_after == pytest.approx(10.0)


def test_half_open_probes_judged_as_window(clock: FakeClock) -> None:
    """With 4 probes and failure_rate 0.5, 1 failure of 4 closes; the verdict waits for all."""
    b = CircuitBreaker(
        "probes", failure_rate=0.5, window=4, minimum_calls=4, half_open_calls=4, clock=clock
    )
    run_failures(b, 4)
    clock.advance(30)
    run_failures(b, 1)
    run_successes(b, 2)
    assert b.state is CircuitState.HALF_OPEN
    run_successes(b, 1)
    assert b.state is CircuitState.CLOSED


def test_half_open_verdict_waits_for_every_probe(clock: FakeClock) -> None:
    """2 failed probes of 4 at rate 0.5: the other 2 probes still run, then it reopens."""
    b = CircuitBreaker(
        "every-probe", failure_rate=0.5, window=4, minimum_calls=4, half_open_calls=4, clock=clock
    )
    run_failures(b, 4)
    clock.advance(30)
    run_failures(b, 2)
    assert b.state is CircuitState.HALF_OPEN
    calls: list[int] = []
    b.call(calls.append, 1)
    b.call(calls.append, 2)
    assert calls == [1, 2]  # the remaining probes were let through
    assert b.state is CircuitState.OPEN


def test_consecutive_mode_reopens_after_all_probes_if_any_failed(clock: FakeClock) -> None:
    """In consecutive mode, one failed probe of 2 reopens the breaker once both finished."""
    b = CircuitBreaker("consec-probes", consecutive_failures=1, half_open_calls=2, clock=clock)
    run_failures(b, 1)
    clock.advance(30)
    run_failures(b, 1)
    assert b.state is CircuitState.HALF_OPEN
    run_successes(b, 1)
    assert b.state is CircuitState.OPEN


def test_half_open_limits_concurrent_probes(clock: FakeClock) -> None:
    """Only half_open_calls permits are handed out in HALF_OPEN; the rest are rejected."""
    b = CircuitBreaker("limit", consecutive_failures=1, half_open_calls=2, clock=clock)
    run_failures(b, 1)
    clock.advance(30)
    p1, p2 = b.acquire(), b.acquire()
    with pytest.raises(CircuitOpenError):
        b.acquire()
    b.record_success(p1)
    b.record_success(p2)
    assert b.state is CircuitState.CLOSED


def test_released_probe_frees_its_slot(clock: FakeClock) -> None:
    """A probe given back (cancelled or ignored) lets another probe through."""
    b = CircuitBreaker("release", consecutive_failures=1, clock=clock)
    run_failures(b, 1)
    clock.advance(30)
    permit = b.acquire()
    with pytest.raises(CircuitOpenError):
        b.acquire()
    b.release(permit)
    permit = b.acquire()
    b.record_success(permit)
    assert b.state is CircuitState.CLOSED


def test_stale_outcome_is_dropped(clock: FakeClock) -> None:
    """An outcome from before a transition does not count in the new state."""
    b = CircuitBreaker("stale", consecutive_failures=1, clock=clock)
    permit = b.acquire()
    b.reset()
    b.record_failure(permit)
    assert b.state is CircuitState.CLOSED
    assert b.metrics().calls == 0


# ---------------------------------------------------------------- hung probes


def tripped(clock: FakeClock, name: str, **kwargs: Any) -> CircuitBreaker:
    """A breaker opened by one failure and moved to HALF_OPEN (open_duration 30 s)."""
    b = CircuitBreaker(name, consecutive_failures=1, open_duration=30, clock=clock, **kwargs)
    run_failures(b, 1)
    clock.advance(30)
    assert b.state is CircuitState.HALF_OPEN
    return b


def test_hung_probe_slot_is_given_back_after_open_duration(clock: FakeClock) -> None:
    """A probe held for open_duration frees its slot: the breaker is not stuck HALF_OPEN."""
    b = tripped(clock, "hung")
    hung = b.acquire()  # never finishes
    clock.advance(29)
    with pytest.raises(CircuitOpenError) as info:
        b.acquire()
    assert info.value.retry_after == pytest.approx(1.0)
    clock.advance(1)
    replacement = b.acquire()
    b.record_success(replacement)
    assert b.state is CircuitState.CLOSED
    b.record_failure(hung)  # the hung call ends at last: its outcome is dropped
    assert b.state is CircuitState.CLOSED
    assert b.metrics().calls == 0


def test_late_outcome_of_a_reclaimed_probe_is_dropped(clock: FakeClock) -> None:
    """A reclaimed probe that fails late neither decides the round nor frees another slot."""
    b = tripped(clock, "hung-late")
    hung = b.acquire()
    clock.advance(30)
    replacement = b.acquire()
    b.record_failure(hung)
    b.release(hung)
    assert b.state is CircuitState.HALF_OPEN
    assert b.metrics().half_open_in_flight == 1
    with pytest.raises(CircuitOpenError):
        b.acquire()  # the replacement still holds the only slot
    b.record_success(replacement)
    assert b.state is CircuitState.CLOSED


def test_round_verdict_waits_for_the_replacement_probe(clock: FakeClock) -> None:
    """With 2 probe slots, one done and one hung: the verdict comes from its replacement."""
    b = CircuitBreaker(
        "hung-round", failure_rate=0.5, window=2, minimum_calls=2, half_open_calls=2, clock=clock
    )
    run_failures(b, 2)
    clock.advance(30)
    first, _hung = b.acquire(), b.acquire()
    b.record_success(first)
    clock.advance(30)
    assert b.state is CircuitState.HALF_OPEN
    replacement = b.acquire()
    assert b.state is CircuitState.HALF_OPEN
    b.record_failure(replacement)  # 1 of 2 probes failed: rate 0.5 reopens
    assert b.state is CircuitState.OPEN
    m = b.metrics()
    assert (m.calls, m.failures) == (2, 1)


def test_half_open_rejection_says_when_the_oldest_slot_frees(clock: FakeClock) -> None:
    """retry_after in HALF_OPEN is the time until the oldest probe slot is given back."""
    b = tripped(clock, "hung-wait", half_open_calls=2)
    b.acquire()
    clock.advance(10)
    b.acquire()
    clock.advance(5)
    with pytest.raises(CircuitOpenError) as info:
        b.acquire()
    assert info.value.retry_after == pytest.approx(15.0)
    m = b.metrics()
    assert (m.half_open_in_flight, m.retry_after) == (2, pytest.approx(15.0))
    clock.advance(15)
    b.acquire()  # the first slot was given back; the second is still held
    with pytest.raises(CircuitOpenError) as info:
        b.acquire()
    assert info.value.retry_after == pytest.approx(10.0)


def test_half_open_with_a_free_slot_has_no_wait(clock: FakeClock) -> None:
    """While a probe slot is free, metrics().retry_after in HALF_OPEN is 0."""
    b = tripped(clock, "hung-free", half_open_calls=2)
    b.acquire()
    assert b.metrics().retry_after == 0.0


async def test_hung_async_probe_does_not_hold_the_breaker(clock: FakeClock) -> None:
    """A decorated async probe that hangs: after open_duration another call closes the breaker."""
    b = tripped(clock, "hung-async")
    release = asyncio.Event()
    calls = 0

    @b
    async def fetch(hang: bool) -> str:
        nonlocal calls
        calls += 1
        if hang:
            await release.wait()
            raise Boom("late")
        return "ok"

    hung = asyncio.create_task(fetch(hang=True))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await fetch(hang=False)
    clock.advance(30)
    assert await fetch(hang=False) == "ok"
    assert b.state is CircuitState.CLOSED
    release.set()
    with pytest.raises(Boom):
        await hung
    assert b.state is CircuitState.CLOSED
    assert (b.metrics().calls, calls) == (0, 2)  # the rejected call never ran


class RecordingBinding:
    """A store binding that judges nothing and records what the breaker tells it."""

    shared = False

    def __init__(self) -> None:
        self.released = 0

    def transition(self, new: str, manual: bool) -> None:
        """Nothing to share."""

    def take_probe(self) -> bool:
        """Every local probe gets a fleet slot."""
        return True

    def probe_done(self, outcome: int) -> bool:
        """The breaker judges its own probes."""
        return False

    def probe_released(self) -> None:
        """Count the slots given back."""
        self.released += 1


class RecordingStore:
    """A store handing out one `RecordingBinding`."""

    def __init__(self) -> None:
        self.binding = RecordingBinding()

    def bind(self, breaker: CircuitBreaker) -> RecordingBinding:
        """Link the breaker to the recording binding."""
        return self.binding

    def close(self) -> None:
        """Nothing to release."""


def test_reclaimed_probe_slot_is_given_back_to_the_store(clock: FakeClock) -> None:
    """A shared store hears about a reclaimed probe slot, as about a released one."""
    store = RecordingStore()
    b = tripped(clock, "hung-store", store=store)
    b.acquire()
    clock.advance(30)
    assert store.binding.released == 0
    b.record_success(b.acquire())
    assert store.binding.released == 1
    assert b.state is CircuitState.CLOSED


# ---------------------------------------------------------------- classification


def test_failure_on_types(clock: FakeClock) -> None:
    """Only the failure_on types are failures; other exceptions count as successes."""
    b = CircuitBreaker("types", consecutive_failures=1, failure_on=ConnectionError, clock=clock)
    empty: dict[str, int] = {}
    with pytest.raises(KeyError):
        b.call(lambda: empty["x"])
    assert b.state is CircuitState.CLOSED
    assert b.metrics().calls == 1
    with pytest.raises(ConnectionError):
        b.call(functools.partial(_raise, ConnectionError()))
    assert b.state is CircuitState.OPEN


def _raise(exc: BaseException) -> None:
    raise exc


def test_failure_on_predicate(clock: FakeClock) -> None:
    """A predicate decides what is a failure."""
    b = CircuitBreaker(
        "pred",
        consecutive_failures=1,
        failure_on=lambda e: isinstance(e, OSError) and e.errno == 5,
        clock=clock,
    )
    with pytest.raises(OSError):
        b.call(functools.partial(_raise, OSError(4, "x")))
    assert b.state is CircuitState.CLOSED
    with pytest.raises(OSError):
        b.call(functools.partial(_raise, OSError(5, "x")))
    assert b.state is CircuitState.OPEN


def test_ignore_wins_over_failure_on(clock: FakeClock) -> None:
    """An ignored exception counts as neither, even when failure_on matches it."""
    b = CircuitBreaker("ignore", consecutive_failures=1, ignore=(ValueError,), clock=clock)
    with pytest.raises(ValueError):
        b.call(functools.partial(_raise, ValueError()))
    assert b.state is CircuitState.CLOSED
    assert b.metrics().calls == 0


def test_failure_is_reraised_unchanged(clock: FakeClock) -> None:
    """The recorded exception propagates as the same object."""
    b = CircuitBreaker("same", clock=clock)
    err = Boom("x")
    with pytest.raises(Boom) as info:
        b.call(functools.partial(_raise, err))
    assert info.value is err


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), GeneratorExit(), SystemExit(1)])
def test_base_exceptions_are_never_recorded(clock: FakeClock, exc: BaseException) -> None:
    """KeyboardInterrupt, GeneratorExit, SystemExit are not failures and free probe permits."""
    b = CircuitBreaker("base", consecutive_failures=1, clock=clock)
    with pytest.raises(type(exc)):
        b.call(functools.partial(_raise, exc))
    assert b.metrics().calls == 0
    run_failures(b, 1)
    clock.advance(30)
    with pytest.raises(type(exc)):
        b.call(functools.partial(_raise, exc))
    assert b.state is CircuitState.HALF_OPEN
    assert b.metrics().half_open_in_flight == 0
    run_successes(b, 1)
    assert b.state is CircuitState.CLOSED
    exc.__traceback__ = None  # the parameter outlives the test: let its frames (and b) go


async def test_cancellation_is_not_recorded_and_frees_probe(clock: FakeClock) -> None:
    """A cancelled probe counts as nothing and gives its slot back."""
    b = CircuitBreaker("cancel", consecutive_failures=1, clock=clock)
    run_failures(b, 1)
    clock.advance(30)
    started = asyncio.Event()

    @b
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await started.wait()
    assert b.metrics().half_open_in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.state is CircuitState.HALF_OPEN
    assert b.metrics().half_open_in_flight == 0

    @b
    async def fine() -> int:
        return 7

    assert await fine() == 7
    assert b.state is CircuitState.CLOSED


# ---------------------------------------------------------------- manual control


def test_force_open_rejects_with_no_retry_after(clock: FakeClock) -> None:
    """FORCED_OPEN rejects every call with retry_after None, and time does not move it."""
    b = CircuitBreaker("forced", clock=clock)
    b.force_open()
    clock.advance(3600)
    assert b.state is CircuitState.FORCED_OPEN
    with pytest.raises(CircuitOpenError) as info:
        b.call(ok)
    assert info.value.retry_after is None


def test_disable_lets_everything_through_and_records_nothing(clock: FakeClock) -> None:
    """DISABLED calls the function every time and keeps no statistics."""
    b = CircuitBreaker("disabled", consecutive_failures=1, clock=clock)
    b.disable()
    run_failures(b, 5)
    assert b.state is CircuitState.DISABLED
    assert b.metrics().calls == 0


def test_reset_closes_with_empty_window(clock: FakeClock) -> None:
    """reset() returns to CLOSED with an empty window from any state."""
    b = CircuitBreaker("reset", consecutive_failures=1, clock=clock)
    run_failures(b, 1)
    b.reset()
    assert b.state is CircuitState.CLOSED
    assert b.metrics().calls == 0
    b.force_open()
    b.reset()
    run_successes(b, 1)
    assert b.metrics().calls == 1


# ---------------------------------------------------------------- decorator, async, metrics


def test_decorator_keeps_metadata_and_works_on_methods(clock: FakeClock) -> None:
    """The decorator keeps __name__, __doc__ and the signature, and binds as a method."""
    b = CircuitBreaker("deco", clock=clock)

    class Client:
        @b
        def get(self, path: str, *, retries: int = 0) -> str:
            """Get a path."""
            return f"{path}:{retries}"

    assert Client().get("/x", retries=2) == "/x:2"
    assert Client.get.__name__ == "get"
    assert Client.get.__doc__ == "Get a path."
    assert list(inspect.signature(Client.get).parameters) == ["self", "path", "retries"]


async def test_async_decorator_and_call_async(clock: FakeClock) -> None:
    """Async functions stay coroutine functions and their failures are recorded."""
    b = CircuitBreaker("async", consecutive_failures=2, clock=clock)

    @b
    async def boom() -> None:
        raise Boom

    assert inspect.iscoroutinefunction(boom)
    for _ in range(2):
        with pytest.raises(Boom):
            await boom()
    assert b.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await b.call_async(asyncio.sleep, 0)


def test_slow_async_calls_are_timed(clock: FakeClock) -> None:
    """Async calls are timed with the breaker's clock too."""
    b = CircuitBreaker("aslow", slow_call_duration=1, window=2, minimum_calls=2, clock=clock)

    @b
    async def slow() -> None:
        clock.advance(5)

    asyncio.run(slow())
    assert b.metrics().slow_calls == 1


def test_metrics_snapshot_is_a_mapping(clock: FakeClock) -> None:
    """metrics() has state, calls, failures, slow calls and both rates, as keys and attributes."""
    b = CircuitBreaker("metrics", window=10, clock=clock)
    run_successes(b, 3)
    run_failures(b, 1)
    m = b.metrics()
    assert m["state"] == "closed" == m.state
    assert (m["calls"], m["failures"], m["slow_calls"]) == (4, 1, 0)
    assert m["failure_rate"] == pytest.approx(0.25)
    assert m["slow_call_rate"] == 0.0
    assert m.as_dict()["state"] == "closed"
    assert {"state", "calls", "failures", "slow_calls", "failure_rate", "slow_call_rate"} <= set(m)


@pytest.mark.parametrize("window", [{"window": 10}, {"window_seconds": 5}], ids=["count", "time"])
def test_metrics_after_failed_probes_show_the_probes(
    clock: FakeClock, window: dict[str, float]
) -> None:
    """OPEN again after HALF_OPEN: metrics() shows the probes' numbers, not an empty window."""
    b = CircuitBreaker(
        "reopen-metrics",
        failure_rate=0.5,
        half_open_calls=4,
        minimum_calls=5,
        open_duration=5,
        clock=clock,
        **window,  # type: ignore[arg-type]
    )
    run_failures(b, 5)
    clock.advance(5)
    for failed in (True, True, False, True):
        permit = b.acquire()
        if failed:
            b.record_failure(permit)
        else:
            b.record_success(permit)
    m = b.metrics()
    assert m.state is CircuitState.OPEN
    assert (m.calls, m.failures, m.slow_calls, m.consecutive_failures) == (4, 3, 0, 1)
    assert m.failure_rate == pytest.approx(0.75)
    clock.advance(5)
    m = b.metrics()  # the next round starts from nothing
    assert m.state is CircuitState.HALF_OPEN
    assert (m.calls, m.failures, m.consecutive_failures) == (0, 0, 0)


def test_state_changes_are_emitted_after_the_lock(clock: FakeClock) -> None:
    """Listeners see each transition with its numbers, and may read the breaker (no deadlock)."""
    b = CircuitBreaker("events", failure_rate=0.5, window=4, minimum_calls=4, clock=clock)
    seen: list[Event] = []

    def listener(event: Event) -> None:
        b.metrics()  # would deadlock if called under the breaker's lock
        seen.append(event)

    b.add_listener(listener)
    run_successes(b, 2)
    run_failures(b, 2)
    changes = [e for e in seen if isinstance(e, CircuitStateChanged)]
    assert [(e.old_state, e.new_state) for e in changes] == [("closed", "open")]
    assert (changes[0].calls, changes[0].failures, changes[0].failure_rate) == (4, 2, 0.5)
    b.remove_listener(listener)
    b.reset()
    assert len([e for e in seen if isinstance(e, CircuitStateChanged)]) == 1


def test_a_failing_listener_never_breaks_the_call(clock: FakeClock) -> None:
    """A listener that raises is logged; the call's own outcome propagates."""
    b = CircuitBreaker("bad-listener", consecutive_failures=1, clock=clock)

    def bad(event: Event) -> None:
        raise RuntimeError("listener bug")

    b.add_listener(bad)
    with pytest.raises(Boom):
        b.call(fail)
    assert b.state is CircuitState.OPEN


# ---------------------------------------------------------------- clones


def test_clone_copies_settings_under_a_new_name(clock: FakeClock) -> None:
    """clone() makes an independent breaker with the same settings and clock."""
    template = CircuitBreaker("tmpl", consecutive_failures=1, open_duration=7, clock=clock)
    twin = template.clone("tmpl:host")
    run_failures(twin, 1)
    assert twin.state is CircuitState.OPEN
    assert template.state is CircuitState.CLOSED
    assert twin.config == template.config
    assert twin in resilience.breakers()


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_rate": 1.5}, "failure_rate must be in (0, 1], got 1.5"),
        ({"failure_rate": 0}, "failure_rate must be in (0, 1], got 0"),
        ({"slow_call_rate": -0.1}, "slow_call_rate must be in (0, 1], got -0.1"),
        ({"window": 0}, "window must be an integer >= 1, got 0"),
        ({"minimum_calls": 2.5}, "minimum_calls must be an integer >= 1, got 2.5"),
        ({"consecutive_failures": 0}, "consecutive_failures must be an integer >= 1, got 0"),
        ({"half_open_calls": True}, "half_open_calls must be an integer >= 1, got True"),
        ({"open_duration": -1}, "open_duration must be > 0 seconds, got -1"),
        ({"window_seconds": "10"}, "window_seconds must be a number of seconds"),
        ({"slow_call_duration": float("nan")}, "slow_call_duration must be a finite number"),
        ({"failure_on": "ValueError"}, "failure_on must be an exception type"),
        ({"ignore": [ValueError]}, "ignore must be an exception type or a tuple"),
        ({"clock": 3}, "clock must be a callable"),
    ],
)
def test_invalid_settings_raise_config_error(kwargs: dict[str, object], message: str) -> None:
    """Every bad setting fails at construction with a message naming it and its value."""
    with pytest.raises(ConfigError) as info:
        CircuitBreaker("bad", **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


def test_invalid_name_raises_config_error() -> None:
    """The name must be a non-empty string."""
    with pytest.raises(ConfigError, match="name must be a non-empty string"):
        CircuitBreaker("")


def test_timedelta_durations_are_accepted(clock: FakeClock) -> None:
    """A timedelta works wherever a duration is expected."""
    b = CircuitBreaker(
        "td", consecutive_failures=1, open_duration=timedelta(minutes=1), clock=clock
    )
    run_failures(b, 1)
    clock.advance(59)
    assert b.state is CircuitState.OPEN
    clock.advance(1)
    assert b.state is CircuitState.HALF_OPEN


def test_state_is_a_str_enum() -> None:
    """CircuitState values are the strings of the API."""
    assert [s.value for s in CircuitState] == [
        "closed",
        "open",
        "half_open",
        "forced_open",
        "disabled",
    ]
    assert CircuitState.OPEN == "open"


def test_time_window_success_can_trip_after_expiry(clock: FakeClock) -> None:
    """Once old successes expire, a success can be the call that reveals the failure rate."""
    b = CircuitBreaker("tw-success-trips", window_seconds=10, minimum_calls=2, clock=clock)
    run_successes(b, 3)
    clock.advance(5)
    run_failures(b, 1)
    assert b.state is CircuitState.CLOSED  # 1 failure in 4 calls
    clock.advance(6)  # the 3 successes leave the window; the failure stays
    run_successes(b, 1)  # 1 failure in 2 calls: 0.5 reaches failure_rate
    assert b.state is CircuitState.OPEN


def test_time_window_fast_path_counts_across_buckets(clock: FakeClock) -> None:
    """Successes in the same bucket and in new buckets are all counted."""
    b = CircuitBreaker("tw-buckets", window_seconds=10, clock=clock)
    for _ in range(25):
        run_successes(b, 4)
        clock.advance(0.3)
    assert b.metrics().calls == 100
