"""Retry on sync functions: recorded sleeps, notes, guards, deadlines, budgets, events."""

from __future__ import annotations

import inspect
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import tenacity

from resilience import (
    BulkheadFull,
    CircuitOpenError,
    ConfigError,
    DeadlineExceeded,
    Retry,
    RetryBudget,
    backoff,
    deadline,
    remaining,
    retry,
)
from resilience._observe._events import (
    Event,
    RetryBudgetExhausted,
    RetryExhausted,
    RetryScheduled,
    add_listener,
    remove_listener,
)
from resilience.testing import FakeClock

STEADY = backoff.exponential(initial=0.1, maximum=1.0, jitter=False)


class Sleeps(list[float]):
    """A sleep function that records each wait and moves the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
def sleeps(clock: FakeClock) -> Sleeps:
    """Recorded sleeps on the test's fake clock."""
    return Sleeps(clock)


@pytest.fixture
def events() -> Iterator[list[Event]]:
    """Every event emitted during the test."""
    seen: list[Event] = []
    add_listener(seen.append)
    yield seen
    remove_listener(seen.append)


def failing(times: int, error: Callable[[], Exception] = ConnectionError) -> Callable[[], str]:
    """A function that raises a fresh error *times* times, then returns "ok"."""
    calls: list[Exception] = []

    def fn() -> str:
        if len(calls) < times:
            exc = error()
            calls.append(exc)
            raise exc
        return "ok"

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def test_first_try_success_calls_once_and_never_sleeps(sleeps: Sleeps, events: list[Event]) -> None:
    """A call that succeeds at once runs once, sleeps never and emits nothing."""
    fn = failing(0)
    assert retry(on=ConnectionError, sleep=sleeps)(fn)() == "ok"
    assert sleeps == []
    assert events == []


def test_retries_until_success_with_the_backoff_sequence(sleeps: Sleeps) -> None:
    """Failures are retried, waiting the backoff's sequence between attempts."""
    fn = failing(3)
    wrapped = retry(on=ConnectionError, attempts=5, backoff=STEADY, sleep=sleeps)(fn)
    assert wrapped() == "ok"
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])


def test_exhaustion_reraises_the_last_exception_with_a_note(sleeps: Sleeps) -> None:
    """When attempts run out, the last attempt's own exception propagates, with a note."""
    fn = failing(10)
    wrapped = retry(on=ConnectionError, attempts=3, backoff=STEADY, sleep=sleeps)(fn)
    with pytest.raises(ConnectionError) as caught:
        wrapped()
    calls = fn.calls  # type: ignore[attr-defined]
    assert len(calls) == 3
    assert caught.value is calls[-1]
    assert caught.value.__notes__ == ["resilience: retry gave up after 3 attempts"]
    assert sleeps == pytest.approx([0.1, 0.2])
    assert not hasattr(calls[0], "__notes__")  # earlier attempts' errors are left alone


def test_exhaustion_keeps_the_original_traceback(sleeps: Sleeps) -> None:
    """The propagated exception's traceback still reaches the line that raised it."""

    def boom() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError) as caught:
        retry(on=ConnectionError, attempts=2, sleep=sleeps)(boom)()
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert frames[-1] == "boom"


def test_attempts_one_means_no_retry(sleeps: Sleeps) -> None:
    """attempts=1 calls once and notes that one attempt was made."""
    fn = failing(5)
    with pytest.raises(ConnectionError) as caught:
        retry(on=ConnectionError, attempts=1, sleep=sleeps)(fn)()
    assert len(fn.calls) == 1  # type: ignore[attr-defined]
    assert caught.value.__notes__ == ["resilience: retry gave up after 1 attempt"]


def test_non_matching_errors_propagate_at_once_without_a_note(sleeps: Sleeps) -> None:
    """An error that on does not match is raised at the first attempt, untouched."""
    fn = failing(5, error=lambda: ValueError("bad input"))
    with pytest.raises(ValueError) as caught:
        retry(on=ConnectionError, sleep=sleeps)(fn)()
    assert len(fn.calls) == 1  # type: ignore[attr-defined]
    assert not hasattr(caught.value, "__notes__")
    assert sleeps == []


