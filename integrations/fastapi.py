"""FastAPI and Starlette integration: one pure ASGI middleware, installed by `add_resilience`.

The middleware (not ``BaseHTTPMiddleware``, which breaks contextvars) does four things:

- turns `CircuitOpenError`, `BulkheadFull` and `DeadlineExceeded` raised by a handler (or
  wrapped, anywhere in its ``__cause__``/``__context__`` chain) into 503 / 503 / 504 JSON
  answers (with ``Retry-After`` for an open circuit), and an escaped upstream 5xx
  (httpx's ``HTTPStatusError``, requests' ``HTTPError``...) into a 502;
- sheds load: beyond ``max_concurrent`` requests in progress, a 503 goes back at once; a
  request counts once its body has arrived (bodies up to ``body_buffer`` bytes are read
  first; a larger one takes its slot when the handler reads past that);
- runs each request under ``deadline(...)``: the server's ``timeout``, shortened by the
  caller's ``x-envoy-expected-rq-timeout-ms`` or ``grpc-timeout`` header, so outgoing calls
  through our transports inherit what remains (async handlers are cancelled at expiry -> 504);
- serves ``GET status_path`` (every circuit breaker's state and numbers) to the clients
  ``status_access`` allows. `add_resilience` makes it a route of the app, so the app's own
  dependencies and inner middleware (authentication) apply to it.

A per-route policy is the `Policy` itself, put under the route decorator::

    @app.get("/charge")
    @payments            # a Policy: its errors become 503/504 through the middleware
    async def charge() -> dict[str, str]: ...
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

try:
    # The middleware itself is plain ASGI, but this module belongs to the `fastapi` extra:
    # without it, say so here rather than fail later inside the app.
    import fastapi  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:
    msg = (
        "resilience.integrations.fastapi needs FastAPI (and Starlette); "
        "install it with: pip install 'resilience-mesh[fastapi]'"
    )
    raise ImportError(msg) from exc

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from resilience._deadline import enter_scope
from resilience._timeout import scoped_coroutine
from resilience._validate import Clock, Duration

from ._answers import (
    Answer,
    deadline_response,
    error_response,
    method_not_allowed_response,
    request_timeout_response,
    send_answer,
    shed_response,
)
from ._idempotency import IdempotencyASGI, check_idempotency
from ._inbound import DeadlineHeaders, request_budget
from ._options import (
    DEFAULT_BODY_BUFFER,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_STATUS_ACCESS,
    DEFAULT_STATUS_PATH,
    DeadlineHeaderNames,
    Options,
    StatusAccess,
)
from ._shedding import (
    ConcurrencyLimiter,
    LateASGIBody,
    read_asgi_body,
    replay,
)
from ._status import StatusCache, status_allowed, status_headers

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from resilience.idempotency import Idempotency

__all__ = ["ResilienceMiddleware", "add_resilience"]

STATUS_ENDPOINT = "resilience_status"
_STATUS_METHODS = frozenset({"GET", "HEAD"})

# ---------------------------------------------------------------------------- status


def _client_host(scope: Scope) -> object:
    client = scope.get("client")
    return client[0] if client else None


def _status_route(path: str, options: Options, cache: StatusCache) -> Route:
    """The status path as a route: the app's dependencies and inner middleware apply to it."""

    async def resilience_status(request: Request) -> Response:
        if not status_allowed(options.status_access, request, _client_host(request.scope)):
            raise HTTPException(status_code=404)  # the app's own "no such route" answer
        body = await cache.aget()
        head = request.method == "HEAD"
        return Response(b"" if head else body, headers=dict(status_headers(body)))

    return Route(path, resilience_status, methods=["GET", "HEAD"], include_in_schema=False)


