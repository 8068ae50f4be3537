"""Helpers shared by the Redis test modules (not collected: no test_ prefix).

Their fixtures are in tests/redis_fixtures.py, which a module loads with
``pytest_plugins = ["tests.redis_fixtures"]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from resilience import CircuitBreaker
from resilience.stores import RedisStore
from tests.helpers import REDIS_PORT

redis = pytest.importorskip("redis")


def _redis_up() -> bool:
    conn = redis.Redis(port=REDIS_PORT, socket_timeout=0.5)
    try:
        return bool(conn.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        conn.close()


needs_redis = pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    """Make *times* calls through *breaker* that raise ZeroDivisionError."""
    for _ in range(times):
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)


def eventually(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll *check* until it is true or *timeout* seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return check()


def sync(*stores: RedisStore) -> None:
    """Each store in turn has read and written everything (fails the test if Redis is away)."""
    for store in stores:
        if not store.sync():
            pytest.fail(f"{store!r} did not sync")
