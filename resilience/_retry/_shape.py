"""Callable settings checked for shape when they are given, not when they are first called.

A ``backoff=lambda attempt, error: ...`` or an ``on=lambda: True`` builds fine and would raise
`TypeError` at the first failure, in production, far from the line that is wrong. These
checks read the callable's signature (``inspect.signature``) once, at construction, and raise
`ConfigError` naming the setting, the value and the fix. A callable whose signature cannot be
read (some builtins) is trusted.
"""

from __future__ import annotations

import inspect
from typing import TypeVar

from .._errors import ConfigError
from .._validate import show

__all__ = ["check_arity", "check_callable"]

T = TypeVar("T")

_PLACEHOLDER = object()


def _signature(value: object) -> inspect.Signature | None:
    try:
        return inspect.signature(value)  # type: ignore[arg-type]  # any callable
    except (TypeError, ValueError):  # a builtin without a signature, or not introspectable
        return None


def check_arity(setting: str, value: T, *, args: int, takes: str, fix: str) -> T:
    """Return *value* if it can be called with *args* positional arguments, else raise.

    *takes* says what the arguments are (for the message), *fix* how to write it instead.

    Example:
        >>> check_arity("on", lambda exc: True, args=1, takes="the exception", fix="")(None)
        True
        >>> from resilience import ConfigError
        >>> try:
        ...     check_arity("on", lambda: True, args=1, takes="the exception", fix="")
        ... except ConfigError as exc:
        ...     print(exc)
        on must take 1 argument (the exception), got <lambda> taking ()
    """
    signature = _signature(value)
    if signature is None:
        return value
    try:
        signature.bind(*(_PLACEHOLDER,) * args)
    except TypeError:
        name = getattr(value, "__qualname__", None) or show(value)
        count = "1 argument" if args == 1 else f"{args} arguments"
        if args == 0:
            count = "no arguments"
        what = f" ({takes})" if takes else ""
        msg = f"{setting} must take {count}{what}, got {name} taking {signature}"
        if fix:
            msg = f"{msg}; {fix}"
        raise ConfigError(msg) from None
    return value


def check_callable(setting: str, value: T, *, args: int, takes: str, fix: str = "") -> T:
    """`check_arity` for a setting that must be a callable at all (else `ConfigError`).

    Example:
        >>> check_callable("sleep", print, args=1, takes="the seconds") is print
        True
    """
    if not callable(value):
        msg = f"{setting} must be callable, got {show(value)}"
        raise ConfigError(msg)
    return check_arity(setting, value, args=args, takes=takes, fix=fix)