def _add_status_route(app: Any, options: Options) -> bool:
    """Put the status route first in *app*'s routes; False when *app* has no router."""
    routes = getattr(getattr(app, "router", None), "routes", None)
    path = options.status_path
    if path is None or not isinstance(routes, list):
        return False
    route = _status_route(path, options, StatusCache(clock=options.clock))
    if hasattr(app, "add_api_route"):
        # FastAPI: added its way, so the app's global dependencies (authentication) run too.
        app.add_api_route(
            path,
            route.endpoint,
            methods=["GET", "HEAD"],
            include_in_schema=False,
            name=STATUS_ENDPOINT,
        )
        route = routes.pop()
    _match_quickly(route, path)
    routes.insert(0, route)  # the status path wins over the app's own routes, as it always did
    return True


def _match_quickly(route: Route, path: str) -> None:
    """Let *route* (first of the app's) turn down at a glance the requests for other paths.

    As the first route it is asked about every request, and a full match costs about a
    microsecond (FastAPI's route contexts, the mount prefix, a regular expression). A path
    this route can match ends with *path* (prefixes come only before it: a mount, an
    included router); one that does not is no match. Requests carrying FastAPI's routing
    state (``scope["fastapi"]``), and a status path of ``/`` (a mount's root matches it),
    take the full match.
    """
    if path == "/":
        return
    full = route.matches

    def matches(scope: Scope) -> tuple[Match, Scope]:
        if "fastapi" not in scope and not scope["path"].endswith(path):
            return Match.NONE, {}
        return full(scope)

    route.matches = matches  # type: ignore[method-assign]


# ---------------------------------------------------------------------------- the middleware


