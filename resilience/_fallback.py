"""Fallback: replace a failure with a value, or with what a handler makes of the error.

Only `Exception` subclasses that match ``on`` are replaced: a cancellation, a
`KeyboardInterrupt` or an exception that does not match always propagates.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from ._errors import ConfigError
from ._observe._events import FallbackUsed, emit, error_name
from ._public import public
from ._validate import ExceptionFilter, exception_filter
from ._validate import name as check_name
from ._wrapping import CANNOT_REPLACE, decorate, is_generator, refuse_generator

__all__ = ["Fallback", "fallback"]

P = ParamSpec("P")
R = TypeVar("R")


class Fallback:
    """What `fallback(...)` returns: a decorator, and the ``fallback=`` slot of a `Policy`.

    Example:
        >>> from resilience import fallback
        >>> @fallback([], on=ConnectionError)
        ... def recommendations() -> list[str]:
        ...     raise ConnectionError("recommender down")
        >>> recommendations()
        []
    """

    __slots__ = ("_handler_is_async", "_matches", "name", "on", "value")

    def __init__(
        self, value: object, *, on: ExceptionFilter = Exception, name: str | None = None
    ) -> None:
        self.value: Any = value
        self.on = on
        self._matches = exception_filter("on", on)
        self.name: str | None = check_name("name", name, allow_none=True)
        self._handler_is_async = inspect.iscoroutinefunction(value)

    def matches(self, exc: BaseException) -> bool:
        """True when *exc* is an `Exception` that ``on`` selects."""
        return isinstance(exc, Exception) and self._matches(exc)

    def _used(self, exc: BaseException, fn: Callable[..., Any]) -> None:
        name = self.name or getattr(fn, "__qualname__", None)
        emit(FallbackUsed(name=name, error=error_name(exc)))

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call sync *fn*; on a matching exception return the fallback instead.

        Example:
            >>> from resilience import fallback
            >>> fallback(0).call(int, "not a number")
            0
        """
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not self._matches(exc):
                raise
            self._used(exc, fn)
            value = self.value
            if not callable(value):
                return cast(R, value)
            if self._handler_is_async:
                msg = (
                    f"fallback handler {value!r} is async but {fn!r} is sync; "
                    "use a plain function for sync code"
                )
                raise ConfigError(msg) from exc
            return cast(R, value(exc))

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Await *fn*; on a matching exception return the fallback (awaiting an async handler).

        Example:
            >>> import asyncio
            >>> from resilience import fallback
            >>> async def fetch() -> str:
            ...     raise TimeoutError
            >>> async def cached(exc: Exception) -> str:
            ...     return "cached"
            >>> asyncio.run(fallback(cached).call_async(fetch))
            'cached'
        """
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if not self._matches(exc):
                raise
            self._used(exc, fn)
            value = self.value
            if not callable(value):
                return cast(R, value)
            result = value(exc)
            if inspect.isawaitable(result):
                result = await result
            return cast(R, result)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function.

        Generator functions are refused with `ConfigError`: items already handed to the
        consumer cannot be taken back, so a failure half-way cannot be replaced by the
        fallback. Put the fallback around the code that consumes the items instead.
        """
        if is_generator(fn):
            refuse_generator(
                fn,
                "fallback",
                CANNOT_REPLACE,
                "Put the fallback around the code that consumes the items instead, or "
                "decorate a function that returns them as a list.",
            )
        if self._handler_is_async and not inspect.iscoroutinefunction(fn):
            msg = (
                f"fallback handler {self.value!r} is async but "
                f"{getattr(fn, '__qualname__', fn)!r} is sync; use a plain function for sync code"
            )
            raise ConfigError(msg)
        return decorate(fn, self.call, self.call_async)

    def __repr__(self) -> str:
        return f"fallback({self.value!r}, on={self.on!r})"


def fallback(
    value_or_callable: object, *, on: ExceptionFilter = Exception, name: str | None = None
) -> Fallback:
    """On a matching exception, return *value_or_callable*, or its result called with the error.

    *on* takes exception types or a predicate (default: any `Exception`). A callable is called
    with the exception; for async functions it may be async (it is awaited). To return a
    callable itself as the value, wrap it: ``fallback(lambda exc: my_function)``.

    Example:
        >>> from resilience import fallback
        >>> @fallback(lambda exc: f"unavailable ({type(exc).__name__})", on=OSError)
        ... def status() -> str:
        ...     raise ConnectionRefusedError
        >>> status()
        'unavailable (ConnectionRefusedError)'
    """
    return Fallback(value_or_callable, on=on, name=name)


public("resilience", Fallback, fallback)
