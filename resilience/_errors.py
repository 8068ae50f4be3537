"""The exceptions of `resilience`: one root, subclasses that carry structured data."""

from __future__ import annotations

from ._observe._redact import redact_name
from ._public import public

__all__ = [
    "BulkheadFull",
    "CircuitOpenError",
    "ConfigError",
    "DeadlineExceeded",
    "ResilienceError",
]


class ResilienceError(Exception):
    """Root of every exception this library raises on its own.

    Example:
        >>> try:
        ...     raise BulkheadFull("db")
        ... except ResilienceError as exc:
        ...     print(type(exc).__name__)
        BulkheadFull
    """


class CircuitOpenError(ResilienceError):
    """A circuit breaker rejected the call without running it.

    Attributes:
        breaker: the breaker's name.
        retry_after: seconds until the breaker lets a probe through, or ``None`` when the
            breaker was forced open and will not move on its own.

    Example:
        >>> exc = CircuitOpenError("payments", retry_after=12.5)
        >>> exc.breaker, exc.retry_after
        ('payments', 12.5)
    """

    # An open breaker raises one on every rejected call, so building it must cost next to
    # nothing: slots and no base initialiser (an instance dict and ``super().__init__``
    # were half the fail-fast path), and the message is formatted only when read.
    __slots__ = ("breaker", "retry_after")

    def __init__(self, breaker: str, retry_after: float | None = None) -> None:
        self.breaker = breaker
        self.retry_after = retry_after
        if len(self.args) != 2:  # given by keyword (or left out): args as if positional
            self.args = (breaker, retry_after)

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, float | None]]:
        return (type(self), (self.breaker, self.retry_after))

    def __str__(self) -> str:
        name = redact_name(self.breaker)  # a name built from a URL may hold a credential
        if self.retry_after is None:
            return f"circuit breaker {name!r} is forced open; calls are rejected until reset()"
        return (
            f"circuit breaker {name!r} is open; a probe call is allowed in {self.retry_after:.3g} s"
        )


class BulkheadFull(ResilienceError):
    """A bulkhead had no free slot (and no room to wait), so the call was not run.

    Attributes:
        name: the bulkhead's name (``None`` when it has none).

    Example:
        >>> BulkheadFull("db").name
        'db'
    """

    def __init__(self, name: str | None = None, message: str | None = None) -> None:
        self.name = name
        label = f"bulkhead {redact_name(name)!r}" if name else "bulkhead"
        super().__init__(message or f"{label} is full; the call was rejected")

    def __reduce__(self) -> tuple[type[BulkheadFull], tuple[str | None, str]]:
        return (type(self), (self.name, str(self)))


class DeadlineExceeded(ResilienceError, TimeoutError):
    """The active deadline (or a timeout) ran out before the work finished.

    It is also a `TimeoutError`, so code that already handles timeouts keeps working.

    Example:
        >>> isinstance(DeadlineExceeded("too slow"), TimeoutError)
        True
    """


class ConfigError(ResilienceError, ValueError):
    """A setting was invalid; raised when the object is built, never later.

    The message names the setting, the bad value and what is allowed.

    Example:
        >>> from resilience import CircuitBreaker
        >>> CircuitBreaker("x", failure_rate=1.5)
        Traceback (most recent call last):
        ...
        resilience.ConfigError: failure_rate must be in (0, 1], got 1.5
    """


public(
    "resilience",
    ResilienceError,
    CircuitOpenError,
    BulkheadFull,
    DeadlineExceeded,
    ConfigError,
)