class ResilienceMiddleware:
    """Pure ASGI middleware: error mapping, load shedding, request deadlines, status endpoint.

    Prefer `add_resilience`; this class is for ``Middleware(ResilienceMiddleware, ...)`` lists
    and for ASGI apps that are not Starlette. Used directly it answers the status path itself
    (after ``status_access`` and load shedding, but outside the app's own authentication).

    Example:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> app = Starlette(middleware=[Middleware(ResilienceMiddleware, max_concurrent=100)])
    """

    __slots__ = (
        "_headers",
        "_limiter",
        "_shed",
        "_status",
        "_status_tail",
        "_timed",
        "_timeout",
        "app",
        "options",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_concurrent: int | None = None,
        timeout: Duration | None = None,
        status_path: str | None = DEFAULT_STATUS_PATH,
        status_access: StatusAccess = DEFAULT_STATUS_ACCESS,
        deadline_headers: DeadlineHeaderNames = True,
        body_buffer: int = DEFAULT_BODY_BUFFER,
        body_timeout: Duration = DEFAULT_BODY_TIMEOUT,
        clock: Clock = time.monotonic,
        idempotency: Idempotency | None = None,
    ) -> None:
        keys = check_idempotency(idempotency)
        self.app = app if keys is None else IdempotencyASGI(app, keys)
        self.options = options = Options(
            max_concurrent=max_concurrent,
            timeout=timeout,  # type: ignore[arg-type]  # Options turns a timedelta into float
            status_path=status_path,
            status_access=status_access,
            deadline_headers=deadline_headers,
            body_buffer=body_buffer,
            body_timeout=body_timeout,  # type: ignore[arg-type]  # as timeout
            clock=clock,
        )
        self._limiter = None if max_concurrent is None else ConcurrencyLimiter(max_concurrent)
        self._shed = shed_response()
        self._headers = DeadlineHeaders(options.deadline_headers)  # type: ignore[arg-type]
        self._status = None if status_path is None else StatusCache(clock=clock)
        # Decided once, not per request: the timeout, and the app run under it (the deadline
        # scope inlined: a request that brings no shorter budget of its own takes this path).
        self._timeout = options.timeout
        # A request for the status path has a path that ends with it (after any mount prefix),
        # but a mount's own root answers "/" too: no cheap test for that one.
        self._status_tail = "" if status_path in (None, "/") else status_path
        self._timed = (
            None
            if options.timeout is None
            else scoped_coroutine(self.app, options.timeout, clock, "the request")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan and websockets pass untouched
            return
        limiter = self._limiter
        if limiter is None:
            inbound = self._headers.asgi(scope["headers"])
            budget = self._timeout if inbound is None else request_budget(self._timeout, inbound)
            await self._serve(scope, receive, send, budget)
            return
        inbound, length = self._headers.asgi_and_body(
            scope["headers"], scope.get("http_version", "1.1")
        )
        budget = request_budget(self.options.timeout, inbound)
        if length and self.options.body_buffer:
            await self._serve_body(scope, receive, send, budget, limiter, length)
            return
        if not limiter.try_acquire():
            await send_answer(send, self._shed, head=scope["method"] == "HEAD")
            return
        try:
            await self._serve(scope, receive, send, budget)
        finally:
            limiter.release()

    async def _serve_body(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        budget: float | None,
        limiter: ConcurrencyLimiter,
        length: int,
    ) -> None:
        """A request with a body: it takes its slot once the body (up to the buffer) is in.

        *length* is the declared length, or -1 when unknown (chunked, HTTP/2).
        """
        options = self.options
        head = scope["method"] == "HEAD"
        if length > options.body_buffer:
            # Declared larger than the buffer: no point buffering part of it.
            await self._serve_late(
                scope, LateASGIBody(None, receive, send, limiter, self._shed, head=head), budget
            )
            return
        clock = options.clock
        arrived = clock()
        wait, too_late = options.body_timeout, request_timeout_response()
        if budget is not None and budget < wait:
            wait, too_late = budget, deadline_response()
        reading = asyncio.timeout(wait)
        try:
            async with reading:
                first = await read_asgi_body(receive, options.body_buffer)
        except TimeoutError:
            if not reading.expired():
                raise
            await send_answer(send, too_late, head=head)
            return
        if first is None:
            return  # the client left before its body arrived: nobody to answer
        if budget is not None:
            budget -= clock() - arrived
            if budget <= 0.0:
                await send_answer(send, deadline_response(), head=head)
                return
        if first["more_body"]:
            await self._serve_late(
                scope, LateASGIBody(first, receive, send, limiter, self._shed, head=head), budget
            )
            return
        if not limiter.try_acquire():
            await send_answer(send, self._shed, head=head)
            return
        try:
            await self._serve(scope, replay(first, receive), send, budget)
        finally:
            limiter.release()

    async def _serve_late(self, scope: Scope, late: LateASGIBody, budget: float | None) -> None:
        """`_serve` for a body larger than the buffer (its slot is taken on the late read)."""
        try:
            await self._serve(scope, late.receive, late.send, budget)
        except Exception:
            if not late.answered:
                raise
            # The app failed reading a body we cut off, after the client got its 503.
        finally:
            late.slot.give_back()

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, budget: float | None
    ) -> None:
        """Run the app under the request's deadline; answer our errors found in what it raises."""
        status = self._status
        if (
            status is not None
            and scope["path"].endswith(self._status_tail)  # cheap: most requests stop here
            and _path(scope) == self.options.status_path
            and await self._answer_status(scope, receive, send, status)
        ):
            return
        started = False

        def watch_start(message: Message) -> Awaitable[None]:
            # A plain function handing back send's awaitable: no coroutine of its own per
            # message (the app awaits what it returns, at once, as it awaits any send).
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            return send(message)

        try:
            if budget is None:
                await self.app(scope, receive, watch_start)
            elif budget == self._timeout and self._timed is not None:
                await self._timed(scope, receive, watch_start)
            else:
                # Settings and budget are validated already: skip deadline()'s checks per call.
                async with enter_scope(budget, self.options.clock, "the request"):
                    await self.app(scope, receive, watch_start)
        except Exception as exc:
            if started:
                raise  # the status line is gone: only aborting the connection is left
            answer = error_response(exc)
            if answer is None:
                raise  # not ours: the framework's 500 (or the app's own handler)
            await send_answer(send, answer, head=scope["method"] == "HEAD")

    async def _answer_status(
        self, scope: Scope, receive: Receive, send: Send, cache: StatusCache
    ) -> bool:
        """Answer the status path; False when this client may not see it (the app answers)."""
        access = self.options.status_access
        request = Request(scope, receive) if callable(access) else None
        if not status_allowed(access, request, _client_host(scope)):
            return False
        method = scope["method"]
        if method not in _STATUS_METHODS:
            await send_answer(send, method_not_allowed_response())
            return True
        body = await cache.aget()
        await send_answer(send, Answer(200, status_headers(body), body), head=method == "HEAD")
        return True


