"""Breaker state shared through the real Redis on 127.0.0.1:6379 (several stores = processes).

Two `RedisStore` objects in one process behave as two processes (each has its own process
id, threads and connections), which lets most fleet behaviour be tested here with direct
control; tests/stores/test_redis_multiprocess.py checks it across real OS processes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import resilience
from resilience import CircuitBreaker, CircuitOpenError, CircuitState, ConfigError
from resilience._observe._events import CircuitStateChanged, Event
from resilience._stores._redis_store import RedisBinding
from resilience.stores import BreakerStore, InMemoryStore, RedisStore
from resilience.testing import FakeClock
from tests.helpers import REDIS_PORT, TcpProxy
from tests.redis_support import eventually, fail, needs_redis, sync

redis = pytest.importorskip("redis")

pytestmark = [pytest.mark.redis]
# The fixtures client, prefix, make_store and proxy.
pytest_plugins = ["tests.redis_fixtures"]


# ---------------------------------------------------------------------------- no Redis needed


def test_in_memory_store_binds_nothing() -> None:
    """InMemoryStore is the default behaviour: the breaker keeps its state, no binding."""
    store = InMemoryStore()
    breaker = CircuitBreaker("in-memory", store=store, consecutive_failures=1)
    assert isinstance(store, BreakerStore)
    assert breaker._machine.binding is None
    fail(breaker)
    assert breaker.state is CircuitState.OPEN
    store.close()


def test_store_must_be_a_store() -> None:
    """A store without bind() is a ConfigError naming the setting."""
    with pytest.raises(ConfigError, match="store"):
        CircuitBreaker("bad-store", store=object())  # type: ignore[arg-type]
    assert not [b for b in resilience.breakers() if b.name == "bad-store"]


def test_redis_store_validates_settings() -> None:
    """Bad settings and non-Redis clients fail at construction with ConfigError."""
    client = redis.Redis(port=REDIS_PORT)
    with pytest.raises(ConfigError, match="sync_interval"):
        RedisStore(client, sync_interval=0)
    with pytest.raises(ConfigError, match="timeout"):
        RedisStore(client, timeout=-1)
    with pytest.raises(ConfigError, match="prefix"):
        RedisStore(client, prefix="")
    with pytest.raises(ConfigError, match="client"):
        RedisStore(object())


def test_unreachable_redis_never_reaches_callers(caplog: pytest.LogCaptureFixture) -> None:
    """With no Redis at all, calls run on local state and the outage is logged once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    store = RedisStore(redis.Redis(port=port), sync_interval=0.01, timeout=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="resilience"):
            breaker = CircuitBreaker("no-redis", store=store, consecutive_failures=3)
            assert eventually(lambda: not store.healthy)
            for _ in range(200):
                assert breaker.call(lambda: 7) == 7
            fail(breaker, 3)
            assert breaker.state is CircuitState.OPEN
            time.sleep(0.1)  # several retries with backoff
        outages = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(outages) == 1
    finally:
        store.close()


# ---------------------------------------------------------------------------- with Redis


@needs_redis
def test_fleet_window_trips_every_process(make_store: Callable[..., RedisStore]) -> None:
    """Failures spread over two processes fill one window: both trip, neither could alone."""
    a, b = make_store(), make_store()
    ba = CircuitBreaker("fleet-window", store=a, minimum_calls=10, window=20)
    bb = CircuitBreaker("fleet-window", store=b, minimum_calls=10, window=20)
    fail(ba, 5)
    fail(bb, 5)
    assert ba.metrics().calls <= 10
    sync(a, b, a, b)
    assert ba.state is CircuitState.OPEN
    assert bb.state is CircuitState.OPEN


