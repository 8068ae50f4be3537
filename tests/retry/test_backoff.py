"""Backoff strategies: exact sequences, jitter from a seeded source, tenacity waits."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import tenacity

from resilience import ConfigError, Retry, backoff
from resilience._validate import MAX_DURATION
from resilience.backoff import Backoff, TenacityWait, as_backoff
from resilience.testing import FakeClock


def test_exponential_without_jitter_doubles_up_to_the_maximum() -> None:
    """initial * multiplier ** (attempt - 1), capped at maximum."""
    b = backoff.exponential(initial=0.1, maximum=1.0, multiplier=2.0, jitter=False)
    assert [b.compute(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_exponential_takes_positional_arguments_in_the_documented_order() -> None:
    """exponential(initial, maximum, multiplier, jitter)."""
    b = backoff.exponential(1.0, 9.0, 3.0, False)
    assert [b.compute(n) for n in (1, 2, 3, 4)] == [1.0, 3.0, 9.0, 9.0]


def test_exponential_jitters_fully_by_default() -> None:
    """With jitter on, each wait is the capped value times a draw from the random source."""
    b = backoff.exponential(initial=0.5, maximum=4.0, random=random.Random(3))
    draws = random.Random(3)
    expected = [min(4.0, 0.5 * 2 ** (n - 1)) * draws.random() for n in range(1, 8)]
    assert [b.compute(n) for n in range(1, 8)] == pytest.approx(expected)
    assert b.jitter is True


def test_exponential_jitter_stays_within_zero_and_the_cap() -> None:
    """Full jitter draws from [0, min(maximum, exponential value)]."""
    b = backoff.exponential(initial=0.1, maximum=2.0, random=random.Random(11))
    for attempt in range(1, 200):
        assert 0.0 <= b.compute(attempt) <= min(2.0, 0.1 * 2 ** (attempt - 1))


def test_exponential_accepts_a_plain_random_function() -> None:
    """A zero-argument function returning [0, 1) is a random source too."""
    b = backoff.exponential(initial=1.0, maximum=8.0, random=lambda: 0.5)
    assert [b.compute(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_exponential_never_overflows_for_huge_attempt_numbers() -> None:
    """Thousands of attempts give the maximum, not an OverflowError."""
    b = backoff.exponential(initial=0.1, maximum=5.0, jitter=False)
    assert b.compute(100_000) == 5.0


def test_exponential_accepts_timedelta_durations() -> None:
    """initial and maximum may be timedeltas."""
    b = backoff.exponential(
        initial=timedelta(milliseconds=250), maximum=timedelta(seconds=1), jitter=False
    )
    assert [b.compute(n) for n in (1, 2, 3, 4)] == [0.25, 0.5, 1.0, 1.0]


def test_constant_and_none() -> None:
    """constant waits the same every time; none never waits."""
    assert [backoff.constant(0.3).compute(n) for n in (1, 5, 50)] == [0.3, 0.3, 0.3]
    assert backoff.constant(timedelta(seconds=2)).compute(1) == 2.0
    assert [backoff.none().compute(n) for n in (1, 2)] == [0.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"initial": -1}, "initial"),
        ({"initial": float("nan")}, "initial"),
        ({"maximum": -0.5}, "maximum"),
        ({"initial": 2.0, "maximum": 1.0}, "maximum"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"multiplier": float("inf")}, "multiplier"),
        ({"multiplier": "2"}, "multiplier"),
        ({"jitter": 1}, "jitter"),
        ({"random": 42}, "random"),
    ],
)
def test_exponential_rejects_bad_settings(kwargs: dict[str, object], setting: str) -> None:
    """A bad setting fails at construction with ConfigError naming it."""
    with pytest.raises(ConfigError, match=setting):
        backoff.exponential(**kwargs)  # type: ignore[arg-type]


def test_constant_rejects_negative_seconds() -> None:
    """constant(-1) is a ConfigError naming seconds."""
    with pytest.raises(ConfigError, match="seconds"):
        backoff.constant(-1)


def test_strategies_are_frozen() -> None:
    """Strategies are immutable, so one can be shared by many retries."""
    b = backoff.exponential()
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.initial = 5.0  # type: ignore[misc]


def test_tenacity_wait_exponential_is_accepted() -> None:
    """A tenacity wait sees attempt_number = attempts made so far, as in tenacity."""
    b = as_backoff(tenacity.wait_exponential(multiplier=1, min=0, max=10))
    assert isinstance(b, TenacityWait)
    assert [b.compute(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]


def test_tenacity_wait_chain_and_combination_are_accepted() -> None:
    """Composite tenacity waits work through the same adapter."""
    chain = as_backoff(tenacity.wait_chain(tenacity.wait_fixed(1), tenacity.wait_fixed(5)))
    assert [chain.compute(n) for n in (1, 2, 3)] == [1, 5, 5]
    combined = as_backoff(tenacity.wait_fixed(1) + tenacity.wait_fixed(0.5))
    assert combined.compute(1) == 1.5


def test_tenacity_random_exponential_stays_in_range() -> None:
    """wait_random_exponential draws within its bounds."""
    b = as_backoff(tenacity.wait_random_exponential(multiplier=1, max=4))
    assert all(0 <= b.compute(n) <= 4 for n in range(1, 30))


def test_tenacity_wait_exception_receives_the_error() -> None:
    """wait_exception is given the failed attempt's exception."""
    seen: list[BaseException] = []

    def from_error(exc: BaseException) -> float:
        seen.append(exc)
        return 2.5

    error = ConnectionError("refused")
    b = as_backoff(tenacity.wait_exception(from_error))
    assert b.compute(1, error) == 2.5
    assert seen == [error]