def _path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    # Starlette puts the mount prefix in both; the option names the path inside this app.
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


# ---------------------------------------------------------------------------- setup


def add_resilience(
    app: Starlette | Any,
    *,
    max_concurrent: int | None = None,
    timeout: Duration | None = None,
    status_path: str | None = DEFAULT_STATUS_PATH,
    status_access: StatusAccess = DEFAULT_STATUS_ACCESS,
    deadline_headers: DeadlineHeaderNames = True,
    body_buffer: int = DEFAULT_BODY_BUFFER,
    body_timeout: Duration = DEFAULT_BODY_TIMEOUT,
    clock: Clock = time.monotonic,
    idempotency: Idempotency | None = None,
) -> None:
    """Install `ResilienceMiddleware` on a FastAPI or Starlette app (outermost of yours).

    Args:
        max_concurrent: requests in progress beyond this get 503 at once (``None``: no limit).
        timeout: default per-request deadline in seconds; an inbound deadline header shortens it.
        status_path: GET here lists every circuit breaker as JSON; ``None`` turns it off. It
            becomes the app's first route, so the app's dependencies apply to it.
        status_access: who may read the status path: ``"loopback"`` (clients on 127.0.0.0/8
            and ::1; others get 404), ``"any"``, or a callable taking the Starlette
            ``Request`` and returning True to allow.
        deadline_headers: honour inbound deadline headers (True), none (False), or only the
            named ones (e.g. ``["x-envoy-expected-rq-timeout-ms"]``).
        body_buffer: bytes of a request body read before it takes a ``max_concurrent`` slot;
            a larger body takes its slot when the handler reads past them (0: at once).
        body_timeout: seconds the buffered part of a body may take to arrive (then 408).
        clock: the monotonic clock the request deadlines read.
        idempotency: an `Idempotency` (``resilience.idempotency``): requests retried with
            the same ``Idempotency-Key`` get the first response instead of running again.

    Example:
        >>> from fastapi import FastAPI
        >>> app = FastAPI()
        >>> add_resilience(app, max_concurrent=100, timeout=5.0)
    """
    # Validate here, so a bad setting fails at setup rather than on the first request
    # (Starlette builds the middleware stack lazily).
    options = Options(
        max_concurrent=max_concurrent,
        timeout=timeout,  # type: ignore[arg-type]  # Options turns a timedelta into float
        status_path=status_path,
        status_access=status_access,
        deadline_headers=deadline_headers,
        body_buffer=body_buffer,
        body_timeout=body_timeout,  # type: ignore[arg-type]  # as timeout
        clock=clock,
    )
    check_idempotency(idempotency)
    # Twice would mean two limits and two deadlines fighting: refuse, as the Flask twin does.
    if any(getattr(m, "cls", None) is ResilienceMiddleware for m in app.user_middleware):
        msg = "add_resilience() was already called on this app; call it once"
        raise RuntimeError(msg)
    routed = _add_status_route(app, options)
    app.add_middleware(
        ResilienceMiddleware,
        max_concurrent=max_concurrent,
        timeout=timeout,
        status_path=None if routed else status_path,
        status_access=status_access,
        deadline_headers=deadline_headers,
        body_buffer=body_buffer,
        body_timeout=body_timeout,
        clock=clock,
        idempotency=idempotency,
    )