@needs_redis
def test_metrics_show_the_fleet_window(make_store: Callable[..., RedisStore]) -> None:
    """metrics() counts the other processes' calls too."""
    a, b = make_store(), make_store()
    ba = CircuitBreaker("fleet-metrics", store=a, minimum_calls=100)
    bb = CircuitBreaker("fleet-metrics", store=b, minimum_calls=100)
    for _ in range(7):
        ba.call(lambda: None)
    fail(bb, 3)
    sync(b, a)
    metrics = ba.metrics()
    assert (metrics.calls, metrics.failures) == (10, 3)


@needs_redis
def test_consecutive_failures_add_up_across_the_fleet(
    make_store: Callable[..., RedisStore],
) -> None:
    """In consecutive mode the runs of failures of every process add up."""
    a, b = make_store(), make_store()
    ba = CircuitBreaker("fleet-run", store=a, consecutive_failures=4)
    bb = CircuitBreaker("fleet-run", store=b, consecutive_failures=4)
    fail(ba, 2)
    fail(bb, 2)
    sync(a, b, a)
    assert ba.state is CircuitState.OPEN
    assert eventually(lambda: bb.state is CircuitState.OPEN)


@needs_redis
def test_trip_reaches_other_processes_fast(make_store: Callable[..., RedisStore]) -> None:
    """A trip in one process is applied by another through pub/sub within 1 s (goal 100 ms)."""
    a, b = make_store(sync_interval=5.0), make_store(sync_interval=5.0)
    ba = CircuitBreaker("fleet-fast", store=a, consecutive_failures=1)
    bb = CircuitBreaker("fleet-fast", store=b, consecutive_failures=1)
    sync(a, b)
    seen = threading.Event()
    seen_at: list[float] = []

    def listener(event: Event) -> None:
        if isinstance(event, CircuitStateChanged) and event.new_state == "open":
            seen_at.append(time.monotonic())
            seen.set()

    bb.add_listener(listener)
    start = time.monotonic()
    fail(ba)
    # The sync interval is 5 s: only pub/sub can deliver it this fast.
    assert seen.wait(1.0)
    assert seen_at[0] - start < 1.0
    assert bb.state is CircuitState.OPEN


@needs_redis
def test_rejected_late_writer_adopts_the_newer_state(
    make_store: Callable[..., RedisStore],
) -> None:
    """A trip decided on an old epoch is refused in Redis; that process adopts the fleet's."""
    a, b = make_store(), make_store()
    ba = CircuitBreaker("fleet-epoch", store=a, consecutive_failures=1)
    bb = CircuitBreaker("fleet-epoch", store=b, consecutive_failures=1)
    bb.force_open()
    bb.reset()  # the fleet is CLOSED at a newer epoch
    sync(b, a)
    binding = ba._machine.binding
    assert isinstance(binding, RedisBinding)
    binding.epoch = 1  # pretend A never heard of the reset
    states: list[str] = []
    ba.add_listener(
        lambda event: (
            states.append(event.new_state) if isinstance(event, CircuitStateChanged) else None
        )
    )
    fail(ba)
    sync(a)
    assert states == ["open", "closed"]  # open locally at once, then the newer fleet state
    assert ba.state is CircuitState.CLOSED
    assert bb.state is CircuitState.CLOSED


@needs_redis
def test_half_open_lets_one_probe_through_in_the_fleet(
    make_store: Callable[..., RedisStore],
) -> None:
    """With half_open_calls=1, one process probes; the others are rejected; success closes all."""
    clock = FakeClock()
    stores = [make_store() for _ in range(3)]
    breakers = [
        CircuitBreaker("fleet-probe", store=s, consecutive_failures=1, open_duration=5, clock=clock)
        for s in stores
    ]
    fail(breakers[0])
    sync(*stores)
    assert all(b.state is CircuitState.OPEN for b in breakers)
    clock.advance(5)
    permit = breakers[0].acquire()
    for other in breakers[1:]:
        with pytest.raises(CircuitOpenError):
            other.acquire()
    breakers[0].record_success(permit)
    sync(*stores)
    assert [b.state for b in breakers] == [CircuitState.CLOSED] * 3