@pytest.mark.parametrize(
    "on",
    [
        ConnectionError,
        (ValueError, ConnectionError),
        OSError,
        lambda exc: isinstance(exc, ConnectionError),
    ],
    ids=["type", "tuple", "base-class", "predicate"],
)
def test_on_accepts_types_tuples_and_predicates(on: Any, sleeps: Sleeps) -> None:
    """Every way of saying which errors to retry works the same."""
    fn = failing(2)
    assert retry(on=on, attempts=3, sleep=sleeps)(fn)() == "ok"


def test_predicate_sees_the_exception_object(sleeps: Sleeps) -> None:
    """A predicate can decide from the exception's data."""

    class Status(Exception):
        def __init__(self, code: int) -> None:
            self.code = code

    codes = iter([503, 503, 400])

    @retry(on=lambda exc: isinstance(exc, Status) and exc.code >= 500, attempts=5, sleep=sleeps)
    def call() -> None:
        raise Status(next(codes))

    with pytest.raises(Status) as caught:
        call()
    assert caught.value.code == 400


@pytest.mark.parametrize(
    "guard", [CircuitOpenError("payments", 5.0), BulkheadFull("db")], ids=["circuit", "bulkhead"]
)
@pytest.mark.parametrize(
    "on",
    [Exception, (ConnectionError, Exception), lambda exc: True],
    ids=["Exception", "tuple", "predicate"],
)
def test_circuit_open_and_bulkhead_full_are_not_retried_by_a_broad_on(
    guard: Exception, on: Any, sleeps: Sleeps
) -> None:
    """A broad on does not retry an open circuit or a full bulkhead."""
    calls = []

    def rejected() -> None:
        calls.append(1)
        raise guard

    with pytest.raises(type(guard)):
        retry(on=on, attempts=5, sleep=sleeps)(rejected)()
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("guard", "on"),
    [
        (CircuitOpenError("payments", 0.5), CircuitOpenError),
        (CircuitOpenError("payments", 0.5), (ConnectionError, CircuitOpenError)),
        (BulkheadFull("db"), BulkheadFull),
    ],
    ids=["circuit", "circuit-in-tuple", "bulkhead"],
)
def test_guards_are_retried_when_named(guard: Exception, on: Any, sleeps: Sleeps) -> None:
    """Naming CircuitOpenError or BulkheadFull in on makes them retryable."""
    calls = []

    def rejected() -> None:
        calls.append(1)
        raise guard

    with pytest.raises(type(guard)):
        retry(on=on, attempts=3, backoff=backoff.none(), sleep=sleeps)(rejected)()
    assert len(calls) == 3


def test_naming_one_guard_does_not_let_the_other_through() -> None:
    """on=(Exception, CircuitOpenError) still does not retry BulkheadFull."""
    policy = Retry(on=(Exception, CircuitOpenError))
    assert policy.should_retry(CircuitOpenError("x", 1.0)) is True
    assert policy.should_retry(BulkheadFull("db")) is False


def test_base_exceptions_are_never_retried(sleeps: Sleeps) -> None:
    """KeyboardInterrupt and other BaseExceptions propagate at once, even with a broad on."""
    calls = []

    def interrupted() -> None:
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        retry(on=BaseException, sleep=sleeps)(interrupted)()
    assert len(calls) == 1
    assert Retry(on=BaseException).should_retry(KeyboardInterrupt()) is False


def test_on_result_retries_until_the_predicate_is_false(sleeps: Sleeps) -> None:
    """on_result retries while it returns True and returns the first good result."""
    results = iter([None, None, 7])
    wrapped = retry(
        on=(), on_result=lambda value: value is None, attempts=5, backoff=STEADY, sleep=sleeps
    )(lambda: next(results))
    assert wrapped() == 7
    assert sleeps == pytest.approx([0.1, 0.2])


def test_on_result_exhaustion_returns_the_last_result(sleeps: Sleeps, events: list[Event]) -> None:
    """When attempts run out on results, the last result is returned, not raised."""
    results = iter([1, 2, 3, 4])
    wrapped = retry(on=(), on_result=lambda value: value < 10, attempts=3, sleep=sleeps)(
        lambda: next(results)
    )
    assert wrapped() == 3
    assert [type(e) for e in events] == [RetryScheduled, RetryScheduled, RetryExhausted]
    last = events[-1]
    assert isinstance(last, RetryExhausted)
    assert (last.attempts, last.error) == (3, "result")


