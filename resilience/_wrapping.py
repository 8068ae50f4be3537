"""How the library's decorators wrap a function: metadata, kinds of function, generators.

Every decorator (breaker, retry, timeout, bulkhead, fallback, and so `Policy`) copies the
wrapped function's metadata with `wraps`, which adds what `functools.wraps` leaves out: the
default values (``__defaults__``, ``__kwdefaults__``), which tools that read them straight off
the function (documentation generators, CLI builders, dependency injectors) expect to find.

**Generators.** Calling a generator function runs none of its code: the work happens while it
is iterated. So a decorator that treats the call as the work guards nothing (a breaker would
record a success for every generator *created*). Each decorator either guards the whole
iteration (`wrap_generator`, `wrap_async_generator`: the call starts at the first ``next()``
and ends when the generator finishes, fails or is closed) or refuses generators at decoration
(`refuse_generator`) when that cannot be sound: items already handed to the consumer cannot be
taken back, so nothing can retry or replace an iteration that failed half-way.

The wrappers are generator functions themselves (`inspect.isgeneratorfunction` and
`inspect.isasyncgenfunction` stay true, so decorators stack and frameworks that look for
generators still find them). They forward ``send``, ``throw`` and ``close`` as ``yield from``
does, running each resumption of the wrapped generator inside the guard (as a context manager):
state the guard sets for the work (a deadline, "this breaker guards this call") is never seen
by the consumer's code between two items.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from types import FunctionType, TracebackType
from typing import Any, Final, NoReturn, ParamSpec, Protocol, TypeVar, cast

from ._errors import ConfigError

__all__ = [
    "CANNOT_REPEAT",
    "CANNOT_REPLACE",
    "AsyncIterationGuard",
    "IterationGuard",
    "decorate",
    "is_generator",
    "refuse_generator",
    "wrap_async_generator",
    "wrap_generator",
    "wraps",
]

P = ParamSpec("P")
R = TypeVar("R")
W = TypeVar("W", bound=Callable[..., Any])


def wraps(fn: Callable[..., Any]) -> Callable[[W], W]:
    """`functools.wraps`, plus the wrapped function's ``__defaults__`` and ``__kwdefaults__``.

    Our wrappers take ``(*args, **kwargs)``: defaults set on them are metadata only, they
    never change how a call binds its arguments.

    Example:
        >>> def f(a=1, *, b=2): ...
        >>> @wraps(f)
        ... def g(*args, **kwargs): ...
        >>> g.__defaults__, g.__kwdefaults__, g.__wrapped__ is f
        ((1,), {'b': 2}, True)
    """

    def apply(wrapper: W) -> W:
        functools.update_wrapper(wrapper, fn)
        if isinstance(wrapper, FunctionType):
            defaults = getattr(fn, "__defaults__", None)
            if isinstance(defaults, tuple):
                wrapper.__defaults__ = defaults
            kwdefaults = getattr(fn, "__kwdefaults__", None)
            if isinstance(kwdefaults, dict):
                # A copy: the wrapper must not share (and so mutate) the original's dict.
                wrapper.__kwdefaults__ = dict(kwdefaults)
        return wrapper

    return apply


def decorate(
    fn: Callable[P, R],
    call: Callable[..., Any],
    call_async: Callable[..., Awaitable[Any]],
) -> Callable[P, R]:
    """Wrap *fn* so each call goes through ``call(fn, ...)`` or ``await call_async(fn, ...)``.

    One decorator serves ``def`` and ``async def``: the choice is made once, here. For a
    component whose ``call``/``call_async`` is all its decorator does (the fallback).
    """
    if inspect.iscoroutinefunction(fn):

        @wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await call_async(fn, *args, **kwargs)

        return cast(Callable[P, R], async_wrapper)

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return call(fn, *args, **kwargs)

    return cast(Callable[P, R], wrapper)


# ------------------------------------------------------------------------------ generators


def is_generator(fn: object) -> bool:
    """True for a generator function or an async generator function (sync or async).

    Example:
        >>> def rows():
        ...     yield 1
        >>> is_generator(rows), is_generator(len)
        (True, False)
    """
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


# Why retry and fallback refuse generators (shared with the Policy's message).
CANNOT_REPEAT: Final = (
    "items already yielded cannot be taken back, so an iteration that fails half-way "
    "cannot be run again"
)
CANNOT_REPLACE: Final = (
    "items already yielded cannot be taken back, so a failure half-way cannot be "
    "replaced by a fallback value"
)


def refuse_generator(fn: object, what: str, why: str, fix: str) -> NoReturn:
    """Raise the `ConfigError` of a decorator that cannot guard a generator function soundly."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    kind = "async generator" if inspect.isasyncgenfunction(fn) else "generator"
    msg = f"{what} cannot decorate the {kind} function {name!r}: {why}. {fix}"
    raise ConfigError(msg)


