"""The apps the middleware case measures, and a server for one: ``python -m bench._mwserver``.

Every app answers ``GET /hello`` with a 2-byte body. A *variant* says what wraps it: nothing,
a pass-through middleware (the floor of any middleware), ours (`add_resilience` for FastAPI,
`Resilience` for Flask, with or without a ``timeout``), or a peer. The server runs one app
(uvicorn for FastAPI, Werkzeug's threaded server for Flask), prints its port on the first line
of stdout (then binds it), and exits by itself when its parent goes away or after
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from bench._child import exit_with_parent

FRAMEWORKS = ("fastapi", "flask")
BARE = "bare"
FLOOR = "floor"
OURS = "resilience"
TIMEOUT = "timeout"
PEER = "peer"
VARIANTS = (BARE, FLOOR, OURS, TIMEOUT, PEER)
TIMEOUT_SECONDS = 5.0
PATH = "/hello"
BODY = b"ok"


class PassThroughASGI:
    """A pure ASGI middleware that does nothing: the least any ASGI middleware costs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class PassThroughWSGI:
    """A WSGI middleware that does nothing: the least any WSGI middleware costs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        result: Iterable[bytes] = self.app(environ, start_response)
        return result


async def minimal_asgi(scope: Any, receive: Any, send: Any) -> None:
    """The least an ASGI app can do for a GET: answer 200 "ok"."""
    await send({"type": "http.response.start", "status": 200, "headers": MINIMAL_HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def minimal_wsgi(environ: Any, start_response: Any) -> Iterable[bytes]:
    """The least a WSGI app can do for a GET: answer 200 "ok"."""
    start_response("200 OK", [("content-type", "text/plain"), ("content-length", "2")])
    return [BODY]


MINIMAL_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


async def _pass_through(request: Any, call_next: Callable[[Any], Any]) -> Any:
    return await call_next(request)


def asgi_alone(variant: str) -> Any:
    """`minimal_asgi` wrapped as *variant* says: the middleware's own cost, nothing else."""
    from starlette.middleware.base import BaseHTTPMiddleware

    from resilience.integrations.fastapi import ResilienceMiddleware

    if variant == FLOOR:
        return PassThroughASGI(minimal_asgi)
    if variant == OURS:
        return ResilienceMiddleware(minimal_asgi)
    if variant == TIMEOUT:
        return ResilienceMiddleware(minimal_asgi, timeout=TIMEOUT_SECONDS)
    if variant == PEER:
        return BaseHTTPMiddleware(minimal_asgi, dispatch=_pass_through)
    return minimal_asgi


def wsgi_alone(variant: str) -> Any:
    """`minimal_wsgi` wrapped as *variant* says: the middleware's own cost, nothing else.

    Ours is set up on a Flask app whose ``wsgi_app`` is `minimal_wsgi`: what `Resilience`
    puts around Flask's own dispatch, called without Flask.
    """
    import flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from resilience.integrations.flask import Resilience

    if variant == FLOOR:
        return PassThroughWSGI(minimal_wsgi)
    if variant in (OURS, TIMEOUT):
        app = flask.Flask("bench")
        app.wsgi_app = minimal_wsgi  # type: ignore[method-assign]
        Resilience(app, timeout=TIMEOUT_SECONDS if variant == TIMEOUT else None)
        return app.wsgi_app
    if variant == PEER:
        return ProxyFix(minimal_wsgi)
    return minimal_wsgi


def fastapi_app(variant: str) -> Any:
    """A FastAPI app with one async route, wrapped as *variant* says."""
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse
    from starlette.middleware.base import BaseHTTPMiddleware

    from resilience.integrations.fastapi import add_resilience

    app = FastAPI()

    @app.get(PATH)
    async def hello() -> PlainTextResponse:
        return PlainTextResponse(BODY)

    if variant == FLOOR:
        app.add_middleware(PassThroughASGI)
    elif variant == OURS:
        add_resilience(app)
    elif variant == TIMEOUT:
        add_resilience(app, timeout=TIMEOUT_SECONDS)
    elif variant == PEER:
        app.add_middleware(BaseHTTPMiddleware, dispatch=_pass_through)
    return app


def flask_app(variant: str) -> Any:
    """A Flask app with one view, wrapped as *variant* says."""
    import flask

    from resilience.integrations.flask import Resilience

    app = flask.Flask("bench")

    @app.get(PATH)
    def hello() -> bytes:
        return BODY

    if variant == FLOOR:
        app.wsgi_app = PassThroughWSGI(app.wsgi_app)  # type: ignore[method-assign]
    elif variant == OURS:
        Resilience(app)
    elif variant == TIMEOUT:
        Resilience(app, timeout=TIMEOUT_SECONDS)
    elif variant == PEER:
        # What the lightest Flask extension does: a hook before and after every request.
        app.before_request(lambda: None)
        app.after_request(lambda response: response)
    return app


def main() -> None:
    """Bind a free port, print it, serve until the parent leaves or time runs out."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", choices=FRAMEWORKS, required=True)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    exit_with_parent(args.max_seconds)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if args.framework == "fastapi":
        import uvicorn

        app = fastapi_app(args.variant)
        print(port, flush=True)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
        )
        uvicorn.Server(config).run()
        return
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", port, flask_app(args.variant), threaded=True)
    print(port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
