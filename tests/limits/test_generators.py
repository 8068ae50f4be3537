"""Generators under every decorator: the whole iteration is the call, or decoration refuses."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import Any

import pytest

from resilience import (
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    DeadlineExceeded,
    Policy,
    Retry,
    backoff,
    deadline,
    fallback,
    remaining,
    retry,
    timeout,
)
from resilience.testing import FakeClock


class Boom(Exception):
    pass


def _fail() -> None:
    raise Boom


def half_open(clock: FakeClock, name: str, **kwargs: float) -> CircuitBreaker:
    """A breaker tripped by one failure, now HALF_OPEN with one probe slot."""
    b = CircuitBreaker(name, consecutive_failures=1, clock=clock, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(Boom):
        b.call(_fail)
    clock.advance(30)
    assert b.state is CircuitState.HALF_OPEN
    return b


# ---------------------------------------------------------------- breaker, sync generators


def test_breaker_records_a_generator_failing_mid_iteration(clock: FakeClock) -> None:
    """A generator that fails after its first item is a failure of the breaker."""
    b = CircuitBreaker("gen-fail", consecutive_failures=1, clock=clock)

    @b
    def rows() -> Iterator[int]:
        yield 1
        raise Boom("db went away mid-stream")

    assert inspect.isgeneratorfunction(rows)
    items = rows()
    assert b.metrics().calls == 0  # created: nothing ran, nothing recorded
    assert next(items) == 1
    with pytest.raises(Boom):
        next(items)
    assert b.state is CircuitState.OPEN


def test_breaker_records_one_success_when_the_generator_ends(clock: FakeClock) -> None:
    """A generator run to its end is one success; its return value comes through."""
    b = CircuitBreaker("gen-ok", clock=clock)

    @b
    def rows() -> Generator[int, None, str]:
        yield 1
        yield 2
        return "end"

    def consume() -> Iterator[int]:
        result = yield from rows()
        assert result == "end"

    assert list(consume()) == [1, 2]
    m = b.metrics()
    assert (m.calls, m.failures) == (1, 0)


def test_generator_return_value_and_sent_values_pass_through(clock: FakeClock) -> None:
    """send() and the generator's return value go through the wrapper as with yield from."""
    b = CircuitBreaker("gen-send", clock=clock)

    @b
    def echo() -> Generator[str, str, str]:
        received = yield "ready"
        while received != "stop":
            received = yield f"got {received}"
        return "done"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("a") == "got a"
    with pytest.raises(StopIteration) as info:
        gen.send("stop")
    assert info.value.value == "done"
    assert b.metrics().calls == 1


def test_exception_thrown_in_is_passed_to_the_generator(clock: FakeClock) -> None:
    """gen.throw(exc) reaches the wrapped generator, which may handle it and go on."""
    b = CircuitBreaker("gen-throw", consecutive_failures=1, clock=clock)

    @b
    def resilient() -> Generator[str, None, None]:
        try:
            yield "first"
        except KeyError:
            yield "recovered"

    gen = resilient()
    assert next(gen) == "first"
    assert gen.throw(KeyError("k")) == "recovered"
    assert list(gen) == []
    assert (b.metrics().calls, b.state) == (1, CircuitState.CLOSED)


def test_open_breaker_rejects_at_the_first_next(clock: FakeClock) -> None:
    """An open breaker rejects when the iteration starts; the generator body never runs."""
    b = CircuitBreaker("gen-open", clock=clock)
    ran: list[str] = []

    @b
    def rows() -> Iterator[int]:
        ran.append("body")
        yield 1

    items = rows()
    b.force_open()
    with pytest.raises(CircuitOpenError):
        next(items)
    assert ran == []


def test_generator_created_but_never_iterated_holds_no_probe(clock: FakeClock) -> None:
    """Creating a generator in HALF_OPEN takes no probe slot; closing early gives it back."""
    b = half_open(clock, "gen-probe")

    @b
    def rows() -> Generator[int, None, None]:
        yield 1
        yield 2

    idle = rows()  # never iterated
    first = rows()
    assert next(first) == 1
    assert b.metrics().half_open_in_flight == 1
    first.close()  # the consumer stopped early: no outcome, the slot is free again
    assert b.metrics().half_open_in_flight == 0
    assert list(rows()) == [1, 2]
    assert b.state is CircuitState.CLOSED
    idle.close()


