"""The consumer's batched dedupe calls on the real Redis (and one by one on other backends)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from resilience._idempotency._backend import Busy, Claimed, Done, StoreUnavailable, backend_for
from resilience._messaging._dedupe import Dedupe, _Batches, _RedisBatches
from resilience.stores import MemoryStore, RedisStore
from tests.helpers import REDIS_PORT, TcpProxy
from tests.helpers_idempotency import redis_up

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379"),
]


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    value = f"test-msg-dedupe:{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis(port=REDIS_PORT, socket_timeout=2)
    keys = list(client.scan_iter(match=f"{value}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def store(prefix: str) -> Iterator[RedisStore]:
    """A RedisStore on the test's prefix."""
    value = RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix, timeout=2.0)
    yield value
    value.close()


@pytest.fixture
async def dedupe(store: RedisStore) -> AsyncIterator[Dedupe]:
    """The batched dedupe of the test's store; its connections are closed afterwards."""
    value = Dedupe(backend_for(store))
    yield value
    await value.aclose()


def counting(dedupe: Dedupe) -> list[int]:
    """Record the size of every claim batch *dedupe* sends."""
    sizes: list[int] = []
    batches = dedupe._claims
    assert batches is not None
    run = batches._run

    async def counted(items: list[Any]) -> list[Any]:
        sizes.append(len(items))
        return await run(items)

    batches._run = counted
    return sizes


async def test_claims_of_one_loop_turn_go_in_one_round_trip(dedupe: Dedupe) -> None:
    """100 messages claimed at once cost one call to Redis, and each gets its own answer."""
    sizes = counting(dedupe)
    results = await asyncio.gather(*(dedupe.claim(f"k{i}", 60.0) for i in range(100)))
    assert sizes == [100]
    assert all(isinstance(r, Claimed) for r in results)
    assert len({r.token for r in results if isinstance(r, Claimed)}) == 100


async def test_claims_made_while_a_batch_is_away_form_the_next_batch(dedupe: Dedupe) -> None:
    """One batch in flight at a time; what comes meanwhile waits and goes together."""
    sizes = counting(dedupe)
    first = asyncio.ensure_future(dedupe.claim("a", 60.0))
    await asyncio.sleep(0)  # the first batch (one claim) is on its way
    later = [asyncio.ensure_future(dedupe.claim(f"b{i}", 60.0)) for i in range(5)]
    await asyncio.gather(first, *later)
    assert sizes == [1, 5]


async def test_batched_records_are_the_backends_records(store: RedisStore, dedupe: Dedupe) -> None:
    """A claim made in a batch is Busy to the backend; a batched completion reads as Done."""
    backend = backend_for(store)
    claim = await dedupe.claim("order-1", 60.0)
    assert isinstance(claim, Claimed)
    assert isinstance(backend.claim("order-1", "", 60.0), Busy)
    await dedupe.complete("order-1", claim.token, 60.0)
    assert isinstance(backend.claim("order-1", "", 60.0), Done)
    assert isinstance(await dedupe.claim("order-1", 60.0), Done)
    other = backend.claim("order-2", "", 60.0)
    assert isinstance(await dedupe.claim("order-2", 60.0), Busy)
    assert isinstance(other, Claimed)


async def test_a_released_claim_can_be_claimed_again(dedupe: Dedupe) -> None:
    """release frees the key for the next claim (a failed handling runs again)."""
    claim = await dedupe.claim("k", 60.0)
    assert isinstance(claim, Claimed)
    await dedupe.release("k", claim.token)
    assert isinstance(await dedupe.claim("k", 60.0), Claimed)


async def test_a_forgotten_script_is_loaded_again(store: RedisStore) -> None:
    """After Redis forgot the scripts (a restart), the batch loads them and goes through."""
    backend = backend_for(store)
    batches = _RedisBatches(backend)
    batches._shas["claim"] = "0" * 40  # what Redis answers NOSCRIPT to
    try:
        [result] = await batches.claim_many([("k", 60.0)])
        assert isinstance(result, Claimed)
        assert batches._shas["claim"] != "0" * 40
    finally:
        await batches.aclose()


async def test_an_unreachable_store_fails_every_claim_of_the_batch(prefix: str) -> None:
    """Redis gone: each claim raises StoreUnavailable; nothing is left claimed once it is back."""
    proxy = TcpProxy()
    proxy.start()
    store = RedisStore(redis.Redis(port=proxy.port), prefix=prefix, timeout=0.5)
    try:
        dedupe = Dedupe(backend_for(store))
        assert isinstance(await dedupe.claim("warm", 60.0), Claimed)
        proxy.stop()
        results = await asyncio.gather(
            *(dedupe.claim(f"k{i}", 60.0) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert len({id(r) for r in results}) == 3  # one exception object each
        with pytest.raises(StoreUnavailable):
            await dedupe.complete("warm", "token", 60.0)
        with pytest.raises(StoreUnavailable):
            await dedupe.release("warm", "token")
        await dedupe.aclose()
    finally:
        proxy.stop()
        store.close()
    direct = backend_for(RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix))
    assert all(isinstance(direct.claim(f"k{i}", "", 60.0), Claimed) for i in range(3))


async def test_a_cancelled_callers_claim_is_given_back(store: RedisStore, dedupe: Dedupe) -> None:
    """A claim whose caller was cancelled while it was on its way is released."""
    backend = backend_for(store)
    waiter = asyncio.ensure_future(dedupe.claim("k", 60.0))
    await asyncio.sleep(0)
    waiter.cancel()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if isinstance(backend.claim("k", "", 60.0), Claimed):
            break
    else:
        pytest.fail("the abandoned claim was never released")


async def test_other_backends_are_called_one_by_one() -> None:
    """A MemoryStore needs no batching: its own async methods are used."""
    store = MemoryStore()
    dedupe = Dedupe(store)
    assert dedupe._claims is None
    claim = await dedupe.claim("k", 60.0)
    assert isinstance(claim, Claimed)
    await dedupe.complete("k", claim.token, 60.0)
    assert isinstance(await dedupe.claim("k", 60.0), Done)


async def test_a_broken_batch_fails_its_callers_not_the_batcher() -> None:
    """If a batch raises instead of answering, every waiting caller gets the error."""

    async def run(items: list[int]) -> list[int | Exception]:
        raise RuntimeError("the batch broke")

    batches: _Batches[int, int] = _Batches(run)
    results = await asyncio.gather(*(batches.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert batches._task is None
