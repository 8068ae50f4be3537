"""Test mode: zero every wait and cap attempts, process-wide, for users' test suites.

The state is one module global, read only off the happy path (after a failure) by
`Retry.compute_wait` / `Retry.max_attempts` and by the httpx transports through `wait` and
`max_attempts` below, so every component honours it the same way. It is process-wide on
purpose (stamina's ``set_testing`` is the model): a test switches it on, and code running in
other threads or tasks of that test sees it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from ._public import public
from ._validate import integer

__all__ = ["is_testing", "max_attempts", "set_testing", "settings", "wait"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Settings:
    """Active test-mode settings: ``attempts`` None keeps each component's own attempts."""

    attempts: int | None
    cap: bool


_settings: _Settings | None = None


def settings() -> _Settings | None:
    """The active test-mode settings, or None when test mode is off."""
    return _settings


def is_testing() -> bool:
    """Whether test mode is on.

    Example:
        >>> from resilience.testing import is_testing, set_testing
        >>> with set_testing(True):
        ...     is_testing()
        True
        >>> is_testing()
        False
    """
    return _settings is not None


def wait(seconds: float) -> float:
    """*seconds*, or 0.0 in test mode: every wait (backoff, ``Retry-After``) goes through this."""
    return seconds if _settings is None else 0.0


def max_attempts(configured: int) -> int:
    """The attempts a component should make: *configured*, or as test mode says."""
    active = _settings
    if active is None or active.attempts is None:
        return configured
    if active.cap:
        return min(configured, active.attempts)
    return active.attempts


class _Scope:
    """Returned by `set_testing`: the change is already made; ``with`` undoes it on exit."""

    __slots__ = ("_previous",)

    def __init__(self, previous: _Settings | None) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _settings
        _settings = self._previous


def set_testing(testing: bool, *, attempts: int | None = None, cap: bool = True) -> _Scope:
    """Switch test mode on or off: every retry wait becomes 0, attempts can be capped.

    Args:
        testing: True to switch test mode on, False to switch it off.
        attempts: with ``cap=True`` (the default), no retry makes more than this many
            attempts; with ``cap=False``, every retry makes exactly this many. None keeps
            each retry's own ``attempts`` and only removes the waits.
        cap: see *attempts*.

    The change takes effect at once and holds for the whole process. Used in a ``with``
    statement, the previous setting comes back at the end of the block.

    Example:
        >>> from resilience import retry
        >>> from resilience.testing import set_testing
        >>> calls = []
        >>> @retry(on=ConnectionError, attempts=5)
        ... def flaky() -> None:
        ...     calls.append(1)
        ...     raise ConnectionError
        >>> with set_testing(True, attempts=2):   # no sleeping, at most 2 attempts
        ...     try:
        ...         flaky()
        ...     except ConnectionError:
        ...         pass
        >>> len(calls)
        2
    """
    global _settings
    previous = _settings
    if testing:
        checked = integer("attempts", attempts, minimum=1, allow_none=True)
        _settings = _Settings(attempts=checked, cap=bool(cap))
    else:
        _settings = None
    return _Scope(previous)


public("resilience.testing", is_testing, set_testing)