def test_on_result_and_exceptions_mix(sleeps: Sleeps) -> None:
    """One Retry handles both a retryable error and a retryable result."""
    outcomes: Iterator[Callable[[], str]] = iter(
        [lambda: "", _raise(ConnectionError()), lambda: "done"]
    )
    wrapped = retry(on=ConnectionError, on_result=lambda v: v == "", attempts=3, sleep=sleeps)(
        lambda: next(outcomes)()
    )
    assert wrapped() == "done"


def _raise(exc: Exception) -> Callable[[], str]:
    def raiser() -> str:
        raise exc

    return raiser


def test_a_wait_that_would_cross_the_deadline_is_not_taken(
    clock: FakeClock, sleeps: Sleeps, events: list[Event]
) -> None:
    """Inside deadline(), a wait longer than what remains gives up at once, with a note."""
    fn = failing(10)
    wrapped = retry(on=ConnectionError, attempts=5, backoff=backoff.constant(2.0), sleep=sleeps)(fn)
    with deadline(1.5, clock=clock), pytest.raises(ConnectionError) as caught:
        wrapped()
    assert len(fn.calls) == 1  # type: ignore[attr-defined]
    assert sleeps == []
    (note,) = caught.value.__notes__
    assert "gave up after 1 attempt" in note
    assert "would cross the deadline" in note
    assert [type(e) for e in events] == [RetryExhausted]


def test_waits_that_fit_the_deadline_are_taken(clock: FakeClock, sleeps: Sleeps) -> None:
    """Waits shorter than the remaining time are taken until the next would cross."""
    fn = failing(10)
    wrapped = retry(on=ConnectionError, attempts=10, backoff=backoff.constant(1.0), sleep=sleeps)(
        fn
    )
    with deadline(3.5, clock=clock), pytest.raises(ConnectionError):
        wrapped()
    assert sleeps == [1.0, 1.0, 1.0]
    assert len(fn.calls) == 4  # type: ignore[attr-defined]


def test_an_expired_deadline_stops_even_zero_waits(clock: FakeClock, sleeps: Sleeps) -> None:
    """With nothing left before the deadline, no retry starts, even without backoff."""
    calls = []

    def slow() -> None:
        calls.append(1)
        clock.advance(5.0)  # the attempt itself used up the deadline
        raise ConnectionError

    with deadline(1.0, clock=clock), pytest.raises(ConnectionError):
        retry(on=ConnectionError, backoff=backoff.none(), sleep=sleeps)(slow)()
    assert len(calls) == 1


def test_timeout_bounds_all_attempts_and_waits(clock: FakeClock, sleeps: Sleeps) -> None:
    """timeout is the total: the call runs inside a deadline of that length."""
    seen: list[float | None] = []

    def fn() -> None:
        seen.append(remaining())
        clock.advance(0.5)
        raise ConnectionError

    wrapped = retry(
        on=ConnectionError,
        attempts=10,
        backoff=backoff.constant(1.0),
        timeout=timedelta(seconds=4),
        sleep=sleeps,
        clock=clock,
    )(fn)
    with pytest.raises(ConnectionError) as caught:
        wrapped()
    # 0.5 + 1 + 0.5 + 1 + 0.5 = 3.5 s used; another 1 s wait would cross 4 s.
    assert seen == [4.0, 2.5, 1.0]
    assert sleeps == [1.0, 1.0]
    assert "would cross the deadline" in caught.value.__notes__[0]
    assert remaining() is None  # the deadline ends with the call


def test_timeout_keeps_an_earlier_outer_deadline(clock: FakeClock, sleeps: Sleeps) -> None:
    """A Retry timeout inside a shorter deadline keeps the shorter one."""
    seen: list[float | None] = []

    def fn() -> str:
        seen.append(remaining())
        return "ok"

    with deadline(1.0, clock=clock):
        assert retry(on=ConnectionError, timeout=30.0, clock=clock)(fn)() == "ok"
    assert seen == [1.0]


