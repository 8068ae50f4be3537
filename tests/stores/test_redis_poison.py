"""Bad data in Redis affects only its own breaker, and never forever (audit F06 and F07).

Anyone with write access to the store's Redis -- another application on the same prefix, a
partial restore, a bug -- can put anything in a breaker's hash or on the store's channel.
These tests write such data with a plain client, as such a writer would, and check that the
other breakers keep their fleet behaviour, that the store stays healthy, that nothing read
from Redis reaches the logs, and that the bad value is ignored or overwritten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState
from resilience._stores._redis_store import RedisBinding
from resilience.stores import RedisStore
from resilience.testing import FakeClock
from tests.redis_support import eventually, fail, needs_redis, sync

pytestmark = [pytest.mark.redis, needs_redis]
# The fixtures client, prefix and make_store.
pytest_plugins = ["tests.redis_fixtures"]

TOKEN = "TOKEN-9f3a1c"  # in every poisoned value: it must never show up in a log


def _redis_now_ms(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _poison_epoch(client: Any, key: str) -> None:
    client.hset(key, "epoch", f"not-a-number-{TOKEN}")


def _poison_peer(client: Any, key: str) -> None:
    client.hset(key, "w:evil", f"a:{TOKEN}:c:d:e:f")


def _poison_state(client: Any, key: str) -> None:
    client.hset(key, "state", f"melted-{TOKEN}")


def _poison_type(client: Any, key: str) -> None:
    client.delete(key)
    client.set(key, TOKEN)


@pytest.mark.parametrize(
    "poison",
    [_poison_epoch, _poison_peer, _poison_state, _poison_type],
    ids=["epoch-garbage", "peer-garbage", "state-garbage", "wrong-type"],
)
def test_one_bad_hash_leaves_every_other_breaker_shared(
    make_store: Callable[..., RedisStore],
    client: Any,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    poison: Callable[[Any, str], None],
) -> None:
    """A malformed hash of one breaker: the others still trip on the fleet's window."""
    a, b = make_store(), make_store()
    payments = [CircuitBreaker("payments", store=s) for s in (a, b)]  # bound (and read) first
    inventory = [
        CircuitBreaker("inventory", store=s, failure_rate=0.5, minimum_calls=10) for s in (a, b)
    ]
    for breaker in payments:
        assert breaker.call(int) == 0  # in use: read on every tick
    sync(a, b)
    with caplog.at_level(logging.DEBUG, logger="resilience"):
        poison(client, f"{prefix}{{payments}}")
        sync(a, b, a, b)  # several ticks over the bad value
        fail(inventory[0], 6)  # 6 calls each: below minimum_calls in each process,
        fail(inventory[1], 6)  # 12 failures of 12 for the fleet
        sync(a, b, a, b)
        assert [br.state for br in inventory] == [CircuitState.OPEN] * 2
        assert (a.healthy, b.healthy) == (True, True)  # a bad key is not an outage
        assert [br.call(int) for br in payments] == [0, 0]  # its own breaker still serves
    records = [r for r in caplog.records if r.name == "resilience"]
    assert not [r for r in records if r.levelno >= logging.ERROR]
    assert all(TOKEN not in r.getMessage() and not r.exc_info for r in records)
    warnings = [r for r in records if r.levelno == logging.WARNING and "bad data" in r.getMessage()]
    assert 1 <= len(warnings) <= 2  # once per store for that key, not once per tick


def test_wrong_type_key_is_repaired(
    make_store: Callable[..., RedisStore], client: Any, prefix: str
) -> None:
    """A key of another type under a breaker's name is replaced by a hash, not fatal."""
    a, b = make_store(), make_store()
    ba = CircuitBreaker("typed", store=a, consecutive_failures=1)
    bb = CircuitBreaker("typed", store=b, consecutive_failures=1)
    sync(a, b)
    _poison_type(client, f"{prefix}{{typed}}")
    sync(a, b)
    assert (a.healthy, b.healthy) == (True, True)
    fail(ba)
    assert eventually(lambda: bb.state is CircuitState.OPEN)
    assert client.type(f"{prefix}{{typed}}") == b"hash"
    assert client.hget(f"{prefix}{{typed}}", "state") == b"open"


def test_a_breaker_with_a_garbage_state_recovers(
    make_store: Callable[..., RedisStore], client: Any, prefix: str
) -> None:
    """Garbage fleet state is ignored (local state rules), then overwritten by the next trip."""
    a, b = make_store(), make_store()
    ba = CircuitBreaker("recovers", store=a, consecutive_failures=1)
    bb = CircuitBreaker("recovers", store=b, consecutive_failures=1)
    bb.force_open()
    bb.reset()  # a real epoch in the hash
    sync(a, b)
    client.hset(f"{prefix}{{recovers}}", mapping={"state": "melted", "epoch": "x", "until": "y"})
    sync(a, b)
    assert (ba.state, bb.state) == (CircuitState.CLOSED, CircuitState.CLOSED)
    fail(ba)  # a local trip: the script overwrites the garbage
    assert ba.state is CircuitState.OPEN
    assert eventually(lambda: bb.state is CircuitState.OPEN)
    fields = client.hgetall(f"{prefix}{{recovers}}")
    assert fields[b"state"] == b"open"
    assert int(fields[b"epoch"]) <= _redis_now_ms(client) + 1000


def test_negative_peer_counts_are_ignored(
    make_store: Callable[..., RedisStore], client: Any, prefix: str
) -> None:
    """A peer window with negative calls cannot keep a failing breaker closed."""
    store = make_store()
    breaker = CircuitBreaker("negative", store=store, failure_rate=0.5, minimum_calls=10)
    sync(store)
    client.hset(f"{prefix}{{negative}}", "w:evil", "0:-1000000:0:0:0:1")
    sync(store)
    fail(breaker, 10)
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics().calls >= 0


