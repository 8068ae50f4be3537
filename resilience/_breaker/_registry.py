"""The process-wide registry of live circuit breakers, by name.

Breakers are held weakly: a breaker nobody uses any more leaves the listing when it is
garbage-collected. A new breaker with a taken name replaces the old entry (no error), so
names are keys: code that builds breakers per host puts the host in the name.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from .._observe import _gauges

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = ["all_breakers", "get_breaker", "register", "unregister"]

_lock = threading.Lock()
_breakers: weakref.WeakValueDictionary[str, CircuitBreaker] = weakref.WeakValueDictionary()


def register(breaker: CircuitBreaker) -> None:
    """List *breaker* under its name, replacing any breaker listed under that name."""
    with _lock:
        _breakers[breaker.name] = breaker
    _gauges.breaker_added()


def unregister(breaker: CircuitBreaker) -> None:
    """Remove *breaker* from the listing if it is the one listed under its name."""
    with _lock:
        if _breakers.get(breaker.name) is breaker:
            del _breakers[breaker.name]


def get_breaker(name: str) -> CircuitBreaker | None:
    """The live breaker listed under *name*, or None.

    Example:
        >>> from resilience import CircuitBreaker
        >>> b = CircuitBreaker("doc-registry")
        >>> get_breaker("doc-registry") is b
        True
    """
    with _lock:
        return _breakers.get(name)


def all_breakers() -> list[CircuitBreaker]:
    """Every live breaker, sorted by name."""
    with _lock:
        items = list(_breakers.items())
    return [breaker for _, breaker in sorted(items, key=lambda item: item[0])]
