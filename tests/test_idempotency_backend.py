"""The idempotency backends (MemoryStore, Redis) keep the claim/complete/release contract.

Every contract test runs against both backends, through the sync and the async methods.
MemoryStore runs on a fake clock; Redis on its own expiry, with short locks and bounded
waits.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resilience import ConfigError, ResilienceError
from resilience._idempotency._backend import (
    Busy,
    Claimed,
    ClaimResult,
    Done,
    IdempotencyBackend,
    StoreUnavailable,
    backend_for,
)
from resilience._idempotency._redis import RedisBackend
from resilience.stores import MemoryStore, RedisStore
from resilience.testing import FakeClock
from tests.helpers import REDIS_PORT, TcpProxy
from tests.helpers_idempotency import redis_client, redis_prefix, redis_up

needs_redis = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")


class Harness:
    """One backend, driven through its sync or its async methods, with a way to let time pass."""

    def __init__(self, backend: IdempotencyBackend, wait: Callable[[float], None], mode: str):
        self.backend = backend
        self.wait = wait
        self.mode = mode

    def claim(self, key: str, fingerprint: str = "fp", lock: float = 10.0) -> ClaimResult:
        if self.mode == "async":
            return asyncio.run(self.backend.aclaim(key, fingerprint, lock))
        return self.backend.claim(key, fingerprint, lock)

    def complete(self, key: str, token: str, value: bytes, ttl: float = 60.0) -> None:
        if self.mode == "async":
            asyncio.run(self.backend.acomplete(key, token, value, ttl))
        else:
            self.backend.complete(key, token, value, ttl)

    def release(self, key: str, token: str) -> None:
        if self.mode == "async":
            asyncio.run(self.backend.arelease(key, token))
        else:
            self.backend.release(key, token)


def _sleep_past(seconds: float) -> None:
    time.sleep(seconds + 0.05)


@pytest.fixture
def redis_store() -> Iterator[RedisStore]:
    """A RedisStore on a prefix of the test's own (keys deleted afterwards)."""
    import redis

    with redis_prefix() as prefix:
        store = RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix, timeout=2.0)
        yield store
        store.close()


@pytest.fixture(
    params=[
        "memory-sync",
        "memory-async",
        pytest.param("redis-sync", marks=[pytest.mark.redis, needs_redis]),
        pytest.param("redis-async", marks=[pytest.mark.redis, needs_redis]),
    ]
)
def harness(request: pytest.FixtureRequest) -> Harness:
    """Each backend, through sync and async methods."""
    kind, mode = request.param.split("-")
    if kind == "memory":
        clock = FakeClock()
        return Harness(MemoryStore(clock=clock), clock.advance, mode)
    store = request.getfixturevalue("redis_store")
    return Harness(backend_for(store), _sleep_past, mode)


def _claimed(result: ClaimResult) -> str:
    assert isinstance(result, Claimed), result
    return result.token


def test_first_claim_owns_the_key_and_the_next_sees_it_busy(harness: Harness) -> None:
    """The first claim gets a token; a second one is Busy with the fingerprint and time left."""
    _claimed(harness.claim("k", "fp-1", lock=5.0))
    second = harness.claim("k", "fp-2", lock=5.0)
    assert isinstance(second, Busy)
    assert second.fingerprint == "fp-1"
    assert 0 < second.retry_after <= 5.0


def test_completed_key_returns_its_value_and_fingerprint(harness: Harness) -> None:
    """After complete(), a claim gets Done with what was stored."""
    token = _claimed(harness.claim("k", "fp-1"))
    harness.complete("k", token, b"\x00result\xff")
    assert harness.claim("k", "other") == Done("fp-1", b"\x00result\xff")


def test_released_key_can_be_claimed_again(harness: Harness) -> None:
    """release() frees the key: the next claim runs the effect again."""
    token = _claimed(harness.claim("k"))
    harness.release("k", token)
    assert _claimed(harness.claim("k")) != token


