"""One call, one outcome: a breaker met twice on one call takes one permit, records once."""

from __future__ import annotations

import asyncio
import functools

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, timeout
from resilience.testing import FakeClock


class Boom(Exception):
    pass


def test_decorated_function_through_call_counts_once(clock: FakeClock) -> None:
    """breaker.call(decorated): one failure is one failure, not two in a row."""
    b = CircuitBreaker("guard-call", consecutive_failures=2, clock=clock)

    @b
    def charge() -> None:
        raise Boom

    with pytest.raises(Boom):
        b.call(charge)
    m = b.metrics()
    assert (m.state, m.calls, m.consecutive_failures) == (CircuitState.CLOSED, 1, 1)
    assert b.call(b(len), "abc") == 3
    assert b.metrics().calls == 2


async def test_async_decorated_function_through_call_async_counts_once(clock: FakeClock) -> None:
    """await breaker.call_async(decorated): one outcome per call."""
    b = CircuitBreaker("guard-acall", consecutive_failures=2, clock=clock)

    @b
    async def charge() -> None:
        raise Boom

    with pytest.raises(Boom):
        await b.call_async(charge)
    m = b.metrics()
    assert (m.state, m.calls, m.consecutive_failures) == (CircuitState.CLOSED, 1, 1)


def test_one_probe_slot_serves_a_call_met_twice(clock: FakeClock) -> None:
    """In HALF_OPEN with one slot, breaker.call(decorated) is one probe, and it closes."""
    b = CircuitBreaker("guard-probe", consecutive_failures=1, clock=clock)
    in_flight: list[int] = []

    @b
    def ping() -> str:
        in_flight.append(b.metrics().half_open_in_flight)
        return "pong"

    with pytest.raises(Boom):
        b.call(_fail)
    clock.advance(30)
    assert b.call(ping) == "pong"
    assert in_flight == [1]
    assert b.state is CircuitState.CLOSED


def _fail() -> None:
    raise Boom


def test_nested_decorated_functions_share_one_probe(clock: FakeClock) -> None:
    """Outside CLOSED, a decorated function calling another one of the breaker is one probe."""
    b = CircuitBreaker("guard-nested", consecutive_failures=1, clock=clock)

    @b
    def user() -> str:
        return "ann"

    @b
    def profile() -> str:
        return f"profile of {user()}"

    with pytest.raises(Boom):
        b.call(_fail)
    clock.advance(30)
    assert profile() == "profile of ann"
    assert b.state is CircuitState.CLOSED


def test_decorating_twice_guards_once(clock: FakeClock) -> None:
    """The same breaker stacked twice (even with layers between) records one outcome."""
    b = CircuitBreaker("guard-twice", consecutive_failures=2, clock=clock)

    def charge() -> None:
        raise Boom

    twice = b(timeout(5.0, clock=clock)(b(charge)))
    with pytest.raises(Boom):
        twice()
    assert (b.metrics().calls, b.state) == (1, CircuitState.CLOSED)


def test_another_breaker_inside_counts_on_its_own(clock: FakeClock) -> None:
    """Two different breakers on one call each record it: only the same breaker passes through."""
    outer = CircuitBreaker("guard-outer", consecutive_failures=5, clock=clock)
    inner = CircuitBreaker("guard-inner", consecutive_failures=5, clock=clock)
    charge = inner(_fail)
    with pytest.raises(Boom):
        outer.call(charge)
    assert outer.metrics().failures == inner.metrics().failures == 1


def test_partial_of_a_decorated_function_through_call_counts_once(clock: FakeClock) -> None:
    """The mark is on the call, not on the function: a partial or lambda is seen through."""
    b = CircuitBreaker("guard-partial", consecutive_failures=2, clock=clock)

    @b
    def charge(cents: int) -> None:
        raise Boom(cents)

    with pytest.raises(Boom):
        b.call(functools.partial(charge, 250))
    with pytest.raises(Boom):
        b.call(lambda: charge(100))
    assert b.metrics().calls == 2  # two calls, each recorded once: it opens at the second
    assert b.state is CircuitState.OPEN


async def test_task_outliving_a_guarded_call_is_guarded_again(clock: FakeClock) -> None:
    """A task spawned inside a guarded call, running after it ended, meets an open breaker."""
    b = CircuitBreaker("guard-task", consecutive_failures=1, clock=clock)
    go = asyncio.Event()
    ran: list[str] = []

    @b
    async def notify() -> None:
        ran.append("notify")

    async def later() -> None:
        await go.wait()
        await notify()

    async def handler() -> asyncio.Task[None]:
        return asyncio.create_task(later())  # copies the context, mark included

    task = await b.call_async(handler)
    b.force_open()
    go.set()
    with pytest.raises(CircuitOpenError):
        await task
    assert ran == []


async def test_tasks_inside_a_guarded_call_are_part_of_it(clock: FakeClock) -> None:
    """Work gathered inside one guarded call is that call: one permit, one outcome."""
    b = CircuitBreaker("guard-gather", consecutive_failures=1, clock=clock)

    @b
    async def part(n: int) -> int:
        return n

    async def whole() -> int:
        return sum(await asyncio.gather(part(1), part(2), part(3)))

    with pytest.raises(Boom):
        b.call(_fail)
    clock.advance(30)
    assert await b.call_async(whole) == 6
    assert b.state is CircuitState.CLOSED
