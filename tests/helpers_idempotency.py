"""Helpers for the idempotency tests (not collected: the name does not start with test_)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.helpers import REDIS_PORT


def redis_up() -> bool:
    """True when the Redis server on 127.0.0.1 answers."""
    try:
        import redis
    except ImportError:  # pragma: no cover - the extra is missing
        return False
    conn = redis.Redis(port=REDIS_PORT, socket_timeout=0.5)
    try:
        return bool(conn.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        conn.close()


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix of one test's own; every key under it is deleted afterwards."""
    import redis

    value = f"test-idem:{uuid.uuid4().hex[:10]}:"
    try:
        yield value
    finally:
        conn = redis.Redis(port=REDIS_PORT, socket_timeout=2)
        try:
            keys = list(conn.scan_iter(match=f"{value}*"))
            if keys:
                conn.delete(*keys)
        finally:
            conn.close()


def redis_client(**kwargs: Any) -> Any:
    """A plain sync client to the test Redis."""
    import redis

    return redis.Redis(port=REDIS_PORT, socket_timeout=2, **kwargs)
