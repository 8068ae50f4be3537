"""Flask integration: the `Resilience` extension (``init_app`` pattern).

It does for a Flask app what the FastAPI middleware does for an ASGI app:

- error handlers turn `CircuitOpenError`, `BulkheadFull` and `DeadlineExceeded` into
  503 / 503 / 504 JSON answers (with ``Retry-After`` for an open circuit), also when an SDK
  wrapped them in its own error (anywhere in the ``__cause__``/``__context__`` chain), and
  an escaped upstream 5xx (httpx's ``HTTPStatusError``, requests' ``HTTPError``...) into 502;
- a WSGI middleware (``app.wsgi_app``) sheds load: beyond ``max_concurrent`` requests in
  progress across all threads, a 503 goes back before Flask does any work. A request counts
  once its body has arrived: bodies up to ``body_buffer`` bytes are read first, within
  ``body_timeout``; a larger one takes its slot when the view reads past that;
- the same middleware runs each request under ``deadline(...)``: the server's ``timeout``,
  shortened by the caller's ``x-envoy-expected-rq-timeout-ms`` or ``grpc-timeout`` header.
  In sync code a deadline is cooperative: our retries, policies and transports inside the
  view clamp to it and raise `DeadlineExceeded` (-> 504); the view itself is not interrupted;
- ``GET status_path`` lists every circuit breaker, as an ordinary route (so the app's own
  ``before_request`` checks, such as authentication, apply to it), to the clients
  ``status_access`` allows.

The extension object lives in ``app.extensions["resilience"]``. One object set up on several
apps shares its concurrency limit between them (one object shared means state shared).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

try:
    import flask
    from werkzeug.exceptions import HTTPException
    from werkzeug.wsgi import ClosingIterator
except ImportError as exc:  # pragma: no cover - exercised by a test with flask hidden
    msg = (
        "resilience.integrations.flask needs Flask; "
        "install it with: pip install 'resilience-mesh[flask]'"
    )
    raise ImportError(msg) from exc

from resilience._timeout import scoped_call
from resilience._validate import Clock, Duration

from ._answers import (
    MAPPED_ERRORS,
    Answer,
    ShedRequest,
    deadline_response,
    error_response,
    request_timeout_response,
    shed_response,
    wsgi_answer,
)
from ._idempotency import IdempotencyWSGI, check_idempotency
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
    LateSlot,
    SlotOnRead,
    read_wsgi_body,
    wsgi_body_length,
)
from ._status import STATUS_HEADERS, StatusCache, status_allowed

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from resilience.idempotency import Idempotency

__all__ = ["Resilience"]

EXTENSION_KEY = "resilience"
STATUS_ENDPOINT = "resilience_status"

# ---------------------------------------------------------------------------- answers


def _flask_response(answer: Answer) -> flask.Response:
    # Werkzeug computes Content-Length itself; passing ours too would duplicate it.
    headers = [(k, v) for k, v in answer.headers if k != "content-length"]
    return flask.Response(answer.body, status=answer.status, headers=headers)


def _handle_error(exc: Exception) -> flask.Response:
    answer = error_response(exc)
    if answer is None:  # pragma: no cover - registered for mapped errors only
        raise exc
    return _flask_response(answer)


def _chained(app_handler: Callable[[Exception], Any] | None) -> Callable[[Exception], Any]:
    """The handler for `Exception`: our errors wrapped by others, and upstream 5xx errors.

    Anything else goes to the app's own catch-all handler if it had one; else an HTTP error
    (``abort(404)``: the view chose its answer) is returned as Flask does with no handler,
    and any other error is raised again, which Flask treats as one no handler took (a 500).
    """

    def handle_chained(exc: Exception) -> Any:
        if not isinstance(exc, HTTPException):
            answer = error_response(exc)
            if answer is not None:
                return _flask_response(answer)
        if app_handler is not None:
            return flask.current_app.ensure_sync(app_handler)(exc)
        if isinstance(exc, HTTPException):
            return exc
        raise exc

    handle_chained.resilience_wraps = app_handler  # type: ignore[attr-defined]
    return handle_chained


_STREAMED_KEY = "resilience.streamed"


def _note_streaming(response: flask.Response) -> flask.Response:
    # Tells the WSGI layer whether work remains once the view has returned: a streamed body
    # (a generator, a file) is produced while it is sent, so its slot is held until the
    # server closes it. Error pages look streamed (Werkzeug wraps them in a ClosingIterator)
    # but are complete already.
    body = response.response
    flask.request.environ[_STREAMED_KEY] = response.is_streamed and not isinstance(
        body, ClosingIterator
    )
    return response


# ---------------------------------------------------------------------------- the extension


class Resilience:
    """Error mapping, load shedding, request deadlines and a breaker status route for Flask.

    Args:
        app: the app to set up now; or leave it out and call `init_app` (app factories).
        max_concurrent: requests in progress beyond this get 503 at once (``None``: no limit).
        timeout: default per-request deadline in seconds; an inbound deadline header shortens it.
        status_path: GET here lists every circuit breaker as JSON; ``None`` turns it off.
        status_access: who may read the status path: ``"loopback"`` (clients on 127.0.0.0/8
            and ::1; others get 404), ``"any"``, or a callable taking ``flask.request`` and
            returning True to allow.
        deadline_headers: honour inbound deadline headers (True), none (False), or only the
            named ones (e.g. ``["x-envoy-expected-rq-timeout-ms"]``).
        body_buffer: bytes of a request body read before it takes a ``max_concurrent`` slot;
            a larger body takes its slot when the view reads past them (0: at once).
        body_timeout: seconds the buffered part of a body may take to arrive (then 408).
        clock: the monotonic clock the request deadlines read.
        idempotency: an `Idempotency` (``resilience.idempotency``): requests retried with
            the same ``Idempotency-Key`` get the first response instead of running again.

    Example:
        >>> from flask import Flask
        >>> resilience = Resilience(max_concurrent=32, timeout=5.0)
        >>> app = Flask("shop")
        >>> resilience.init_app(app)
        >>> app.extensions["resilience"] is resilience
        True
    """

    __slots__ = ("_headers", "_shed", "_status", "idempotency", "limiter", "options")

    def __init__(
        self,
        app: flask.Flask | None = None,
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
        self.idempotency = check_idempotency(idempotency)
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
        self.limiter = None if max_concurrent is None else ConcurrencyLimiter(max_concurrent)
        self._shed = shed_response()
        self._headers = DeadlineHeaders(options.deadline_headers)  # type: ignore[arg-type]
        self._status = StatusCache(clock=clock)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Set up *app*: error handlers, the WSGI middleware and the status route.

        Calling it again for the same app does nothing; a second, different `Resilience`
        on the same app is an error (two limits and two deadlines would fight).
        """
        current = app.extensions.get(EXTENSION_KEY)
        if current is self:
            return
        if current is not None:
            msg = f"app {app.name!r} already has a Resilience extension; set up only one"
            raise RuntimeError(msg)
        app.extensions[EXTENSION_KEY] = self
        handlers = app.error_handler_spec[None][None]
        for error in (*MAPPED_ERRORS, ShedRequest):
            # An application's own handler for one of our errors wins over the default.
            if error not in handlers:
                app.register_error_handler(error, _handle_error)
        # Wrapped errors and upstream 5xx need the catch-all; an app's own one still runs
        # for everything else (one registered after init_app replaces ours: see the docs).
        app.register_error_handler(Exception, _chained(handlers.get(Exception)))
        if self.limiter is not None:
            app.after_request(_note_streaming)
        if self.idempotency is not None:
            app.wsgi_app = IdempotencyWSGI(app.wsgi_app, self.idempotency, app.url_map)  # type: ignore[method-assign]
        app.wsgi_app = _ResilienceWSGI(app.wsgi_app, self)  # type: ignore[method-assign]
        if self.options.status_path is not None:
            app.add_url_rule(
                self.options.status_path,
                endpoint=STATUS_ENDPOINT,
                view_func=self._status_view,
                methods=["GET"],
            )

    def _status_view(self) -> flask.Response:
        # The request itself, not the context-bound proxy: a callable may keep it.
        request = flask.request._get_current_object()  # type: ignore[attr-defined]
        if not status_allowed(self.options.status_access, request, request.remote_addr):
            flask.abort(404)  # the app's own "no such page" answer
        return flask.Response(self._status.get(), status=200, headers=list(STATUS_HEADERS))

    def __repr__(self) -> str:
        o = self.options
        return (
            f"Resilience(max_concurrent={o.max_concurrent!r}, timeout={o.timeout!r}, "
            f"status_path={o.status_path!r}, status_access={o.status_access!r})"
        )