def test_tenacity_wait_negative_values_become_zero() -> None:
    """A custom wait function returning a negative number waits 0."""
    b = as_backoff(lambda state: -1.0)
    assert b.compute(1) == 0.0


def test_as_backoff_keeps_our_strategies_and_rejects_non_callables() -> None:
    """Our strategies pass through unchanged; anything else must be a tenacity wait."""
    ours = backoff.constant(1)
    assert as_backoff(ours) is ours
    with pytest.raises(ConfigError, match="backoff"):
        as_backoff(3)
    with pytest.raises(ConfigError, match="backoff"):
        as_backoff(ValueError)


def test_custom_backoff_subclass() -> None:
    """A user can write a strategy by subclassing Backoff."""

    class Linear(Backoff):
        __slots__ = ()

        def compute(self, attempt: int, error: BaseException | None = None) -> float:
            return 0.5 * attempt

    assert as_backoff(Linear()).compute(3) == 1.5


def test_tenacity_adapter_compares_by_the_wrapped_wait() -> None:
    """Two adapters of the same tenacity wait are equal and show it in their repr."""
    wait = tenacity.wait_fixed(1)
    assert as_backoff(wait) == as_backoff(wait)
    assert hash(as_backoff(wait)) == hash(as_backoff(wait))
    assert as_backoff(wait) != as_backoff(tenacity.wait_fixed(1))
    assert repr(as_backoff(wait)).startswith("TenacityWait(<tenacity.wait.wait_fixed")


@dataclasses.dataclass(frozen=True)
class _Seen:
    """What a tenacity wait was shown at one retry decision."""

    fn: object
    args: object
    kwargs: object
    attempt_number: int
    failed: bool
    value: object
    start_time: float
    outcome_timestamp: float | None
    idle_for: float
    seconds_since_start: float | None
    has_retry_object: bool


