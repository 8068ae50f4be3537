"""The FastAPI/Starlette integration, against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from resilience import (
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    ConfigError,
    DeadlineExceeded,
    Policy,
    remaining,
)
from resilience.integrations.fastapi import ResilienceMiddleware, add_resilience
from tests.helpers import serve_asgi as serve

pytestmark = pytest.mark.network


def error_app(**options: Any) -> FastAPI:
    """An app whose routes raise each mapped error, sync and async."""
    app = FastAPI()
    add_resilience(app, **options)

    errors: dict[str, BaseException] = {
        "open": CircuitOpenError("payments", retry_after=2.2),
        "open-soon": CircuitOpenError("payments", retry_after=0.05),
        "forced": CircuitOpenError("payments", retry_after=None),
        "bulkhead": BulkheadFull("db"),
        "deadline": DeadlineExceeded("too slow"),
        "other": RuntimeError("boom"),
    }

    @app.get("/async/{kind}")
    async def async_raise(kind: str) -> None:
        raise errors[kind]

    @app.get("/sync/{kind}")
    def sync_raise(kind: str) -> None:
        raise errors[kind]

    @app.get("/remaining")
    async def async_remaining() -> dict[str, float | None]:
        return {"remaining": remaining()}

    @app.get("/sync-remaining")
    def sync_remaining() -> dict[str, float | None]:
        return {"remaining": remaining()}

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(10)
        return {"status": "finished"}

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """One server for the error-mapping and deadline tests (timeout=5 s)."""
    with serve(error_app(timeout=5.0)) as url:
        yield url


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_circuit_open_maps_to_503_with_retry_after_rounded_up(base_url: str, flavour: str) -> None:
    """CircuitOpenError becomes 503 with Retry-After = ceil(retry_after) and a JSON body."""
    response = httpx.get(f"{base_url}/{flavour}/open")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "circuit_open"
    assert isinstance(body["detail"], str)
    assert "payments" not in body["detail"]  # internal names stay internal


def test_retry_after_is_at_least_one_second(base_url: str) -> None:
    """A breaker about to half-open still asks for a whole second."""
    response = httpx.get(f"{base_url}/async/open-soon")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_forced_open_leaves_retry_after_out(base_url: str) -> None:
    """A forced-open breaker has no known end, so no Retry-After is sent."""
    response = httpx.get(f"{base_url}/sync/forced")
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    assert response.json()["error"] == "circuit_open"


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_bulkhead_full_maps_to_503(base_url: str, flavour: str) -> None:
    """BulkheadFull becomes 503 with a JSON body."""
    response = httpx.get(f"{base_url}/{flavour}/bulkhead")
    assert response.status_code == 503
    assert response.json()["error"] == "bulkhead_full"


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_deadline_exceeded_maps_to_504(base_url: str, flavour: str) -> None:
    """DeadlineExceeded becomes 504 with a JSON body."""
    response = httpx.get(f"{base_url}/{flavour}/deadline")
    assert response.status_code == 504
    assert response.json() == {
        "error": "deadline_exceeded",
        "detail": response.json()["detail"],
    }


def test_other_errors_are_left_to_the_framework(base_url: str) -> None:
    """An exception that is not ours still becomes the framework's plain 500."""
    response = httpx.get(f"{base_url}/async/other")
    assert response.status_code == 500


def test_handler_runs_inside_the_server_timeout(base_url: str) -> None:
    """With no inbound header the handler sees the server's timeout as its deadline."""
    left = httpx.get(f"{base_url}/remaining").json()["remaining"]
    assert 4.0 < left <= 5.0


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"x-envoy-expected-rq-timeout-ms": "800"}, 0.3, 0.8),
        ({"grpc-timeout": "700m"}, 0.2, 0.7),
        ({"grpc-timeout": "1S", "x-envoy-expected-rq-timeout-ms": "600"}, 0.1, 0.6),
        ({"x-envoy-expected-rq-timeout-ms": "60000"}, 4.0, 5.0),  # clamped to timeout
        ({"x-envoy-expected-rq-timeout-ms": "soon"}, 4.0, 5.0),  # malformed: ignored
        ({"grpc-timeout": "-5S"}, 4.0, 5.0),
        ({"grpc-timeout": "5s"}, 4.0, 5.0),  # lower-case s is not a unit
        ({"x-envoy-expected-rq-timeout-ms": "0"}, 4.0, 5.0),
    ],
)
def test_inbound_deadline_header_shortens_the_deadline(
    base_url: str, headers: dict[str, str], low: float, high: float
) -> None:
    """A valid inbound deadline header shortens the deadline; a bad one is ignored."""
    response = httpx.get(f"{base_url}/remaining", headers=headers)
    assert response.status_code == 200
    assert low < response.json()["remaining"] <= high


