"""What httpx2 (the maintained fork of httpx) contributes to the transports.

httpx2 has httpx's API under its own import name, so the twins and the core serve it as
they serve httpx; only the classes differ: its errors (`HTTPX2_ERRORS`), its in-memory
request body (`Httpx2Core`), and the body streams an `httpx2.Client` accepts
(`DeadlineStream` and `AsyncDeadlineStream` below are the shared ones, as httpx2 streams).
"""

from __future__ import annotations

from typing import ClassVar, Final

import httpx2

from ._core import TransportCore
from ._rules import ErrorKinds
from ._streams import AsyncDeadlineStream as _AsyncDeadlineStream
from ._streams import DeadlineStream as _DeadlineStream

__all__ = ["HTTPX2_ERRORS", "AsyncDeadlineStream", "DeadlineStream", "Httpx2Core"]

HTTPX2_ERRORS: Final = ErrorKinds(
    not_sent=(httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout),
    maybe_sent=(httpx2.NetworkError, httpx2.TimeoutException, httpx2.RemoteProtocolError),
    never_retried=(httpx2.CloseError,),
    caller_errors=(httpx2.LocalProtocolError, httpx2.UnsupportedProtocol),
    transport=(httpx2.TransportError,),
    timeout=(httpx2.TimeoutException,),
    timeout_phases=(
        (httpx2.ConnectTimeout, "connect"),
        (httpx2.ReadTimeout, "read"),
        (httpx2.WriteTimeout, "write"),
        (httpx2.PoolTimeout, "pool"),
    ),
)
"""The kinds for httpx2: httpx's, with httpx2's classes."""


class Httpx2Core(TransportCore):
    """The shared core, knowing httpx2's in-memory request body."""

    __slots__ = ()
    note: ClassVar[str] = "resilience.httpx2: "
    in_memory: ClassVar[tuple[type, ...]] = (httpx2.ByteStream,)


class DeadlineStream(_DeadlineStream, httpx2.SyncByteStream):
    """`resilience._http._streams.DeadlineStream`, as an httpx2 stream."""

    __slots__ = ()


class AsyncDeadlineStream(_AsyncDeadlineStream, httpx2.AsyncByteStream):
    """`resilience._http._streams.AsyncDeadlineStream`, as an httpx2 stream."""

    __slots__ = ()
