"""The consumer's dedupe calls, batched for Redis: many messages, one round trip.

A consumer with a prefetch of N has up to N messages in hand, each needing a claim before
its handler and a completion after it. One Redis call per step costs a thread hop and a
round trip per message, several times what the broker itself costs. So claims (and
completions) made in the same event-loop turn, or while the previous batch is on its way,
go to Redis together in one pipeline, run on a worker thread through the store's own sync
client. Records, keys and scripts are the idempotency backend's own (`CLAIM_SCRIPT`...,
keys ``{store.prefix}idem:{key}``), so the two paths share every record; the same rules
hold: a claim whose reply was lost is sent again with the same token, then released; a
completion is tried twice; an unreachable store is `StoreUnavailable` (fail closed).

Any other backend (`MemoryStore`, your own) is called one message at a time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
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
    """Collects items, runs them as one batch on a worker thread; one batch in flight.

    ``run(items)`` returns one result or exception per item. A caller cancelled while its
    item is on the way does not stop it; ``abandoned(item, result)`` gets the result.
    """

    def __init__(
        self,
        run: Callable[[list[_I]], list[_R | Exception]],
        abandoned: Callable[[_I, _R], None] | None = None,
    ) -> None:
        self._run = run
        self._abandoned = abandoned
        self._pending: list[tuple[_I, asyncio.Future[_R]]] = []
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: _I) -> _R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_R] = loop.create_future()
        self._pending.append((item, future))
        if not self._busy:
            self._busy = True
            # Sent at the end of this loop turn: every message delivered in the same read
            # from the broker joins the batch.
            loop.call_soon(self._start, loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._task = loop.create_task(self._send(loop, batch))

    async def _send(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[_I, asyncio.Future[_R]]]
    ) -> None:
        items = [item for item, _ in batch]
        try:
            results = await loop.run_in_executor(None, self._run, items)
        except Exception as exc:  # the executor is shutting down
            results = [exc] * len(items)
        for (item, future), result in zip(batch, results, strict=True):
            if future.cancelled():
                if self._abandoned is not None and not isinstance(result, Exception):
                    self._abandoned(item, result)
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._pending:
            self._start(loop)  # what arrived while this batch was on its way
        else:
            self._busy = False


class _RedisPipelines:
    """Claims, completions and releases of one RedisBackend, many per round trip."""

    def __init__(self, backend: Any) -> None:
        import redis.exceptions

        from .._idempotency._redis import CLAIM_SCRIPT, COMPLETE_SCRIPT, RELEASE_SCRIPT

        self._client: Any = backend._client
        self._prefix: str = backend.prefix
        self._label: str = backend.label
        self._errors: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        self._no_script = redis.exceptions.NoScriptError
        self._scripts = {"claim": CLAIM_SCRIPT, "complete": COMPLETE_SCRIPT}
        self._scripts["release"] = RELEASE_SCRIPT
        self._shas: dict[str, str] = {}

    def _pipeline(self, script: str, calls: Sequence[tuple[str, tuple[object, ...]]]) -> list[Any]:
        """Run *script* once per (key, args) in one pipeline; NOSCRIPT loads it and retries."""
        for _ in range(2):
            sha = self._shas.get(script)
            if sha is None:
                sha = self._shas[script] = self._client.script_load(self._scripts[script])
            pipe = self._client.pipeline(transaction=False)
            for key, args in calls:
                pipe.evalsha(sha, 1, self._prefix + key, *args)
            try:
                return list(pipe.execute())
            except self._no_script:
                self._shas.pop(script, None)  # Redis restarted and forgot it: load it again
        msg = "the script could not be loaded"
        raise self._no_script(msg)

    def _try(self, script: str, calls: Sequence[tuple[str, tuple[object, ...]]]) -> list[Any]:
        try:
            return self._pipeline(script, calls)
        except self._errors as exc:
            # The error's type only: a message may carry a URL with a password in it.
            raise StoreUnavailable(self._label, type(exc).__name__) from exc

    def claim_many(self, items: list[tuple[str, float]]) -> list[ClaimResult | Exception]:
        """Claim every (key, lock_timeout) at once."""
        tokens = [os.urandom(12).hex() for _ in items]
        calls = [
            (key, (token, "", _ms(lock))) for (key, lock), token in zip(items, tokens, strict=True)
        ]
        try:
            replies = self._try("claim", calls)
        except StoreUnavailable:
            try:
                replies = self._try("claim", calls)  # a lost reply: the same tokens say so
            except StoreUnavailable as exc:
                try:
                    self._try("release", [(key, (token,)) for key, (token, _, _) in calls])
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

    def complete_many(self, items: list[tuple[str, str, float]]) -> list[Exception | None]:
        """Mark every (key, token, ttl) done at once; tried twice (the effects happened)."""
        calls = [(key, (token, b"", _ms(ttl))) for key, token, ttl in items]
        for attempt in range(2):
            try:
                self._try("complete", calls)
            except StoreUnavailable as exc:
                if attempt:
                    return [StoreUnavailable(exc.store, exc.reason) for _ in items]
            else:
                break
        return [None] * len(items)

    def release_many(self, items: list[tuple[str, str]]) -> list[Exception | None]:
        """Free every (key, token) at once."""
        try:
            self._try("release", [(key, (token,)) for key, token in items])
        except StoreUnavailable as exc:
            return [StoreUnavailable(exc.store, exc.reason) for _ in items]
        return [None] * len(items)


class Dedupe:
    """One subscription's dedupe calls: batched through Redis pipelines, else one by one."""

    def __init__(self, backend: IdempotencyBackend) -> None:
        self._backend = backend
        self._claims: _Batches[tuple[str, float], ClaimResult] | None = None
        self._completions: _Batches[tuple[str, str, float], None] | None = None
        self._releases: _Batches[tuple[str, str], None] | None = None
        pipelines = _pipelines_for(backend)
        if pipelines is not None:
            self._claims = _Batches(pipelines.claim_many, self._give_back)
            self._completions = _Batches(pipelines.complete_many)
            self._releases = _Batches(pipelines.release_many)

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

    def _give_back(self, item: tuple[str, float], result: ClaimResult) -> None:
        """A claim made for a caller that was cancelled meanwhile: free the key."""
        if isinstance(result, Claimed) and self._releases is not None:
            key = item[0]
            task = asyncio.get_running_loop().create_task(
                self._releases.submit((key, result.token))
            )
            task.add_done_callback(_ignore)


def _ignore(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _pipelines_for(backend: IdempotencyBackend) -> _RedisPipelines | None:
    """Pipelines for a RedisBackend (as `backend_for` builds one), else None."""
    try:
        from .._idempotency._redis import RedisBackend
    except ImportError:  # pragma: no cover - the module is part of the package
        return None
    if type(backend) is not RedisBackend or getattr(backend, "_client", None) is None:
        return None
    return _RedisPipelines(backend)
