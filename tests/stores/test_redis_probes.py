"""HALF_OPEN probes with a shared store: bounded waits on Redis, and verdicts seen at once.

A probe is the only call that waits for Redis: for its fleet slot, then for the fleet's
verdict on the probes. Both together take at most the store's ``timeout`` (audit F09), and
the process whose outcome decided applies the verdict before its caller returns, so its
next call never sees a stale HALF_OPEN.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState
from resilience.stores import RedisStore
from resilience.testing import FakeClock
from tests.helpers import TcpProxy
from tests.redis_support import eventually, fail, needs_redis, sync

pytestmark = [pytest.mark.redis, needs_redis]
# The fixtures client, prefix and make_store.
pytest_plugins = ["tests.redis_fixtures"]


@pytest.fixture
def slow_proxy() -> Iterator[TcpProxy]:
    """A proxy to Redis that can add latency and cut connections; stopped at teardown."""
    value = TcpProxy()
    value.start()
    yield value
    value.stop()


def _settings(clock: FakeClock, **extra: Any) -> dict[str, Any]:
    return {"consecutive_failures": 1, "open_duration": 5, "clock": clock, **extra}


def test_a_probe_waits_at_most_the_timeout_behind_a_slow_link(
    make_store: Callable[..., RedisStore], slow_proxy: TcpProxy
) -> None:
    """120 ms round trips on fresh connections: the probe call still returns within ~timeout."""
    clock = FakeClock()
    store = make_store(port=slow_proxy.port, timeout=0.2, sync_interval=5.0)
    breaker = CircuitBreaker("slow-probe", store=store, **_settings(clock))
    fail(breaker)
    sync(store)  # the trip is in Redis
    slow_proxy.delay = 0.06
    slow_proxy.cut()  # a reconnect's handshake, a script load, the script: ~6 round trips
    clock.advance(5)
    start = time.monotonic()
    assert breaker.call(int) == 0
    blocked = time.monotonic() - start
    assert blocked < 0.4, blocked  # one timeout (0.2 s), with room for a busy machine
    # The store finishes in the background: the probe's success closes the breaker.
    assert eventually(lambda: breaker.state is CircuitState.CLOSED, timeout=10.0)


def test_slot_and_verdict_share_one_timeout(
    make_store: Callable[..., RedisStore], slow_proxy: TcpProxy
) -> None:
    """60 ms round trips, warm connection: slot plus verdict fit in the timeout, seen at once."""
    clock = FakeClock()
    store = make_store(port=slow_proxy.port, timeout=0.5, sync_interval=5.0)
    breaker = CircuitBreaker("shared-budget", store=store, **_settings(clock))
    fail(breaker)
    sync(store)  # the trip is in Redis, the scripts are loaded, a connection is warm
    slow_proxy.delay = 0.03
    clock.advance(5)
    start = time.monotonic()
    assert breaker.call(int) == 0
    blocked = time.monotonic() - start
    assert breaker.state is CircuitState.CLOSED  # the verdict came before the call returned
    assert 0.1 < blocked < 0.6, blocked  # two round trips, within one timeout


def test_the_deciding_process_applies_the_verdict_at_once(
    make_store: Callable[..., RedisStore],
) -> None:
    """The process whose probe decided never sees a stale HALF_OPEN; the others follow."""
    clock = FakeClock()
    a, b = make_store(), make_store()
    ba = CircuitBreaker("verdict", store=a, **_settings(clock))
    bb = CircuitBreaker("verdict", store=b, **_settings(clock))
    for _ in range(5):
        fail(ba)
        sync(a, b)
        clock.advance(5)
        assert ba.call(int) == 0  # the probe succeeds...
        assert ba.state is CircuitState.CLOSED  # ...and closes the breaker here at once
        assert ba.call(int) == 0
        assert eventually(lambda: bb.state is CircuitState.CLOSED)
    fail(ba)
    sync(a, b)
    clock.advance(5)
    fail(ba)  # the probe fails: OPEN again at once, for a full open_duration
    with pytest.raises(CircuitOpenError) as caught:
        ba.call(int)
    assert caught.value.retry_after == pytest.approx(5.0, abs=0.5)
    assert eventually(lambda: bb.state is CircuitState.OPEN)


def test_only_the_deciding_outcome_waits_for_the_verdict(
    make_store: Callable[..., RedisStore],
) -> None:
    """Two probes in two processes: the first outcome decides nothing, the second closes."""
    clock = FakeClock()
    a, b = make_store(), make_store()
    ba = CircuitBreaker("verdict-two", store=a, **_settings(clock, half_open_calls=2))
    bb = CircuitBreaker("verdict-two", store=b, **_settings(clock, half_open_calls=2))
    fail(ba)
    sync(a, b)
    clock.advance(5)
    first, second = ba.acquire(), bb.acquire()
    ba.record_success(first)
    assert ba.state is CircuitState.HALF_OPEN  # one of two: no verdict yet
    bb.record_success(second)
    assert bb.state is CircuitState.CLOSED  # the deciding process: at once
    assert eventually(lambda: ba.state is CircuitState.CLOSED)


def test_an_async_probe_sees_its_verdict_at_once(make_store: Callable[..., RedisStore]) -> None:
    """The same in asyncio code: after the awaited probe, the breaker is already CLOSED."""
    clock = FakeClock()
    store = make_store()
    breaker = CircuitBreaker("verdict-async", store=store, **_settings(clock))
    fail(breaker)
    sync(store)
    clock.advance(5)

    async def probe() -> CircuitState:
        async def ok() -> int:
            return 1

        assert await breaker.call_async(ok) == 1
        return breaker.state

    assert asyncio.run(probe()) is CircuitState.CLOSED
