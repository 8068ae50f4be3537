"""Every decorator keeps the wrapped function's metadata, default values included."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from resilience import (
    Bulkhead,
    CircuitBreaker,
    Policy,
    Retry,
    backoff,
    bulkhead,
    fallback,
    retry,
    timeout,
)
from resilience.testing import FakeClock

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def decorators() -> list[tuple[str, Callable[[], Decorator]]]:
    """A fresh decorator of every kind and shape (each breaker shape has its own wrapper)."""
    return [
        ("breaker", lambda: CircuitBreaker("wrap-count")),
        ("breaker-time-window", lambda: CircuitBreaker("wrap-time", window_seconds=10)),
        ("breaker-slow-calls", lambda: CircuitBreaker("wrap-slow", slow_call_duration=1.0)),
        ("retry", lambda: retry(on=ConnectionError, backoff=backoff.none())),
        ("retry-with-timeout", lambda: Retry(on=ConnectionError, timeout=5.0)),
        ("timeout", lambda: timeout(5.0)),
        ("bulkhead", lambda: bulkhead(2)),
        ("fallback", lambda: fallback(0)),
        (
            "policy",
            lambda: Policy(
                timeout=5.0,
                retry=Retry(on=ConnectionError, backoff=backoff.none()),
                breaker=CircuitBreaker("wrap-policy"),
                attempt_timeout=1.0,
                bulkhead=Bulkhead(2),
                fallback=fallback(0),
            ),
        ),
    ]


IDS = [name for name, _ in decorators()]
MAKERS = [make for _, make in decorators()]


@pytest.mark.parametrize("make", MAKERS, ids=IDS)
def test_sync_wrapper_keeps_defaults(make: Callable[[], Decorator]) -> None:
    """A decorated def keeps __defaults__ and __kwdefaults__ (functools.wraps drops them)."""

    def lookup(key: str = "a", limit: int = 3, *, fresh: bool = False) -> tuple[str, int, bool]:
        """Find things."""
        return key, limit, fresh

    wrapped = make()(lookup)
    assert wrapped.__defaults__ == ("a", 3)
    assert wrapped.__kwdefaults__ == {"fresh": False}
    assert wrapped.__kwdefaults__ is not lookup.__kwdefaults__
    assert (wrapped.__name__, wrapped.__doc__) == ("lookup", "Find things.")
    assert inspect.signature(wrapped) == inspect.signature(lookup)
    assert wrapped() == ("a", 3, False)
    assert wrapped("b", fresh=True) == ("b", 3, True)


@pytest.mark.parametrize("make", MAKERS, ids=IDS)
def test_async_wrapper_keeps_defaults(make: Callable[[], Decorator]) -> None:
    """A decorated async def keeps __defaults__ and __kwdefaults__ too."""

    async def lookup(key: str = "a", *, fresh: bool = False) -> tuple[str, bool]:
        return key, fresh

    wrapped = make()(lookup)
    assert wrapped.__defaults__ == ("a",)
    assert wrapped.__kwdefaults__ == {"fresh": False}
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.run(wrapped(fresh=True)) == ("a", True)


@pytest.mark.parametrize("make", MAKERS, ids=IDS)
def test_function_without_defaults_stays_without(make: Callable[[], Decorator]) -> None:
    """No defaults in, none out: the wrapper does not invent any."""

    def plain(key: str) -> str:
        return key

    wrapped = make()(plain)
    assert wrapped.__defaults__ is None
    assert wrapped.__kwdefaults__ is None
    assert wrapped("x") == "x"


def test_bound_method_defaults_are_kept(clock: FakeClock) -> None:
    """Decorating a bound method keeps its defaults (read through the method object)."""

    class Client:
        def get(self, path: str = "/") -> str:
            return path

    wrapped = CircuitBreaker("wrap-method", clock=clock)(Client().get)
    assert wrapped.__defaults__ == ("/",)
    assert wrapped() == "/"
