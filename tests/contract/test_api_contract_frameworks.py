"""API.md "Framework integrations": the same options and answers for FastAPI and Flask.

In-process clients keep this contract fast; tests/web/test_fastapi.py and tests/web/test_flask.py
check the same behaviour against real uvicorn and werkzeug servers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from flask import Flask
from flask import request as flask_request

from resilience import (
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    DeadlineExceeded,
    remaining,
)
from resilience.integrations.fastapi import add_resilience
from resilience.integrations.flask import Resilience

Get = Callable[..., tuple[int, dict[str, str], Any]]


def raiser(kind: str) -> Exception:
    if kind == "open":
        return CircuitOpenError("contract-fw", retry_after=2.2)
    if kind == "forced":
        return CircuitOpenError("contract-fw", retry_after=None)
    if kind == "tiny":
        return CircuitOpenError("contract-fw", retry_after=0.01)
    if kind == "bulkhead":
        return BulkheadFull("pool")
    return DeadlineExceeded("too slow")


def fastapi_app(**options: Any) -> Get:
    app = FastAPI()

    @app.get("/raise/{kind}")
    async def raise_(kind: str) -> None:
        raise raiser(kind)

    @app.get("/remaining")
    async def left() -> dict[str, float | None]:
        return {"remaining": remaining()}

    add_resilience(app, **options)

    async def fetch(path: str, headers: dict[str, str] | None) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
            return await client.get(path, headers=headers)

    def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        r = asyncio.run(fetch(path, headers))
        is_json = r.headers.get("content-type", "").startswith("application/json")
        return r.status_code, dict(r.headers), r.json() if is_json else None

    return get


def flask_app(**options: Any) -> Get:
    app = Flask(__name__)

    @app.get("/raise/<kind>")
    def raise_(kind: str) -> str:
        raise raiser(kind)

    @app.get("/remaining")
    def left() -> dict[str, float | None]:
        return {"remaining": remaining()}

    if options.pop("_init_app", False):
        Resilience(**options).init_app(app)
    else:
        Resilience(app, **options)
    client = app.test_client()

    def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        r = client.get(path, headers=headers)
        return r.status_code, dict(r.headers), r.get_json(silent=True)

    return get


FRAMEWORKS = [pytest.param(fastapi_app, id="fastapi"), pytest.param(flask_app, id="flask")]


def header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


@pytest.mark.parametrize("make", FRAMEWORKS)
def test_circuit_open_is_503_with_retry_after_rounded_up(make: Callable[..., Get]) -> None:
    """CircuitOpenError -> 503 with Retry-After = ceil(retry_after), JSON error body."""
    status, headers, body = make()("/raise/open")
    assert status == 503
    assert header(headers, "Retry-After") == str(math.ceil(2.2))
    assert isinstance(body["error"], str)
    assert body["detail"]
    assert "contract-fw" not in body["detail"]  # internal names stay off client answers


@pytest.mark.parametrize("make", FRAMEWORKS)
def test_retry_after_is_at_least_one(make: Callable[..., Get]) -> None:
    """Retry-After is at least 1 second."""
    _, headers, _ = make()("/raise/tiny")
    assert header(headers, "Retry-After") == "1"


@pytest.mark.parametrize("make", FRAMEWORKS)
def test_forced_open_leaves_retry_after_out(make: Callable[..., Get]) -> None:
    """When forced open (retry_after None) the header is left out."""
    status, headers, _ = make()("/raise/forced")
    assert status == 503
    assert header(headers, "Retry-After") is None


@pytest.mark.parametrize("make", FRAMEWORKS)
def test_bulkhead_full_is_503_and_deadline_is_504(make: Callable[..., Get]) -> None:
    """BulkheadFull -> 503; DeadlineExceeded -> 504; both with {"error", "detail"}."""
    get = make()
    status, _, body = get("/raise/bulkhead")
    assert status == 503
    assert set(body) >= {"error", "detail"}
    status, _, body = get("/raise/deadline")
    assert status == 504
    assert set(body) >= {"error", "detail"}


@pytest.mark.parametrize("make", FRAMEWORKS)
def test_status_endpoint_lists_breakers(make: Callable[..., Get]) -> None:
    """GET /resilience returns {"breakers": [{"name", "state", ...}]}."""
    keep = CircuitBreaker("contract-status")
    status, _, body = make()("/resilience")
    assert status == 200
    entries = {b["name"]: b for b in body["breakers"]}
    assert entries["contract-status"]["state"] == "closed"
    assert keep.name == "contract-status"


@pytest.mark.parametrize("make", FRAMEWORKS)
def test_status_path_none_turns_it_off(make: Callable[..., Get]) -> None:
    """status_path=None: no status endpoint."""
    status, _, _ = make(status_path=None)("/resilience")
    assert status == 404


@pytest.mark.parametrize("make", FRAMEWORKS)
def test_timeout_runs_handler_inside_a_deadline(make: Callable[..., Get]) -> None:
    """timeout=: the handler runs inside deadline(...)."""
    _, _, body = make(timeout=5.0)("/remaining")
    assert 0 < body["remaining"] <= 5.0
    _, _, body = make()("/remaining")
    assert body["remaining"] is None


@pytest.mark.parametrize("make", FRAMEWORKS)
@pytest.mark.parametrize(
    ("name", "value", "limit"),
    [("x-envoy-expected-rq-timeout-ms", "250", 0.25), ("grpc-timeout", "250m", 0.25)],
)
def test_inbound_deadline_header_shortens_it(
    make: Callable[..., Get], name: str, value: str, limit: float
) -> None:
    """An inbound deadline header shortens the request's deadline."""
    _, _, body = make(timeout=5.0)("/remaining", headers={name: value})
    assert 0 < body["remaining"] <= limit