def test_deadline_exceeded_from_inside_is_retried_only_if_on_says_so(
    clock: FakeClock, sleeps: Sleeps
) -> None:
    """DeadlineExceeded is a TimeoutError; under an expired deadline, retrying stops."""
    calls = []

    def fn() -> None:
        calls.append(1)
        clock.advance(2.0)
        raise DeadlineExceeded("attempt took too long")

    with deadline(1.0, clock=clock), pytest.raises(DeadlineExceeded):
        retry(on=TimeoutError, backoff=backoff.none(), sleep=sleeps)(fn)()
    assert len(calls) == 1


def test_budget_exhaustion_propagates_at_once_with_a_note(
    clock: FakeClock, sleeps: Sleeps, events: list[Event]
) -> None:
    """When the shared budget refuses a retry, the error propagates with a budget note."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10.0, clock=clock)  # 1 retry
    fn = failing(100)
    wrapped = retry(on=ConnectionError, attempts=5, budget=budget, sleep=sleeps, name="svc")(fn)
    with pytest.raises(ConnectionError) as caught:
        wrapped()
    assert len(fn.calls) == 2  # type: ignore[attr-defined]
    assert caught.value.__notes__ == [
        "resilience: retry gave up after 2 attempts: the retry budget is exhausted"
    ]
    assert events[-1] == RetryBudgetExhausted(name="svc", attempt=2, error="ConnectionError")


def test_budget_counts_one_call_per_logical_call(clock: FakeClock, sleeps: Sleeps) -> None:
    """Retries are not calls: a call with three attempts records one call, spends two."""
    budget = RetryBudget(ratio=1.0, min_per_second=1.0, ttl=10.0, clock=clock)
    assert budget.available() == 10
    retry(on=ConnectionError, attempts=3, budget=budget, sleep=sleeps)(failing(2))()
    assert budget.available() == 10 + 1 - 2


def test_one_budget_is_shared_by_many_retries(clock: FakeClock, sleeps: Sleeps) -> None:
    """Retries spent by one Retry are gone for another sharing the budget."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.2, ttl=10.0, clock=clock)  # 2 retries
    first = retry(on=ConnectionError, attempts=3, budget=budget, sleep=sleeps)(failing(2))
    second_fn = failing(1)
    second = retry(on=ConnectionError, attempts=3, budget=budget, sleep=sleeps)(second_fn)
    assert first() == "ok"
    with pytest.raises(ConnectionError):
        second()
    assert len(second_fn.calls) == 1  # type: ignore[attr-defined]


def test_on_result_under_budget_returns_the_result_when_refused(clock: FakeClock) -> None:
    """A refused result retry returns the result it has."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, clock=clock)
    wrapped = retry(on=(), on_result=lambda v: True, budget=budget)(lambda: "meh")
    assert wrapped() == "meh"


def test_retry_after_hint_lengthens_the_wait(sleeps: Sleeps) -> None:
    """An exception's numeric retry_after attribute is a lower bound on the wait."""

    class Throttled(Exception):
        def __init__(self, retry_after: object) -> None:
            self.retry_after = retry_after

    hints = iter([5.0, 0.01, 3600, True, -1.0, "soon", None])

    @retry(on=Throttled, attempts=7, backoff=backoff.constant(0.5), sleep=sleeps)
    def call() -> None:
        raise Throttled(next(hints))

    with pytest.raises(Throttled):
        call()
    # 5 s honoured, 0.01 below the backoff, 3600 capped to 60, bool / negative / text ignored.
    assert sleeps == [5.0, 0.5, 60.0, 0.5, 0.5, 0.5]


def test_circuit_open_retry_after_is_honoured_when_named(sleeps: Sleeps) -> None:
    """Retrying CircuitOpenError waits until the breaker lets a probe through."""
    errors = iter([CircuitOpenError("svc", 2.5), CircuitOpenError("svc", None)])

    def call() -> str:
        error = next(errors, None)
        if error is not None:
            raise error
        return "ok"

    wrapped = retry(on=CircuitOpenError, backoff=backoff.constant(0.1), sleep=sleeps)(call)
    assert wrapped() == "ok"
    assert sleeps == [2.5, 0.1]


def test_tenacity_waits_drive_the_sleeps(sleeps: Sleeps) -> None:
    """A tenacity wait object gives the waits, off the happy path."""
    wrapped = retry(
        on=ConnectionError,
        attempts=4,
        backoff=tenacity.wait_exponential(multiplier=1, max=3),
        sleep=sleeps,
    )(failing(3))
    assert wrapped() == "ok"
    assert sleeps == [1, 2, 3]