def test_a_stranger_token_neither_completes_nor_releases(harness: Harness) -> None:
    """complete() and release() with a token that does not own the key change nothing."""
    _claimed(harness.claim("k", "fp"))
    harness.complete("k", "not-the-owner", b"forged")
    harness.release("k", "not-the-owner")
    assert isinstance(harness.claim("k", "fp"), Busy)


def test_expired_lock_is_taken_over_and_the_old_owner_cannot_finish(harness: Harness) -> None:
    """A lock older than lock_timeout is taken over; its old owner's result is discarded."""
    old = _claimed(harness.claim("k", "fp", lock=0.2))
    harness.wait(0.2)
    new = _claimed(harness.claim("k", "fp", lock=10.0))
    harness.complete("k", old, b"old")
    harness.release("k", old)
    assert isinstance(harness.claim("k", "fp"), Busy)
    harness.complete("k", new, b"new")
    assert harness.claim("k", "fp") == Done("fp", b"new")


def test_finished_result_expires_after_ttl(harness: Harness) -> None:
    """A stored result is forgotten after ttl: the key can run again."""
    token = _claimed(harness.claim("k"))
    harness.complete("k", token, b"v", ttl=0.2)
    assert isinstance(harness.claim("k"), Done)
    harness.wait(0.2)
    _claimed(harness.claim("k"))


def test_keys_are_independent(harness: Harness) -> None:
    """Claiming one key says nothing about another."""
    _claimed(harness.claim("a"))
    _claimed(harness.claim("b"))


@pytest.mark.parametrize(
    "kind", ["memory", pytest.param("redis", marks=[pytest.mark.redis, needs_redis])]
)
def test_concurrent_claims_from_threads_give_one_owner(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """32 threads claiming one key at once: exactly one Claimed, the rest Busy."""
    store = MemoryStore() if kind == "memory" else request.getfixturevalue("redis_store")
    backend = backend_for(store)
    barrier = threading.Barrier(32)
    results: list[ClaimResult] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=10)
        result = backend.claim("shared", "fp", 30.0)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(results) == 32
    assert sum(isinstance(r, Claimed) for r in results) == 1
    assert sum(isinstance(r, Busy) for r in results) == 31


