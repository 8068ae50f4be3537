"""The one interface between idempotency's callers and the stores that keep its records.

A caller (the HTTP middleware, `idempotent`, a messaging `Consumer`) scopes its key, then:

1. ``claim(key, fingerprint, lock_timeout)``: atomically, one of
   `Claimed` (run the effect now), `Done` (it ran: here is what it left) or `Busy`
   (someone else is running it; their lock expires in ``retry_after`` seconds);
2. after running the effect, ``complete(key, token, value, ttl)`` to keep its result, or
   ``release(key, token)`` (exception, 5xx, crash handling) so that a retry runs it again.

Stores fail closed: a store that cannot answer raises `StoreUnavailable` and the caller
runs nothing. `backend_for` turns what the user passed as ``store=`` into a backend.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

from .._errors import ConfigError, ResilienceError
from .._public import public

__all__ = [
    "Busy",
    "ClaimResult",
    "Claimed",
    "Done",
    "IdempotencyBackend",
    "IdempotencyConflict",
    "StoreUnavailable",
    "backend_for",
]

# Seconds a caller is told to wait when the store itself is unreachable.
STORE_RETRY_AFTER: Final = 1.0


@dataclass(frozen=True, slots=True)
class Claimed:
    """The caller now owns the key: run the effect, then `complete` or `release` with ``token``."""

    token: str


@dataclass(frozen=True, slots=True)
class Done:
    """The effect already ran to completion; ``value`` is what `complete` stored."""

    fingerprint: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Busy:
    """Another owner is running the effect; its lock expires in ``retry_after`` (> 0) seconds."""

    fingerprint: str
    retry_after: float


ClaimResult: TypeAlias = Claimed | Done | Busy


class StoreUnavailable(ResilienceError):
    """The idempotency store could not be reached or did not answer in time; nothing ran.

    Idempotency fails closed: without the store nobody can tell whether the effect already
    happened, so it is not run (HTTP answers 503 with ``Retry-After``).

    Attributes:
        store: a short description of the store (never its credentials).
        retry_after: seconds after which trying again makes sense.

    Example:
        >>> exc = StoreUnavailable("RedisStore 'app:'")
        >>> exc.retry_after
        1.0
    """

    def __init__(
        self, store: str, reason: str = "", retry_after: float = STORE_RETRY_AFTER
    ) -> None:
        self.store = store
        self.reason = reason
        self.retry_after = retry_after
        detail = f" ({reason})" if reason else ""
        super().__init__(f"idempotency store {store} is unavailable{detail}; nothing was run")

    def __reduce__(self) -> tuple[type[StoreUnavailable], tuple[str, str, float]]:
        return (type(self), (self.store, self.reason, self.retry_after))


class IdempotencyConflict(ResilienceError):
    """The same key is being handled right now by someone else; this call did not run.

    Raised by `idempotent` (HTTP answers 409 instead). Try again after ``retry_after``
    seconds: by then the other call has finished (you get its result) or its lock expired.

    Attributes:
        key: the key, as the key function returned it.
        retry_after: seconds until the running call's lock expires (> 0).

    Example:
        >>> exc = IdempotencyConflict("order-7", 12.5)
        >>> exc.key, exc.retry_after
        ('order-7', 12.5)
    """

    def __init__(self, key: str, retry_after: float) -> None:
        super().__init__(key, retry_after)
        self.key = key
        self.retry_after = retry_after

    def __str__(self) -> str:
        return (
            f"idempotency key {self.key!r} is in progress elsewhere; "
            f"retry in {self.retry_after:.3g} s"
        )


@runtime_checkable
class IdempotencyBackend(Protocol):
    """Where idempotency records live: `MemoryStore`, Redis, or your own.

    Keys arrive already scoped by the caller; a backend adds only its own prefix. ``claim``
    is atomic; ``complete`` and ``release`` act only while ``token`` owns the key.
    """

    def claim(self, key: str, fingerprint: str, lock_timeout: float) -> ClaimResult:
        """Take *key* for *lock_timeout* seconds, or say who has it / what it left."""
        ...

    def complete(self, key: str, token: str, value: bytes, ttl: float) -> None:
        """Keep *value* as the key's result for *ttl* seconds."""
        ...

    def release(self, key: str, token: str) -> None:
        """Free *key* so that the next claim runs the effect again."""
        ...

    async def aclaim(self, key: str, fingerprint: str, lock_timeout: float) -> ClaimResult:
        """`claim` for async callers."""
        ...

    async def acomplete(self, key: str, token: str, value: bytes, ttl: float) -> None:
        """`complete` for async callers."""
        ...

    async def arelease(self, key: str, token: str) -> None:
        """`release` for async callers."""
        ...


# One Redis backend per RedisStore, built on first use. The backend does not refer to the
# store, so the store can still be garbage-collected (and its entry with it).
_redis_backends: weakref.WeakKeyDictionary[Any, IdempotencyBackend] = weakref.WeakKeyDictionary()
_redis_lock = threading.Lock()


def backend_for(store: object) -> IdempotencyBackend:
    """The backend that keeps idempotency records in *store*.

    A `MemoryStore` (or anything implementing `IdempotencyBackend`) is its own backend; a
    `RedisStore` gets one Redis backend, built once and shared by every caller.

    Example:
        >>> from resilience.stores import MemoryStore
        >>> store = MemoryStore()
        >>> backend_for(store) is store
        True
    """
    from .._stores._redis_store import RedisStore

    if isinstance(store, RedisStore):
        with _redis_lock:
            backend = _redis_backends.get(store)
            if backend is None:
                from ._redis import RedisBackend

                backend = RedisBackend(store)
                _redis_backends[store] = backend
            return backend
    if isinstance(store, IdempotencyBackend):
        return store
    msg = (
        f"store must be a resilience.stores.MemoryStore, a resilience.stores.RedisStore or an "
        f"object with claim/complete/release and their async twins, got {store!r}"
    )
    raise ConfigError(msg)


public("resilience", IdempotencyConflict)


public("resilience.idempotency", StoreUnavailable)