@needs_redis
def test_probes_are_judged_over_the_fleet(make_store: Callable[..., RedisStore]) -> None:
    """half_open_calls=2 spread over two processes: the fleet's two outcomes decide."""
    clock = FakeClock()
    a, b = make_store(), make_store()
    settings: dict[str, Any] = {"consecutive_failures": 1, "open_duration": 5, "clock": clock}
    ba = CircuitBreaker("fleet-judge", store=a, half_open_calls=2, **settings)
    bb = CircuitBreaker("fleet-judge", store=b, half_open_calls=2, **settings)
    fail(ba)
    sync(a, b)
    clock.advance(5)
    first, second = ba.acquire(), bb.acquire()
    with pytest.raises(CircuitOpenError):
        ba.acquire()  # the fleet's two slots are taken
    ba.record_success(first)
    sync(a, b)
    assert ba.state is CircuitState.HALF_OPEN  # one of two probes done: no verdict yet
    bb.record_failure(second)
    sync(b, a)
    assert ba.state is CircuitState.OPEN
    assert bb.state is CircuitState.OPEN


@needs_redis
def test_released_probe_gives_its_fleet_slot_back(make_store: Callable[..., RedisStore]) -> None:
    """A cancelled probe frees its slot for another process."""
    clock = FakeClock()
    a, b = make_store(), make_store()
    ba = CircuitBreaker("fleet-release", store=a, consecutive_failures=1, clock=clock)
    bb = CircuitBreaker("fleet-release", store=b, consecutive_failures=1, clock=clock)
    fail(ba)
    sync(a, b)
    clock.advance(30)
    permit = ba.acquire()
    with pytest.raises(CircuitOpenError):
        bb.acquire()
    ba.release(permit)
    sync(a)
    other = bb.acquire()
    bb.record_success(other)
    sync(b, a)
    assert ba.state is CircuitState.CLOSED


@needs_redis
@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("force_open", CircuitState.FORCED_OPEN),
        ("disable", CircuitState.DISABLED),
        ("reset", CircuitState.CLOSED),
    ],
)
def test_manual_control_applies_everywhere(
    make_store: Callable[..., RedisStore], action: str, expected: CircuitState
) -> None:
    """force_open(), disable() and reset() in one process apply in every process."""
    stores = [make_store() for _ in range(3)]
    breakers = [CircuitBreaker("fleet-manual", store=s, consecutive_failures=1) for s in stores]
    fail(breakers[1])  # start from OPEN so reset() has something to undo
    sync(*stores)
    getattr(breakers[2], action)()
    for breaker in breakers:
        assert eventually(lambda breaker=breaker: breaker.state is expected)  # type: ignore[misc]


@needs_redis
def test_prefixes_keep_applications_apart(
    make_store: Callable[..., RedisStore], prefix: str
) -> None:
    """Two applications with their own prefixes on one Redis: same name, separate breakers."""
    billing = make_store()
    shipping = RedisStore(redis.Redis(port=REDIS_PORT), prefix=f"{prefix}shipping:")
    try:
        ours = CircuitBreaker("fleet-prefix", store=billing, consecutive_failures=1)
        theirs = CircuitBreaker("fleet-prefix", store=shipping, consecutive_failures=1)
        sync(billing, shipping)
        fail(ours)
        sync(billing, shipping, billing, shipping)
        assert (ours.state, theirs.state) == (CircuitState.OPEN, CircuitState.CLOSED)
    finally:
        shipping.close()


@needs_redis
def test_a_new_process_adopts_the_fleet_state(make_store: Callable[..., RedisStore]) -> None:
    """A breaker created later starts in the fleet's state (forced open here)."""
    a = make_store()
    first = CircuitBreaker("fleet-late", store=a)
    first.force_open()
    sync(a)
    late = CircuitBreaker("fleet-late", store=make_store())
    assert eventually(lambda: late.state is CircuitState.FORCED_OPEN)


