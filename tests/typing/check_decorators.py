"""Type-checked by mypy, never run: decorated functions keep their signatures.

Each `assert_type` and each `type: ignore` below is a line mypy would reject if a decorator lost the
signature (wrong argument types) or the return type (sync vs coroutine).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

from resilience import CircuitBreaker, Policy, bulkhead, fallback, retry, timeout

breaker = CircuitBreaker("typing")


@breaker
def fetch(url: str, *, retries: int = 0) -> bytes:
    return url.encode()


@breaker
async def afetch(url: str) -> int:
    return len(url)


class Client:
    @breaker
    def get(self, path: str) -> str:
        return path


def check() -> None:
    assert_type(fetch("x", retries=1), bytes)
    coro = afetch("x")
    _ = assert_type(coro, Coroutine[Any, Any, int])
    coro.close()
    assert_type(Client().get("/"), str)
    assert_type(breaker.call(fetch, "x"), bytes)
    fetch(1)  # type: ignore[arg-type]  # a str is required: the signature survived
    fetch("x", retries="3")  # type: ignore[arg-type]
    Client().get(2)  # type: ignore[arg-type]


async def acheck() -> None:
    assert_type(await afetch("x"), int)
    assert_type(await breaker.call_async(afetch, "x"), int)
    await afetch(b"x")  # type: ignore[arg-type]


@retry(on=ConnectionError)
def r_fetch(url: str) -> bytes:
    return url.encode()


@retry(on=ConnectionError, attempts=2)
async def r_afetch(url: str) -> int:
    return len(url)


@Policy(timeout=1.0, bulkhead=2)
def p_fetch(url: str) -> bytes:
    return url.encode()


@timeout(1.0)
async def t_fetch(url: str) -> int:
    return len(url)


@bulkhead(2)
def b_fetch(url: str) -> bytes:
    return url.encode()


@fallback(b"", on=OSError)
def f_fetch(url: str) -> bytes:
    return url.encode()


def check_other_decorators() -> None:
    assert_type(r_fetch("x"), bytes)
    assert_type(p_fetch("x"), bytes)
    assert_type(b_fetch("x"), bytes)
    assert_type(f_fetch("x"), bytes)
    r_fetch(1)  # type: ignore[arg-type]
    p_fetch(1)  # type: ignore[arg-type]
    b_fetch(1)  # type: ignore[arg-type]
    f_fetch(1)  # type: ignore[arg-type]


async def acheck_other_decorators() -> None:
    assert_type(await r_afetch("x"), int)
    assert_type(await t_fetch("x"), int)
    await t_fetch(1)  # type: ignore[arg-type]
    await r_afetch(1)  # type: ignore[arg-type]
