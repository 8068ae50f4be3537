"""Show public objects under the module users import them from.

``public("resilience", CircuitBreaker)`` sets ``__module__`` so that reprs, tracebacks and
``help()`` say ``resilience.CircuitBreaker``, not the private module that defines it (httpx
and trio do the same). Pickling keeps working because the public module holds the same
object under that name; tests/contract/test_public_api.py checks both for every public name.

doctest collects an object's examples only from the module its ``__module__`` names, and
the ``resilience`` façade imports its names lazily, so `public` also lists each object in
its home module's ``__test__``: every example, its methods' included, runs where it is
written. A public module that imports a name eagerly (``resilience.events``) runs that
object's own example a second time; harmless, and the same in every run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["public"]


def public(module: str, *objects: type | Callable[..., Any]) -> None:
    """Name each of *objects* after *module*, the public module that exports it.

    Call it at the end of the defining module, once the objects exist.

    Example:
        >>> from resilience import CircuitBreaker
        >>> CircuitBreaker.__module__
        'resilience'
    """
    for obj in objects:
        home = obj.__module__
        if home == module:
            continue
        vars(sys.modules[home]).setdefault("__test__", {})[obj.__qualname__] = obj
        obj.__module__ = module