@pytest.mark.parametrize("make", FRAMEWORKS)
@pytest.mark.parametrize("value", ["soon", "-5", "", "12parsecs"])
def test_malformed_deadline_header_is_ignored(make: Callable[..., Get], value: str) -> None:
    """A malformed header is ignored, never an error."""
    status, _, body = make(timeout=5.0)(
        "/remaining", headers={"x-envoy-expected-rq-timeout-ms": value, "grpc-timeout": value}
    )
    assert status == 200
    assert 0 < body["remaining"] <= 5.0


def test_flask_init_app_form() -> None:
    """Resilience().init_app(app) works like Resilience(app)."""
    status, _, _ = flask_app(_init_app=True)("/raise/bulkhead")
    assert status == 503


# ---------------------------------------------------------------- wave 2


class VendorError(Exception):
    """An SDK's own error, raised around ours or around an upstream's 5xx."""


def upstream_503() -> httpx.HTTPStatusError:
    """httpx's error for an upstream that answered 503."""
    request = httpx.Request("GET", "https://billing.internal/v1?api_key=sk_live_1")
    response = httpx.Response(503, request=request)
    return httpx.HTTPStatusError("503 from billing", request=request, response=response)


def wave_two_error(kind: str) -> Exception:
    """The error a wave-two route raises: ours wrapped by an SDK, or an upstream 5xx."""
    inner: Exception = upstream_503() if kind == "upstream" else raiser(kind)
    try:
        raise VendorError("the SDK failed") from inner
    except VendorError as outer:
        return outer


Call = Callable[..., tuple[int, dict[str, str], Any]]


def fastapi_wave_two(**options: Any) -> Call:
    """A FastAPI app for wave 2, called in process; *client* sets the peer's address."""
    app = FastAPI()

    @app.get("/wrapped/{kind}")
    async def wrapped(kind: str) -> None:
        raise wave_two_error(kind)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    add_resilience(app, **options)

    async def fetch(method: str, path: str, client: str, body: bytes) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
            return await http.request(method, path, content=body or None)

    def call(
        path: str, *, method: str = "GET", client: str = "127.0.0.1", body: bytes = b""
    ) -> tuple[int, dict[str, str], Any]:
        r = asyncio.run(fetch(method, path, client, body))
        is_json = r.headers.get("content-type", "").startswith("application/json")
        return r.status_code, dict(r.headers), r.json() if is_json else None

    return call


def flask_wave_two(**options: Any) -> Call:
    """The same app in Flask, called through its test client."""
    app = Flask(f"{__name__}-wave-two")

    @app.get("/wrapped/<kind>")
    def wrapped(kind: str) -> str:
        raise wave_two_error(kind)

    @app.post("/echo")
    def echo() -> dict[str, int]:
        return {"bytes": len(flask_request.get_data())}

    Resilience(app, **options)
    test_client = app.test_client()

    def call(
        path: str, *, method: str = "GET", client: str = "127.0.0.1", body: bytes = b""
    ) -> tuple[int, dict[str, str], Any]:
        r = test_client.open(path, method=method, data=body, environ_base={"REMOTE_ADDR": client})
        return r.status_code, dict(r.headers), r.get_json(silent=True)

    return call


WAVE_TWO = [
    pytest.param(fastapi_wave_two, id="fastapi"),
    pytest.param(flask_wave_two, id="flask"),
]


@pytest.mark.parametrize("make", WAVE_TWO)
@pytest.mark.parametrize("client", ["127.0.0.1", "127.5.6.7", "::1"])
def test_status_access_loopback_lets_loopback_clients_read(
    make: Callable[..., Call], client: str
) -> None:
    """status_access="loopback" (default): 127.0.0.0/8 and ::1 read the status path."""
    status, _, body = make()("/resilience", client=client)
    assert status == 200
    assert "breakers" in body


@pytest.mark.parametrize("make", WAVE_TWO)
def test_status_access_loopback_hides_it_from_others(make: Callable[..., Call]) -> None:
    """Others get 404; "any" and a callable request -> bool decide otherwise."""
    assert make()("/resilience", client="198.51.100.4")[0] == 404
    assert make(status_access="any")("/resilience", client="198.51.100.4")[0] == 200
    assert make(status_access=lambda request: False)("/resilience")[0] == 404
    assert make(status_access=lambda request: True)("/resilience", client="10.1.2.3")[0] == 200


@pytest.mark.parametrize("make", WAVE_TWO)
@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [
        ("open", 503, "circuit_open"),
        ("bulkhead", 503, "bulkhead_full"),
        ("deadline", 504, "deadline_exceeded"),
        ("upstream", 502, "bad_gateway"),
    ],
)
def test_errors_are_found_anywhere_in_the_chain(
    make: Callable[..., Call], kind: str, status: int, error: str
) -> None:
    """Our errors wrapped by an SDK get our answers; an upstream 5xx gets 502 and JSON."""
    got, headers, body = make()(f"/wrapped/{kind}")
    assert got == status
    assert body["error"] == error
    assert set(body) == {"error", "detail"}
    assert "sk_live_1" not in body["detail"]
    if kind == "open":
        assert header(headers, "Retry-After") == "3"


@pytest.mark.parametrize("make", WAVE_TWO)
@pytest.mark.parametrize("size", [0, 10, 300_000])
def test_bodies_reach_the_handler_whole_with_load_shedding_on(
    make: Callable[..., Call], size: int
) -> None:
    """With max_concurrent set, bodies (buffered or larger than the buffer) arrive intact."""
    status, _, body = make(max_concurrent=2)("/echo", method="POST", body=b"z" * size)
    assert (status, body) == (200, {"bytes": size})
