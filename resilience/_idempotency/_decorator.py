"""`idempotent`: a function that runs once per key; repeats get the stored result."""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from .. import _validate
from .._errors import ConfigError
from .._public import public
from ._backend import (
    Busy,
    Claimed,
    Done,
    IdempotencyBackend,
    IdempotencyConflict,
    StoreUnavailable,
    backend_for,
)
from ._http import DEFAULT_LOCK_TIMEOUT, DEFAULT_TTL
from ._memory import MemoryStore

__all__ = ["idempotent"]

P = ParamSpec("P")
R = TypeVar("R")

_log = logging.getLogger("resilience")

# Functions compare keys only: there is no request to tell apart, so no fingerprint.
_FINGERPRINT = ""


def _key_text(value: object, fn: Callable[..., Any]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    msg = (
        f"the key function of @idempotent {fn.__qualname__} must return a str or an int, "
        f"got {value!r}"
    )
    raise TypeError(msg)


def _encode(value: object, fn: Callable[..., Any]) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        msg = (
            f"@idempotent {fn.__qualname__} returned {type(value).__name__}, which cannot be "
            "stored: results must be JSON-serialisable (dict, list, str, int, float, bool, None)"
        )
        raise TypeError(msg) from exc


class _Runner:
    """What the sync and async wrappers share: scoping, settings and the bookkeeping."""

    __slots__ = ("backend", "fn", "key", "lock_timeout", "scope", "ttl")

    def __init__(
        self,
        fn: Callable[..., Any],
        key: Callable[..., object],
        backend: IdempotencyBackend,
        ttl: float,
        lock_timeout: float,
    ) -> None:
        self.fn = fn
        self.key = key
        self.backend = backend
        self.ttl = ttl
        self.lock_timeout = lock_timeout
        self.scope = f"{fn.__module__}.{fn.__qualname__}"

    def scoped(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
        user_key = _key_text(self.key(*args, **kwargs), self.fn)
        return user_key, f"{self.scope}:{user_key}"

    @staticmethod
    def settled(result: Done | Busy, user_key: str) -> Any:
        """The stored result of a finished call; a conflict for a running one."""
        if isinstance(result, Busy):
            raise IdempotencyConflict(user_key, result.retry_after)
        return json.loads(result.value)

    def release_failed(self, exc: StoreUnavailable) -> None:
        # The call's own exception matters more; the key frees itself after lock_timeout.
        _log.warning(
            "@idempotent %s: could not release its key (%s); it is free again after %.3g s",
            self.scope,
            exc,
            self.lock_timeout,
        )

    def complete_failed(self, exc: StoreUnavailable) -> None:
        # The effect happened: the caller gets its result, but a repeat after lock_timeout
        # would run it again. Say so once per occurrence.
        _log.warning(
            "@idempotent %s ran but its result could not be stored (%s); "
            "a repeat after %.3g s would run it again",
            self.scope,
            exc,
            self.lock_timeout,
        )


def idempotent(
    *,
    key: Callable[..., object],
    store: object = None,
    ttl: _validate.Duration = DEFAULT_TTL,
    lock_timeout: _validate.Duration = DEFAULT_LOCK_TIMEOUT,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated function (sync or async) once per key; repeats return its result.

    ``key`` is called with the function's arguments and returns the key (a str or an int).
    The first call with a key runs the function and stores its result (which must be
    JSON-serialisable) for ``ttl`` seconds; later calls with the key return the stored
    result without running anything (decoded from JSON: a tuple comes back as a list). A
    call whose key is being run elsewhere right now raises `IdempotencyConflict`. If the
    function raises, nothing is stored and the key is free again. Keys are scoped by the
    function's ``module.qualname``.

    Args:
        key: a function of the decorated function's arguments returning its key.
        store: `resilience.stores.MemoryStore` (default: one of its own, this process only)
            or `resilience.stores.RedisStore` (shared by every process).
        ttl: seconds a result is kept.
        lock_timeout: seconds after which a call still running is presumed dead and its key
            may be taken over (make it longer than the function's slowest run).

    Raises:
        IdempotencyConflict: the key is being run elsewhere right now.
        StoreUnavailable: the store cannot be reached (nothing ran).

    Example:
        >>> from resilience.idempotency import idempotent
        >>> from resilience.stores import MemoryStore
        >>> sent = []
        >>> @idempotent(key=lambda order: order["id"], store=MemoryStore(), ttl=3600)
        ... def ship(order: dict) -> dict:
        ...     sent.append(order["id"])
        ...     return {"shipped": order["id"]}
        >>> ship({"id": "A1"}), ship({"id": "A1"}), sent
        ({'shipped': 'A1'}, {'shipped': 'A1'}, ['A1'])
    """
    key_fn: object = key
    if not callable(key_fn):
        msg = f"key must be a function of the decorated function's arguments, got {key_fn!r}"
        raise ConfigError(msg)
    backend = backend_for(MemoryStore() if store is None else store)
    ttl_s = _validate.required_duration("ttl", ttl)
    lock_s = _validate.required_duration("lock_timeout", lock_timeout)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        runner = _Runner(fn, key, backend, ttl_s, lock_s)
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], _async_wrapper(fn, runner))
        return _sync_wrapper(fn, runner)

    return decorate


def _sync_wrapper(fn: Callable[P, R], runner: _Runner) -> Callable[P, R]:
    backend = runner.backend

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        user_key, scoped = runner.scoped(args, kwargs)
        claim = backend.claim(scoped, _FINGERPRINT, runner.lock_timeout)
        if not isinstance(claim, Claimed):
            return cast(R, runner.settled(claim, user_key))
        try:
            value = fn(*args, **kwargs)
            data = _encode(value, fn)
        except BaseException:
            try:
                backend.release(scoped, claim.token)
            except StoreUnavailable as exc:
                runner.release_failed(exc)
            raise
        try:
            backend.complete(scoped, claim.token, data, runner.ttl)
        except StoreUnavailable as exc:
            runner.complete_failed(exc)
        return value

    return wrapper


def _async_wrapper(fn: Callable[..., Any], runner: _Runner) -> Callable[..., Any]:
    backend = runner.backend

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        user_key, scoped = runner.scoped(args, kwargs)
        claim = await backend.aclaim(scoped, _FINGERPRINT, runner.lock_timeout)
        if not isinstance(claim, Claimed):
            return runner.settled(claim, user_key)
        try:
            value = await fn(*args, **kwargs)
            data = _encode(value, fn)
        except BaseException:
            try:
                await backend.arelease(scoped, claim.token)
            except StoreUnavailable as exc:
                runner.release_failed(exc)
            raise
        try:
            await backend.acomplete(scoped, claim.token, data, runner.ttl)
        except StoreUnavailable as exc:
            runner.complete_failed(exc)
        return value

    return wrapper


public("resilience.idempotency", idempotent)
