"""Type-checked by mypy, never run: `idempotent` keeps the decorated function's signature."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

from resilience.idempotency import idempotent


@idempotent(key=lambda order_id, amount: order_id)
def charge(order_id: str, amount: int) -> dict[str, int]:
    return {order_id: amount}


@idempotent(key=lambda order_id: order_id)
async def ship(order_id: str) -> bool:
    return bool(order_id)


def check() -> None:
    assert_type(charge("a", 3), dict[str, int])
    coro = ship("a")
    _ = assert_type(coro, Coroutine[Any, Any, bool])
    coro.close()
    charge("a", "3")  # type: ignore[arg-type]  # an int is required: the signature survived


async def acheck() -> None:
    assert_type(await ship("a"), bool)
    await ship(1)  # type: ignore[arg-type]
