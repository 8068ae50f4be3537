"""What `resilience.aiohttp` needs to drive the shared core with aiohttp.

The core reads little of a request: its method, headers, URL parts, a per-request
extensions dict and whether its body can be sent again. `RequestView` shows an aiohttp
`ClientRequest` that way (its headers are the request's own, so a key or a deadline header
the core sets is sent; its URL is a `yarl.URL`, which has the parts the core reads).
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp
from aiohttp import payload

from ._rules import ErrorKinds

__all__ = ["AIOHTTP_ERRORS", "RequestView", "replayable"]

AIOHTTP_ERRORS: Final = ErrorKinds(
    # No connection was made (refused, DNS, TLS handshake, connect timeout).
    not_sent=(aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError),
    maybe_sent=(aiohttp.ClientConnectionError, aiohttp.ClientPayloadError),
    never_retried=(),
    caller_errors=(aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError),
    transport=(aiohttp.ClientConnectionError, aiohttp.ClientPayloadError),
    timeout=(aiohttp.ServerTimeoutError,),
    timeout_phases=(
        (aiohttp.ConnectionTimeoutError, "connect"),
        (aiohttp.SocketTimeoutError, "read"),
    ),
)
"""The kinds for aiohttp's client errors."""


class RequestView:
    """A `ClientRequest` as the core reads it; ``headers`` is the request's own."""

    __slots__ = ("extensions", "headers", "method", "stream", "url")

    def __init__(self, request: aiohttp.ClientRequest) -> None:
        self.method = request.method
        self.headers = request.headers
        self.url: Any = request.url  # a yarl.URL: scheme, host, port, str()
        self.extensions: dict[str, Any] = {}
        self.stream = request.body


def replayable(body: object, limit: int) -> tuple[bool, bool]:
    """(must read first, replayable) for an aiohttp request body.

    aiohttp (3.12 and later) sends a payload again from its start: bytes, text, JSON and
    form bodies always, and a seekable file up to *limit* bytes (the transports' rule for
    bodies). Streams (async iterables) are sent once.

    Example:
        >>> from aiohttp import payload
        >>> replayable(payload.BytesPayload(b"{}"), 1024)
        (False, True)
    """
    if body == b"" or isinstance(body, payload.BytesPayload):
        return False, True
    if isinstance(body, payload.IOBasePayload):
        size = body.size
        return False, size is not None and size <= limit
    return False, False