@pytest.mark.parametrize(
    "kind", ["memory", pytest.param("redis", marks=[pytest.mark.redis, needs_redis])]
)
async def test_concurrent_claims_from_tasks_give_one_owner(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """50 tasks claiming one key at once: exactly one Claimed."""
    store = MemoryStore() if kind == "memory" else request.getfixturevalue("redis_store")
    backend = backend_for(store)
    results = await asyncio.gather(*(backend.aclaim("shared", "fp", 30.0) for _ in range(50)))
    assert sum(isinstance(r, Claimed) for r in results) == 1


# ------------------------------------------------------------------------- MemoryStore


def test_memory_store_evicts_least_recently_used_finished_records() -> None:
    """Past maxsize, the least recently used finished record goes first."""
    store = MemoryStore(maxsize=2, clock=FakeClock())
    for key in ("a", "b"):
        token = _claimed(store.claim(key, "fp", 10))
        store.complete(key, token, key.encode(), 60)
    assert isinstance(store.claim("a", "fp", 10), Done)  # "a" is now the most recent
    _claimed(store.claim("c", "fp", 10))
    assert len(store) == 2
    assert isinstance(store.claim("a", "fp", 10), Done)
    _claimed(store.claim("b", "fp", 10))  # evicted: runs again


def test_memory_store_never_evicts_a_running_record() -> None:
    """Running records survive eviction (the store grows instead): no effect runs twice."""
    clock = FakeClock()
    store = MemoryStore(maxsize=2, clock=clock)
    for key in ("a", "b", "c"):
        _claimed(store.claim(key, "fp", 10))
    assert len(store) == 3
    for key in ("a", "b", "c"):
        assert isinstance(store.claim(key, "fp", 10), Busy)
    clock.advance(11)  # every lock ran out: the next claim may evict them
    _claimed(store.claim("d", "fp", 10))
    assert len(store) == 2


def test_memory_store_checks_its_settings() -> None:
    """maxsize and clock are validated, naming the setting."""
    with pytest.raises(ConfigError, match="maxsize must be an integer >= 1, got 0"):
        MemoryStore(maxsize=0)
    with pytest.raises(ConfigError, match="clock must be a callable"):
        MemoryStore(clock=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- backend_for


def test_backend_for_memory_store_is_the_store_itself() -> None:
    """A MemoryStore is its own backend."""
    store = MemoryStore()
    assert backend_for(store) is store


@pytest.mark.redis
@needs_redis
def test_backend_for_redis_store_is_built_once(redis_store: RedisStore) -> None:
    """A RedisStore gets one RedisBackend, the same on every call."""
    backend = backend_for(redis_store)
    assert isinstance(backend, RedisBackend)
    assert backend_for(redis_store) is backend


def test_backend_for_anything_else_is_a_config_error() -> None:
    """An object that is not a store is rejected, naming `store`."""
    with pytest.raises(ConfigError, match=r"store must be a resilience\.stores\.MemoryStore"):
        backend_for("redis://localhost")


def test_store_unavailable_is_a_resilience_error_that_pickles() -> None:
    """StoreUnavailable keeps its data through pickling and says nothing ran."""
    exc = pickle.loads(pickle.dumps(StoreUnavailable("RedisStore 'x:'", "TimeoutError", 2.0)))
    assert isinstance(exc, StoreUnavailable)
    assert isinstance(exc, ResilienceError)
    assert (exc.store, exc.reason, exc.retry_after) == ("RedisStore 'x:'", "TimeoutError", 2.0)
    assert "nothing was run" in str(exc)


# ------------------------------------------------------------------------- Redis specifics


@pytest.mark.redis
@needs_redis
def test_redis_records_live_under_the_store_prefix_with_expiry(redis_store: RedisStore) -> None:
    """The record is one hash under "<prefix>idem:<key>", expiring with the lock, then ttl."""
    backend = backend_for(redis_store)
    conn = redis_client()
    try:
        name = f"{redis_store.prefix}idem:POST /orders:abc"
        token = _claimed(backend.claim("POST /orders:abc", "fp", 30.0))
        assert conn.hget(name, "s") == b"r"
        assert 0 < conn.pttl(name) <= 30_000
        backend.complete("POST /orders:abc", token, b"v", 3600.0)
        assert conn.hgetall(name) == {b"s": b"d", b"f": b"fp", b"v": b"v"}
        assert 3_590_000 < conn.pttl(name) <= 3_600_000
    finally:
        conn.close()


@pytest.mark.redis
@needs_redis
async def test_redis_store_built_on_an_asyncio_client_serves_both_twins() -> None:
    """A RedisStore made from redis.asyncio.Redis works for sync and async callers alike."""
    import redis.asyncio

    with redis_prefix() as prefix:
        user_client = redis.asyncio.Redis(port=REDIS_PORT)
        store = RedisStore(user_client, prefix=prefix, timeout=2.0)
        try:
            backend = backend_for(store)
            token = _claimed(await backend.aclaim("k", "fp", 30.0))
            assert isinstance(backend.claim("k", "fp", 30.0), Busy)
            await backend.acomplete("k", token, b"v", 60.0)
            assert backend.claim("k", "fp", 30.0) == Done("fp", b"v")
        finally:
            store.close()
            await user_client.aclose()


@pytest.mark.redis
@needs_redis
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_unreachable_redis_is_store_unavailable(mode: str) -> None:
    """Redis cut off: every call raises StoreUnavailable (fail closed), no password shown."""
    import redis

    proxy = TcpProxy()
    proxy.start()
    with redis_prefix() as prefix:
        client = redis.Redis(port=proxy.port, password="s3cret-pw")
        store = RedisStore(client, prefix=prefix, timeout=0.5)
        backend = backend_for(store)
        proxy.stop()
        calls: list[Callable[[], Any]] = [
            lambda: backend.claim("k", "fp", 1.0),
            lambda: backend.complete("k", "t", b"v", 1.0),
            lambda: backend.release("k", "t"),
        ]
        if mode == "async":
            calls = [
                lambda: asyncio.run(backend.aclaim("k", "fp", 1.0)),
                lambda: asyncio.run(backend.acomplete("k", "t", b"v", 1.0)),
                lambda: asyncio.run(backend.arelease("k", "t")),
            ]
        try:
            for call in calls:
                with pytest.raises(StoreUnavailable) as info:
                    call()
                assert "s3cret-pw" not in str(info.value)
                assert prefix in str(info.value)
        finally:
            store.close()


@pytest.mark.redis
@needs_redis
async def test_cancelled_async_claim_gives_the_key_back(redis_store: RedisStore) -> None:
    """A caller cancelled while its claim is in flight does not leave the key locked."""
    backend = backend_for(redis_store)
    assert isinstance(backend, RedisBackend)
    gate = threading.Event()
    # Occupy every pool thread so that the claim is queued until the test opens the gate.
    blockers = [backend._submit(gate.wait, 10) for _ in range(8)]
    task = asyncio.ensure_future(backend.aclaim("k", "fp", 30.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    for blocker in blockers:
        blocker.result(timeout=10)
    # The queued claim ran after the cancellation and must have been released.
    give_up = time.monotonic() + 10
    while True:
        result = backend.claim("k", "fp", 30.0)
        if isinstance(result, Claimed) or time.monotonic() > give_up:
            break
        await asyncio.sleep(0.02)
    assert isinstance(result, Claimed)


class _LoseReply:
    """Wraps a registered script: runs it (or not), then raises as if the reply was lost."""

    def __init__(self, script: Any, *, run: bool, times: int = 1) -> None:
        self.script = script
        self.run = run
        self.times = times

    def __call__(self, **kwargs: Any) -> Any:
        import redis

        if self.times > 0:
            self.times -= 1
            if self.run:
                self.script(**kwargs)
            raise redis.ConnectionError("reply lost")
        return self.script(**kwargs)


@pytest.mark.redis
@needs_redis
def test_a_claim_whose_reply_was_lost_is_sent_again_with_its_token(
    redis_store: RedisStore,
) -> None:
    """The claim ran in Redis but its reply was lost: the resend owns the key (no 503)."""
    backend = backend_for(redis_store)
    assert isinstance(backend, RedisBackend)
    backend._claim = _LoseReply(backend._claim, run=True)
    token = _claimed(backend.claim("k", "fp", 30.0))
    assert isinstance(backend.claim("k", "fp", 30.0), Busy)
    backend.complete("k", token, b"v", 60.0)
    assert backend.claim("k", "fp", 30.0) == Done("fp", b"v")


@pytest.mark.redis
@needs_redis
def test_a_claim_lost_twice_is_given_back(redis_store: RedisStore) -> None:
    """Both replies lost: StoreUnavailable, and the claim made meanwhile is released."""
    backend = backend_for(redis_store)
    assert isinstance(backend, RedisBackend)
    backend._claim = _LoseReply(backend._claim, run=True, times=2)
    with pytest.raises(StoreUnavailable):
        backend.claim("k", "fp", 30.0)
    _claimed(backend.claim("k", "fp", 30.0))


@pytest.mark.redis
@needs_redis
def test_a_failed_complete_is_tried_once_more(redis_store: RedisStore) -> None:
    """One lost write of the result is retried at once: the result is kept."""
    backend = backend_for(redis_store)
    assert isinstance(backend, RedisBackend)
    token = _claimed(backend.claim("k", "fp", 30.0))
    backend._complete = _LoseReply(backend._complete, run=False)
    backend.complete("k", token, b"v", 60.0)
    assert backend.claim("k", "fp", 30.0) == Done("fp", b"v")
