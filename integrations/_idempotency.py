"""``Idempotency-Key`` on the server, for ASGI (FastAPI, Starlette) and WSGI (Flask) apps.

The decisions live in `resilience._idempotency._http`; here are only the two drivers. Each
keyed request (method in ``methods``, header present) is:

1. read in full (the body is part of the fingerprint) and handed on unchanged;
2. claimed in the store under "METHOD route key" (the route template where the framework
   has one, else the path): a finished request is replayed, a running one is 409, a
   different request with the same key is 422, an unreachable store is 503 (nothing runs);
3. run; its response is recorded as it goes out, up to ``max_body``, and stored *before its
   last bytes are sent*, so a client that lost the response and retries finds it. A 5xx,
   an exception, a larger body or an unfinished response release the key instead.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from resilience._errors import ConfigError
from resilience._idempotency._backend import Claimed, StoreUnavailable
from resilience._idempotency._http import (
    REPLAYED_HEADERS,
    HttpAnswer,
    Idempotency,
    Recorder,
    answer_for,
    fingerprint,
    scoped_key,
    store_unavailable,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["IdempotencyASGI", "IdempotencyWSGI", "check_idempotency"]

_log = logging.getLogger("resilience")
_KEPT = frozenset(name.encode() for name in REPLAYED_HEADERS)


def check_idempotency(value: object) -> Idempotency | None:
    """The integrations' ``idempotency=`` option: None or an `Idempotency`."""
    if value is None or isinstance(value, Idempotency):
        return value
    msg = (
        "idempotency must be a resilience.idempotency.Idempotency "
        f"(e.g. Idempotency(store=MemoryStore())) or None, got {value!r}"
    )
    raise ConfigError(msg)


def _stored_failed(scoped: str, exc: StoreUnavailable) -> None:
    _log.warning(
        "Idempotency: the response for %r could not be stored (%s); "
        "a retry after lock_timeout would run it again",
        scoped,
        exc,
    )


# ------------------------------------------------------------------------------------- ASGI


def _asgi_route(routes: Iterable[Any], path: str, method: str, mount: type[Any]) -> str | None:
    """The template of the route that *path* and *method* reach ("/orders/{id}").

    The router's own regexes, without building its scopes: a keyed request pays a regex
    match per route ahead of its own, not a full `matches()` each.
    """
    for route in routes:
        regex = getattr(route, "path_regex", None)
        if regex is None:
            continue  # a Host, or a route type we do not know: the router will tell
        match = regex.match(path)
        if match is None:
            continue
        if isinstance(route, mount):
            inner = _asgi_route(route.routes, "/" + match.group("path"), method, mount)
            if inner is not None:
                return f"{route.path}{inner}"
            continue
        methods = getattr(route, "methods", None)
        if methods is None or method in methods:
            return str(route.path)
    return None


def _route_path(scope: Scope) -> str:
    # As Starlette's get_route_path: the path inside the app, without a mount's root_path.
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :] or "/"
    return path


