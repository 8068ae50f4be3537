"""The sync and async transports, written once for httpx and its fork httpx2.

httpx2 is httpx under another import name: the same API, but classes of its own (an
`httpx2.Client` asserts that a response stream is an `httpx2.SyncByteStream`; httpx's
errors are not httpx2's). So the twins' bodies are written here against a `Kit`, the few
classes a library contributes, and `resilience.httpx` and `resilience.httpx2` each declare
the public classes with their library's kit and base transport.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from .. import _validate
from .._breaker._machine import FAST_IDLE
from .._breaker._state import CLOSED
from .._deadline import deadline
from .._observe._otel_gate import NO_ATTEMPT, http_attempt, inject_context
from .._upstream._config import Upstream
from .._upstream._resolve import arefresh, refresh
from .._upstream._view import UpstreamMap
from ._call import Call, check_sleep, current_otel_context, inject_trace_context
from ._core import (
    DEFAULT_BUFFER_LIMIT,
    DEFAULT_MAX_RETRY_AFTER,
    deadline_error,
)
from ._hosts import DEFAULT_MAX_HOSTS, BreakerMap
from ._kit import Kit, async_sleep, blocking_sleep, check_inner_of, foreign, routes
from ._routing import Route, lease, upstream_map
from ._rules import DEFAULT_RETRY_STATUSES, Expiry
from ._streams import LATE_HEAD, aread_body, read_body, sized_body

if TYPE_CHECKING:
    from .._breaker._breaker import CircuitBreaker
    from .._breaker._machine import BreakerMachine
    from .._policy import Policy

__all__ = ["AsyncTwin", "SyncTwin"]

InnerT = TypeVar("InnerT")


class SyncTwin(Generic[InnerT]):
    """The body of `ResilientTransport`; subclasses set ``_kit`` and the library's base."""

    _kit: ClassVar[Kit]

    def __init__(
        self,
        inner: InnerT | None = None,
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
        kit = self._kit
        self._core = kit.core(
            policy=policy,
            idempotency_keys=idempotency_keys,
            max_retry_after=max_retry_after,
            buffer_limit=buffer_limit,
            deadline_header=deadline_header,
            max_hosts=max_hosts,
            retry_statuses=retry_statuses,
            clock=clock,
            wall_clock=wall_clock,
            errors=kit.errors,
            upstreams=routes(kit, upstreams),
        )
        self._sleep: Callable[[float], object] = (
            blocking_sleep if sleep is None else check_sleep(sleep)
        )
        self._inner: InnerT = (
            kit.HTTPTransport() if inner is None else check_inner_of(kit, inner, "handle_request")
        )

    @property
    def inner(self) -> InnerT:
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

    def handle_request(self, request: Any) -> Any:
        """Send *request* through the inner transport, retrying as the rules allow."""
        if not isinstance(request, self._kit.Request):
            raise foreign(self._kit, request, "ResilientTransport")
        core = self._core
        found = core.quick(request)
        if found is not None:
            if type(found) is tuple:  # a host's (authority, breaker, timer, machine)
                _, breaker, timer, machine = found
                # `machine.acquire()`, its CLOSED case inlined
                held = machine.gen if machine.state is CLOSED else machine.acquire_slow()
                return self._quick(request, breaker, machine, timer, held, None)
            pool: Any = found  # an upstream's
            if pool.resolver is not None:
                refresh(pool)
            route = lease(pool, request)
            endpoint = route.endpoint
            assert endpoint is not None
            permit = route.permit
            if permit is None:  # sent despite its breaker (ejection cap, panic mode)
                return self._quick(request, None, None, None, 0, route)
            return self._quick(
                request, endpoint.breaker, endpoint.machine, endpoint.timer, permit, route
            )
        call = core.begin(request)
        if call.must_read:
            request.read()
        bulkhead = core.bulkhead
        if bulkhead is None:
            return self._send(call) if call.scope is None else self._scoped(call)
        bulkhead.acquire()
        try:
            return self._scoped(call)
        finally:
            bulkhead.release()

    def _scoped(self, call: Call) -> Any:
        if call.scope is None:
            return self._send(call)
        with deadline(call.scope, clock=self._core.clock):
            return self._send(call)

    def _quick(
        self,
        request: Any,
        breaker: CircuitBreaker | None,
        machine: BreakerMachine | None,
        timer: _validate.Clock | None,
        permit: int,
        route: Route | None,
    ) -> Any:
        """The first attempt of a request `TransportCore.quick` let through, with its
        host's or endpoint's breaker and permit (none when an endpoint is sent to despite
        its breaker); what follows a failure or a retryable answer goes to `_send`, with
        the `Call` it would have had."""
        core = self._core
        kit = self._kit
        started = 0.0 if timer is None else timer()
        try:
            if current_otel_context():  # `inject_trace_context`, inlined
                inject_context(request.headers)
            response = self._inner.handle_request(request)  # type: ignore[attr-defined]
            if not isinstance(response.stream, kit.ByteStream):
                self._settle_body(response, None)
        except Exception as exc:
            call = core.resume(request, breaker, timer, permit, started, route)
            wait = core.after_error(call, exc)
            if wait is None:
                raise
            self._sleep(wait)
            return self._send(call)
        except BaseException:
            if breaker is not None:
                breaker.release(permit)
            if route is not None:
                route.release(request)
            raise
        status = response.status_code
        if status < 500 and status not in core.retry_statuses:
            if machine is not None and (
                timer is not None or machine.fast != FAST_IDLE or permit != machine.gen
            ):  # the breaker's record_success, less a call while nothing is left to count
                machine.record_success(permit, 0.0 if timer is None else timer() - started)
            if route is not None:
                route.end(request, True)
            return response
        call = core.resume(request, breaker, timer, permit, started, route)
        wait = core.after_response(call, response, status, response.headers)
        if wait is None:
            return response
        response.close()
        self._sleep(wait)
        return self._send(call)

    def _settle_body(self, response: Any, expiry: Expiry | None) -> None:
        """Read a small sized body here, or bound a streamed one by the deadline.

        The client reads the body after we return, where a broken connection could no
        longer be retried: a body declared up to ``buffer_limit`` is read inside the
        attempt. Called for a response whose body is not in memory yet.
        """
        kit = self._kit
        stream = response.stream
        if not isinstance(stream, kit.SyncByteStream):
            return
        if sized_body(response, self._core.buffer_limit):
            try:
                body = read_body(stream, expiry)
            finally:
                stream.close()
            response.stream = kit.ByteStream(body)
        elif expiry is not None:
            response.stream = kit.DeadlineStream(stream, expiry)

    def _send(self, call: Call) -> Any:
        core = self._core
        kit = self._kit
        inner: Any = self._inner
        request: Any = call.request
        route = call.route
        while True:
            if route is not None and route.pool.resolver is not None:
                refresh(route.pool)  # re-reads the resolver when the set is older than refresh
            core.before_attempt(call)
            failure: Exception | None = None
            # The attempt's span, when an SDK records one; entered by hand so that the
            # common case (nothing records) costs no context-manager calls.
            attempt = http_attempt(request, call.attempt - 1)
            traced = attempt is not NO_ATTEMPT
            if traced:
                attempt.__enter__()
            try:
                inject_trace_context(request.headers)
                response = inner.handle_request(request)
                expiry = call.expiry
                if expiry is not None and expiry.remaining() <= 0.0:  # `deadline_passed`
                    response.close()
                    raise deadline_error(LATE_HEAD)
                if not isinstance(response.stream, kit.ByteStream):
                    self._settle_body(response, expiry)
            except Exception as exc:
                failure = exc
                if traced:
                    attempt.error(exc)
                    attempt.__exit__(None, None, None)
            except BaseException as exc:
                core.release(call)
                if traced:
                    attempt.__exit__(type(exc), exc, exc.__traceback__)
                raise
            else:
                if traced:
                    attempt.response(response.status_code)
                    attempt.__exit__(None, None, None)
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
        inner: Any = self._inner
        inner.close()

    def __enter__(self) -> Self:
        inner: Any = self._inner
        inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        inner: Any = self._inner
        inner.__exit__(exc_type, exc_value, traceback)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(inner={self._inner!r}, policy={self._core.policy!r})"


class AsyncTwin(Generic[InnerT]):
    """The body of `AsyncResilientTransport`; subclasses set ``_kit`` and the library's base."""

    _kit: ClassVar[Kit]

    def __init__(
        self,
        inner: InnerT | None = None,
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
        kit = self._kit
        self._core = kit.core(
            policy=policy,
            idempotency_keys=idempotency_keys,
            max_retry_after=max_retry_after,
            buffer_limit=buffer_limit,
            deadline_header=deadline_header,
            max_hosts=max_hosts,
            retry_statuses=retry_statuses,
            clock=clock,
            wall_clock=wall_clock,
            errors=kit.errors,
            upstreams=routes(kit, upstreams),
            is_async=True,
        )
        self._sleep: Callable[[float], Awaitable[object]] = (
            async_sleep if sleep is None else check_sleep(sleep)
        )
        self._inner: InnerT = (
            kit.AsyncHTTPTransport()
            if inner is None
            else check_inner_of(kit, inner, "handle_async_request")
        )

    @property
    def inner(self) -> InnerT:
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

    def handle_async_request(self, request: Any) -> Coroutine[Any, Any, Any]:
        """Send *request* through the inner transport, retrying as the rules allow.

        A plain function returning the coroutine that does the work (httpx awaits it at
        once): the quick path's first attempt is then a request's only coroutine.
        """
        if not isinstance(request, self._kit.Request):
            raise foreign(self._kit, request, "AsyncResilientTransport")
        found = self._core.quick(request)
        if found is None:
            return self._planned(request)
        if type(found) is tuple:  # a host's (authority, breaker, timer, machine)
            _, breaker, timer, machine = found
            if machine.state is CLOSED:  # the permit is the generation: nothing to give back
                return self._quick(request, breaker, machine, timer, machine.gen, None)
        # Permits that must be given back (a probe's, an endpoint's) are taken inside the
        # coroutine, where its `_quick` releases them even if it is cancelled at once.
        return self._first(request, found)

    async def _first(self, request: Any, found: Any) -> Any:
        """The quick path of a request to an upstream, or to a host whose breaker is not
        CLOSED: take the permit (pick an endpoint), then `_quick`."""
        if type(found) is tuple:
            _, breaker, timer, machine = found
            return await self._quick(request, breaker, machine, timer, machine.acquire(), None)
        pool = found
        if pool.resolver is not None:
            await arefresh(pool)
        route = lease(pool, request)
        endpoint = route.endpoint
        assert endpoint is not None
        permit = route.permit
        if permit is None:  # sent despite its breaker (ejection cap, panic mode)
            return await self._quick(request, None, None, None, 0, route)
        return await self._quick(
            request, endpoint.breaker, endpoint.machine, endpoint.timer, permit, route
        )

    async def _planned(self, request: Any) -> Any:
        """A request `TransportCore.quick` did not let through: planned by `begin`."""
        core = self._core
        call = core.begin(request)
        if call.must_read:
            await request.aread()
        bulkhead = core.bulkhead
        if bulkhead is None:  # one coroutine fewer on the common path
            return await (self._send(call) if call.scope is None else self._scoped(call))
        await bulkhead.aacquire()
        try:
            return await self._scoped(call)
        finally:
            bulkhead.release()

    async def _scoped(self, call: Call) -> Any:
        if call.scope is None:
            return await self._send(call)
        async with deadline(call.scope, clock=self._core.clock):
            return await self._send(call)

    async def _quick(
        self,
        request: Any,
        breaker: CircuitBreaker | None,
        machine: BreakerMachine | None,
        timer: _validate.Clock | None,
        permit: int,
        route: Route | None,
    ) -> Any:
        """The async twin of `SyncTwin._quick`."""
        core = self._core
        kit = self._kit
        started = 0.0 if timer is None else timer()
        try:
            if current_otel_context():  # `inject_trace_context`, inlined
                inject_context(request.headers)
            response = await self._inner.handle_async_request(request)  # type: ignore[attr-defined]
            if not isinstance(response.stream, kit.ByteStream):
                await self._settle_body(response, None)
        except Exception as exc:
            call = core.resume(request, breaker, timer, permit, started, route)
            wait = core.after_error(call, exc)
            if wait is None:
                raise
            await self._sleep(wait)
            return await self._send(call)
        except BaseException:
            if breaker is not None:
                breaker.release(permit)
            if route is not None:
                route.release(request)
            raise
        status = response.status_code
        if status < 500 and status not in core.retry_statuses:
            if machine is not None and (
                timer is not None or machine.fast != FAST_IDLE or permit != machine.gen
            ):  # the breaker's record_success, less a call while nothing is left to count
                machine.record_success(permit, 0.0 if timer is None else timer() - started)
            if route is not None:
                route.end(request, True)
            return response
        call = core.resume(request, breaker, timer, permit, started, route)
        wait = core.after_response(call, response, status, response.headers)
        if wait is None:
            return response
        await response.aclose()
        await self._sleep(wait)
        return await self._send(call)

    async def _settle_body(self, response: Any, expiry: Expiry | None) -> None:
        """The async twin of `SyncTwin._settle_body`."""
        kit = self._kit
        stream = response.stream
        if not isinstance(stream, kit.AsyncByteStream):
            return
        if sized_body(response, self._core.buffer_limit):
            try:
                body = await aread_body(stream, expiry)
            finally:
                await stream.aclose()
            response.stream = kit.ByteStream(body)
        elif expiry is not None:
            response.stream = kit.AsyncDeadlineStream(stream, expiry)

    async def _send(self, call: Call) -> Any:
        core = self._core
        kit = self._kit
        inner: Any = self._inner
        request: Any = call.request
        route = call.route
        while True:
            if route is not None and route.pool.resolver is not None:
                await arefresh(route.pool)  # re-reads the resolver when the set is stale
            core.before_attempt(call)
            failure: Exception | None = None
            # The attempt's span, when an SDK records one; entered by hand so that the
            # common case (nothing records) costs no context-manager calls.
            attempt = http_attempt(request, call.attempt - 1)
            traced = attempt is not NO_ATTEMPT
            if traced:
                attempt.__enter__()
            try:
                inject_trace_context(request.headers)
                response = await inner.handle_async_request(request)
                expiry = call.expiry
                if expiry is not None and expiry.remaining() <= 0.0:  # `deadline_passed`
                    await response.aclose()
                    raise deadline_error(LATE_HEAD)
                if not isinstance(response.stream, kit.ByteStream):
                    await self._settle_body(response, expiry)
            except Exception as exc:
                failure = exc
                if traced:
                    attempt.error(exc)
                    attempt.__exit__(None, None, None)
            except BaseException as exc:
                core.release(call)
                if traced:
                    attempt.__exit__(type(exc), exc, exc.__traceback__)
                raise
            else:
                if traced:
                    attempt.response(response.status_code)
                    attempt.__exit__(None, None, None)
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
        inner: Any = self._inner
        await inner.aclose()

    async def __aenter__(self) -> Self:
        inner: Any = self._inner
        await inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        inner: Any = self._inner
        await inner.__aexit__(exc_type, exc_value, traceback)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(inner={self._inner!r}, policy={self._core.policy!r})"
