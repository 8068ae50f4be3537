"""`idempotent`: a function (sync or async) runs once per key; repeats get its stored result."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from resilience import ConfigError, IdempotencyConflict
from resilience.idempotency import StoreUnavailable, idempotent
from resilience.stores import MemoryStore, RedisStore
from resilience.testing import FakeClock
from tests.helpers import REDIS_PORT, TcpProxy
from tests.helpers_idempotency import redis_prefix, redis_up

needs_redis = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")


@pytest.fixture
def redis_stores() -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two RedisStores on one prefix: two processes' views of the same records."""
    import redis

    with redis_prefix() as prefix:
        stores = (
            RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix, timeout=2.0),
            RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix, timeout=2.0),
        )
        yield stores
        for store in stores:
            store.close()


def test_sync_function_runs_once_per_key() -> None:
    """The first call runs; repeats return the stored result; another key runs again."""
    calls: list[str] = []

    @idempotent(key=lambda order: order["id"], store=MemoryStore())
    def ship(order: dict[str, str]) -> dict[str, Any]:
        calls.append(order["id"])
        return {"shipped": order["id"], "boxes": (1, 2)}

    assert ship({"id": "a"}) == {"shipped": "a", "boxes": (1, 2)}
    assert ship({"id": "a"}) == {"shipped": "a", "boxes": [1, 2]}  # stored as JSON
    assert ship({"id": "b"})["shipped"] == "b"
    assert calls == ["a", "b"]


async def test_async_function_runs_once_per_key() -> None:
    """The async twin: one run per key, the stored result afterwards."""
    calls: list[int] = []

    @idempotent(key=lambda n: n, store=MemoryStore(), ttl=60)
    async def charge(n: int) -> int:
        calls.append(n)
        return n * 100

    assert [await charge(1), await charge(1), await charge(2)] == [100, 100, 200]
    assert calls == [1, 2]


def test_a_failure_frees_the_key() -> None:
    """An exception stores nothing: the next call runs again."""
    calls: list[int] = []

    @idempotent(key=lambda: "k", store=MemoryStore())
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        return "ok"

    with pytest.raises(ConnectionError):
        flaky()
    assert flaky() == "ok"
    assert flaky() == "ok"
    assert len(calls) == 2


