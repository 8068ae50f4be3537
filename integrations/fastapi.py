"""FastAPI and Starlette integration: one pure ASGI middleware, installed by `add_resilience`.

The middleware (not ``BaseHTTPMiddleware``, which breaks contextvars) does four things:

- turns `CircuitOpenError`, `BulkheadFull` and `DeadlineExceeded` raised by a handler into
  503 / 503 / 504 JSON answers (with ``Retry-After`` for an open circuit);
- sheds load: beyond ``max_concurrent`` requests in progress, a 503 goes back at once;
- runs each request under ``deadline(...)``: the server's ``timeout``, shortened by the
  caller's ``x-envoy-expected-rq-timeout-ms`` or ``grpc-timeout`` header, so outgoing calls
  through our transports inherit what remains (async handlers are cancelled at expiry -> 504);
- answers ``GET status_path`` with every circuit breaker's state and numbers.

A per-route policy is the `Policy` itself, put under the route decorator::

    @app.get("/charge")
    @payments            # a Policy: its errors become 503/504 through the middleware
    async def charge() -> dict[str, str]: ...
"""

from __future__ import annotations

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
        "install it with: pip install 'resilience[fastapi]'"
    )
    raise ImportError(msg) from exc

from resilience._config import Clock, Duration
from resilience._deadline import Deadline
from resilience.integrations._common import (
    MAPPED_ERRORS,
    STATUS_HEADERS,
    Answer,
    ConcurrencyLimiter,
    Options,
    asgi_header_budget,
    error_response,
    request_budget,
    shed_response,
    status_body,
)
from resilience.integrations._idempotency import IdempotencyASGI, check_idempotency

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from resilience.idempotency import Idempotency

__all__ = ["ResilienceMiddleware", "add_resilience"]

_STATUS_METHODS = frozenset({"GET", "HEAD"})


def _encode(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _send_response(send: Send, answer: Answer, *, head: bool = False) -> None:
    await send(
        {"type": "http.response.start", "status": answer.status, "headers": _encode(answer.headers)}
    )
    await send({"type": "http.response.body", "body": b"" if head else answer.body})


class ResilienceMiddleware:
    """Pure ASGI middleware: error mapping, load shedding, request deadlines, status endpoint.

    Prefer `add_resilience`; this class is for ``Middleware(ResilienceMiddleware, ...)`` lists
    and for ASGI apps that are not Starlette.

    Example:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> app = Starlette(middleware=[Middleware(ResilienceMiddleware, max_concurrent=100)])
    """

    __slots__ = ("_limiter", "_shed", "app", "options")

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_concurrent: int | None = None,
        timeout: Duration | None = None,
        status_path: str | None = "/resilience",
        clock: Clock = time.monotonic,
        idempotency: Idempotency | None = None,
    ) -> None:
        keys = check_idempotency(idempotency)
        self.app = app if keys is None else IdempotencyASGI(app, keys)
        self.options = Options(
            max_concurrent=max_concurrent,
            timeout=timeout,  # type: ignore[arg-type]  # Options turns a timedelta into float
            status_path=status_path,
            clock=clock,
        )
        self._limiter = None if max_concurrent is None else ConcurrencyLimiter(max_concurrent)
        self._shed = shed_response()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan and websockets pass untouched
            return
        options = self.options
        if options.status_path is not None and _path(scope) == options.status_path:
            await self._status(scope, send)
            return
        limiter = self._limiter
        if limiter is not None and not limiter.try_acquire():
            await _send_response(send, self._shed, head=scope["method"] == "HEAD")
            return
        try:
            await self._run(scope, receive, send)
        finally:
            if limiter is not None:
                limiter.release()

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watch_start(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        budget = request_budget(self.options.timeout, asgi_header_budget(scope["headers"]))
        try:
            if budget is None:
                await self.app(scope, receive, watch_start)
            else:
                # Settings and budget are validated already: skip deadline()'s checks per call.
                async with Deadline._trusted(budget, self.options.clock, "the request"):
                    await self.app(scope, receive, watch_start)
        except MAPPED_ERRORS as exc:
            if started:
                raise  # the status line is gone: only aborting the connection is left
            answer = error_response(exc)
            assert answer is not None
            await _send_response(send, answer, head=scope["method"] == "HEAD")

    async def _status(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        if method not in _STATUS_METHODS:
            body = b'{"error": "method_not_allowed", "detail": "Use GET."}'
            answer = Answer(
                405,
                (
                    ("content-type", "application/json"),
                    ("content-length", str(len(body))),
                    ("allow", "GET, HEAD"),
                ),
                body,
            )
            await _send_response(send, answer)
            return
        body = status_body()
        headers = (*STATUS_HEADERS, ("content-length", str(len(body))))
        await _send_response(send, Answer(200, headers, body), head=method == "HEAD")


def _path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    # Starlette puts the mount prefix in both; the option names the path inside this app.
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def add_resilience(
    app: Starlette | Any,
    *,
    max_concurrent: int | None = None,
    timeout: Duration | None = None,
    status_path: str | None = "/resilience",
    clock: Clock = time.monotonic,
    idempotency: Idempotency | None = None,
) -> None:
    """Install `ResilienceMiddleware` on a FastAPI or Starlette app (outermost of yours).

    Args:
        max_concurrent: requests in progress beyond this get 503 at once (``None``: no limit).
        timeout: default per-request deadline in seconds; an inbound deadline header shortens it.
        status_path: GET here lists every circuit breaker as JSON; ``None`` turns it off.
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
    Options(
        max_concurrent=max_concurrent,
        timeout=timeout,  # type: ignore[arg-type]  # Options turns a timedelta into float
        status_path=status_path,
        clock=clock,
    )
    check_idempotency(idempotency)
    # Twice would mean two limits and two deadlines fighting: refuse, as the Flask twin does.
    if any(getattr(m, "cls", None) is ResilienceMiddleware for m in app.user_middleware):
        msg = "add_resilience() was already called on this app; call it once"
        raise RuntimeError(msg)
    app.add_middleware(
        ResilienceMiddleware,
        max_concurrent=max_concurrent,
        timeout=timeout,
        status_path=status_path,
        clock=clock,
        idempotency=idempotency,
    )