@needs_redis
def test_asyncio_client_is_accepted(prefix: str) -> None:
    """A redis.asyncio client works: the store opens its own sync connections to it."""
    aclient = redis.asyncio.Redis(port=REDIS_PORT)
    store = RedisStore(aclient, prefix=prefix, sync_interval=0.05, timeout=1.0)
    try:
        breaker = CircuitBreaker("fleet-asyncio", store=store, consecutive_failures=1)

        async def boom() -> None:
            raise ConnectionError

        async def main() -> None:
            with pytest.raises(ConnectionError):
                await breaker.call_async(boom)

        asyncio.run(main())
        assert store.sync()
        with redis.Redis(port=REDIS_PORT) as conn:
            assert conn.hget(f"{prefix}{{fleet-asyncio}}", "state") == b"open"
    finally:
        store.close()
        asyncio.run(aclient.aclose())


@needs_redis
def test_clone_shares_the_store(make_store: Callable[..., RedisStore]) -> None:
    """A per-host clone of a shared breaker is shared too, under its own name."""
    a, b = make_store(), make_store()
    template = CircuitBreaker("fleet-tpl", store=a, consecutive_failures=1)
    twin_a = template.clone("fleet-tpl:host")
    twin_b = CircuitBreaker("fleet-tpl:host", store=b, consecutive_failures=1)
    fail(twin_a)
    assert eventually(lambda: twin_b.state is CircuitState.OPEN)
    assert template.state is CircuitState.CLOSED


@needs_redis
def test_close_stops_threads_and_breakers_go_on(make_store: Callable[..., RedisStore]) -> None:
    """After close() the store's threads are gone and the breaker runs locally."""
    store = make_store()
    breaker = CircuitBreaker("fleet-close", store=store, consecutive_failures=2)
    assert store.sync()
    store.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("resilience-redis")]
    assert breaker.call(lambda: 3) == 3
    fail(breaker, 2)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(ConfigError):
        store.bind(breaker._machine)


@needs_redis
def test_dead_breakers_are_unbound(make_store: Callable[..., RedisStore]) -> None:
    """The store holds breakers weakly: a dropped breaker stops being synced."""
    store = make_store()
    CircuitBreaker("fleet-gone", store=store)
    gc.collect()
    assert store.sync()
    assert store._live_bindings() == []


@needs_redis
def test_commands_per_call_in_steady_state(make_store: Callable[..., RedisStore]) -> None:
    """Under load a shared breaker costs well under 0.05 Redis commands per call."""
    # The proxy counts this store's commands only (others share this Redis).
    counting = TcpProxy(count_commands=True)
    counting.start()
    try:
        _commands_per_call(make_store(port=counting.port, sync_interval=0.1), counting)
    finally:
        counting.stop()


def _commands_per_call(store: RedisStore, counting: TcpProxy) -> None:
    breaker = CircuitBreaker("fleet-cost", store=store)

    @breaker
    def work() -> int:
        return 1

    assert store.sync()
    before = counting.commands
    calls = 0
    start = time.monotonic()
    while time.monotonic() - start < 1.0:  # ~10 sync ticks
        for _ in range(1000):
            work()
        calls += 1000
        time.sleep(0.001)
    per_call = (counting.commands - before) / calls
    assert 0 < per_call <= 0.05, per_call


# ---------------------------------------------------------------------------- outages


