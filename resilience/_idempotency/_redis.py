"""Idempotency records in Redis, through a `RedisStore`: one round trip to claim, one to finish.

Each key is one hash, ``{store.prefix}idem:{key}``, with fields ``s`` (``r`` running or
``d`` done), ``f`` (fingerprint), ``t`` (the owner's token, while running) and ``v`` (the
result, once done). Redis's own expiry does the bookkeeping: a running record expires after
``lock_timeout`` (a crashed owner frees the key by itself; the next claim takes it over), a
finished one after ``ttl``. Every step is a Lua script, so it is atomic across the fleet.

The backend talks through the store's own sync client (``store._client``), which carries
the store's timeouts and no retries: a slow or absent Redis is `StoreUnavailable` within
``store.timeout``. Async callers run the same calls on a small thread pool rather than on
an asyncio client: a `RedisStore` is built once (often before any event loop exists) and
may serve several loops, while an asyncio client is bound to one loop; a cancelled caller
also cannot leave a half-read reply on a shared connection this way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._backend import Busy, Claimed, ClaimResult, Done, StoreUnavailable

if TYPE_CHECKING:
    from .._redis_store import RedisStore

__all__ = ["CLAIM_SCRIPT", "COMPLETE_SCRIPT", "RELEASE_SCRIPT", "RedisBackend"]

_T = TypeVar("_T")

# Threads for async callers' Redis calls (each call holds one for a round trip).
_ASYNC_WORKERS: Final = 8

# KEYS[1]: the record. ARGV: token, fingerprint, lock ms.
# Returns {0} claimed, {1, fingerprint, value} done, {2, fingerprint, ms left} busy.
# A record already held by ARGV's token is reported claimed: a claim whose reply was lost
# can be sent again with the same token.
CLAIM_SCRIPT: Final = """
local rec = redis.call('HMGET', KEYS[1], 's', 'f', 'v', 't')
if rec[1] == 'd' then
  return {1, rec[2], rec[3]}
end
if rec[1] == 'r' then
  if rec[4] == ARGV[1] then
    return {0}
  end
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then
    return {2, rec[2], left}
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', 'r', 'f', ARGV[2], 't', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {0}
"""

# KEYS[1]: the record. ARGV: token, value, ttl ms. Returns 1 if stored.
COMPLETE_SCRIPT: Final = """
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 's', 'd', 'v', ARGV[2])
redis.call('HDEL', KEYS[1], 't')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1]: the record. ARGV: token. Returns 1 if deleted.
RELEASE_SCRIPT: Final = """
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then
  return 0
end
return redis.call('DEL', KEYS[1])
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBackend:
    """The `IdempotencyBackend` of one `RedisStore` (built by `backend_for`, once per store)."""

    __slots__ = (
        "_claim",
        "_client",
        "_complete",
        "_errors",
        "_executor",
        "_executor_lock",
        "_pid",
        "_release",
        "label",
        "prefix",
    )

    def __init__(self, store: RedisStore) -> None:
        import redis.exceptions

        # Only what the calls need: holding the store itself would keep it alive forever.
        self._client: Any = store._client
        self.prefix = f"{store.prefix}idem:"
        self.label = f"RedisStore {store.prefix!r}"
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        # Script objects run EVALSHA and load the script once on NOSCRIPT.
        self._claim = self._client.register_script(CLAIM_SCRIPT)
        self._complete = self._client.register_script(COMPLETE_SCRIPT)
        self._release = self._client.register_script(RELEASE_SCRIPT)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<RedisBackend prefix={self.prefix!r}>"

    # ---------------------------------------------------------------- sync

    def claim(self, key: str, fingerprint: str, lock_timeout: float) -> ClaimResult:
        """Claim *key* in one round trip (see `CLAIM_SCRIPT`).

        If the reply is lost, the claim may have been made all the same: it is sent once
        more with the same token (which answers "claimed" if the first one went through);
        if that fails too, the claim is released (best effort) so the key is not locked for
        lock_timeout by a caller that will never run it.
        """
        token = os.urandom(12).hex()
        lock_ms = _ms(lock_timeout)
        try:
            reply = self._run(self._claim, key, token, fingerprint, lock_ms)
        except StoreUnavailable:
            try:
                reply = self._run(self._claim, key, token, fingerprint, lock_ms)
            except StoreUnavailable:
                try:
                    self._run(self._release, key, token)
                except StoreUnavailable:
                    pass  # Redis is really gone: the claim, if made, expires with its lock
                raise
        kind = reply[0]
        if kind == 0:
            return Claimed(token)
        if kind == 1:
            value = reply[2]
            return Done(_text(reply[1]), value if isinstance(value, bytes) else value.encode())
        return Busy(_text(reply[1]), max(int(reply[2]), 1) / 1000.0)

    def complete(self, key: str, token: str, value: bytes, ttl: float) -> None:
        """Store *value* for *ttl* seconds if *token* still owns *key* (one round trip).

        Tried twice: the effect has happened, and a result that is not stored lets a retry
        after lock_timeout run it again. (Storing is itself idempotent: same token, same value.)
        """
        try:
            self._run(self._complete, key, token, value, _ms(ttl))
        except StoreUnavailable:
            self._run(self._complete, key, token, value, _ms(ttl))

    def release(self, key: str, token: str) -> None:
        """Delete *key*'s running record if *token* still owns it (one round trip)."""
        self._run(self._release, key, token)

    def _run(self, script: Any, key: str, *args: object) -> Any:
        try:
            return script(keys=(self.prefix + key,), args=args)
        except self._errors as exc:
            # The error's type only: a message may carry a URL with a password in it.
            raise StoreUnavailable(self.label, type(exc).__name__) from exc

    # ---------------------------------------------------------------- async

    async def aclaim(self, key: str, fingerprint: str, lock_timeout: float) -> ClaimResult:
        """`claim` on the backend's thread pool; a cancelled caller's claim is given back."""
        future = self._submit(self.claim, key, fingerprint, lock_timeout)
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            # The claim may still succeed in Redis: release it then, or the key would stay
            # locked for lock_timeout with nobody running the effect.
            future.add_done_callback(lambda done: self._release_abandoned(key, done))
            raise

    async def acomplete(self, key: str, token: str, value: bytes, ttl: float) -> None:
        """`complete` on the backend's thread pool."""
        await asyncio.shield(
            asyncio.wrap_future(self._submit(self.complete, key, token, value, ttl))
        )

    async def arelease(self, key: str, token: str) -> None:
        """`release` on the backend's thread pool."""
        await asyncio.shield(asyncio.wrap_future(self._submit(self.release, key, token)))

    def _release_abandoned(self, key: str, done: concurrent.futures.Future[ClaimResult]) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        result = done.result()
        if isinstance(result, Claimed):
            self._submit(self.release, key, result.token)

    def _submit(self, fn: Callable[..., _T], *args: Any) -> concurrent.futures.Future[_T]:
        return self._pool().submit(fn, *args)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        executor = self._executor
        if executor is not None and self._pid == os.getpid():
            return executor
        with self._executor_lock:
            # A forked child inherits the pool object but none of its threads: start afresh.
            if self._executor is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=_ASYNC_WORKERS, thread_name_prefix="resilience-idempotency"
                )
            return self._executor
