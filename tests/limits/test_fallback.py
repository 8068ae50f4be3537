"""fallback(): a value or a handler in place of a matching failure, nothing else."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from resilience import ConfigError, fallback
from resilience.events import Event, FallbackUsed


def test_value_replaces_a_matching_error(events: list[Event]) -> None:
    """A matching exception gives the value, and a FallbackUsed event with the type name."""

    @fallback("default", on=KeyError)
    def lookup() -> str:
        raise KeyError("secret-token")

    assert lookup() == "default"
    assert events == [FallbackUsed(name=lookup.__qualname__, error="KeyError")]
    assert "secret-token" not in repr(events)


def test_success_is_untouched(events: list[Event]) -> None:
    """A call that succeeds returns its own result and emits nothing."""
    assert fallback(0)(lambda: 5)() == 5
    assert events == []


def test_non_matching_error_propagates() -> None:
    """An exception that `on` does not select propagates unchanged."""

    @fallback("default", on=KeyError)
    def lookup() -> str:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        lookup()


def test_handler_is_called_with_the_exception() -> None:
    """A callable is called with the exception and its result returned."""
    seen: list[BaseException] = []

    def handler(exc: Exception) -> int:
        seen.append(exc)
        return -1

    @fallback(handler)
    def boom() -> int:
        raise RuntimeError("x")

    assert boom() == -1
    assert isinstance(seen[0], RuntimeError)


def test_predicate_selects_errors() -> None:
    """`on` may be a predicate over the exception."""
    only_404 = fallback(None, on=lambda exc: "404" in str(exc))

    def fail(code: str) -> None:
        raise LookupError(code)

    assert only_404.call(fail, "404") is None
    with pytest.raises(LookupError):
        only_404.call(fail, "500")


def test_base_exceptions_are_never_replaced() -> None:
    """KeyboardInterrupt is not an Exception: no fallback, even with on=BaseException."""

    @fallback("x", on=BaseException)
    def stop() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stop()


async def test_async_value_and_async_handler() -> None:
    """Async functions get the value, or the awaited result of an async handler."""

    async def cached(exc: Exception) -> str:
        await asyncio.sleep(0)
        return f"cached after {type(exc).__name__}"

    @fallback(cached, on=TimeoutError)
    async def fetch() -> str:
        raise TimeoutError

    @fallback("plain")
    async def fetch2() -> str:
        raise OSError

    @fallback(lambda exc: "sync handler")
    async def fetch3() -> str:
        raise OSError

    assert await fetch() == "cached after TimeoutError"
    assert await fetch2() == "plain"
    assert await fetch3() == "sync handler"
    assert inspect.iscoroutinefunction(fetch)


async def test_cancellation_is_never_replaced() -> None:
    """A cancelled task stays cancelled: CancelledError is no failure."""
    started = asyncio.Event()

    @fallback("x", on=BaseException)
    async def wait() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(wait())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_async_handler_on_sync_function_is_a_config_error() -> None:
    """An async handler cannot serve a sync function: ConfigError at decoration."""

    async def handler(exc: Exception) -> int:
        return 0

    with pytest.raises(ConfigError, match="async"):

        @fallback(handler)
        def sync_fn() -> int:
            return 1


def test_invalid_on_is_a_config_error() -> None:
    """`on` must be exception types or a predicate."""
    with pytest.raises(ConfigError, match="on must be"):
        fallback(0, on=42)  # type: ignore[arg-type]


def test_metadata_and_methods() -> None:
    """The decorator keeps metadata and works on methods."""

    class Repo:
        @fallback(0)
        def count(self) -> int:
            """Count."""
            raise OSError

    assert Repo().count() == 0
    assert Repo.count.__doc__ == "Count."
    assert repr(fallback(0, on=OSError)) == "fallback(0, on=<class 'OSError'>)"


def test_named_fallback_reports_its_name(events: list[Event]) -> None:
    """A name= given to the fallback is the name in its events."""
    fallback(1, name="prices").call(int, "x")
    assert events == [FallbackUsed(name="prices", error="ValueError")]