def test_sync_handler_sees_the_deadline_through_contextvars(base_url: str) -> None:
    """A sync endpoint, run in a worker thread, inherits the request's deadline."""
    response = httpx.get(
        f"{base_url}/sync-remaining", headers={"x-envoy-expected-rq-timeout-ms": "900"}
    )
    assert 0.3 < response.json()["remaining"] <= 0.9


def test_async_handler_is_cancelled_at_the_inbound_deadline(base_url: str) -> None:
    """A slow async handler is cancelled when the caller's budget runs out: 504 at once."""
    started = time.monotonic()
    response = httpx.get(f"{base_url}/slow", headers={"grpc-timeout": "200m"})
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"] == "deadline_exceeded"
    assert elapsed < 5.0  # the handler sleeps 10 s


def test_no_timeout_and_no_header_means_no_deadline() -> None:
    """Without timeout= or an inbound header the handler runs without a deadline."""
    with serve(error_app()) as url:
        assert httpx.get(f"{url}/remaining").json() == {"remaining": None}
        left = httpx.get(f"{url}/remaining", headers={"grpc-timeout": "2S"}).json()["remaining"]
        assert 1.0 < left <= 2.0


def test_timeout_accepts_a_timedelta() -> None:
    """timeout= takes a timedelta as well as seconds."""
    with serve(error_app(timeout=timedelta(seconds=3))) as url:
        assert 2.0 < httpx.get(f"{url}/remaining").json()["remaining"] <= 3.0


