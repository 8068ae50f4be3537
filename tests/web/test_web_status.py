"""The status path is no lever: who may read it, the app's own auth, and what answering costs.

Real uvicorn and werkzeug servers on 127.0.0.1; a client "off loopback" is one a proxy in
front vouches for (uvicorn's proxy headers, werkzeug's ProxyFix), as in production.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import flask
import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from werkzeug.middleware.proxy_fix import ProxyFix

from resilience import CircuitBreaker, ConfigError
from resilience.integrations import _status
from resilience.integrations._status import STATUS_COST_SHARE, StatusCache
from resilience.integrations.fastapi import ResilienceMiddleware, add_resilience
from resilience.integrations.flask import Resilience
from resilience.testing import FakeClock
from tests.helpers import serve_asgi, serve_wsgi

pytestmark = pytest.mark.network

FAR_AWAY = {"x-forwarded-for": "203.0.113.9"}  # a documentation address, not loopback


def fastapi_behind_proxy(**options: Any) -> AbstractContextManager[str]:
    """A FastAPI app on uvicorn, trusting X-Forwarded-For from 127.0.0.1 (a local proxy)."""
    app = FastAPI()
    add_resilience(app, **options)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    return serve_asgi(app, proxy_headers=True, forwarded_allow_ips="127.0.0.1")


def flask_behind_proxy(**options: Any) -> AbstractContextManager[str]:
    """A Flask app on werkzeug behind ProxyFix (one trusted proxy)."""
    app = flask.Flask(f"status-{uuid.uuid4().hex[:6]}")
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    Resilience(app, **options)

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    return serve_wsgi(app)


SERVERS = [
    pytest.param(fastapi_behind_proxy, id="fastapi"),
    pytest.param(flask_behind_proxy, id="flask"),
]


@pytest.mark.parametrize("server", SERVERS)
def test_by_default_only_loopback_clients_read_the_status_path(
    server: Callable[..., AbstractContextManager[str]],
) -> None:
    """status_access="loopback": a client on 127.0.0.1 reads it, one elsewhere gets 404."""
    with server() as url, httpx.Client(base_url=url) as client:
        assert client.get("/resilience").json().keys() == {"breakers", "upstreams"}
        hidden = client.get("/resilience", headers=FAR_AWAY)
        missing = client.get("/no-such-page", headers=FAR_AWAY)
        assert client.get("/ping", headers=FAR_AWAY).status_code == 200
    assert hidden.status_code == 404
    assert hidden.content == missing.content  # the same answer as for no page at all
    assert b"breakers" not in hidden.content


@pytest.mark.parametrize("server", SERVERS)
def test_status_access_any_lets_every_client_read_it(
    server: Callable[..., AbstractContextManager[str]],
) -> None:
    """status_access="any" answers clients off loopback too."""
    with server(status_access="any") as url:
        assert httpx.get(f"{url}/resilience", headers=FAR_AWAY).status_code == 200


@pytest.mark.parametrize(
    ("server", "request_type"),
    [
        pytest.param(fastapi_behind_proxy, Request, id="fastapi"),
        pytest.param(flask_behind_proxy, flask.Request, id="flask"),
    ],
)
def test_status_access_callable_decides_with_the_frameworks_request(
    server: Callable[..., AbstractContextManager[str]], request_type: type
) -> None:
    """A callable gets the framework's request and decides; False answers 404."""
    seen: list[object] = []

    def ops_only(request: Any) -> bool:
        seen.append(request)
        return bool(request.headers.get("x-ops-token") == "s3cret")

    with server(status_access=ops_only) as url, httpx.Client(base_url=url) as client:
        assert client.get("/resilience").status_code == 404  # loopback alone is not enough
        allowed = client.get("/resilience", headers={**FAR_AWAY, "x-ops-token": "s3cret"})
        assert allowed.status_code == 200
    assert len(seen) == 2
    assert all(isinstance(request, request_type) for request in seen)