def test_breaker_marks_the_generator_body_only(clock: FakeClock) -> None:
    """Inside the generator the breaker is met once; the consumer's own calls count apart."""
    b = CircuitBreaker("gen-mark", clock=clock)
    lookup = b(str.upper)

    @b
    def names() -> Iterator[str]:
        yield lookup("ann")  # part of the iteration: passes through
        yield lookup("bob")

    seen = [lookup(name) for name in names()]  # the consumer's calls: recorded
    assert seen == ["ANN", "BOB"]
    assert b.metrics().calls == 3  # one iteration + two calls by the consumer


def test_call_with_a_generator_guards_its_iteration(clock: FakeClock) -> None:
    """breaker.call(generator function) records the iteration, not the creation."""
    b = CircuitBreaker("gen-call", consecutive_failures=1, clock=clock)

    def rows() -> Iterator[int]:
        yield 1
        raise Boom

    items = b.call(rows)
    assert b.metrics().calls == 0
    with pytest.raises(Boom):
        list(items)
    assert b.state is CircuitState.OPEN


def test_call_with_a_decorated_generator_counts_once(clock: FakeClock) -> None:
    """breaker.call(decorated generator function): one iteration, one outcome."""
    b = CircuitBreaker("gen-call-twice", consecutive_failures=2, clock=clock)

    @b
    def rows() -> Iterator[int]:
        yield 1
        raise Boom

    with pytest.raises(Boom):
        list(b.call(rows))
    assert (b.metrics().calls, b.state) == (1, CircuitState.CLOSED)
    with pytest.raises(Boom):
        list(b(rows)())  # decorated twice: still one outcome per iteration
    assert (b.metrics().calls, b.state) == (2, CircuitState.OPEN)


def test_slow_call_timing_covers_the_iteration(clock: FakeClock) -> None:
    """With slow_call_duration, the time from the first next() to the end is measured."""
    b = CircuitBreaker("gen-slow", slow_call_duration=1.0, clock=clock)

    @b
    def rows() -> Iterator[int]:
        yield 1
        clock.advance(2)
        yield 2

    assert list(rows()) == [1, 2]
    assert b.metrics().slow_calls == 1


# ---------------------------------------------------------------- breaker, async generators


async def test_breaker_records_an_async_generator_failing(clock: FakeClock) -> None:
    """An async generator that fails mid-stream is a failure; creating it records nothing."""
    b = CircuitBreaker("agen-fail", consecutive_failures=1, clock=clock)

    @b
    async def rows() -> AsyncIterator[int]:
        yield 1
        raise Boom

    assert inspect.isasyncgenfunction(rows)
    items = rows()
    assert b.metrics().calls == 0
    assert await items.__anext__() == 1
    with pytest.raises(Boom):
        await items.__anext__()
    assert b.state is CircuitState.OPEN


async def test_async_generator_success_send_and_early_close(clock: FakeClock) -> None:
    """asend() passes through, the end is a success, aclose() early records nothing."""
    b = half_open(clock, "agen-ok")

    @b
    async def echo() -> AsyncGenerator[str, str | None]:
        received = yield "ready"
        while received is not None:
            received = yield f"got {received}"

    gen = echo()
    assert await gen.asend(None) == "ready"
    assert await gen.asend("a") == "got a"
    assert b.metrics().half_open_in_flight == 1
    await gen.aclose()
    assert (b.metrics().half_open_in_flight, b.state) == (0, CircuitState.HALF_OPEN)
    assert [item async for item in echo()] == ["ready"]
    assert b.state is CircuitState.CLOSED


async def test_async_generator_throw_reaches_it(clock: FakeClock) -> None:
    """athrow() reaches the wrapped async generator."""
    b = CircuitBreaker("agen-throw", consecutive_failures=1, clock=clock)

    @b
    async def resilient() -> AsyncGenerator[str, None]:
        try:
            yield "first"
        except KeyError:
            yield "recovered"

    gen = resilient()
    assert await gen.__anext__() == "first"
    assert await gen.athrow(KeyError("k")) == "recovered"
    await gen.aclose()
    assert b.state is CircuitState.CLOSED


