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


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Run a WSGI *app* on a threaded werkzeug server on a free port; yield its base URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(15)
        server.server_close()