def test_a_peer_cannot_outweigh_the_window(
    make_store: Callable[..., RedisStore], client: Any, prefix: str
) -> None:
    """A peer claiming a million successes counts as at most one full window."""
    store = make_store()
    breaker = CircuitBreaker("outweigh", store=store, failure_rate=0.5, window=20)
    sync(store)
    client.hset(f"{prefix}{{outweigh}}", "w:evil", "0:1000000:0:0:0:1")
    sync(store)
    fail(breaker, 20)  # 20 failures against at most 20 remote successes: 50 %
    assert breaker.state is CircuitState.OPEN


def test_forged_publish_neither_opens_nor_detaches(
    make_store: Callable[..., RedisStore], client: Any, prefix: str
) -> None:
    """One forged PUBLISH is not trusted; the operator's later commands reach every process."""
    a, b = make_store(sync_interval=5.0), make_store(sync_interval=5.0)
    ba, bb = CircuitBreaker("forged", store=a), CircuitBreaker("forged", store=b)
    bb.force_open()
    bb.reset()
    assert eventually(lambda: ba.state is CircuitState.CLOSED)
    sync(a, b)
    client.publish(f"{prefix}events", "open 99999999999999 inf forged")
    sync(a)
    assert ba.state is CircuitState.CLOSED  # not OPEN with retry_after=inf
    start = time.monotonic()
    bb.force_open()  # ticks are 5 s apart: only pub/sub is this fast
    assert eventually(lambda: ba.state is CircuitState.FORCED_OPEN, timeout=1.0)
    bb.reset()
    assert eventually(lambda: ba.state is CircuitState.CLOSED, timeout=1.0)
    assert time.monotonic() - start < 2.0


def test_open_time_from_redis_is_capped_by_open_duration(
    make_store: Callable[..., RedisStore], client: Any, prefix: str
) -> None:
    """An OPEN state lasting a million seconds in Redis lasts open_duration here."""
    store = make_store()
    breaker = CircuitBreaker("capped", store=store, open_duration=5)
    sync(store)
    now = _redis_now_ms(client)
    client.hset(
        f"{prefix}{{capped}}", mapping={"state": "open", "epoch": now, "until": now + 10**9}
    )
    client.publish(f"{prefix}events", f"open {now} 1000000000 capped")
    assert eventually(lambda: breaker.metrics().state is CircuitState.OPEN)
    retry_after = breaker.metrics().retry_after
    assert retry_after is not None
    assert 0 < retry_after <= 5.0


def test_an_epoch_from_the_future_is_ignored_then_repaired(
    make_store: Callable[..., RedisStore], client: Any, prefix: str
) -> None:
    """An epoch an hour ahead of Redis's clock is not adopted; the next write replaces it."""
    a, b = make_store(), make_store()
    ba, bb = CircuitBreaker("future", store=a), CircuitBreaker("future", store=b)
    sync(a, b)
    future = _redis_now_ms(client) + 3_600_000
    client.hset(f"{prefix}{{future}}", mapping={"state": "forced_open", "epoch": future})
    sync(a, b)
    assert (ba.state, bb.state) == (CircuitState.CLOSED, CircuitState.CLOSED)
    bb.force_open()  # an operator's command overwrites it...
    assert eventually(lambda: ba.state is CircuitState.FORCED_OPEN)
    bb.reset()  # ... and the fleet follows every later one
    assert eventually(lambda: ba.state is CircuitState.CLOSED)
    assert int(client.hget(f"{prefix}{{future}}", "epoch")) < future


@pytest.mark.parametrize("taken", [-100, "abc"])
def test_garbage_in_the_probe_tally_does_not_free_probes(
    make_store: Callable[..., RedisStore], client: Any, prefix: str, taken: object
) -> None:
    """A forged probe count does not let every process probe (nor turn into a grant)."""
    clock = FakeClock()
    a, b = make_store(), make_store()
    settings: dict[str, Any] = {"consecutive_failures": 1, "open_duration": 5, "clock": clock}
    ba = CircuitBreaker("tally", store=a, **settings)
    bb = CircuitBreaker("tally", store=b, **settings)
    fail(ba)
    sync(a, b)
    assert bb.state is CircuitState.OPEN
    client.hset(f"{prefix}{{tally}}:probes", "taken", taken)
    clock.advance(5)
    ba.acquire()
    with pytest.raises(CircuitOpenError):
        bb.acquire()


def test_an_unexpected_error_for_one_breaker_spares_the_others(
    make_store: Callable[..., RedisStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug met while applying one breaker's hash is logged by type and skipped."""
    original = RedisBinding.read

    def read(self: RedisBinding, *args: Any) -> Any:
        if self.name == "buggy":
            raise RuntimeError(TOKEN)
        return original(self, *args)

    monkeypatch.setattr(RedisBinding, "read", read)
    a, b = make_store(), make_store()
    buggy = [CircuitBreaker("buggy", store=s) for s in (a, b)]  # bound (and read) first
    inventory = [
        CircuitBreaker("spared", store=s, failure_rate=0.5, minimum_calls=10) for s in (a, b)
    ]
    with caplog.at_level(logging.INFO, logger="resilience"):
        for breaker in buggy:
            assert breaker.call(int) == 0
        fail(inventory[0], 6)
        fail(inventory[1], 6)
        sync(a, b, a, b)
        assert [br.state for br in inventory] == [CircuitState.OPEN] * 2
    records = [r for r in caplog.records if r.name == "resilience"]
    assert all(TOKEN not in r.getMessage() and not r.exc_info for r in records)
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert 1 <= len(errors) <= 2  # once per store, not once per tick
    assert "RuntimeError" in errors[0].getMessage()