async def test_cancelled_async_generator_gives_its_probe_back(clock: FakeClock) -> None:
    """Cancelling the task iterating an async generator records nothing and frees the probe."""
    b = half_open(clock, "agen-cancel")
    started = asyncio.Event()

    @b
    async def stream() -> AsyncIterator[int]:
        started.set()
        await asyncio.Event().wait()
        yield 1

    async def consume() -> None:
        async for _ in stream():
            pass

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (b.metrics().half_open_in_flight, b.state) == (0, CircuitState.HALF_OPEN)


# ---------------------------------------------------------------- retry and fallback refuse


def _rows() -> Iterator[int]:
    yield 1


async def _arows() -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize("fn", [_rows, _arows], ids=["generator", "async-generator"])
@pytest.mark.parametrize(
    ("make", "label"),
    [
        (lambda: retry(on=ConnectionError), "retry cannot decorate"),
        (lambda: Retry(on=ConnectionError, timeout=1.0), "retry cannot decorate"),
        (lambda: fallback([]), "fallback cannot decorate"),
        (lambda: Policy(retry=Retry(on=OSError)), "Policy(retry=...) cannot decorate"),
        (lambda: Policy(fallback=fallback(0), timeout=1.0), "Policy(fallback=...) cannot"),
    ],
    ids=["retry", "Retry-timeout", "fallback", "policy-retry", "policy-fallback"],
)
def test_retry_and_fallback_refuse_generators(
    fn: Callable[[], object], make: Callable[[], Callable[[Any], Any]], label: str
) -> None:
    """Retrying or replacing a half-done iteration is unsound: decoration says so and why."""
    with pytest.raises(ConfigError) as info:
        make()(fn)
    message = str(info.value)
    assert message.startswith(label)
    assert fn.__qualname__ in message
    assert "cannot be taken back" in message
    assert "consumes the items" in message or "opens the stream" in message


def test_policy_refusal_names_every_slot_to_drop() -> None:
    """A Policy with both a retry and a fallback names both."""
    policy = Policy(retry=Retry(on=OSError), fallback=fallback(0))
    with pytest.raises(ConfigError, match=r"Policy\(retry=\.\.\., fallback=\.\.\.\)"):
        policy(_rows)


def test_retry_still_decorates_a_function_returning_a_list() -> None:
    """The advice works: a function that collects the items is retried as usual."""
    calls = []

    @retry(on=ConnectionError, attempts=2, backoff=backoff.none())
    def pages() -> list[int]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError
        return list(_rows())

    assert pages() == [1]


# ---------------------------------------------------------------- timeout


def test_timeout_covers_the_whole_iteration(clock: FakeClock) -> None:
    """Each step sees what is left of one deadline; the consumer between items sees none."""
    seen: list[float | None] = []

    @timeout(10.0, clock=clock)
    def rows() -> Iterator[int]:
        seen.append(remaining())
        yield 1
        seen.append(remaining())
        yield 2
        seen.append(remaining())
        yield 3

    items = rows()
    assert next(items) == 1
    assert remaining() is None  # the deadline is not the consumer's
    clock.advance(4)
    assert next(items) == 2
    clock.advance(6)
    with pytest.raises(DeadlineExceeded, match=r"an item of .*rows"):
        next(items)
    assert seen == [10.0, 6.0]


def test_timeout_keeps_an_earlier_outer_deadline(clock: FakeClock) -> None:
    """Inside an outer deadline that ends sooner, the generator's steps see the outer one."""
    seen: list[float | None] = []

    @timeout(10.0, clock=clock)
    def rows() -> Iterator[int]:
        seen.append(remaining())
        yield 1

    with deadline(3.0, clock=clock):
        assert list(rows()) == [1]
    assert seen == [3.0]


async def test_async_timeout_cancels_a_step_at_the_deadline() -> None:
    """An async generator step still running at the deadline is cancelled."""
    cleaned: list[str] = []

    @timeout(0.05)
    async def stream() -> AsyncIterator[int]:
        yield 1
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("finally")
        yield 2

    items = stream()
    assert await items.__anext__() == 1
    assert remaining() is None
    with pytest.raises(DeadlineExceeded):
        await items.__anext__()
    assert cleaned == ["finally"]