def test_tenacity_wait_exception_sees_each_error(sleeps: Sleeps) -> None:
    """tenacity.wait_exception computes the wait from the failed attempt's error."""

    class Slow(Exception):
        pass

    wrapped = retry(
        on=Slow,
        attempts=3,
        backoff=tenacity.wait_exception(lambda exc: 4.0 if isinstance(exc, Slow) else 0.0),
        sleep=sleeps,
    )(failing(2, Slow))
    assert wrapped() == "ok"
    assert sleeps == [4.0, 4.0]


def test_seeded_jitter_gives_repeatable_waits(clock: FakeClock) -> None:
    """With a seeded random source, two runs sleep exactly the same."""
    import random

    runs = []
    for _ in range(2):
        recorded = Sleeps(clock)
        jittered = backoff.exponential(initial=1.0, maximum=8.0, random=random.Random(42))
        retry(on=ConnectionError, attempts=5, backoff=jittered, sleep=recorded)(failing(4))()
        runs.append(list(recorded))
    assert runs[0] == runs[1]
    assert all(0 <= wait <= cap for wait, cap in zip(runs[0], [1, 2, 4, 8], strict=True))


def test_events_carry_numbers_and_error_names_only(sleeps: Sleeps, events: list[Event]) -> None:
    """Scheduled and exhausted events name the error type, never its message."""

    def leaky() -> None:
        raise ConnectionError("password=hunter2")

    with pytest.raises(ConnectionError):
        retry(on=ConnectionError, attempts=2, backoff=backoff.constant(0.25), sleep=sleeps)(leaky)()
    name = leaky.__qualname__
    assert events == [
        RetryScheduled(name=name, attempt=1, wait=0.25, error="ConnectionError"),
        RetryExhausted(name=name, attempts=2, error="ConnectionError"),
    ]
    assert "hunter2" not in repr(events)


def test_explicit_name_is_used_in_events(sleeps: Sleeps, events: list[Event]) -> None:
    """name= replaces the function's name in events."""
    retry(on=ConnectionError, name="inventory", sleep=sleeps)(failing(1))()
    assert [e.name for e in events] == ["inventory"]  # type: ignore[attr-defined]


def test_decorator_keeps_metadata_and_signature() -> None:
    """functools.wraps metadata and the signature survive decoration."""

    def fetch(url: str, *, attempts_hint: int = 0) -> bytes:
        """Fetch a URL."""
        return url.encode()

    wrapped = retry(on=ConnectionError)(fetch)
    assert wrapped.__name__ == "fetch"
    assert wrapped.__doc__ == "Fetch a URL."
    assert wrapped.__wrapped__ is fetch  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert not inspect.iscoroutinefunction(wrapped)


@pytest.mark.parametrize(
    "options",
    [{}, {"timeout": 5.0}, {"on_result": lambda v: False}, {"budget": RetryBudget()}],
    ids=["fast", "timeout", "on_result", "budget"],
)
def test_arguments_and_methods_pass_through(options: dict[str, Any], sleeps: Sleeps) -> None:
    """Positional and keyword arguments reach the function; methods get self."""

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @Retry(on=ConnectionError, sleep=sleeps, **options)
        def get(self, path: str, *, query: str = "") -> str:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError
            return f"{path}?{query}"

    client = Client()
    assert client.get("/a", query="b=1") == "/a?b=1"
    assert client.calls == 2


def test_call_runs_a_function_with_retries(sleeps: Sleeps) -> None:
    """retry.call(fn, *args, **kwargs) retries like the decorator."""
    fn = failing(2)
    policy = Retry(on=ConnectionError, sleep=sleeps, backoff=STEADY)
    assert policy.call(fn) == "ok"
    assert policy.call(int, "12", base=8) == 10
    assert sleeps == pytest.approx([0.1, 0.2])