class _ResilienceWSGI:
    """Sheds load and sets the request deadline around Flask's own WSGI app."""

    __slots__ = ("extension", "wsgi_app")

    def __init__(self, wsgi_app: WSGIApplication, extension: Resilience) -> None:
        self.wsgi_app = wsgi_app
        self.extension = extension

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        extension = self.extension
        options = extension.options
        inbound = extension._headers.environ(environ)
        budget = options.timeout if inbound is None else request_budget(options.timeout, inbound)
        limiter = extension.limiter
        if limiter is None:  # the usual path, `_run` inlined
            if budget is None:
                return self.wsgi_app(environ, start_response)
            return scoped_call(budget, options.clock, self.wsgi_app, environ, start_response)
        if options.body_buffer and (length := wsgi_body_length(environ)):
            return self._serve_body(environ, start_response, budget, limiter, length)
        if not limiter.try_acquire():
            return wsgi_answer(environ, start_response, extension._shed)
        return self._run_holding(environ, start_response, budget, limiter.release)

    def _serve_body(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        budget: float | None,
        limiter: ConcurrencyLimiter,
        length: int,
    ) -> Iterable[bytes]:
        """A request with a body: it takes its slot once the body (up to the buffer) is in.

        *length* is the declared length, or -1 for a chunked body.
        """
        options = self.extension.options
        if length > options.body_buffer:
            # Declared larger than the buffer: no point buffering part of it.
            slot = LateSlot(limiter)
            environ["wsgi.input"] = SlotOnRead(environ["wsgi.input"], b"", slot)
            return self._run_holding(environ, start_response, budget, slot.give_back)
        clock = options.clock
        arrived = clock()
        wait, late = options.body_timeout, request_timeout_response()
        if budget is not None and budget < wait:
            wait, late = budget, deadline_response()
        try:
            body, whole = read_wsgi_body(
                environ, length, options.body_buffer, arrived + wait, clock
            )
        except TimeoutError:
            return wsgi_answer(environ, start_response, late)
        if budget is not None:
            budget -= clock() - arrived
            if budget <= 0.0:
                return wsgi_answer(environ, start_response, deadline_response())
        if not whole:
            slot = LateSlot(limiter)
            environ["wsgi.input"] = SlotOnRead(environ["wsgi.input"], body, slot)
            return self._run_holding(environ, start_response, budget, slot.give_back)
        environ["wsgi.input"] = io.BytesIO(body)
        if not limiter.try_acquire():
            return wsgi_answer(environ, start_response, self.extension._shed)
        return self._run_holding(environ, start_response, budget, limiter.release)

    def _run(
        self, environ: WSGIEnvironment, start_response: StartResponse, budget: float | None
    ) -> Iterable[bytes]:
        if budget is None:
            return self.wsgi_app(environ, start_response)
        # Settings and budget are validated already: skip deadline()'s checks per call.
        return scoped_call(
            budget, self.extension.options.clock, self.wsgi_app, environ, start_response
        )

    def _run_holding(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        budget: float | None,
        release: Callable[[], Any],
    ) -> Iterable[bytes]:
        """`_run` holding a slot, given back by *release* once the response is complete."""
        try:
            result = self._run(environ, start_response, budget)
        except BaseException:
            release()
            raise
        if environ.get(_STREAMED_KEY, True):
            # A streamed (or unknown) body: the slot is held until the server closes it.
            return ClosingIterator(result, [release])
        # The work is done; and clients that never close the body (Werkzeug's test client)
        # must not keep the slot.
        release()
        return result