async def test_async_timeout_counts_the_consumer_time(clock: FakeClock) -> None:
    """Time spent by the consumer between items counts: the next step may not start."""

    @timeout(5.0, clock=clock)
    async def stream() -> AsyncIterator[int]:
        yield 1
        yield 2

    items = stream()
    assert await items.__anext__() == 1
    clock.advance(5)
    with pytest.raises(DeadlineExceeded):
        await items.__anext__()


# ---------------------------------------------------------------- bulkhead


def test_bulkhead_holds_a_slot_for_the_whole_iteration() -> None:
    """A suspended generator keeps its slot; the end, a failure or close() gives it back."""
    bh = Bulkhead(1)

    @bh
    def rows(fail: bool = False) -> Generator[int, None, None]:
        yield 1
        if fail:
            raise Boom
        yield 2

    first = rows()
    assert bh.active == 0  # created, not started
    assert next(first) == 1
    assert bh.active == 1
    with pytest.raises(BulkheadFull):
        next(rows())
    assert list(first) == [2]
    assert bh.active == 0
    failing = rows(fail=True)
    next(failing)
    with pytest.raises(Boom):
        next(failing)
    assert bh.active == 0
    closed = rows()
    next(closed)
    closed.close()
    assert bh.active == 0


async def test_bulkhead_holds_a_slot_for_an_async_iteration() -> None:
    """The async twin: the slot is taken at the first anext and freed by aclose()."""
    bh = Bulkhead(1)

    @bh
    async def stream() -> AsyncGenerator[int, None]:
        yield 1
        yield 2

    items = stream()
    assert await items.__anext__() == 1
    assert bh.active == 1
    with pytest.raises(BulkheadFull):
        await stream().__anext__()
    await items.aclose()
    assert bh.active == 0
    assert [item async for item in stream()] == [1, 2]
    assert bh.active == 0


# ---------------------------------------------------------------- policy


def test_policy_guards_a_generator_iteration(clock: FakeClock) -> None:
    """timeout, bulkhead, breaker and attempt_timeout guard the iteration, one outcome each."""
    breaker = CircuitBreaker("gen-policy", consecutive_failures=2, clock=clock)
    bh = Bulkhead(1)
    policy = Policy(timeout=10.0, bulkhead=bh, breaker=breaker, attempt_timeout=5.0, clock=clock)
    seen: list[tuple[int, float | None]] = []

    @policy
    def rows() -> Iterator[int]:
        seen.append((bh.active, remaining()))
        yield 1
        raise Boom

    assert inspect.isgeneratorfunction(rows)
    items = rows()
    assert next(items) == 1
    with pytest.raises(Boom):
        next(items)
    assert seen == [(1, 5.0)]
    assert bh.active == 0
    assert (breaker.metrics().calls, breaker.metrics().failures) == (1, 1)


async def test_policy_guards_an_async_generator_iteration(clock: FakeClock) -> None:
    """The async twin of the policy over a generator."""
    breaker = CircuitBreaker("agen-policy", consecutive_failures=1, clock=clock)

    @Policy(timeout=10.0, bulkhead=1, breaker=breaker, clock=clock)
    async def stream() -> AsyncIterator[int]:
        yield 1
        raise Boom

    assert inspect.isasyncgenfunction(stream)
    with pytest.raises(Boom):
        async for _ in stream():
            pass
    assert breaker.state is CircuitState.OPEN


def test_generator_wrappers_keep_metadata_and_defaults(clock: FakeClock) -> None:
    """Every generator wrapper keeps the name, docstring, signature and defaults."""

    def rows(limit: int = 2, *, start: int = 0) -> Iterator[int]:
        """Count."""
        yield from range(start, start + limit)

    for decorator in (
        CircuitBreaker("gen-meta", clock=clock),
        timeout(5.0),
        Bulkhead(2),
        Policy(timeout=5.0, bulkhead=2),
    ):
        wrapped = decorator(rows)
        assert (wrapped.__name__, wrapped.__doc__) == ("rows", "Count.")
        assert inspect.signature(wrapped) == inspect.signature(rows)
        assert (wrapped.__defaults__, wrapped.__kwdefaults__) == ((2,), {"start": 0})
        assert list(wrapped(start=3)) == [3, 4]
