"""Response bodies under a deadline, for the transports' I/O twins.

A transport returns before the client reads the body, where a broken connection could no
longer be retried: a body with a declared length up to ``buffer_limit`` is read inside the
transport (`read_body` / `aread_body`). Larger or unsized bodies stream through, wrapped
(`DeadlineStream`) when a deadline is active, because httpx's per-read timeouts cannot bound
an upstream that drips its answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Final

from ._compat import AsyncByteStream, Response, SyncByteStream
from ._core import deadline_error
from ._rules import Expiry

__all__ = [
    "LATE_BODY",
    "LATE_HEAD",
    "AsyncDeadlineStream",
    "DeadlineStream",
    "aread_body",
    "read_body",
    "sized_body",
]


def sized_body(response: Response, limit: int) -> bool:
    """Whether the response declares a body small enough to read inside the transport."""
    length = response.headers.get("content-length")
    return length is not None and length.isascii() and length.isdigit() and int(length) <= limit


# httpx's timeouts apply to each socket read, so an upstream that sends a byte at a time
# never trips them: the deadline is checked again when the answer's head has come, and
# between the chunks of its body, whoever reads them.
LATE_HEAD: Final = "the deadline passed while the response headers arrived"
LATE_BODY: Final = "the deadline passed while the response body arrived"


def read_body(stream: SyncByteStream, expiry: Expiry | None) -> bytes:
    if expiry is None:
        return b"".join(stream)
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if expiry.remaining() <= 0.0:
            raise deadline_error(LATE_BODY)
    return b"".join(chunks)


async def aread_body(stream: AsyncByteStream, expiry: Expiry | None) -> bytes:
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        if expiry is not None and expiry.remaining() <= 0.0:
            raise deadline_error(LATE_BODY)
    return b"".join(chunks)


class DeadlineStream(SyncByteStream):
    """A streamed response body that raises `DeadlineExceeded` between chunks once the
    request's deadline has passed (the per-read httpx timeouts cannot bound a slow drip)."""

    __slots__ = ("_expiry", "_stream")

    def __init__(self, stream: SyncByteStream, expiry: Expiry) -> None:
        self._stream = stream
        self._expiry = expiry

    def __iter__(self) -> Iterator[bytes]:
        expiry = self._expiry
        for chunk in self._stream:
            if expiry.remaining() <= 0.0:
                self._stream.close()
                raise deadline_error(LATE_BODY)
            yield chunk

    def close(self) -> None:
        self._stream.close()


class AsyncDeadlineStream(AsyncByteStream):
    """The async twin of `DeadlineStream`."""

    __slots__ = ("_expiry", "_stream")

    def __init__(self, stream: AsyncByteStream, expiry: Expiry) -> None:
        self._stream = stream
        self._expiry = expiry

    async def __aiter__(self) -> AsyncIterator[bytes]:
        expiry = self._expiry
        async for chunk in self._stream:
            if expiry.remaining() <= 0.0:
                await self._stream.aclose()
                raise deadline_error(LATE_BODY)
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()