def test_one_retry_serves_many_threads(clock: FakeClock) -> None:
    """A shared Retry keeps no per-call state: concurrent calls count attempts independently."""
    policy = Retry(on=ConnectionError, attempts=4, backoff=backoff.none())
    results: dict[int, tuple[str, int]] = {}
    barrier = threading.Barrier(16)

    def worker(index: int) -> None:
        counter = [0]

        @policy
        def flaky() -> str:
            counter[0] += 1
            if counter[0] <= index % 4:
                raise ConnectionError
            return f"ok-{index}"

        barrier.wait()
        for _ in range(50):
            counter[0] = 0
            results[index] = (flaky(), counter[0])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: (f"ok-{i}", i % 4 + 1) for i in range(16)}


def test_interface_for_transports(clock: FakeClock) -> None:
    """The settings and helpers the httpx transport reads."""
    budget = RetryBudget(clock=clock)
    policy = Retry(
        on=ConnectionError,
        attempts=4,
        backoff=STEADY,
        timeout=timedelta(seconds=9),
        budget=budget,
        name="svc",
        clock=clock,
    )
    assert (policy.attempts, policy.max_attempts(), policy.timeout) == (4, 4, 9.0)
    assert policy.budget is budget
    assert [policy.compute_wait(n) for n in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.4])
    from_error = Retry(on=OSError, backoff=tenacity.wait_exception(lambda exc: 7.0))
    assert from_error.compute_wait(1, ConnectionError()) == 7.0
    assert policy.should_retry(ConnectionError()) is True
    assert policy.should_retry(ValueError()) is False
    assert policy.should_retry(CircuitOpenError("x", 1.0)) is False
    assert policy.name == "svc"
    assert policy.clock is clock
    assert policy.backoff is STEADY
    assert callable(policy.sleep)
    assert callable(policy.asleep)
    assert policy.on_result is None


def test_retry_returns_a_retry_and_a_retry_is_a_decorator() -> None:
    """retry(...) is Retry(...); both decorate."""
    policy = retry(on=ConnectionError, attempts=2)
    assert isinstance(policy, Retry)
    assert policy(lambda: 1)() == 1


def test_on_is_required() -> None:
    """There is no default for on: it must be passed."""
    with pytest.raises(TypeError):
        Retry()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        retry()  # type: ignore[call-arg]


def test_bare_decorator_fails_loudly() -> None:
    """A bare @retry is a TypeError, not a function silently taken for the on predicate."""

    def fetch() -> None:
        pass

    with pytest.raises(TypeError):
        retry(fetch)  # type: ignore[call-arg, arg-type]
    with pytest.raises(TypeError):
        Retry(fetch)  # type: ignore[call-arg, arg-type]


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"on": 3}, "on"),
        ({"on": "ConnectionError"}, "on"),
        ({"on": ConnectionError, "attempts": 0}, "attempts"),
        ({"on": ConnectionError, "attempts": 2.5}, "attempts"),
        ({"on": ConnectionError, "attempts": True}, "attempts"),
        ({"on": ConnectionError, "timeout": 0}, "timeout"),
        ({"on": ConnectionError, "timeout": -1.0}, "timeout"),
        ({"on": ConnectionError, "backoff": 0.5}, "backoff"),
        ({"on": ConnectionError, "on_result": "x"}, "on_result"),
        ({"on": ConnectionError, "budget": 0.2}, "budget"),
        ({"on": ConnectionError, "name": ""}, "name"),
        ({"on": ConnectionError, "clock": None}, "clock"),
        ({"on": ConnectionError, "sleep": 1}, "sleep"),
        ({"on": ConnectionError, "asleep": 1}, "asleep"),
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, Any], setting: str) -> None:
    """Invalid settings fail at construction with ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=f"^{setting} "):
        Retry(**kwargs)


def test_repr_names_the_settings() -> None:
    """The repr shows what the retry does."""
    text = repr(Retry(on=(ConnectionError,), attempts=2, backoff=backoff.none(), timeout=3.0))
    assert text == (
        "Retry(on=(<class 'ConnectionError'>,), attempts=2, backoff=NoBackoff(), timeout=3.0)"
    )


def test_repr_shows_optional_settings_when_set(clock: FakeClock) -> None:
    """on_result, budget and name appear in the repr only when set."""
    text = repr(
        Retry(
            on=OSError,
            on_result=bool,
            budget=RetryBudget(clock=clock),
            name="svc",
            backoff=backoff.none(),
        )
    )
    assert "on_result=<class 'bool'>" in text
    assert "budget=RetryBudget(ratio=0.2" in text
    assert text.endswith("name='svc')")