async def test_a_cancelled_call_frees_the_key() -> None:
    """A cancelled async call gives its key back (CancelledError is not a result)."""
    started = asyncio.Event()
    calls: list[int] = []

    @idempotent(key=lambda: "k", store=MemoryStore())
    async def slow() -> str:
        calls.append(1)
        started.set()
        await asyncio.sleep(30)
        return "late"

    task = asyncio.ensure_future(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started.clear()
    retry = asyncio.ensure_future(slow())
    await started.wait()  # it ran again: the key was free
    retry.cancel()
    with pytest.raises(asyncio.CancelledError):
        await retry
    assert len(calls) == 2


def test_a_result_that_is_not_json_is_a_type_error_and_frees_the_key() -> None:
    """A result that cannot be stored raises TypeError saying so; the key is free again."""
    store = MemoryStore()

    @idempotent(key=lambda: "k", store=store)
    def make() -> object:
        return object()

    with pytest.raises(TypeError, match="JSON-serialisable"):
        make()
    assert len(store) == 0


def test_key_function_must_return_str_or_int() -> None:
    """A key of another type is a TypeError naming the function."""

    @idempotent(key=lambda x: x, store=MemoryStore())
    def echo(x: object) -> None:
        return None

    echo(7)
    with pytest.raises(TypeError, match=r"must return a str or an int, got 1\.5"):
        echo(1.5)


def test_keys_are_scoped_by_function() -> None:
    """Two functions with the same key and store both run."""
    store = MemoryStore()
    calls: list[str] = []

    @idempotent(key=lambda: "same", store=store)
    def first() -> str:
        calls.append("first")
        return "1"

    @idempotent(key=lambda: "same", store=store)
    def second() -> str:
        calls.append("second")
        return "2"

    assert (first(), second(), first(), second()) == ("1", "2", "1", "2")
    assert calls == ["first", "second"]


def test_a_running_key_raises_conflict_with_time_left() -> None:
    """A call whose key runs elsewhere raises IdempotencyConflict with .key and .retry_after."""
    clock = FakeClock()
    seen: list[IdempotencyConflict] = []

    @idempotent(key=lambda nested: "k", store=MemoryStore(clock=clock), lock_timeout=60)
    def job(nested: bool) -> str:
        if nested:
            clock.advance(20)
            try:
                job(False)
            except IdempotencyConflict as exc:
                seen.append(exc)
        return "done"

    assert job(True) == "done"
    assert seen[0].key == "k"
    assert seen[0].retry_after == pytest.approx(40.0)


def test_lock_timeout_takeover_on_a_fake_clock() -> None:
    """A call running past lock_timeout is taken over; the late owner's result is discarded."""
    clock = FakeClock()
    runs: list[str] = []

    @idempotent(key=lambda who: "k", store=MemoryStore(clock=clock), lock_timeout=10)
    def job(who: str) -> str:
        runs.append(who)
        if who == "stuck":
            clock.advance(11)  # the first run is presumed dead now
            assert job("rescuer") == "rescuer"
        return who

    assert job("stuck") == "stuck"  # the late owner still gets its own result
    assert job("anyone") == "rescuer"  # but the stored one is the rescuer's
    assert runs == ["stuck", "rescuer"]


def test_stored_results_expire_after_ttl() -> None:
    """After ttl the key runs again."""
    clock = FakeClock()
    runs: list[int] = []

    @idempotent(key=lambda: "k", store=MemoryStore(clock=clock), ttl=30)
    def job() -> int:
        runs.append(1)
        return len(runs)

    assert (job(), job()) == (1, 1)
    clock.advance(31)
    assert job() == 2


def test_threads_racing_on_one_key_run_it_once() -> None:
    """16 threads call at once: one run; every other caller gets the result or a conflict."""
    calls: list[int] = []
    barrier = threading.Barrier(16)
    gate = threading.Event()

    @idempotent(key=lambda: "race", store=MemoryStore())
    def effect() -> str:
        calls.append(1)
        gate.wait(10)
        return "ok"

    outcomes: list[str] = []
    lock = threading.Lock()

    def caller() -> None:
        barrier.wait(10)
        try:
            outcome = effect()
        except IdempotencyConflict:
            outcome = "conflict"
        with lock:
            outcomes.append(outcome)
            if len(outcomes) == 15:
                gate.set()  # every loser has answered: let the winner finish

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(calls) == 1
    assert sorted(outcomes) == ["conflict"] * 15 + ["ok"]


async def test_tasks_racing_on_one_key_run_it_once() -> None:
    """50 tasks at once: one run, 49 conflicts; afterwards the stored result."""
    calls: list[int] = []
    release = asyncio.Event()

    @idempotent(key=lambda: "race", store=MemoryStore())
    async def effect() -> str:
        calls.append(1)
        await release.wait()
        return "ok"

    tasks = [asyncio.ensure_future(effect()) for _ in range(50)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert len(calls) == 1
    assert results.count("ok") == 1
    assert all(isinstance(r, IdempotencyConflict) for r in results if r != "ok")
    assert await effect() == "ok"


def test_settings_are_checked() -> None:
    """key must be callable; ttl and lock_timeout positive; store a known store."""
    with pytest.raises(ConfigError, match="key must be a function"):
        idempotent(key="id")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ttl must be > 0 seconds, got 0"):
        idempotent(key=str, ttl=0)
    with pytest.raises(ConfigError, match="lock_timeout must be > 0 seconds"):
        idempotent(key=str, lock_timeout=-1)
    with pytest.raises(ConfigError, match="store must be"):
        idempotent(key=str, store={})


def test_signature_and_name_are_kept() -> None:
    """functools.wraps: the name and docstring survive."""

    @idempotent(key=lambda x: x)
    def named(x: int) -> int:
        """Docstring."""
        return x

    assert (named.__name__, named.__doc__) == ("named", "Docstring.")


@pytest.mark.redis
@needs_redis
def test_redis_two_processes_threads_race_run_once(
    redis_stores: tuple[RedisStore, RedisStore],
) -> None:
    """Two stores (two processes' views), 8 threads each, one key: exactly one run."""
    calls: list[int] = []
    gate = threading.Event()

    def make(store: RedisStore) -> Any:
        @idempotent(key=lambda: "race", store=store, lock_timeout=30)
        def effect() -> str:
            calls.append(1)
            gate.wait(10)
            return "ok"

        return effect

    functions = [make(store) for store in redis_stores]
    barrier = threading.Barrier(16)
    outcomes: list[str] = []
    lock = threading.Lock()

    def caller(fn: Any) -> None:
        barrier.wait(10)
        try:
            outcome = fn()
        except IdempotencyConflict:
            outcome = "conflict"
        with lock:
            outcomes.append(outcome)
            if len(outcomes) == 15:
                gate.set()

    threads = [threading.Thread(target=caller, args=(functions[i % 2],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(calls) == 1
    assert sorted(outcomes) == ["conflict"] * 15 + ["ok"]
    assert functions[0]() == functions[1]() == "ok"


@pytest.mark.redis
@needs_redis
async def test_redis_async_tasks_race_run_once(
    redis_stores: tuple[RedisStore, RedisStore],
) -> None:
    """30 tasks on two stores, one key: one run; a later call gets the stored result."""
    calls: list[int] = []
    release = asyncio.Event()

    def make(store: RedisStore) -> Any:
        @idempotent(key=lambda: "race", store=store, lock_timeout=30)
        async def effect() -> dict[str, str]:
            calls.append(1)
            await release.wait()
            return {"status": "ok"}

        return effect

    functions = [make(store) for store in redis_stores]
    tasks = [asyncio.ensure_future(functions[i % 2]()) for i in range(30)]
    # The 29 losers answer (a conflict) while the winner waits for the release.
    for _ in range(1000):
        if sum(t.done() for t in tasks) >= 29:
            break
        await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert len(calls) == 1
    assert results.count({"status": "ok"}) == 1
    assert await functions[1]() == {"status": "ok"}


@pytest.mark.redis
@needs_redis
def test_store_down_raises_and_runs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Redis unreachable: StoreUnavailable, and the function does not run."""
    import redis

    proxy = TcpProxy(REDIS_PORT)
    proxy.start()
    calls: list[int] = []
    with redis_prefix() as prefix:
        store = RedisStore(redis.Redis(port=proxy.port), prefix=prefix, timeout=0.5)

        @idempotent(key=lambda: "k", store=store)
        def effect() -> int:
            calls.append(1)
            return 1

        try:
            proxy.stop()
            with caplog.at_level(logging.WARNING), pytest.raises(StoreUnavailable):
                effect()
        finally:
            store.close()
    assert calls == []