@needs_redis
def test_redis_outage_mid_run_falls_back_and_rejoins(
    make_store: Callable[..., RedisStore], proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis cut mid-run: calls go on locally, logged once; back: the store rejoins the fleet."""
    cut = make_store(port=proxy.port, timeout=0.2, sync_interval=0.02)
    direct = make_store()
    breaker = CircuitBreaker("fleet-outage", store=cut, consecutive_failures=3)
    other = CircuitBreaker("fleet-outage", store=direct, consecutive_failures=3)
    assert cut.sync()
    assert direct.sync()
    with caplog.at_level(logging.WARNING, logger="resilience"):
        proxy.stop()
        assert eventually(lambda: not cut.healthy)
        for _ in range(1000):
            assert breaker.call(lambda: 1) == 1
        fail(breaker, 3)
        assert breaker.state is CircuitState.OPEN  # local state still protects
        breaker.reset()
        other.force_open()  # the fleet moves on while this process is cut off
        time.sleep(0.2)
        assert breaker.state is CircuitState.CLOSED
        proxy.start()
        assert eventually(lambda: cut.healthy, timeout=5.0)
        assert eventually(lambda: breaker.state is CircuitState.FORCED_OPEN)
    messages = [r.getMessage() for r in caplog.records if r.name == "resilience"]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1


# ---------------------------------------------------------------------------- retry budget


@needs_redis
def test_shared_retry_budget_counts_the_fleet(make_store: Callable[..., RedisStore]) -> None:
    """Retries spent in one process count against the others' budget; so do calls."""
    a, b = make_store(), make_store()
    clock = FakeClock()
    budget_a = a.retry_budget("fleet-budget", ratio=0.1, min_per_second=0.5, ttl=10, clock=clock)
    budget_b = b.retry_budget("fleet-budget", ratio=0.1, min_per_second=0.5, ttl=10, clock=clock)
    assert budget_a.available() == 5  # the reserve: 0.5/s over 10 s, for the whole fleet
    for _ in range(3):
        assert budget_a.try_spend()
    sync(a, b)
    assert budget_b.available() == 2
    for _ in range(100):
        budget_a.record_call()  # 100 calls in A allow 10 more retries fleet-wide
    sync(a, b)
    assert budget_b.available() == 12


@needs_redis
def test_shared_retry_budget_goes_local_without_redis(proxy: TcpProxy, prefix: str) -> None:
    """With Redis cut, a shared budget counts this process only, and no call sees an error."""
    store = RedisStore(redis.Redis(port=proxy.port), prefix=prefix, sync_interval=0.02)
    other = RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix, sync_interval=0.02)
    try:
        clock = FakeClock()
        mine = store.retry_budget("fleet-budget-cut", ratio=0.0, min_per_second=1, clock=clock)
        theirs = other.retry_budget("fleet-budget-cut", ratio=0.0, min_per_second=1, clock=clock)
        for _ in range(10):
            assert theirs.try_spend()
        sync(other, store)
        assert mine.available() == 0
        proxy.stop()
        assert eventually(lambda: not store.healthy)
        assert eventually(lambda: mine.available() == 10)
    finally:
        store.close()
        other.close()


@needs_redis
def test_deleting_the_hash_resets_the_breaker_everywhere(
    make_store: Callable[..., RedisStore], client: Any, prefix: str
) -> None:
    """Deleting a breaker's hash forgets it: processes close and can trip again."""
    a, b = make_store(), make_store()
    ba = CircuitBreaker("fleet-forget", store=a, consecutive_failures=1)
    bb = CircuitBreaker("fleet-forget", store=b, consecutive_failures=1)
    ba.force_open()
    assert eventually(lambda: bb.state is CircuitState.FORCED_OPEN)
    client.delete(f"{prefix}{{fleet-forget}}")
    sync(a, b)
    assert (ba.state, bb.state) == (CircuitState.CLOSED, CircuitState.CLOSED)
    fail(bb)
    assert eventually(lambda: ba.state is CircuitState.OPEN)


# ---------------------------------------------------------------------------- concurrency