def _encode(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _send_answer(send: Send, answer: HttpAnswer) -> None:
    await send(
        {"type": "http.response.start", "status": answer.status, "headers": _encode(answer.headers)}
    )
    await send({"type": "http.response.body", "body": answer.body})


class IdempotencyASGI:
    """Pure ASGI middleware applying an `Idempotency` to the requests of its methods.

    Installed by ``add_resilience(app, idempotency=keys)``; the route template comes from the
    Starlette/FastAPI router (``scope["app"]``), else the path is used.
    """

    __slots__ = ("_header", "_mount", "app", "keys")

    def __init__(self, app: ASGIApp, keys: Idempotency) -> None:
        from starlette.routing import Mount

        self.app = app
        self.keys = keys
        self._header = keys.header_key.encode("latin-1")
        self._mount = Mount

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        keys = self.keys
        if scope["type"] != "http" or scope["method"] not in keys.method_set:
            await self.app(scope, receive, send)
            return
        raw: str | None = None
        header = self._header
        for name, value in scope["headers"]:
            if name == header:
                raw = value.decode("latin-1")
                break
        key = keys.key_of(raw)
        if key is None:
            await self.app(scope, receive, send)
            return
        if isinstance(key, HttpAnswer):
            await _send_answer(send, key)
            return
        await self._keyed(scope, receive, send, key)

    async def _keyed(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        keys = self.keys
        backend = keys.backend
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body: nothing to do
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        method: str = scope["method"]
        path: str = scope["path"]
        router = getattr(scope.get("app"), "router", None)
        routes = getattr(router, "routes", None)
        route = (
            None if routes is None else _asgi_route(routes, _route_path(scope), method, self._mount)
        )
        scoped = scoped_key(method, route or path, key)
        fp = fingerprint(method, path, body)
        try:
            claim = await backend.aclaim(scoped, fp, keys.lock_timeout)
        except StoreUnavailable as exc:
            await _send_answer(send, store_unavailable(exc))
            return
        answer = answer_for(claim, fp)
        if answer is not None:
            await _send_answer(send, answer)
            return
        assert isinstance(claim, Claimed)
        token = claim.token
        recorder = Recorder(keys.max_body)
        settled = False
        replayed = False

        async def replay_receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then whatever comes next (http.disconnect)

        async def settle() -> None:
            nonlocal settled
            settled = True
            value = recorder.value()
            try:
                if value is None:
                    await backend.arelease(scoped, token)
                else:
                    await backend.acomplete(scoped, token, value, keys.ttl)
            except StoreUnavailable as exc:
                _stored_failed(scoped, exc)

        async def record(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                recorder.start(
                    message["status"],
                    [
                        (n.decode("latin-1"), v.decode("latin-1"))
                        for n, v in message["headers"]
                        if n in _KEPT  # ASGI header names are lower-case
                    ],
                )
            elif kind == "http.response.body" and not settled:
                recorder.add(message.get("body", b""))
                if not message.get("more_body", False):
                    await settle()  # before the last bytes go out: a retry finds the result
            await send(message)

        try:
            await self.app(scope, replay_receive, record)
        except BaseException:
            if not settled:
                settled = True
                try:
                    await backend.arelease(scoped, token)
                except StoreUnavailable as exc:
                    _stored_failed(scoped, exc)
            raise
        if not settled:
            recorder.keep = False  # the app returned without finishing its response
            await settle()


# ------------------------------------------------------------------------------------- WSGI


class IdempotencyWSGI:
    """WSGI middleware applying an `Idempotency`; the route template comes from *url_map*
    (a Werkzeug ``Map``: Flask's ``app.url_map``) when given, else the path is used."""

    __slots__ = ("_environ_key", "keys", "url_map", "wsgi_app")

    def __init__(self, wsgi_app: WSGIApplication, keys: Idempotency, url_map: Any = None) -> None:
        self.wsgi_app = wsgi_app
        self.keys = keys
        self.url_map = url_map
        self._environ_key = "HTTP_" + keys.header_key.upper().replace("-", "_")

    def _route(self, environ: WSGIEnvironment) -> str | None:
        if self.url_map is None:
            return None
        from werkzeug.exceptions import HTTPException
        from werkzeug.routing import RequestRedirect

        try:
            rule, _ = self.url_map.bind_to_environ(environ).match(return_rule=True)
        except (HTTPException, RequestRedirect):
            return None
        return str(rule.rule)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        keys = self.keys
        method: str = environ["REQUEST_METHOD"]
        if method not in keys.method_set:
            return self.wsgi_app(environ, start_response)
        key = keys.key_of(environ.get(self._environ_key))
        if key is None:
            return self.wsgi_app(environ, start_response)
        if isinstance(key, HttpAnswer):
            return _wsgi_answer(start_response, key)
        from werkzeug.wsgi import get_input_stream

        body = get_input_stream(environ).read()
        # Hand the body on as if it had not been read.
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        path: str = environ.get("PATH_INFO", "/")
        scoped = scoped_key(method, self._route(environ) or path, key)
        fp = fingerprint(method, path, body)
        backend = keys.backend
        try:
            claim = backend.claim(scoped, fp, keys.lock_timeout)
        except StoreUnavailable as exc:
            return _wsgi_answer(start_response, store_unavailable(exc))
        answer = answer_for(claim, fp)
        if answer is not None:
            return _wsgi_answer(start_response, answer)
        assert isinstance(claim, Claimed)
        recorder = Recorder(keys.max_body)

        def record_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            recorder.start(int(status[:3]), headers)
            return start_response(status, headers, exc_info)

        settle = _Settle(keys, scoped, claim.token, recorder)
        try:
            result = self.wsgi_app(environ, record_start)
        except BaseException:
            settle(keep=False)
            raise
        return _Recorded(result, recorder, settle)


def _wsgi_answer(start_response: StartResponse, answer: HttpAnswer) -> list[bytes]:
    from http import HTTPStatus

    reason = HTTPStatus(answer.status).phrase
    start_response(f"{answer.status} {reason}", list(answer.headers))
    return [answer.body]


class _Settle:
    """Stores the recorded response, or releases the key; once."""

    __slots__ = ("done", "keys", "recorder", "scoped", "token")

    def __init__(self, keys: Idempotency, scoped: str, token: str, recorder: Recorder) -> None:
        self.keys = keys
        self.scoped = scoped
        self.token = token
        self.recorder = recorder
        self.done = False

    def __call__(self, *, keep: bool) -> None:
        if self.done:
            return
        self.done = True
        backend = self.keys.backend
        value = self.recorder.value() if keep else None
        try:
            if value is None:
                backend.release(self.scoped, self.token)
            else:
                backend.complete(self.scoped, self.token, value, self.keys.ttl)
        except StoreUnavailable as exc:
            _stored_failed(self.scoped, exc)


class _Recorded:
    """The app's body, recorded as the server iterates it; the last chunk is held back until
    the response is stored (so a retry that races the client finds it)."""

    __slots__ = ("_recorder", "_result", "_settle")

    def __init__(self, result: Iterable[bytes], recorder: Recorder, settle: _Settle) -> None:
        self._result = result
        self._recorder = recorder
        self._settle = settle

    def __iter__(self) -> Iterator[bytes]:
        recorder = self._recorder
        held: bytes | None = None
        try:
            for chunk in self._result:
                recorder.add(chunk)
                if held is not None:
                    yield held
                held = chunk
        except BaseException:
            self._settle(keep=False)
            raise
        self._settle(keep=True)
        if held is not None:
            yield held

    def close(self) -> None:
        # Closed before the end (the client went away): nothing complete to keep.
        self._settle(keep=False)
        close: Callable[[], Any] | None = getattr(self._result, "close", None)
        if close is not None:
            close()
