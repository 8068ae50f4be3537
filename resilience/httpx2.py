"""httpx2 transports that retry, break circuits per host and respect deadlines.

httpx2 is the maintained fork of httpx (the OpenAI and Anthropic SDKs use it); these are
`resilience.httpx`'s transports, with the same options and behaviour, for its clients::

    import httpx2
    from resilience.httpx2 import ResilientTransport, AsyncResilientTransport

    client = httpx2.Client(transport=ResilientTransport())
    client = httpx2.AsyncClient(transport=AsyncResilientTransport())

What is retried, the defaults and the recipes are in ``docs/httpx.md``; the SDKs' recipe
is in ``docs/sdks.md``.
"""

from __future__ import annotations

from ._http._kit import Kit
from ._http._twins import AsyncTwin, SyncTwin

try:
    import httpx2
    from httpx2 import AsyncBaseTransport, BaseTransport

    from ._http._httpx2_io import HTTPX2_ERRORS, AsyncDeadlineStream, DeadlineStream, Httpx2Core
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = "resilience.httpx2 needs httpx2: pip install 'resilience-mesh[httpx2]'"
    raise ImportError(msg) from exc

__all__ = ["AsyncResilientTransport", "ResilientTransport"]

_KIT = Kit(
    name="httpx2",
    other="httpx",
    Request=httpx2.Request,
    ByteStream=httpx2.ByteStream,
    SyncByteStream=httpx2.SyncByteStream,
    AsyncByteStream=httpx2.AsyncByteStream,
    HTTPTransport=httpx2.HTTPTransport,
    AsyncHTTPTransport=httpx2.AsyncHTTPTransport,
    DeadlineStream=DeadlineStream,
    AsyncDeadlineStream=AsyncDeadlineStream,
    errors=HTTPX2_ERRORS,
    core=Httpx2Core,
)


class ResilientTransport(SyncTwin[BaseTransport], BaseTransport):
    """An httpx2 transport that retries, breaks circuits per host and respects deadlines.

    Args:
        inner: the transport that does the I/O (default: a new `httpx2.HTTPTransport`).
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
        clock: monotonic clock; sleep: blocking sleep (default `time.sleep`, looked up at
            each wait); wall_clock: `time.time`, used to read HTTP-date `Retry-After`
            values. Inject fakes in tests.

    Example:
        >>> import httpx2
        >>> from resilience.httpx2 import ResilientTransport
        >>> with httpx2.Client(transport=ResilientTransport()) as client:
        ...     pass
    """

    _kit = _KIT


class AsyncResilientTransport(AsyncTwin[AsyncBaseTransport], AsyncBaseTransport):
    """The async twin of `ResilientTransport`, for `httpx2.AsyncClient`.

    Takes the same arguments; *inner* defaults to a new `httpx2.AsyncHTTPTransport` and
    *sleep* to `asyncio.sleep`. Inside ``async with deadline(...)`` the request is also
    cancelled at the deadline.

    Example:
        >>> import asyncio, httpx2
        >>> from resilience.httpx2 import AsyncResilientTransport
        >>> async def main() -> None:
        ...     async with httpx2.AsyncClient(transport=AsyncResilientTransport()) as client:
        ...         pass
        >>> asyncio.run(main())
    """

    _kit = _KIT
