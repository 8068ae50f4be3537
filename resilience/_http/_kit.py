"""What one httpx-like library contributes to the transports (`Kit`), and the checks of
what the transports are given: the inner transport, the upstreams, each request's library.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError
from .._upstream._config import Upstream
from ._call import check_inner
from ._core import TransportCore
from ._routing import check_upstreams
from ._rules import ErrorKinds

__all__ = ["Kit", "async_sleep", "blocking_sleep", "check_inner_of", "foreign", "routes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Kit:
    """What one httpx-like library contributes to the transports."""

    name: str
    """Its import name (``httpx``, ``httpx2``), for messages."""
    other: str
    """The import name of the library it is often mistaken for."""
    Request: type[Any]
    ByteStream: type[Any]
    SyncByteStream: type[Any]
    AsyncByteStream: type[Any]
    HTTPTransport: Callable[[], Any]
    AsyncHTTPTransport: Callable[[], Any]
    DeadlineStream: type[Any]
    AsyncDeadlineStream: type[Any]
    errors: ErrorKinds
    core: type[TransportCore]
    """`TransportCore`, or a subclass knowing the library's request body classes."""


def routes(kit: Kit, upstreams: Iterable[Upstream]) -> tuple[object, ...]:
    """A transport's ``upstreams``, checked: only resilience.httpx's transports route."""
    checked = check_upstreams(upstreams)
    if checked and kit.name != "httpx":
        msg = (
            f"upstreams= is supported by resilience.httpx's transports, got it on "
            f"resilience.{kit.name}'s; route through resilience.httpx, or pass one URL per host"
        )
        raise ConfigError(msg)
    return checked


def blocking_sleep(seconds: float) -> None:
    """The sync transport's default ``sleep``: `time.sleep`, looked up per call so that
    tests patching it see our waits too."""
    time.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    """The async transport's default ``sleep``: `asyncio.sleep`."""
    await asyncio.sleep(seconds)


def _from_library(value: object, name: str) -> bool:
    return any(
        (getattr(cls, "__module__", None) or "").partition(".")[0] == name
        for cls in type(value).__mro__
    )


def check_inner_of(kit: Kit, inner: Any, method: str) -> Any:
    """A transport's ``inner``: of *kit*'s library, not its look-alike, and with *method*."""
    if _from_library(inner, kit.other):
        msg = (
            f"inner must be an {kit.name} transport, got {inner!r} from {kit.other}: "
            f"use resilience.{kit.other}'s transports with {kit.other} clients"
        )
        raise ConfigError(msg)
    return check_inner(inner, method)


def foreign(kit: Kit, request: object, cls: str) -> ConfigError:
    """The error for a request from another library (the transport was given to its client)."""
    library = (type(request).__module__ or "?").partition(".")[0]
    msg = (
        f"resilience.{kit.name}.{cls} was given to an {library} client (it got a "
        f"{type(request).__qualname__} from {library}); use resilience.{library}.{cls} "
        f"with {library} clients"
    )
    return ConfigError(msg)
