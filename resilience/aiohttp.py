"""An aiohttp client middleware that retries, breaks circuits per host and respects deadlines.

Give it to a `ClientSession` (aiohttp 3.12 or later)::

    import aiohttp
    from resilience.aiohttp import middleware

    async with aiohttp.ClientSession(middlewares=(middleware(),)) as session:
        async with session.get("https://api.example.com/items") as response:
            ...

It follows the same rules, with the same options, as
`resilience.httpx.AsyncResilientTransport` (``docs/httpx.md``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from . import _validate
from ._deadline import deadline
from ._http._call import Call, check_sleep, inject_trace_context
from ._http._core import (
    DEFAULT_BUFFER_LIMIT,
    DEFAULT_MAX_RETRY_AFTER,
    TransportCore,
    deadline_error,
)
from ._http._hosts import DEFAULT_MAX_HOSTS, BreakerMap
from ._http._rules import DEFAULT_RETRY_STATUSES, deadline_passed
from ._http._streams import LATE_HEAD
from ._observe._otel_gate import http_attempt

try:
    import aiohttp
    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

    from ._http._aiohttp_io import AIOHTTP_ERRORS, RequestView, replayable
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = "resilience.aiohttp needs aiohttp 3.12 or later: pip install 'resilience-mesh[aiohttp]'"
    raise ImportError(msg) from exc

if TYPE_CHECKING:
    from ._policy import Policy

__all__ = ["ResilientMiddleware", "middleware"]


async def _async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class _AiohttpCore(TransportCore):
    """The shared core, with aiohttp's rule for replaying a request body."""

    __slots__ = ()
    note: ClassVar[str] = "resilience.aiohttp: "

    def _replay_mode(self, request: Any) -> tuple[bool, bool]:
        return replayable(request.stream, self.buffer_limit)


class ResilientMiddleware:
    """The client middleware `middleware` makes: aiohttp calls it for each request (each
    hop of a redirect), and ``.breakers`` shows its per-host breakers."""

    __slots__ = ("_core", "_sleep")

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        idempotency_keys: bool | Callable[[], str] = False,
        max_retry_after: _validate.Duration = DEFAULT_MAX_RETRY_AFTER,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        deadline_header: str | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        retry_statuses: frozenset[int] | set[int] | tuple[int, ...] = DEFAULT_RETRY_STATUSES,
        clock: _validate.Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        wall_clock: _validate.Clock = time.time,
    ) -> None:
        self._core = _AiohttpCore(
            policy=policy,
            idempotency_keys=idempotency_keys,
            max_retry_after=max_retry_after,
            buffer_limit=buffer_limit,
            deadline_header=deadline_header,
            max_hosts=max_hosts,
            retry_statuses=retry_statuses,
            clock=clock,
            wall_clock=wall_clock,
            errors=AIOHTTP_ERRORS,
        )
        self._sleep: Callable[[float], Awaitable[object]] = (
            _async_sleep if sleep is None else check_sleep(sleep)
        )

    @property
    def breakers(self) -> BreakerMap:
        """Each authority (``scheme://host:port``) seen so far and its live breaker."""
        return BreakerMap(self._core.hosts)

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Send *request* down the chain, retrying as the rules allow (aiohttp calls this)."""
        core = self._core
        call = core.begin(RequestView(request))
        bulkhead = core.bulkhead
        if bulkhead is None:
            return await self._scoped(call, request, handler)
        await bulkhead.aacquire()
        try:
            return await self._scoped(call, request, handler)
        finally:
            bulkhead.release()

    async def _scoped(
        self, call: Call, request: ClientRequest, handler: ClientHandlerType
    ) -> ClientResponse:
        if call.scope is None:
            return await self._send(call, request, handler)
        async with deadline(call.scope, clock=self._core.clock):
            return await self._send(call, request, handler)

    async def _send(
        self, call: Call, request: ClientRequest, handler: ClientHandlerType
    ) -> ClientResponse:
        core = self._core
        view: Any = call.request
        limit = core.buffer_limit
        while True:
            core.before_attempt(call)
            # aiohttp's own timeouts are the session's, fixed for the whole request: each
            # attempt is held to the deadline (and the policy's attempt_timeout) here.
            timeouts = view.extensions.get("timeout")
            cap = None if timeouts is None else timeouts.get("read")
            failure: Exception | None = None
            with http_attempt(view, call.attempt - 1) as attempt:
                inject_trace_context(request.headers)
                try:
                    if cap is None:
                        response = await _attempt(handler, request, call, limit)
                    else:
                        response = await _capped(handler, request, call, limit, cap)
                except Exception as exc:
                    attempt.error(exc)
                    failure = exc
                except BaseException:
                    core.release(call)
                    raise
                else:
                    attempt.response(response.status)
            if failure is not None:
                wait = core.after_error(call, failure)
                if wait is None:
                    raise failure
                await self._sleep(wait)
                continue
            wait = core.after_response(call, response, response.status, response.headers)
            if wait is None:
                return response
            response.release()
            await self._sleep(wait)

    def __repr__(self) -> str:
        return f"ResilientMiddleware(policy={self._core.policy!r})"


async def _attempt(
    handler: ClientHandlerType, request: ClientRequest, call: Call, limit: int
) -> ClientResponse:
    response = await handler(request)
    if deadline_passed(call.expiry):
        response.close()
        raise deadline_error(LATE_HEAD)
    length = response.content_length
    if length is not None and length <= limit:
        # The caller reads the body after we return, where a broken connection could no
        # longer be retried: read small bodies here (aiohttp keeps them for .read()).
        try:
            await response.read()
        except BaseException:
            response.close()
            raise
    return response


async def _capped(
    handler: ClientHandlerType, request: ClientRequest, call: Call, limit: int, cap: float
) -> ClientResponse:
    try:
        async with asyncio.timeout(cap) as scope:
            return await _attempt(handler, request, call, limit)
    except TimeoutError as exc:
        if not scope.expired():
            raise
        msg = f"the attempt took longer than {cap:.3f} s"
        raise aiohttp.ServerTimeoutError(msg) from exc


def middleware(
    *,
    policy: Policy | None = None,
    idempotency_keys: bool | Callable[[], str] = False,
    max_retry_after: _validate.Duration = DEFAULT_MAX_RETRY_AFTER,
    buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    deadline_header: str | None = None,
    max_hosts: int = DEFAULT_MAX_HOSTS,
    retry_statuses: frozenset[int] | set[int] | tuple[int, ...] = DEFAULT_RETRY_STATUSES,
    clock: _validate.Clock = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] | None = None,
    wall_clock: _validate.Clock = time.time,
) -> ResilientMiddleware:
    """An aiohttp client middleware with the rules of `resilience.httpx`'s transports.

    Takes the transports' options (see `resilience.httpx.ResilientTransport`); *sleep* is
    async. Keep one per session, for the life of the session: its per-host breakers live
    in it.

    Example:
        >>> import asyncio, aiohttp
        >>> from resilience.aiohttp import middleware
        >>> async def main() -> None:
        ...     async with aiohttp.ClientSession(middlewares=(middleware(),)) as session:
        ...         pass
        >>> asyncio.run(main())
    """
    return ResilientMiddleware(
        policy=policy,
        idempotency_keys=idempotency_keys,
        max_retry_after=max_retry_after,
        buffer_limit=buffer_limit,
        deadline_header=deadline_header,
        max_hosts=max_hosts,
        retry_statuses=retry_statuses,
        clock=clock,
        sleep=sleep,
        wall_clock=wall_clock,
    )
