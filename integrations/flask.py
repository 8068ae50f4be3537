"""Flask integration: the `Resilience` extension (``init_app`` pattern).

It does for a Flask app what the FastAPI middleware does for an ASGI app:

- error handlers turn `CircuitOpenError`, `BulkheadFull` and `DeadlineExceeded` into
  503 / 503 / 504 JSON answers (with ``Retry-After`` for an open circuit);
- a WSGI middleware (``app.wsgi_app``) sheds load: beyond ``max_concurrent`` requests in
  progress across all threads, a 503 goes back before Flask does any work;
- the same middleware runs each request under ``deadline(...)``: the server's ``timeout``,
  shortened by the caller's ``x-envoy-expected-rq-timeout-ms`` or ``grpc-timeout`` header.
  In sync code a deadline is cooperative: our retries, policies and transports inside the
  view clamp to it and raise `DeadlineExceeded` (-> 504); the view itself is not interrupted;
- ``GET status_path`` lists every circuit breaker, as an ordinary route (so the app's own
  ``before_request`` checks, such as authentication, apply to it).

The extension object lives in ``app.extensions["resilience"]``. One object set up on several
apps shares its concurrency limit between them (one object shared means state shared).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

try:
    import flask
    from werkzeug.wsgi import ClosingIterator
except ImportError as exc:  # pragma: no cover - exercised by a test with flask hidden
    msg = (
        "resilience.integrations.flask needs Flask; "
        "install it with: pip install 'resilience[flask]'"
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
    environ_budget,
    error_response,
    request_budget,
    shed_response,
    status_body,
)
from resilience.integrations._idempotency import IdempotencyWSGI, check_idempotency

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from resilience.idempotency import Idempotency

__all__ = ["Resilience"]

EXTENSION_KEY = "resilience"
STATUS_ENDPOINT = "resilience_status"


def _flask_response(answer: Answer) -> flask.Response:
    # Werkzeug computes Content-Length itself; passing ours too would duplicate it.
    headers = [(k, v) for k, v in answer.headers if k != "content-length"]
    return flask.Response(answer.body, status=answer.status, headers=headers)


def _handle_error(exc: Exception) -> flask.Response:
    answer = error_response(exc)
    if answer is None:  # pragma: no cover - registered for mapped errors only
        raise exc
    return _flask_response(answer)


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


def _status_view() -> flask.Response:
    return flask.Response(status_body(), status=200, headers=list(STATUS_HEADERS))


class Resilience:
    """Error mapping, load shedding, request deadlines and a breaker status route for Flask.

    Args:
        app: the app to set up now; or leave it out and call `init_app` (app factories).
        max_concurrent: requests in progress beyond this get 503 at once (``None``: no limit).
        timeout: default per-request deadline in seconds; an inbound deadline header shortens it.
        status_path: GET here lists every circuit breaker as JSON; ``None`` turns it off.
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

    __slots__ = ("_shed", "idempotency", "limiter", "options")

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        max_concurrent: int | None = None,
        timeout: Duration | None = None,
        status_path: str | None = "/resilience",
        clock: Clock = time.monotonic,
        idempotency: Idempotency | None = None,
    ) -> None:
        self.idempotency = check_idempotency(idempotency)
        self.options = Options(
            max_concurrent=max_concurrent,
            timeout=timeout,  # type: ignore[arg-type]  # Options turns a timedelta into float
            status_path=status_path,
            clock=clock,
        )
        self.limiter = None if max_concurrent is None else ConcurrencyLimiter(max_concurrent)
        self._shed = shed_response()
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
        for error in MAPPED_ERRORS:
            # An application's own handler for one of our errors wins over the default.
            if error not in handlers:
                app.register_error_handler(error, _handle_error)
        if self.limiter is not None:
            app.after_request(_note_streaming)
        if self.idempotency is not None:
            app.wsgi_app = IdempotencyWSGI(app.wsgi_app, self.idempotency, app.url_map)  # type: ignore[method-assign]
        app.wsgi_app = _ResilienceWSGI(app.wsgi_app, self)  # type: ignore[method-assign]
        if self.options.status_path is not None:
            app.add_url_rule(
                self.options.status_path,
                endpoint=STATUS_ENDPOINT,
                view_func=_status_view,
                methods=["GET"],
            )

    def __repr__(self) -> str:
        o = self.options
        return (
            f"Resilience(max_concurrent={o.max_concurrent!r}, timeout={o.timeout!r}, "
            f"status_path={o.status_path!r})"
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
        if options.status_path is not None and environ.get("PATH_INFO") == options.status_path:
            return self.wsgi_app(environ, start_response)  # never shed the health view
        limiter = extension.limiter
        if limiter is not None and not limiter.try_acquire():
            answer = extension._shed
            start_response(f"{answer.status} {answer.reason}", list(answer.headers))
            return [] if environ.get("REQUEST_METHOD") == "HEAD" else [answer.body]
        try:
            budget = request_budget(options.timeout, environ_budget(environ))
            if budget is None:
                result = self.wsgi_app(environ, start_response)
            else:
                # Settings and budget are validated already: skip deadline()'s checks per call.
                with Deadline._trusted(budget, options.clock, "the request"):
                    result = self.wsgi_app(environ, start_response)
        except BaseException:
            if limiter is not None:
                limiter.release()
            raise
        if limiter is None:
            return result
        if environ.get(_STREAMED_KEY, True):
            # A streamed (or unknown) body: the slot is held until the server closes it.
            release: Callable[[], Any] = limiter.release
            return ClosingIterator(result, [release])
        # The work is done; and clients that never close the body (Werkzeug's test client)
        # must not keep the slot.
        limiter.release()
        return result
