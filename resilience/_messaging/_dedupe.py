"""The consumer's dedupe calls, batched for Redis: many messages, one round trip.

A consumer with a prefetch of N has up to N messages in hand, each needing a claim before
its handler and a completion after it. One Redis call per step (a thread hop and a round
trip each) costs several times what the broker itself costs per message. So claims (and
completions) asked for in the same event-loop turn, or while the previous batch is on its
way, go to Redis together: one script call runs the idempotency backend's own script
(`CLAIM_SCRIPT`...) once per message, on the backend's own keys
(``{store.prefix}idem:{key}``), so both paths share every record and its rules. As in the
backend, a claim whose reply was lost is sent again with the same tokens, then released; a
completion is tried twice; an unreachable store is `StoreUnavailable` (fail closed).

The calls go through an asyncio client of the subscription's own (same server and settings
as the store's client): a subscription lives on one event loop, and a batch then needs no
worker thread. `Dedupe.aclose` closes it when the subscription stops.

Any other backend (`MemoryStore`, your own) is called one message at a time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, TypeVar

from .._idempotency._backend import (
    Busy,
    Claimed,
    ClaimResult,
    Done,
    IdempotencyBackend,
    StoreUnavailable,
)

__all__ = ["Dedupe"]

MAX_BATCH: Final = 512

_I = TypeVar("_I")
_R = TypeVar("_R")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Batches(Generic[_I, _R]):
    """Collects items and runs them as one batch; one batch on its way at a time.

    ``run(items)`` returns one result or exception per item. A caller cancelled while its
    item is on the way does not stop it; ``abandoned(item, result)`` gets the result.
    """

    def __init__(
        self,
        run: Callable[[list[_I]], Awaitable[list[_R | Exception]]],
        abandoned: Callable[[_I, _R], None] | None = None,
    ) -> None:
        self._run = run
        self._abandoned = abandoned
        self._pending: list[tuple[_I, asyncio.Future[_R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: _I) -> _R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_R] = loop.create_future()
        self._pending.append((item, future))
        if self._task is None:
            # Started at the end of this loop turn: every message delivered in the same
            # read from the broker joins the batch.
            self._task = loop.create_task(self._send())
        return await future

    async def idle(self) -> None:
        """Wait until no batch is on its way."""
        while self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _send(self) -> None:
        try:
            while self._pending:  # what arrived while the last batch was on its way
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                items = [item for item, _ in batch]
                try:
                    results = await self._run(items)
                except Exception as exc:  # a bug in the batch: fail its callers, not us
                    results = [exc] * len(items)
                for (item, future), result in zip(batch, results, strict=True):
                    if future.cancelled():
                        if self._abandoned is not None and not isinstance(result, Exception):
                            self._abandoned(item, result)
                    elif isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._task = None


def _for_each(script: str, arity: int) -> str:
    """*script* (one key, *arity* arguments) run for every key of one call, replies in order.

    The backend's own script text is the body of a Lua function whose ``KEYS`` and ``ARGV``
    are one item's: the records and their rules stay exactly the backend's.
    """
    picks = ", ".join(f"ARGV[{arity} * (i - 1) + {n}]" for n in range(1, arity + 1))
    return (
        f"local function one(KEYS, ARGV)\n{script}\nend\n"
        f"local replies = {{}}\n"
        f"for i = 1, #KEYS do\n"
        f"  replies[i] = one({{KEYS[i]}}, {{{picks}}})\n"
        f"end\n"
        f"return replies\n"
    )


class _RedisBatches:
    """Claims, completions and releases of one RedisBackend, many per round trip."""

    def __init__(self, backend: Any) -> None:
        import redis.asyncio
        import redis.asyncio.connection
        import redis.asyncio.retry
        import redis.backoff
        import redis.exceptions

        from .._idempotency._redis import CLAIM_SCRIPT, COMPLETE_SCRIPT, RELEASE_SCRIPT

        sync_pool = backend._client.connection_pool
        connection_class = getattr(redis.asyncio.connection, sync_pool.connection_class.__name__)
        kwargs = {k: v for k, v in sync_pool.connection_kwargs.items() if k != "retry"}
        kwargs["retry"] = redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)
        pool = redis.asyncio.ConnectionPool(connection_class=connection_class, **kwargs)
        self._client: Any = redis.asyncio.Redis(connection_pool=pool)
        self._prefix: str = backend.prefix
        self._label: str = backend.label
        self._errors: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        self._no_script = redis.exceptions.NoScriptError
        self._scripts = {
            "claim": _for_each(CLAIM_SCRIPT, 3),
            "complete": _for_each(COMPLETE_SCRIPT, 3),
            "release": _for_each(RELEASE_SCRIPT, 1),
        }
        self._shas: dict[str, str] = {}

    async def _call(
        self, script: str, calls: Sequence[tuple[str, tuple[object, ...]]]
    ) -> list[Any]:
        """Run *script* once per (key, args), all in one call; NOSCRIPT loads it and retries."""
        keys = [self._prefix + key for key, _ in calls]
        argv = [arg for _, args in calls for arg in args]
        for _ in range(2):
            sha = self._shas.get(script)
            if sha is None:
                sha = self._shas[script] = await self._client.script_load(self._scripts[script])
            try:
                return list(await self._client.evalsha(sha, len(keys), *keys, *argv))
            except self._no_script:
                self._shas.pop(script, None)  # Redis restarted and forgot it: load it again
        msg = "the script could not be loaded"
        raise self._no_script(msg)

    async def _try(self, script: str, calls: Sequence[tuple[str, tuple[object, ...]]]) -> list[Any]:
        try:
            return await self._call(script, calls)
        except self._errors as exc:
            # The error's type only: a message may carry a URL with a password in it.
            raise StoreUnavailable(self._label, type(exc).__name__) from exc

    async def aclose(self) -> None:
        """Close the connections (the subscription stopped)."""
        await self._client.aclose(close_connection_pool=True)

    async def claim_many(self, items: list[tuple[str, float]]) -> list[ClaimResult | Exception]:
        """Claim every (key, lock_timeout) at once."""
        tokens = [os.urandom(12).hex() for _ in items]
        calls = [
            (key, (token, "", _ms(lock))) for (key, lock), token in zip(items, tokens, strict=True)
        ]
        try:
            replies = await self._try("claim", calls)
        except StoreUnavailable:
            try:
                replies = await self._try("claim", calls)  # a lost reply: the same tokens say so
            except StoreUnavailable as exc:
                try:
                    await self._try("release", [(key, (token,)) for key, (token, _, _) in calls])
                except StoreUnavailable:
                    pass  # Redis is really gone: any claim made expires with its lock
                return [StoreUnavailable(exc.store, exc.reason) for _ in items]
        results: list[ClaimResult | Exception] = []
        for reply, token in zip(replies, tokens, strict=True):
            kind = reply[0]
            if kind == 0:
                results.append(Claimed(token))
            elif kind == 1:
                value = reply[2]
                results.append(
                    Done(_text(reply[1]), value if isinstance(value, bytes) else value.encode())
                )
            else:
                results.append(Busy(_text(reply[1]), max(int(reply[2]), 1) / 1000.0))
        return results

    async def complete_many(self, items: list[tuple[str, str, float]]) -> list[Exception | None]:
        """Mark every (key, token, ttl) done at once; tried twice (the effects happened)."""
        calls = [(key, (token, b"", _ms(ttl))) for key, token, ttl in items]
        for attempt in range(2):
            try:
                await self._try("complete", calls)
            except StoreUnavailable as exc:
                if attempt:
                    return [StoreUnavailable(exc.store, exc.reason) for _ in items]
            else:
                break
        return [None] * len(items)

    async def release_many(self, items: list[tuple[str, str]]) -> list[Exception | None]:
        """Free every (key, token) at once."""
        try:
            await self._try("release", [(key, (token,)) for key, token in items])
        except StoreUnavailable as exc:
            return [StoreUnavailable(exc.store, exc.reason) for _ in items]
        return [None] * len(items)


class Dedupe:
    """One subscription's dedupe calls: batched for Redis, else one by one."""

    def __init__(self, backend: IdempotencyBackend) -> None:
        self._backend = backend
        self._claims: _Batches[tuple[str, float], ClaimResult] | None = None
        self._completions: _Batches[tuple[str, str, float], None] | None = None
        self._releases: _Batches[tuple[str, str], None] | None = None
        self._giving_back: set[asyncio.Task[None]] = set()
        redis_batches = self._redis = _redis_batches_for(backend)
        if redis_batches is not None:
            self._claims = _Batches(redis_batches.claim_many, self._give_back)
            self._completions = _Batches(redis_batches.complete_many)
            self._releases = _Batches(redis_batches.release_many)

    async def claim(self, key: str, lock_timeout: float) -> ClaimResult:
        if self._claims is None:
            return await self._backend.aclaim(key, "", lock_timeout)
        return await self._claims.submit((key, lock_timeout))

    async def complete(self, key: str, token: str, ttl: float) -> None:
        if self._completions is None:
            await self._backend.acomplete(key, token, b"", ttl)
        else:
            await self._completions.submit((key, token, ttl))

    async def release(self, key: str, token: str) -> None:
        if self._releases is None:
            await self._backend.arelease(key, token)
        else:
            await self._releases.submit((key, token))

    async def aclose(self) -> None:
        """Close what the batches opened (nothing for a backend used call by call)."""
        if self._redis is None:
            return
        while self._giving_back:
            await asyncio.gather(*tuple(self._giving_back), return_exceptions=True)
        for batches in (self._claims, self._completions, self._releases):
            if batches is not None:
                await batches.idle()
        await self._redis.aclose()

    def _give_back(self, item: tuple[str, float], result: ClaimResult) -> None:
        """A claim made for a caller that was cancelled meanwhile: free the key."""
        if isinstance(result, Claimed) and self._releases is not None:
            key = item[0]
            task = asyncio.get_running_loop().create_task(
                self._releases.submit((key, result.token))
            )
            self._giving_back.add(task)
            task.add_done_callback(self._given_back)

    def _given_back(self, task: asyncio.Task[None]) -> None:
        self._giving_back.discard(task)
        if not task.cancelled():
            task.exception()  # a release that failed leaves the claim to expire: nothing to do


def _redis_batches_for(backend: IdempotencyBackend) -> _RedisBatches | None:
    """Batches for a RedisBackend (as `backend_for` builds one), else None."""
    try:
        from .._idempotency._redis import RedisBackend
    except ImportError:  # pragma: no cover - the module is part of the package
        return None
    if type(backend) is not RedisBackend or getattr(backend, "_client", None) is None:
        return None
    return _RedisBatches(backend)
