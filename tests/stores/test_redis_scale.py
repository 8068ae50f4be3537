"""A RedisStore at scale: keys expire when unused, idle breakers cost (almost) nothing (F14)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from resilience import CircuitBreaker, CircuitState
from resilience.stores import RedisStore
from tests.redis_support import eventually, fail, needs_redis, sync

pytestmark = [pytest.mark.redis, needs_redis]
# The fixtures client, prefix and make_store.
pytest_plugins = ["tests.redis_fixtures"]


def test_every_key_has_a_ttl_but_an_operators_switch(
    make_store: Callable[..., RedisStore], client: Any, prefix: str
) -> None:
    """Breaker, budget and heartbeat keys expire; force_open persists until reset()."""
    store = make_store()
    breaker = CircuitBreaker("ttl", store=store, consecutive_failures=1, open_duration=5)
    budget = store.retry_budget("ttl", min_per_second=1)
    breaker.call(int)
    budget.record_call()
    sync(store)
    ttl_ms = store.key_ttl * 1000
    for key in (f"{prefix}{{ttl}}", f"{prefix}{{budget:ttl}}", f"{prefix}heartbeats"):
        assert 0 < client.pttl(key) <= ttl_ms, key
    fail(breaker)
    sync(store)
    assert 0 < client.pttl(f"{prefix}{{ttl}}") <= ttl_ms
    breaker.force_open()
    sync(store)
    assert client.pttl(f"{prefix}{{ttl}}") == -1  # survives any restart, until reset()
    breaker.reset()
    sync(store)
    assert 0 < client.pttl(f"{prefix}{{ttl}}") <= ttl_ms


def test_keys_live_while_used_and_expire_after(
    make_store: Callable[..., RedisStore], client: Any, prefix: str
) -> None:
    """An idle breaker's key is renewed while its process lives, and expires once it is gone."""
    store = make_store()
    store.key_ttl = 1.0  # a 1 s TTL (a minute at least in real use), renewed every 0.25 s
    store._next_sweep = 0.0
    breaker = CircuitBreaker("expiring", store=store, open_duration=0.2)
    breaker.call(int)
    sync(store)
    key = f"{prefix}{{expiring}}"
    assert 0 < client.pttl(key) <= 1000
    time.sleep(2.5)  # idle for more than two TTLs
    assert client.exists(key)
    store.close()  # the last process holding the breaker is gone
    assert eventually(lambda: not list(client.scan_iter(match=f"{prefix}*")), timeout=5.0)


def test_an_idle_process_keeps_counting_a_dead_one_stops(
    make_store: Callable[..., RedisStore],
) -> None:
    """An idle process's window counts for the fleet (heartbeat); a closed process's stops."""
    a, b = make_store(), make_store()
    a.stale = b.stale = 0.6  # how long an unchanged window of a silent process counts (3 s)
    settings: dict[str, Any] = {"failure_rate": 0.5, "minimum_calls": 10}
    ba = CircuitBreaker("idle-counts", store=a, **settings)
    bb = CircuitBreaker("idle-counts", store=b, **settings)
    fail(ba, 6)
    sync(a, b)
    time.sleep(1.5)  # a stays idle for more than two stale periods
    fail(bb, 4)  # 6 + 4 = minimum_calls, all failures: the fleet trips
    sync(b, a, b)
    assert bb.state is CircuitState.OPEN
    bb.reset()
    assert eventually(lambda: ba.state is CircuitState.CLOSED)
    fail(ba, 6)
    sync(a, b)
    a.close()  # a dies: its heartbeat stops, its unchanged window soon stops counting
    time.sleep(1.5)
    fail(bb, 4)
    sync(b, b)
    assert bb.state is CircuitState.CLOSED  # 4 of 10 calls: not enough without a's


def test_idle_breakers_cost_almost_no_cpu(make_store: Callable[..., RedisStore]) -> None:
    """1,000 idle shared breakers: the process uses a few % of a core at most (was ~30 %)."""
    store = make_store(sync_interval=0.1)
    tag = uuid.uuid4().hex[:8]
    breakers = [CircuitBreaker(f"idle-{tag}-{i}", store=store) for i in range(1000)]
    for breaker in breakers:
        breaker.call(int)  # each was used once: a non-empty window that no longer changes
    sync(store)
    time.sleep(store.stale + 0.5)  # every breaker has gone idle
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(3.0)
    share = (time.process_time() - cpu) / (time.monotonic() - wall)
    assert share < 0.08, f"{share:.1%} of a core"  # measured ~1 %; the old store ~20-30 %
    assert store.healthy