class Gate:
    """Holds requests inside the handler until released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.entered = 0

    def enter(self) -> None:
        with self.lock:
            self.running += 1
            self.entered += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


def gated_app(gate: Gate, **options: Any) -> FastAPI:
    """An app whose /work endpoints wait at the gate."""
    app = FastAPI()
    add_resilience(app, **options)

    @app.get("/work")
    async def work() -> dict[str, str]:
        gate.enter()
        try:
            # The gate is a threading.Event: the test opens it from another thread and loop.
            while not gate.release.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        finally:
            gate.leave()
        return {"status": "done"}

    @app.get("/sync-work")
    def sync_work() -> dict[str, str]:
        gate.enter()
        try:
            gate.release.wait(30)
        finally:
            gate.leave()
        return {"status": "done"}

    return app


def wait_for(condition: Any, timeout: float = 15.0) -> None:
    """Poll *condition* until true (real servers: generous margins)."""
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "condition not met in time"
        time.sleep(0.01)


@pytest.mark.parametrize("path", ["/work", "/sync-work"])
async def test_load_shedding_runs_exactly_max_concurrent(path: str) -> None:
    """Under 20 concurrent requests exactly max_concurrent run; the rest get 503 at once."""
    gate = Gate()
    with serve(gated_app(gate, max_concurrent=4)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            tasks = [asyncio.create_task(client.get(path)) for _ in range(20)]
            shed: list[httpx.Response] = []
            give_up = time.monotonic() + 15
            while len(shed) < 16:
                assert time.monotonic() < give_up, "the excess requests were not shed"
                shed = [t.result() for t in tasks if t.done()]
                await asyncio.sleep(0.01)
            # the shed answers came back while 4 handlers were still held at the gate
            assert gate.running == 4
            gate.release.set()
            responses = await asyncio.gather(*tasks)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 4 + [503] * 16
    assert gate.peak == 4
    assert gate.entered == 4
    for response in shed:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"] == "overloaded"


async def test_slots_are_given_back_after_each_request() -> None:
    """Finished requests free their slot: sequential waves all succeed."""
    gate = Gate()
    gate.release.set()
    with serve(gated_app(gate, max_concurrent=2)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for _ in range(5):
                first, second = await asyncio.gather(client.get("/work"), client.get("/work"))
                assert (first.status_code, second.status_code) == (200, 200)


async def test_status_endpoint_is_shed_like_any_request() -> None:
    """The status path takes a slot like any request: pollers cannot crowd out the app."""
    gate = Gate()
    with serve(gated_app(gate, max_concurrent=1)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            held = asyncio.create_task(client.get("/work"))
            await asyncio.to_thread(wait_for, lambda: gate.running == 1)
            assert (await client.get("/work")).status_code == 503
            shed = await client.get("/resilience")
            assert (shed.status_code, shed.json()["error"]) == (503, "overloaded")
            gate.release.set()
            assert (await held).status_code == 200
            assert (await client.get("/resilience")).status_code == 200


def test_status_endpoint_lists_every_breaker_with_state_and_numbers() -> None:
    """GET /resilience lists each registered breaker with its state, counts and rates."""
    suffix = uuid.uuid4().hex[:8]
    healthy = CircuitBreaker(f"status-healthy-{suffix}")
    broken = CircuitBreaker(f"status-broken-{suffix}")
    healthy.call(lambda: None)
    broken.force_open()
    with serve(error_app()) as url:
        response = httpx.get(f"{url}/resilience")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    entries = {entry["name"]: entry for entry in response.json()["breakers"]}
    assert entries[healthy.name]["state"] == "closed"
    assert entries[healthy.name]["calls"] == 1
    assert entries[broken.name]["state"] == "forced_open"
    for field in ("calls", "failures", "slow_calls", "failure_rate", "slow_call_rate"):
        assert field in entries[healthy.name]


def test_status_path_can_be_moved_or_turned_off() -> None:
    """status_path names the endpoint; None turns it off (the app answers 404)."""
    with serve(error_app(status_path="/internal/breakers")) as url:
        assert httpx.get(f"{url}/internal/breakers").json().keys() == {"breakers", "upstreams"}
        assert httpx.get(f"{url}/resilience").status_code == 404
    with serve(error_app(status_path=None)) as url:
        assert httpx.get(f"{url}/resilience").status_code == 404


def test_status_endpoint_only_answers_get_and_head(base_url: str) -> None:
    """Other methods on the status path get 405 with an Allow header."""
    response = httpx.post(f"{base_url}/resilience")
    assert response.status_code == 405
    assert sorted(response.headers["allow"].split(", ")) == ["GET", "HEAD"]
    head = httpx.head(f"{base_url}/resilience")
    assert head.status_code == 200
    assert head.content == b""


def test_contextvars_set_by_outer_asgi_middleware_reach_the_handler() -> None:
    """Being pure ASGI, the middleware passes contextvars through to async and sync handlers."""
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="unset")

    class TenantMiddleware:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            tenant.set("acme")
            await self.app(scope, receive, send)

    app = FastAPI()

    @app.get("/async")
    async def read_async() -> dict[str, str]:
        return {"tenant": tenant.get()}

    @app.get("/sync")
    def read_sync() -> dict[str, str]:
        return {"tenant": tenant.get()}

    add_resilience(app, timeout=5.0)
    app.add_middleware(TenantMiddleware)  # outermost
    with serve(app) as url:
        assert httpx.get(f"{url}/async").json() == {"tenant": "acme"}
        assert httpx.get(f"{url}/sync").json() == {"tenant": "acme"}


def test_works_on_a_plain_starlette_app() -> None:
    """The middleware needs nothing FastAPI-specific: a Starlette app gets the same mapping."""

    async def fail(request: Request) -> JSONResponse:
        raise CircuitOpenError("inventory", retry_after=4.0)

    async def left(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{remaining():.3f}")

    app = Starlette(
        routes=[Route("/fail", fail), Route("/left", left)],
        middleware=[Middleware(ResilienceMiddleware, timeout=2.0)],
    )
    with serve(app) as url:
        response = httpx.get(f"{url}/fail")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "4"
        assert 1.0 < float(httpx.get(f"{url}/left").text) <= 2.0


async def test_non_http_scopes_pass_through_untouched() -> None:
    """Lifespan (and websocket) scopes go straight to the app."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    middleware = ResilienceMiddleware(app, max_concurrent=1, timeout=1.0)

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        raise AssertionError("nothing should be sent")

    await middleware({"type": "lifespan"}, receive, send)
    await middleware({"type": "websocket", "path": "/resilience"}, receive, send)
    assert seen == ["lifespan", "websocket"]


