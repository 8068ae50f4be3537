"""The store's own Redis client, and how to tell Redis errors apart.

The store never uses the application's client: it copies its connection settings onto a sync
client of its own, with millisecond timeouts and no retries, used only from the store's
threads (so an asyncio client is fine). Errors are sorted into the store's (Redis is slow,
down, out of memory: run on local state) and one key's (someone wrote garbage there: that
breaker's problem only).
"""

from __future__ import annotations

from typing import Any, Final

from .._errors import ConfigError

__all__ = ["COPIED_KWARGS", "key_error", "redis_errors", "sync_client_from"]

# Connection settings copied from the user's client onto the store's own sync client; the
# rest (timeouts, retries, event-loop specific hooks) are the store's own.
COPIED_KWARGS: Final = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "credential_provider",
        "client_name",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_check_hostname",
        "ssl_password",
        "ssl_min_version",
        "ssl_ciphers",
    }
)


def sync_client_from(client: object, timeout: float) -> Any:
    """A sync `redis.Redis` reaching the same server as *client*, with the store's timeouts.

    *client* may be a `redis.Redis` or a `redis.asyncio.Redis`: the store runs in its own
    threads, so it always talks through a sync client of its own, with millisecond timeouts
    and no retries (a failed sync is simply tried again on the next tick).
    """
    try:
        import redis
        import redis.backoff
        import redis.connection
        import redis.retry
    except ImportError as exc:  # pragma: no cover - the extra is missing
        msg = "RedisStore needs redis-py: pip install 'resilience-mesh[redis]'"
        raise ImportError(msg) from exc
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    connection_class = getattr(pool, "connection_class", None)
    if not isinstance(kwargs, dict) or connection_class is None:
        msg = f"client must be a redis.Redis or redis.asyncio.Redis client, got {client!r}"
        raise ConfigError(msg)
    # The asyncio classes have sync twins of the same name in redis.connection.
    sync_class = getattr(redis.connection, connection_class.__name__, None)
    if sync_class is None:
        msg = f"client uses an unsupported connection class {connection_class.__name__!r}"
        raise ConfigError(msg)
    copied = {key: value for key, value in kwargs.items() if key in COPIED_KWARGS}
    pool_kwargs: dict[str, Any] = {
        **copied,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        "decode_responses": False,
    }
    new_pool = redis.ConnectionPool(connection_class=sync_class, **pool_kwargs)
    return redis.Redis(connection_pool=new_pool)


def redis_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    # OSError covers sockets closed under us; RedisError covers timeouts, resets, NOSCRIPT.
    return (redis.exceptions.RedisError, OSError)


def key_error(exc: BaseException) -> bool:
    """True if Redis refused a command because of the key's contents, not Redis itself.

    WRONGTYPE (someone wrote another type under our key) and a script error (our script met
    data it does not expect) are that key's problem; anything else (a timeout, OOM, READONLY,
    NOPERM) is the store's.
    """
    import redis.exceptions

    if not isinstance(exc, redis.exceptions.ResponseError):
        return False
    if isinstance(exc, redis.exceptions.NoScriptError):
        return False
    text = str(exc)
    return text.startswith("WRONGTYPE") or "user_script" in text