class IterationGuard(Protocol):
    """What a decorator does around one iteration of a sync generator.

    `start` runs at the first ``next()`` (it may raise: a rejection ends the iteration
    before it starts, and `finish` is then not called); each resumption of the generator runs
    inside ``with guard:``; `finish` runs once at the end with the exception that ended the
    iteration (`GeneratorExit` when the consumer closed it early), or None when it finished.
    """

    def start(self) -> None:
        """The iteration begins (at the first ``next()``)."""
        ...

    def __enter__(self) -> object:
        """A resumption of the wrapped generator begins."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """The resumption ended (with an item, the end, or an exception)."""
        ...

    def finish(self, error: BaseException | None) -> None:
        """The iteration is over: finished (None), failed, or closed (`GeneratorExit`)."""
        ...


class AsyncIterationGuard(Protocol):
    """`IterationGuard` for async generators: awaitable `start` and resumptions."""

    async def start(self) -> None:
        """The iteration begins (at the first ``anext()``)."""
        ...

    async def __aenter__(self) -> object:
        """A resumption of the wrapped async generator begins."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """The resumption ended; may turn the exception into another (a deadline)."""
        ...

    def finish(self, error: BaseException | None) -> None:
        """The iteration is over: finished (None), failed, or closed (`GeneratorExit`)."""
        ...


def wrap_generator(
    fn: Callable[P, Generator[Any, Any, Any]], new_guard: Callable[[], IterationGuard]
) -> Callable[P, Generator[Any, Any, Any]]:
    """A generator function that iterates ``fn(...)`` under a fresh ``new_guard()``.

    Example:
        >>> import contextlib
        >>> class Trace(contextlib.nullcontext):
        ...     def start(self): print("start")
        ...     def finish(self, error): print("finish", error)
        >>> def rows():
        ...     yield 1
        ...     yield 2
        >>> traced = wrap_generator(rows, Trace)
        >>> items = traced()          # nothing starts yet
        >>> list(items)
        start
        finish None
        [1, 2]
    """

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, Any]:
        guard = new_guard()
        gen = fn(*args, **kwargs)
        try:
            guard.start()
        except BaseException:
            gen.close()
            raise
        error: BaseException | None = None
        value: Any = None
        thrown: BaseException | None = None
        try:
            while True:
                with guard:
                    try:
                        item = gen.send(value) if thrown is None else gen.throw(thrown)
                    except StopIteration as stop:
                        return stop.value
                thrown = value = None
                try:
                    value = yield item
                except GeneratorExit:
                    with guard:
                        gen.close()
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    thrown = exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                gen.close()  # a no-op once it has finished; its own cleanup otherwise
            finally:
                guard.finish(error)

    return wrapper


def wrap_async_generator(
    fn: Callable[P, AsyncGenerator[Any, Any]], new_guard: Callable[[], AsyncIterationGuard]
) -> Callable[P, AsyncGenerator[Any, Any]]:
    """An async generator function that iterates ``fn(...)`` under a fresh ``new_guard()``."""

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Any, Any]:
        guard = new_guard()
        agen = fn(*args, **kwargs)
        try:
            await guard.start()
        except BaseException:
            await agen.aclose()
            raise
        error: BaseException | None = None
        value: Any = None
        thrown: BaseException | None = None
        try:
            while True:
                async with guard:
                    try:
                        if thrown is None:
                            item = await agen.asend(value)
                        else:
                            item = await agen.athrow(thrown)
                    except StopAsyncIteration:
                        return
                thrown = value = None
                try:
                    value = yield item
                except GeneratorExit:
                    async with guard:
                        await agen.aclose()
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    thrown = exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                await agen.aclose()
            finally:
                guard.finish(error)

    return wrapper
