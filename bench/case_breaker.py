"""Breaker cost per call: closed (the happy path) and open (the fail-fast path), sync and async."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

import aiobreaker
import circuitbreaker
import purgatory
import pybreaker

from resilience import CircuitBreaker

from ._harness import (
    Case,
    Contender,
    Row,
    Settings,
    Unsupported,
    bench_async,
    bench_sync,
)

CLOSED = "breaker closed"
OPEN = "breaker open (fail fast)"
HOUR = 3600.0

P = ParamSpec("P")
T = TypeVar("T")


def noop() -> None:
    """The protected function of the happy path: costs nothing, so the wrapper is measured."""


async def anoop() -> None:
    """The async no-op."""


def boom() -> None:
    """A dependency that is down."""
    raise ConnectionError


async def aboom() -> None:
    """An async dependency that is down."""
    raise ConnectionError


def passthrough(fn: Callable[P, T]) -> Callable[P, T]:
    """A reference decorator that does nothing: the floor for any wrapper."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return fn(*args, **kwargs)

    return wrapper


def apassthrough(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """The async reference decorator."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return await fn(*args, **kwargs)

    return wrapper


def no_asyncio() -> Any:
    """pybreaker supports Tornado only, not asyncio (pybreaker #7)."""
    msg = "no asyncio support"
    raise Unsupported(msg)


# ---------------------------------------------------------------------------------------------
# Closed


def our_breaker(name: str, **options: Any) -> CircuitBreaker:
    """A fresh breaker of ours."""
    return CircuitBreaker(name, **options)


def closed_sync() -> list[Contender]:
    """Contenders for a successful sync call through a closed breaker."""
    return [
        Contender("bare call", "baseline", lambda: noop),
        Contender("functools.wraps pass-through", "baseline", lambda: passthrough(noop)),
        Contender("resilience", "us", lambda: our_breaker("bench-closed-sync")(noop)),
        Contender(
            "resilience (time window)",
            "us",
            lambda: our_breaker("bench-closed-sync-time", window_seconds=60.0)(noop),
            "window_seconds=60",
        ),
        Contender("pybreaker", "peer", lambda: pybreaker.CircuitBreaker()(noop)),
        Contender(
            "circuitbreaker", "peer", lambda: circuitbreaker.CircuitBreaker(name="c-sync")(noop)
        ),
        Contender(
            "purgatory", "peer", lambda: purgatory.SyncCircuitBreakerFactory()("p-sync")(noop)
        ),
        Contender("aiobreaker", "peer", lambda: aiobreaker.CircuitBreaker()(noop), "sync path"),
    ]


async def _purgatory_async(fn: Callable[[], Awaitable[None]], **options: Any) -> Any:
    factory = purgatory.AsyncCircuitBreakerFactory(**options)
    await factory.initialize()
    return factory("p-async")(fn)


def closed_async() -> list[Contender]:
    """Contenders for a successful awaited call through a closed breaker."""
    return [
        Contender("bare await", "baseline", lambda: anoop),
        Contender("functools.wraps pass-through", "baseline", lambda: apassthrough(anoop)),
        Contender("resilience", "us", lambda: our_breaker("bench-closed-async")(anoop)),
        Contender(
            "resilience (time window)",
            "us",
            lambda: our_breaker("bench-closed-async-time", window_seconds=60.0)(anoop),
            "window_seconds=60",
        ),
        Contender("pybreaker", "peer", no_asyncio),
        Contender(
            "circuitbreaker", "peer", lambda: circuitbreaker.CircuitBreaker(name="c-async")(anoop)
        ),
        Contender("purgatory", "peer", lambda: _purgatory_async(anoop)),
        Contender("aiobreaker", "peer", lambda: aiobreaker.CircuitBreaker()(anoop)),
    ]


def run_closed(settings: Settings) -> list[Row]:
    """Happy path: the breaker is closed and the call succeeds."""
    return [
        *bench_sync(CLOSED, "sync", closed_sync(), settings),
        *bench_async(CLOSED, "async", closed_async(), settings),
    ]


# ---------------------------------------------------------------------------------------------
# Open: every breaker tripped by one failure, open for an hour, so each timed call is rejected.


def tripped(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Call the wrapped failing function once so the breaker opens, then hand it back."""
    with contextlib.suppress(Exception):
        fn()
    return fn


async def atripped(fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """The async twin of tripped()."""
    with contextlib.suppress(Exception):
        await fn()
    return fn


def _our_open(name: str, fn: Any) -> Any:
    return our_breaker(name, consecutive_failures=1, open_duration=HOUR)(fn)


def open_sync() -> list[Contender]:
    """Contenders for a sync call rejected by an open breaker."""
    return [
        Contender("bare failing call", "baseline", lambda: boom, "raise + catch, no breaker"),
        Contender("resilience", "us", lambda: tripped(_our_open("bench-open-sync", boom))),
        Contender(
            "pybreaker",
            "peer",
            lambda: tripped(pybreaker.CircuitBreaker(fail_max=1, reset_timeout=HOUR)(boom)),
        ),
        Contender(
            "circuitbreaker",
            "peer",
            lambda: tripped(
                circuitbreaker.CircuitBreaker(
                    failure_threshold=1, recovery_timeout=HOUR, name="c-open-sync"
                )(boom)
            ),
        ),
        Contender(
            "purgatory",
            "peer",
            lambda: tripped(
                purgatory.SyncCircuitBreakerFactory(default_threshold=1, default_ttl=HOUR)(
                    "p-open-sync"
                )(boom)
            ),
        ),
        Contender(
            "aiobreaker",
            "peer",
            lambda: tripped(
                aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(hours=1))(boom)
            ),
            "sync path",
        ),
    ]


async def _purgatory_open() -> Any:
    fn = await _purgatory_async(aboom, default_threshold=1, default_ttl=HOUR)
    return await atripped(fn)


def open_async() -> list[Contender]:
    """Contenders for an awaited call rejected by an open breaker."""
    return [
        Contender("bare failing await", "baseline", lambda: aboom, "raise + catch, no breaker"),
        Contender("resilience", "us", lambda: atripped(_our_open("bench-open-async", aboom))),
        Contender("pybreaker", "peer", no_asyncio),
        Contender(
            "circuitbreaker",
            "peer",
            lambda: atripped(
                circuitbreaker.CircuitBreaker(
                    failure_threshold=1, recovery_timeout=HOUR, name="c-open-async"
                )(aboom)
            ),
        ),
        Contender("purgatory", "peer", _purgatory_open),
        Contender(
            "aiobreaker",
            "peer",
            lambda: atripped(
                aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(hours=1))(aboom)
            ),
        ),
    ]


def run_open(settings: Settings) -> list[Row]:
    """Fail-fast path: the breaker is open and rejects without calling the dependency."""
    return [
        *bench_sync(OPEN, "sync", open_sync(), settings, failing=True),
        *bench_async(OPEN, "async", open_async(), settings, failing=True),
    ]


CASES = [
    Case("breaker-closed", CLOSED, run_closed),
    Case("breaker-open", OPEN, run_open),
]
