"""The process-wide registry of live circuit breakers, by instance.

Every breaker is listed from construction until it is garbage-collected (the registry holds it
weakly); two breakers with one name are both listed, the name being a field of each. A
breaker that a transport adopts as the template of its per-host breakers (`mark_template`) is
not listed itself: its clones are. The registry is what status pages, gauges and
`resilience.testing.reset_breakers` read; `breakers` is its public face.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Final, TypeVar

from .._observe import _gauges
from .._public import public

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = [
    "all_breakers",
    "breakers",
    "every_breaker",
    "get_breaker",
    "instance_id",
    "mark_template",
    "register",
]

B = TypeVar("B", bound="CircuitBreaker | None")

# Dead entries are swept when the list has grown to twice its size after the last sweep:
# registering stays O(1) amortised, and the list at most twice the live breakers.
_FIRST_SWEEP: Final = 64

_lock = threading.Lock()
# Weak references without a callback, in creation order: the cheapest entry there is
# (a callback-less reference is shared with anyone else who asks for one).
_refs: list[weakref.ref[CircuitBreaker]] = []
_sweep_at = _FIRST_SWEEP
_templates: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
# Salt of the instance ids: stable for the process, never the object's address itself.
_SALT: Final = os.urandom(16)


def register(breaker: CircuitBreaker) -> None:
    """List *breaker* (each `CircuitBreaker` registers itself when it is built)."""
    global _sweep_at
    with _lock:
        _refs.append(weakref.ref(breaker))
        if len(_refs) >= _sweep_at:
            _refs[:] = [ref for ref in _refs if ref() is not None]
            _sweep_at = max(_FIRST_SWEEP, 2 * len(_refs))
    _gauges.breaker_added()


def mark_template(breaker: B) -> B:
    """Note that *breaker* is a template of per-host clones (not listed); returns it.

    A transport calls it on the breaker of its `resilience.Policy`, which it only ever
    clones: the clones do the work and are the ones listed. None passes through.
    """
    if breaker is not None:
        with _lock:
            _templates.add(breaker)
    return breaker


def every_breaker() -> list[CircuitBreaker]:
    """Every live breaker, templates included, in creation order."""
    with _lock:
        found = [ref() for ref in _refs]
    return [breaker for breaker in found if breaker is not None]


def all_breakers() -> list[CircuitBreaker]:
    """Every live breaker but templates, sorted by name (then in creation order)."""
    with _lock:
        templates = set(_templates)
    listed = [breaker for breaker in every_breaker() if breaker not in templates]
    return sorted(listed, key=lambda breaker: breaker.name)


def get_breaker(name: str) -> CircuitBreaker | None:
    """The newest live breaker named *name* (templates included), or None.

    Example:
        >>> from resilience import CircuitBreaker
        >>> b = CircuitBreaker("doc-registry")
        >>> get_breaker("doc-registry") is b
        True
    """
    for breaker in reversed(every_breaker()):
        if breaker.name == name:
            return breaker
    return None


def breakers() -> list[CircuitBreaker]:
    """Every live circuit breaker of the process, sorted by name.

    Two breakers with the same name are both listed (tell them apart by identity, or by
    `instance_id` in a status page). A breaker given to a transport through its `Policy`
    is only the template of the transport's per-host breakers, and is not listed; those
    are, named ``<template name>:<scheme://host:port>``. A breaker nobody holds any more
    leaves the listing when it is garbage-collected.

    Example:
        >>> import resilience
        >>> payments = resilience.CircuitBreaker("doc-payments-eu")
        >>> again = resilience.CircuitBreaker("doc-payments-eu")
        >>> [b is payments or b is again for b in resilience.breakers()
        ...  if b.name == "doc-payments-eu"]
        [True, True]
    """
    return all_breakers()


def instance_id(breaker: CircuitBreaker) -> str:
    """An opaque id of *breaker*, stable while it lives: tells same-named breakers apart.

    Example:
        >>> from resilience import CircuitBreaker
        >>> a, b = CircuitBreaker("doc-same"), CircuitBreaker("doc-same")
        >>> instance_id(a) == instance_id(a), instance_id(a) == instance_id(b)
        (True, False)
    """
    import hashlib  # deferred for its cost: only status pages ask

    digest = hashlib.blake2s(id(breaker).to_bytes(8, "little"), key=_SALT, digest_size=6)
    return digest.hexdigest()


public("resilience", breakers)
