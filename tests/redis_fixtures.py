"""Fixtures of the Redis test modules: load with ``pytest_plugins = ["tests.redis_fixtures"]``.

Every test uses the real Redis on 127.0.0.1:6379 under a key prefix of its own, deleted
afterwards; every store it makes is closed, and its threads gone, at teardown.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resilience.stores import RedisStore
from tests.helpers import REDIS_PORT, TcpProxy

redis = pytest.importorskip("redis")


@pytest.fixture
def client() -> Iterator[Any]:
    """A plain sync client for the tests' own reads."""
    conn = redis.Redis(port=REDIS_PORT, socket_timeout=2)
    yield conn
    conn.close()


@pytest.fixture
def prefix(client: Any) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    value = f"test-resilience:{uuid.uuid4().hex[:10]}:"
    yield value
    keys = list(client.scan_iter(match=f"{value}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def make_store(prefix: str) -> Iterator[Callable[..., RedisStore]]:
    """Build stores on the test's prefix; all are closed and their threads gone afterwards."""
    stores: list[RedisStore] = []

    def make(port: int = REDIS_PORT, **kwargs: Any) -> RedisStore:
        kwargs.setdefault("timeout", 1.0)  # a loaded 2-core box: no spurious outages
        kwargs.setdefault("sync_interval", 0.05)
        store = RedisStore(redis.Redis(port=port), prefix=prefix, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("resilience-redis")]


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A running proxy to Redis; stopped at teardown."""
    value = TcpProxy()
    value.start()
    yield value
    value.stop()
