"""httpx transports that retry, break circuits per host and respect deadlines.

Wrap httpx's own transport (or any other) and give it to a client::

    import httpx
    from resilience.httpx import ResilientTransport, AsyncResilientTransport

    client = httpx.Client(transport=ResilientTransport())
    client = httpx.AsyncClient(transport=AsyncResilientTransport())

What is retried, the defaults and the recipes are in ``docs/httpx.md``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from . import _validate
from ._deadline import deadline
from ._http._compat import (
    AsyncBaseTransport,
    AsyncByteStream,
    AsyncHTTPTransport,
    BaseTransport,
    ByteStream,
    HTTPTransport,
    Request,
    Response,
    SyncByteStream,
)
from ._http._core import (
    DEFAULT_BUFFER_LIMIT,
    DEFAULT_MAX_RETRY_AFTER,
    Call,
    TransportCore,
    check_inner,
    check_sleep,
    deadline_error,
    inject_trace_context,
)
from ._http._hosts import DEFAULT_MAX_HOSTS, BreakerMap
from ._http._routing import check_upstreams, upstream_map
from ._http._rules import DEFAULT_RETRY_STATUSES, deadline_passed
from ._http._streams import (
    LATE_HEAD,
    AsyncDeadlineStream,
    DeadlineStream,
    aread_body,
    read_body,
    sized_body,
)
from ._observe._otel_gate import http_attempt
from ._upstream._config import Upstream
from ._upstream._resolve import arefresh, dns, refresh
from ._upstream._view import UpstreamMap

if TYPE_CHECKING:
    from ._policy import Policy

__all__ = ["AsyncResilientTransport", "ResilientTransport", "Upstream", "dns"]


def _blocking_sleep(seconds: float) -> None:
    # Looked up per call, so tests that patch time.sleep see our waits too.
    time.sleep(seconds)


async def _async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class ResilientTransport(BaseTransport):
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

    def __init__(
        self,
        inner: BaseTransport | None = None,
        *,
        policy: Policy | None = None,
        idempotency_keys: bool | Callable[[], str] = False,
        max_retry_after: _validate.Duration = DEFAULT_MAX_RETRY_AFTER,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        deadline_header: str | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        retry_statuses: frozenset[int] | set[int] | tuple[int, ...] = DEFAULT_RETRY_STATUSES,
        upstreams: Iterable[Upstream] = (),
        clock: _validate.Clock = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        wall_clock: _validate.Clock = time.time,
    ) -> None:
        self._core = TransportCore(
            policy=policy,
            idempotency_keys=idempotency_keys,
            max_retry_after=max_retry_after,
            buffer_limit=buffer_limit,
            deadline_header=deadline_header,
            max_hosts=max_hosts,
            retry_statuses=retry_statuses,
            clock=clock,
            wall_clock=wall_clock,
            upstreams=check_upstreams(upstreams),
        )
        self._sleep: Callable[[float], object] = (
            _blocking_sleep if sleep is None else check_sleep(sleep)
        )
        self._inner = HTTPTransport() if inner is None else check_inner(inner, "handle_request")

    @property
    def inner(self) -> BaseTransport:
        """The wrapped transport."""
        return self._inner

    @property
    def breakers(self) -> BreakerMap:
        """Each authority (``scheme://host:port``) seen so far and its live breaker."""
        return BreakerMap(self._core.hosts)

    @property
    def upstreams(self) -> UpstreamMap:
        """Each upstream by name, live: ``.endpoints`` with url, healthy, in_flight..."""
        return upstream_map(self._core.routes)

    def handle_request(self, request: Request) -> Response:
        """Send *request* through the inner transport, retrying as the rules allow."""
        core = self._core
        call = core.begin(request)
        if call.must_read:
            request.read()
        bulkhead = core.bulkhead
        if bulkhead is None:
            return self._scoped(call)
        bulkhead.acquire()
        try:
            return self._scoped(call)
        finally:
            bulkhead.release()

    def _scoped(self, call: Call) -> Response:
        if call.scope is None:
            return self._send(call)
        with deadline(call.scope, clock=self._core.clock):
            return self._send(call)

    def _send(self, call: Call) -> Response:
        core = self._core
        inner = self._inner
        request = call.request
        limit = core.buffer_limit
        route = call.route
        while True:
            if route is not None and route.pool.resolver is not None:
                refresh(route.pool)  # re-reads the resolver when the set is older than refresh
            core.before_attempt(call)
            failure: Exception | None = None
            with http_attempt(request, call.attempt - 1) as attempt:
                inject_trace_context(request.headers)
                try:
                    response = inner.handle_request(request)
                    expiry = call.expiry
                    if deadline_passed(expiry):
                        response.close()
                        raise deadline_error(LATE_HEAD)
                    stream = response.stream
                    if isinstance(stream, ByteStream) or not isinstance(stream, SyncByteStream):
                        pass
                    elif sized_body(response, limit):
                        # The client reads the body after we return, where a broken
                        # connection could no longer be retried: read small bodies here.
                        try:
                            body = read_body(stream, expiry)
                        finally:
                            stream.close()
                        response.stream = ByteStream(body)
                    elif expiry is not None:
                        response.stream = DeadlineStream(stream, expiry)
                except Exception as exc:
                    attempt.error(exc)
                    failure = exc
                except BaseException:
                    core.release(call)
                    raise
                else:
                    attempt.response(response.status_code)
            if failure is not None:
                wait = core.after_error(call, failure)
                if wait is None:
                    raise failure
                self._sleep(wait)
                continue
            wait = core.after_response(call, response, response.status_code, response.headers)
            if wait is None:
                return response
            response.close()
            self._sleep(wait)

    def close(self) -> None:
        """Close the inner transport."""
        self._inner.close()

    def __enter__(self) -> ResilientTransport:
        self._inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._inner.__exit__(exc_type, exc_value, traceback)

    def __repr__(self) -> str:
        return f"ResilientTransport(inner={self._inner!r}, policy={self._core.policy!r})"


class AsyncResilientTransport(AsyncBaseTransport):
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

    def __init__(
        self,
        inner: AsyncBaseTransport | None = None,
        *,
        policy: Policy | None = None,
        idempotency_keys: bool | Callable[[], str] = False,
        max_retry_after: _validate.Duration = DEFAULT_MAX_RETRY_AFTER,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        deadline_header: str | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        retry_statuses: frozenset[int] | set[int] | tuple[int, ...] = DEFAULT_RETRY_STATUSES,
        upstreams: Iterable[Upstream] = (),
        clock: _validate.Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        wall_clock: _validate.Clock = time.time,
    ) -> None:
        self._core = TransportCore(
            policy=policy,
            idempotency_keys=idempotency_keys,
            max_retry_after=max_retry_after,
            buffer_limit=buffer_limit,
            deadline_header=deadline_header,
            max_hosts=max_hosts,
            retry_statuses=retry_statuses,
            clock=clock,
            wall_clock=wall_clock,
            upstreams=check_upstreams(upstreams),
            is_async=True,
        )
        self._sleep: Callable[[float], Awaitable[object]] = (
            _async_sleep if sleep is None else check_sleep(sleep)
        )
        self._inner = (
            AsyncHTTPTransport() if inner is None else check_inner(inner, "handle_async_request")
        )

    @property
    def inner(self) -> AsyncBaseTransport:
        """The wrapped transport."""
        return self._inner

    @property
    def breakers(self) -> BreakerMap:
        """Each authority (``scheme://host:port``) seen so far and its live breaker."""
        return BreakerMap(self._core.hosts)

    @property
    def upstreams(self) -> UpstreamMap:
        """Each upstream by name, live: ``.endpoints`` with url, healthy, in_flight..."""
        return upstream_map(self._core.routes)

    async def handle_async_request(self, request: Request) -> Response:
        """Send *request* through the inner transport, retrying as the rules allow."""
        core = self._core
        call = core.begin(request)
        if call.must_read:
            await request.aread()
        bulkhead = core.bulkhead
        if bulkhead is None:
            return await self._scoped(call)
        await bulkhead.aacquire()
        try:
            return await self._scoped(call)
        finally:
            bulkhead.release()

    async def _scoped(self, call: Call) -> Response:
        if call.scope is None:
            return await self._send(call)
        async with deadline(call.scope, clock=self._core.clock):
            return await self._send(call)

    async def _send(self, call: Call) -> Response:
        core = self._core
        inner = self._inner
        request = call.request
        limit = core.buffer_limit
        route = call.route
        while True:
            if route is not None and route.pool.resolver is not None:
                await arefresh(route.pool)  # re-reads the resolver when the set is stale
            core.before_attempt(call)
            failure: Exception | None = None
            with http_attempt(request, call.attempt - 1) as attempt:
                inject_trace_context(request.headers)
                try:
                    response = await inner.handle_async_request(request)
                    expiry = call.expiry
                    if deadline_passed(expiry):
                        await response.aclose()
                        raise deadline_error(LATE_HEAD)
                    stream = response.stream
                    if isinstance(stream, ByteStream) or not isinstance(stream, AsyncByteStream):
                        pass
                    elif sized_body(response, limit):
                        # The client reads the body after we return, where a broken
                        # connection could no longer be retried: read small bodies here.
                        try:
                            body = await aread_body(stream, expiry)
                        finally:
                            await stream.aclose()
                        response.stream = ByteStream(body)
                    elif expiry is not None:
                        response.stream = AsyncDeadlineStream(stream, expiry)
                except Exception as exc:
                    attempt.error(exc)
                    failure = exc
                except BaseException:
                    core.release(call)
                    raise
                else:
                    attempt.response(response.status_code)
            if failure is not None:
                wait = core.after_error(call, failure)
                if wait is None:
                    raise failure
                await self._sleep(wait)
                continue
            wait = core.after_response(call, response, response.status_code, response.headers)
            if wait is None:
                return response
            await response.aclose()
            await self._sleep(wait)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()

    async def __aenter__(self) -> AsyncResilientTransport:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc_value, traceback)

    def __repr__(self) -> str:
        return f"AsyncResilientTransport(inner={self._inner!r}, policy={self._core.policy!r})"