@needs_redis
def test_many_threads_in_two_processes_take_one_probe(
    make_store: Callable[..., RedisStore],
) -> None:
    """16 threads in each of two processes race for the HALF_OPEN slot: exactly one wins."""
    clock = FakeClock()
    a, b = make_store(), make_store()
    ba = CircuitBreaker("fleet-race", store=a, consecutive_failures=1, clock=clock)
    bb = CircuitBreaker("fleet-race", store=b, consecutive_failures=1, clock=clock)
    fail(ba)
    sync(a, b)
    clock.advance(30)
    start = threading.Barrier(32)
    granted: list[int] = []
    rejected: list[int] = []

    def worker(breaker: CircuitBreaker) -> None:
        start.wait()
        try:
            granted.append(breaker.acquire())
        except CircuitOpenError:
            rejected.append(1)

    threads = [threading.Thread(target=worker, args=(br,)) for br in (ba, bb) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(granted), len(rejected)) == (1, 31)


@needs_redis
def test_concurrent_traffic_keeps_the_fleet_consistent(
    make_store: Callable[..., RedisStore],
) -> None:
    """Threads and tasks in two processes fail together: both trip, no stray errors."""
    a, b = make_store(sync_interval=0.01), make_store(sync_interval=0.01)
    settings: dict[str, Any] = {
        "failure_rate": 0.3,  # a third of the calls fail
        "minimum_calls": 50,
        "window": 200,
        "open_duration": 60,
    }
    ba = CircuitBreaker("fleet-busy", store=a, **settings)
    bb = CircuitBreaker("fleet-busy", store=b, **settings)
    errors: list[BaseException] = []

    def third(i: int) -> float:
        return 1 / (i % 3)

    def hammer(breaker: CircuitBreaker) -> None:
        for i in range(300):
            try:
                breaker.call(third, i)
            except (ZeroDivisionError, CircuitOpenError):
                pass
            except BaseException as exc:  # anything else is a bug
                errors.append(exc)

    async def tasks(breaker: CircuitBreaker) -> None:
        async def one(i: int) -> float:
            await asyncio.sleep(0)
            return 1 / (i % 3)

        async def run(i: int) -> None:
            try:
                await breaker.call_async(one, i)
            except (ZeroDivisionError, CircuitOpenError):
                pass

        await asyncio.gather(*(run(i) for i in range(200)))

    threads = [threading.Thread(target=hammer, args=(br,)) for br in (ba, bb) for _ in range(8)]
    threads.append(threading.Thread(target=asyncio.run, args=(tasks(ba),)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    sync(a, b)
    assert ba.state is CircuitState.OPEN
    assert bb.state is CircuitState.OPEN


def test_hung_redis_costs_a_probe_at_most_the_timeout() -> None:
    """Redis accepts but never answers: a HALF_OPEN probe waits at most ~timeout, then local."""
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)  # the kernel completes handshakes; nobody ever answers
        port = black_hole.getsockname()[1]
        store = RedisStore(redis.Redis(port=port), sync_interval=0.02, timeout=0.05)
        try:
            clock = FakeClock()
            breaker = CircuitBreaker("hung", store=store, consecutive_failures=1, clock=clock)
            fail(breaker)
            clock.advance(30)
            start = time.monotonic()
            assert breaker.call(lambda: 1) == 1
            assert time.monotonic() - start < 0.5  # a 50 ms timeout, with room for a busy box
            assert eventually(lambda: breaker.state is CircuitState.CLOSED)
        finally:
            store.close()


@needs_redis
def test_garbled_messages_are_ignored(
    make_store: Callable[..., RedisStore],
    client: Any,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Foreign or garbled pub/sub messages neither break calls nor stop the listener."""
    a, b = make_store(sync_interval=5.0), make_store(sync_interval=5.0)
    ba = CircuitBreaker("fleet-garbled", store=a)
    bb = CircuitBreaker("fleet-garbled", store=b)
    sync(a, b)
    with caplog.at_level(logging.ERROR, logger="resilience"):
        client.publish(f"{prefix}events", "hello")
        client.publish(f"{prefix}events", "melted 99 0 fleet-garbled")
        assert ba.call(lambda: 2) == 2
        bb.force_open()
        assert eventually(lambda: ba.state is CircuitState.FORCED_OPEN)