def require_token(x_ops_token: str | None = Header(default=None)) -> None:
    """A FastAPI dependency that guards every route of an app."""
    if x_ops_token != "s3cret":
        raise HTTPException(status_code=403, detail="forbidden")


def test_fastapi_global_dependencies_protect_the_status_path() -> None:
    """FastAPI(dependencies=[...]) authentication applies to the status path too."""
    app = FastAPI(dependencies=[Depends(require_token)])
    add_resilience(app)
    keep = CircuitBreaker(f"payments:https://pay.internal.corp:8443/{uuid.uuid4().hex[:6]}")
    with serve_asgi(app) as url, httpx.Client(base_url=url) as client:
        denied = client.get("/resilience")
        allowed = client.get("/resilience", headers={"x-ops-token": "s3cret"})
    assert denied.status_code == 403
    assert keep.name.encode() not in denied.content
    assert keep.name in [b["name"] for b in allowed.json()["breakers"]]


def test_middleware_added_before_add_resilience_protects_the_status_path() -> None:
    """An auth middleware added before add_resilience sits between it and the status route."""

    class DenyWithoutToken(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            if request.headers.get("x-ops-token") != "s3cret":
                return JSONResponse({"detail": "forbidden"}, status_code=403)
            return await call_next(request)

    app = FastAPI()
    app.add_middleware(DenyWithoutToken)
    add_resilience(app)
    with serve_asgi(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/resilience").status_code == 403
        assert client.get("/resilience", headers={"x-ops-token": "s3cret"}).status_code == 200


def test_the_status_route_is_left_out_of_the_openapi_schema() -> None:
    """The status route does not show up in the app's OpenAPI document."""
    app = FastAPI()
    add_resilience(app)
    assert "/resilience" not in app.openapi()["paths"]


async def test_used_directly_the_middleware_checks_access_and_passes_others_to_the_app() -> None:
    """ResilienceMiddleware in a middleware list answers loopback clients; others reach the app."""

    async def fallback(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the app's own page", status_code=404)

    app = Starlette(
        routes=[Route("/resilience", fallback)],
        middleware=[Middleware(ResilienceMiddleware)],
    )
    for client_address, expected in [
        (("127.0.0.1", 1), 200),
        (("::1", 1), 200),
        (("203.0.113.9", 1), 404),
    ]:
        transport = httpx.ASGITransport(app=app, client=client_address)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
            response = await client.get("/resilience")
        assert response.status_code == expected, client_address
        if expected == 404:
            assert response.text == "the app's own page"


@pytest.mark.parametrize("value", ["everyone", "", 3, None, str])
def test_invalid_status_access_fails_at_setup(value: object) -> None:
    """A status_access that is neither mode nor callable raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="status_access"):
        add_resilience(FastAPI(), status_access=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="status_access"):
        Resilience(status_access=value)  # type: ignore[arg-type]


# ---------------------------------------------------------------- what answering costs


@pytest.fixture
def slow_build(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[str]]]:
    """Make building the status payload wait for an event; record the building threads."""
    started = threading.Event()
    release = threading.Event()
    threads: list[str] = []
    real = _status.status_payload

    def payload() -> dict[str, list[dict[str, object]]]:
        threads.append(threading.current_thread().name)
        started.set()
        release.wait(10)
        return real()

    monkeypatch.setattr(_status, "status_payload", payload)
    yield release, threads
    release.set()


async def test_the_status_payload_is_built_off_the_event_loop(
    slow_build: tuple[threading.Event, list[str]],
) -> None:
    """While a status payload is being built, the app's other requests are answered."""
    release, threads = slow_build
    app = FastAPI()
    add_resilience(app)

    loop_threads: list[str] = []

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        loop_threads.append(threading.current_thread().name)
        return {"ok": True}

    with serve_asgi(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            status = asyncio.create_task(client.get("/resilience"))
            await asyncio.to_thread(lambda: wait_until(lambda: bool(threads)))
            pong = await client.get("/ping", timeout=5)  # the build is still waiting
            assert not status.done()
            release.set()
            assert (await status).status_code == 200
    assert pong.status_code == 200
    assert len(threads) == 1
    assert threads != loop_threads  # built in a worker thread, not the event loop's


async def test_concurrent_status_requests_share_one_build(
    slow_build: tuple[threading.Event, list[str]],
) -> None:
    """Eight status requests arriving during one build all get its result: one build."""
    release, threads = slow_build
    app = FastAPI()
    add_resilience(app)
    with serve_asgi(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            first = asyncio.create_task(client.get("/resilience"))
            await asyncio.to_thread(lambda: wait_until(lambda: bool(threads)))
            others = [asyncio.create_task(client.get("/resilience")) for _ in range(7)]
            await asyncio.sleep(0.2)  # let them arrive while the build waits
            release.set()
            answers = await asyncio.gather(first, *others)
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.content for a in answers}) == 1
    assert len(threads) == 1


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll *condition* (bounded)."""
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("condition not met in time")


def test_a_body_is_reused_in_proportion_to_its_cost() -> None:
    """A build that took t seconds is reused for STATUS_COST_SHARE * t, then rebuilt."""
    clock = FakeClock()
    builds: list[float] = []

    def build() -> bytes:
        builds.append(clock())
        clock.advance(0.5)  # a slow build: many breakers
        return f"{len(builds)}".encode()

    cache = StatusCache(build=build, clock=clock)
    assert cache.get() == b"1"
    clock.advance(0.5 * STATUS_COST_SHARE - 0.01)
    assert cache.get() == b"1"
    clock.advance(0.02)
    assert cache.get() == b"2"
    assert len(builds) == 2


def test_a_cheap_body_is_always_fresh() -> None:
    """A build that takes no time is never reused: small registries always answer fresh."""
    counter = iter(range(100))
    cache = StatusCache(build=lambda: str(next(counter)).encode(), clock=FakeClock())
    assert [cache.get() for _ in range(3)] == [b"0", b"1", b"2"]


def test_threads_share_one_build() -> None:
    """Threads asking while a build runs wait for it instead of building again."""
    release = threading.Event()
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        release.wait(10)
        return b"body"

    cache = StatusCache(build=build, clock=FakeClock())
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(cache.get) for _ in range(6)]
        wait_until(lambda: bool(builds))
        threading.Event().wait(0.1)  # the others arrive and wait
        release.set()
        bodies = [f.result(timeout=10) for f in futures]
    assert bodies == [b"body"] * 6
    assert len(builds) == 1


async def test_a_failed_build_reaches_its_waiters_and_the_next_call_retries() -> None:
    """A build that raises fails the requests waiting for it; the next request builds again."""
    outcomes: Iterator[bytes | Exception] = iter([RuntimeError("registry broke"), b"ok"])

    def build() -> bytes:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    cache = StatusCache(build=build, clock=FakeClock())
    with pytest.raises(RuntimeError, match="registry broke"):
        await cache.aget()
    assert await cache.aget() == b"ok"


def test_starlettes_test_client_counts_as_loopback() -> None:
    """TestClient calls in process (address "testclient"): it reads the status path."""
    from starlette.testclient import TestClient

    app = FastAPI()
    add_resilience(app)
    with TestClient(app) as client:
        assert client.get("/resilience").json().keys() == {"breakers", "upstreams"}
    with TestClient(app, client=("198.51.100.4", 5000)) as client:
        assert client.get("/resilience").status_code == 404


async def test_a_client_with_no_address_is_not_loopback() -> None:
    """A Unix-socket server reports no client: the default does not answer it."""
    middleware = ResilienceMiddleware(PlainTextResponse("the app", status_code=404))
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/resilience"}
    scope.update(headers=[], client=None)
    await middleware(scope, receive, send)
    assert sent[0]["status"] == 404
    assert sent[1]["body"] == b"the app"
