"""httpx transports that retry, break circuits per host and respect deadlines.

Wrap httpx's own transport (or any other) and give it to a client::

    import httpx
    from resilience.httpx import ResilientTransport, AsyncResilientTransport

    client = httpx.Client(transport=ResilientTransport())
    client = httpx.AsyncClient(transport=AsyncResilientTransport())

What is retried, the defaults and the recipes are in ``docs/httpx.md``.
"""

from __future__ import annotations

from ._http._compat import (
    AsyncBaseTransport,
    AsyncByteStream,
    AsyncHTTPTransport,
    BaseTransport,
    ByteStream,
    HTTPTransport,
    Request,
    SyncByteStream,
)
from ._http._core import TransportCore
from ._http._kit import Kit
from ._http._rules import HTTPX_ERRORS
from ._http._streams import AsyncDeadlineStream, DeadlineStream
from ._http._twins import AsyncTwin, SyncTwin
from ._upstream._config import Upstream
from ._upstream._resolve import dns

__all__ = ["AsyncResilientTransport", "ResilientTransport", "Upstream", "dns"]

_KIT = Kit(
    name="httpx",
    other="httpx2",
    Request=Request,
    ByteStream=ByteStream,
    SyncByteStream=SyncByteStream,
    AsyncByteStream=AsyncByteStream,
    HTTPTransport=HTTPTransport,
    AsyncHTTPTransport=AsyncHTTPTransport,
    DeadlineStream=DeadlineStream,
    AsyncDeadlineStream=AsyncDeadlineStream,
    errors=HTTPX_ERRORS,
    core=TransportCore,
)


class ResilientTransport(SyncTwin[BaseTransport], BaseTransport):
    """An httpx transport that retries, breaks circuits per host and respects deadlines.

    Args:
        inner: the transport that does the I/O (default: a new `httpx.HTTPTransport`).
            Passing ``transport=`` to a client disables the client's ``verify``, ``http2``,
            ``limits`` and proxy settings: give them to the inner transport instead.
        policy: a `resilience.Policy` whose slots replace the defaults: its ``retry``
            (attempts, backoff, timeout, budget; its ``on`` adds retryable exception types
            for requests that are safe to repeat, never for others; no ``retry``: no
            retries), its ``breaker`` (the template of the per-host breakers; none: no
            breakers), ``timeout`` (a deadline for the whole request), ``attempt_timeout``
            (caps each attempt's httpx timeouts) and ``bulkhead`` (held for the whole
            request). ``fallback`` is not used: a transport must return a response.
        idempotency_keys: give each POST or PATCH without an ``Idempotency-Key`` a fresh
            one (the same on every attempt), which makes it retryable. True makes quoted
            UUIDs (the IETF draft's form); a function returning a new key string replaces
            that, e.g. ``lambda: str(uuid.uuid4())`` for servers that want it bare.
        max_retry_after: longest `Retry-After` honoured, in seconds; longer ones are capped.
        buffer_limit: request and response bodies with a declared length up to this many
            bytes are read into memory, so requests can be replayed and a connection that
            breaks while the response body arrives is retried like any read error.
        deadline_header: a header (e.g. ``"x-envoy-expected-rq-timeout-ms"``) carrying the
            attempt's remaining budget in whole milliseconds (rounded down), when a deadline
            is active; with under 1 ms left, `DeadlineExceeded` is raised before sending.
        max_hosts: per-host breakers kept; the least recently used one is dropped.
        retry_statuses: statuses retried for idempotent requests.
        upstreams: logical hosts served by several endpoints (`Upstream`): a request whose
            URL host is an upstream's name goes to one of its endpoints (path, query and
            ``Host`` header kept), each endpoint with its own breaker cloned from the
            policy's (or the default one); a retry goes to another endpoint whenever there
            is one. See ``docs/upstreams.md``.
        clock: monotonic clock; sleep: blocking sleep (default `time.sleep`, looked up at
            each wait); wall_clock: `time.time`, used to read HTTP-date `Retry-After`
            values. Inject fakes in tests.

    Example:
        >>> import httpx
        >>> from resilience.httpx import ResilientTransport
        >>> with httpx.Client(transport=ResilientTransport()) as client:
        ...     pass
    """

    _kit = _KIT


class AsyncResilientTransport(AsyncTwin[AsyncBaseTransport], AsyncBaseTransport):
    """The async twin of `ResilientTransport`, for `httpx.AsyncClient`.

    Takes the same arguments; *inner* defaults to a new `httpx.AsyncHTTPTransport` and
    *sleep* to `asyncio.sleep`. Inside ``async with deadline(...)`` the request is also
    cancelled at the deadline.

    Example:
        >>> import asyncio, httpx
        >>> from resilience.httpx import AsyncResilientTransport
        >>> async def main() -> None:
        ...     async with httpx.AsyncClient(transport=AsyncResilientTransport()) as client:
        ...         pass
        >>> asyncio.run(main())
    """

    _kit = _KIT