def _recording_wait(seen: list[_Seen], seconds: float) -> Callable[[Any], float]:
    def wait(state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        assert outcome is not None
        failed = outcome.failed
        seen.append(
            _Seen(
                fn=state.fn,
                args=state.args,
                kwargs=state.kwargs,
                attempt_number=state.attempt_number,
                failed=failed,
                value=outcome.exception() if failed else outcome.result(),
                start_time=state.start_time,
                outcome_timestamp=state.outcome_timestamp,
                idle_for=state.idle_for,
                seconds_since_start=state.seconds_since_start,
                has_retry_object=state.retry_object is not None,
            )
        )
        return seconds

    return wait


def test_tenacity_wait_reading_the_result_works_with_on_result() -> None:
    """A wait reading outcome.result() (a rejected result) gets it instead of crashing."""

    def wait_on_result(state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None
        return 5.0 if state.outcome.result() == "busy" else 0.0

    sleeps: list[float] = []
    replies = iter(["busy", "done"])
    retry = Retry(
        on=(),
        on_result=lambda v: v == "busy",
        attempts=3,
        backoff=wait_on_result,
        sleep=sleeps.append,
    )
    assert retry.call(lambda: next(replies)) == "done"
    assert sleeps == [5.0]


def test_tenacity_wait_gets_a_complete_call_state(clock: FakeClock) -> None:
    """fn, args, kwargs, outcome, attempt_number and the times are those of the call."""
    seen: list[_Seen] = []
    start = clock()
    errors = [ValueError("first"), ValueError("second")]

    def fetch(key: str, *, page: int) -> str:
        clock.advance(1.0)  # each attempt takes a second
        if errors:
            raise errors.pop(0)
        return f"{key}:{page}"

    def sleep(seconds: float) -> None:
        clock.advance(seconds)

    first, second = errors
    retry = Retry(
        on=ValueError, attempts=3, backoff=_recording_wait(seen, 2.0), clock=clock, sleep=sleep
    )
    assert retry.call(fetch, "k", page=3) == "k:3"
    assert [s.attempt_number for s in seen] == [1, 2]
    assert [s.value for s in seen] == [first, second]
    assert all(s.failed and s.fn is fetch for s in seen)
    assert all(s.args == ("k",) and s.kwargs == {"page": 3} for s in seen)
    assert all(s.start_time == start and s.has_retry_object for s in seen)
    # Attempt 1 ends at +1; a 2 s wait; attempt 2 ends at +4.
    assert [s.outcome_timestamp for s in seen] == [start + 1.0, start + 4.0]
    assert [s.seconds_since_start for s in seen] == [1.0, 4.0]
    assert [s.idle_for for s in seen] == [0.0, 2.0]


def test_tenacity_wait_gets_the_decorated_function_and_its_arguments() -> None:
    """The decorator path hands the wait the undecorated function and the call's arguments."""
    seen: list[_Seen] = []
    calls: list[int] = []

    def lookup(n: int) -> int:
        calls.append(n)
        if len(calls) == 1:
            raise ConnectionError("reset")
        return n * 2

    decorated = Retry(on=ConnectionError, backoff=_recording_wait(seen, 0.0))(lookup)
    assert decorated(21) == 42
    (only,) = seen
    assert only.fn is lookup
    assert only.args == (21,)
    assert isinstance(only.value, ConnectionError)


def test_tenacity_wait_gets_a_complete_call_state_async(clock: FakeClock) -> None:
    """The async driver fills the same state, sleeps included in idle_for."""
    seen: list[_Seen] = []
    start = clock()
    failures = [1, 1]

    async def fetch(key: str) -> str:
        clock.advance(0.5)
        if failures:
            failures.pop()
            raise TimeoutError(key)
        return key

    async def asleep(seconds: float) -> None:
        clock.advance(seconds)

    retry = Retry(
        on=TimeoutError,
        attempts=3,
        backoff=_recording_wait(seen, 1.5),
        clock=clock,
        asleep=asleep,
    )
    assert asyncio.run(retry(fetch)("a")) == "a"
    assert [s.attempt_number for s in seen] == [1, 2]
    assert all(s.fn is fetch and s.args == ("a",) for s in seen)
    assert [s.outcome_timestamp for s in seen] == [start + 0.5, start + 2.5]
    assert [s.idle_for for s in seen] == [0.0, 1.5]


def test_tenacity_waits_beyond_any_sleep_are_capped() -> None:
    """tenacity's own default cap (~4.6e18 s) would overflow a sleep: waits stop at 30 days."""
    b = as_backoff(tenacity.wait_exponential(multiplier=1))
    assert b.compute(100) == MAX_DURATION
    assert as_backoff(lambda state: float("inf")).compute(1) == MAX_DURATION
    assert as_backoff(lambda state: float("nan")).compute(1) == 0.0
