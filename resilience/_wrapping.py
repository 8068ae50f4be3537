"""How the library's decorators wrap a function: metadata, and what kind of function it is.

Every decorator (breaker, retry, timeout, bulkhead, fallback, and so `Policy`) copies the
wrapped function's metadata with `wraps`, which adds what `functools.wraps` leaves out: the
default values (``__defaults__``, ``__kwdefaults__``), which tools that read them straight off
the function (documentation generators, CLI builders, dependency injectors) expect to find.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import FunctionType
from typing import Any, TypeVar

__all__ = ["wraps"]

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