async def test_error_after_the_response_started_is_not_masked() -> None:
    """Once the status line is sent, a mapped error propagates (the connection is aborted)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise BulkheadFull("db")

    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    middleware = ResilienceMiddleware(app)
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    with pytest.raises(BulkheadFull):
        await middleware(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_concurrent", 0),
        ("max_concurrent", 2.5),
        ("timeout", -1.0),
        ("timeout", "5"),
        ("status_path", "resilience"),
        ("clock", 3),
    ],
)
def test_invalid_options_fail_at_setup(option: str, value: object) -> None:
    """A bad setting raises ConfigError naming it, when add_resilience is called."""
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigError, match=option):
        add_resilience(FastAPI(), **options)


@pytest.mark.parametrize("missing", ["fastapi", "starlette"])
def test_missing_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """Without FastAPI or Starlette, importing the module says which extra to install."""
    monkeypatch.setitem(sys.modules, missing, None)
    monkeypatch.delitem(sys.modules, "resilience.integrations.fastapi")
    with pytest.raises(ImportError, match=r"pip install 'resilience-mesh\[fastapi\]'"):
        importlib.import_module("resilience.integrations.fastapi")


def test_a_policy_applies_per_route_under_the_route_decorator() -> None:
    """A Policy put under @app.get protects that route; its errors become 503 or 504."""
    suffix = uuid.uuid4().hex[:8]
    payments = Policy(
        breaker=CircuitBreaker(f"route-{suffix}", consecutive_failures=1, open_duration=30.0),
        timeout=0.2,
    )
    calls: list[int] = []
    app = FastAPI()
    add_resilience(app)

    @app.get("/charge")
    @payments
    async def charge(cents: int) -> dict[str, int]:
        calls.append(cents)
        if cents < 0:
            raise RuntimeError("card declined")
        if cents == 0:
            await asyncio.sleep(10)
        return {"charged": cents}

    @app.get("/unprotected")
    async def unprotected() -> dict[str, str]:
        return {"status": "ok"}

    with serve(app) as url:
        assert httpx.get(f"{url}/charge", params={"cents": 250}).json() == {"charged": 250}
        assert httpx.get(f"{url}/charge").status_code == 422  # the signature still drives FastAPI
        assert httpx.get(f"{url}/charge", params={"cents": 0}).status_code == 504
        assert httpx.get(f"{url}/charge", params={"cents": -1}).status_code == 500
        rejected = httpx.get(f"{url}/charge", params={"cents": 5})
        assert rejected.status_code == 503
        assert rejected.headers["retry-after"] == "30"
        assert httpx.get(f"{url}/unprotected").status_code == 200
    assert calls == [250, 0, -1]


def test_add_resilience_twice_is_refused() -> None:
    """A second add_resilience on one app raises instead of stacking two limits."""
    app = FastAPI()
    add_resilience(app, max_concurrent=10)
    with pytest.raises(RuntimeError, match="already"):
        add_resilience(app, max_concurrent=5)


def test_app_exception_handlers_for_our_errors_win() -> None:
    """An app's own handler for one of our errors answers; a catch-all one does not hide ours."""
    app = FastAPI()
    add_resilience(app)

    async def busy(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("busy, try later", status_code=429)

    async def everything(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("oops", status_code=500)

    app.add_exception_handler(BulkheadFull, busy)
    app.add_exception_handler(Exception, everything)

    @app.get("/busy")
    async def raise_busy() -> None:
        raise BulkheadFull("db")

    @app.get("/open")
    async def raise_open() -> None:
        raise CircuitOpenError("payments", retry_after=1.0)

    with serve(app) as url:
        busy_response = httpx.get(f"{url}/busy")
        open_response = httpx.get(f"{url}/open")
    assert (busy_response.status_code, busy_response.text) == (429, "busy, try later")
    assert open_response.status_code == 503
    assert open_response.headers["retry-after"] == "1"


def test_sync_handler_past_the_deadline_still_answers_504_on_time() -> None:
    """A blocking def handler cannot be stopped, but the client gets its 504 at the deadline."""
    app = FastAPI()
    add_resilience(app, timeout=0.3)
    finished = threading.Event()

    @app.get("/block")
    def block() -> dict[str, str]:
        time.sleep(1.5)
        finished.set()
        return {"status": "late"}

    with serve(app) as url:
        started = time.monotonic()
        response = httpx.get(f"{url}/block")
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        assert elapsed < 1.4
        assert finished.wait(10)  # the thread ran on to its end


def test_status_path_is_relative_to_a_mounted_app() -> None:
    """Mounted under a prefix, the status endpoint answers at prefix + status_path."""
    inner = FastAPI()
    add_resilience(inner)
    outer = Starlette()
    outer.mount("/api", inner)
    with serve(outer) as url:
        assert httpx.get(f"{url}/api/resilience").json().keys() == {"breakers", "upstreams"}
        assert httpx.get(f"{url}/resilience").status_code == 404


# ---------------------------------------------------------------- errors others wrapped


class SdkError(Exception):
    """What a vendor SDK raises around the error it caught."""


async def upstream_answer(request: Request) -> PlainTextResponse:
    """A real upstream that answers the status named in the path."""
    return PlainTextResponse("upstream says no", status_code=int(request.path_params["code"]))


UPSTREAM = Starlette(routes=[Route("/status/{code}", upstream_answer)])


def test_our_errors_wrapped_by_an_sdk_get_our_answers() -> None:
    """An SDK's error raised from ours (or while handling it) is answered as ours."""
    app = FastAPI()
    add_resilience(app)
    inner: dict[str, Exception] = {
        "open": CircuitOpenError("payments", retry_after=2.2),
        "bulkhead": BulkheadFull("db"),
        "deadline": DeadlineExceeded("late"),
    }

    @app.get("/cause/{kind}")
    async def cause(kind: str) -> None:
        try:
            raise inner[kind]
        except Exception as exc:
            raise SdkError("the SDK failed") from exc

    @app.get("/context/{kind}")
    def context(kind: str) -> None:
        try:
            raise inner[kind]
        except Exception:
            raise SdkError("the SDK failed")  # noqa: B904  # a context, as careless SDKs do

    with serve(app) as url, httpx.Client(base_url=url) as client:
        for how in ("cause", "context"):
            opened = client.get(f"/{how}/open")
            assert (opened.status_code, opened.headers["retry-after"]) == (503, "3")
            assert opened.json()["error"] == "circuit_open"
            assert client.get(f"/{how}/bulkhead").json()["error"] == "bulkhead_full"
            assert client.get(f"/{how}/deadline").status_code == 504


def test_an_escaped_upstream_5xx_becomes_a_502_json_answer() -> None:
    """raise_for_status() on an upstream 503, escaping the handler, is a 502 with no details."""
    app = FastAPI()
    add_resilience(app)

    @app.get("/proxy/{code}")
    async def proxy(code: int) -> str:
        async with httpx.AsyncClient(base_url=upstream_url) as client:
            response = await client.get(f"/status/{code}", params={"api_key": "sk_live_9"})
            response.raise_for_status()
            return response.text

    @app.get("/wrapped")
    def wrapped() -> None:
        try:
            httpx.get(f"{upstream_url}/status/500").raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise SdkError("the SDK failed") from exc

    @app.exception_handler(SdkError)
    async def sdk_error(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("the app's own answer", status_code=500)

    with serve(UPSTREAM) as upstream_url, serve(app) as url:
        # One connection each: after an unhandled error uvicorn drops the connection.
        bad = httpx.get(f"{url}/proxy/503")
        missing = httpx.get(f"{url}/proxy/404")
        own = httpx.get(f"{url}/wrapped")
    assert bad.status_code == 502
    assert bad.headers["content-type"] == "application/json"
    assert bad.json()["error"] == "bad_gateway"
    assert "503" in bad.json()["detail"]
    for leak in ("sk_live_9", "127.0.0.1", "Traceback", "upstream says no"):
        assert leak not in bad.text
    assert missing.status_code == 500  # an upstream 4xx is the app's own bug
    assert (own.status_code, own.text) == (500, "the app's own answer")  # its handler wins
