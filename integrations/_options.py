"""The settings both integrations take, validated once when the app is set up."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection
from typing import Any, Final, Literal, TypeAlias

from resilience._errors import ConfigError
from resilience._propagation import DEADLINE_HEADERS
from resilience._validate import MAX_CONCURRENT, Clock, duration, integer, url_path
from resilience._validate import clock as check_clock

__all__ = [
    "DEFAULT_BODY_BUFFER",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_STATUS_ACCESS",
    "DEFAULT_STATUS_PATH",
    "DeadlineHeaderNames",
    "Options",
    "StatusAccess",
]

DEFAULT_STATUS_PATH: Final = "/resilience"
DEFAULT_STATUS_ACCESS: Final = "loopback"
DEFAULT_BODY_BUFFER: Final = 256 * 1024
"""Bytes of a request body read before the request takes a ``max_concurrent`` slot (256 KiB).

Big enough for nearly every JSON or form body, small enough that a connection costs little
memory while its body arrives. A larger body takes its slot when the handler reads past it.
"""
DEFAULT_BODY_TIMEOUT: Final = 30.0
"""Seconds a request body (up to the buffer) may take to arrive; later: 408, no slot held."""

StatusAccess: TypeAlias = Literal["loopback", "any"] | Callable[[Any], bool]
"""Who may read the status path: ``"loopback"``, ``"any"`` or ``request -> bool``."""

DeadlineHeaderNames: TypeAlias = bool | Collection[str]
"""Which inbound deadline headers to honour: all (True), none (False), or these names."""


def _status_access(value: object) -> StatusAccess:
    if value in ("loopback", "any") or (callable(value) and not isinstance(value, str | type)):
        return value
    msg = (
        'status_access must be "loopback", "any" or a callable taking the request and '
        f"returning a bool, got {value!r}"
    )
    raise ConfigError(msg)


def _deadline_headers(value: object) -> tuple[str, ...]:
    known = tuple(name for name, _ in DEADLINE_HEADERS)
    if value is True:
        return known
    if value is False:
        return ()
    if (
        isinstance(value, Collection)
        and not isinstance(value, str | bytes)
        and all(isinstance(name, str) for name in value)
    ):
        names = tuple(dict.fromkeys(name.lower() for name in value))
        if all(name in known for name in names):
            return names
    msg = (
        f"deadline_headers must be True, False or a collection of header names among "
        f"{', '.join(known)}, got {value!r}"
    )
    raise ConfigError(msg)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """The settings both integrations take, validated once when the app is set up.

    ``deadline_headers`` is kept as the tuple of header names honoured (lower case).

    Example:
        >>> Options(max_concurrent=50, timeout=2.0).timeout
        2.0
        >>> Options(deadline_headers=["grpc-timeout"]).deadline_headers
        ('grpc-timeout',)
    """

    max_concurrent: int | None = None
    timeout: float | None = None
    status_path: str | None = DEFAULT_STATUS_PATH
    status_access: StatusAccess = DEFAULT_STATUS_ACCESS
    deadline_headers: DeadlineHeaderNames = True
    body_buffer: int = DEFAULT_BODY_BUFFER
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    clock: Clock = time.monotonic

    def __post_init__(self) -> None:
        integer("max_concurrent", self.max_concurrent, allow_none=True, maximum=MAX_CONCURRENT)
        seconds = duration("timeout", self.timeout, allow_none=True)
        object.__setattr__(self, "timeout", seconds)  # a timedelta becomes float seconds
        url_path("status_path", self.status_path, allow_none=True)
        _status_access(self.status_access)
        object.__setattr__(self, "deadline_headers", _deadline_headers(self.deadline_headers))
        integer("body_buffer", self.body_buffer, minimum=0)
        body_seconds = duration("body_timeout", self.body_timeout)
        object.__setattr__(self, "body_timeout", body_seconds)
        check_clock("clock", self.clock)
