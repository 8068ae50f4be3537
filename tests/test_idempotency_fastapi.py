"""Idempotency-Key on a FastAPI/Starlette app, against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from resilience import CircuitOpenError, ConfigError
from resilience.idempotency import Idempotency
from resilience.integrations.fastapi import ResilienceMiddleware, add_resilience
from resilience.stores import MemoryStore, RedisStore
from tests.helpers import REDIS_PORT, TcpProxy, serve_asgi
from tests.helpers_idempotency import redis_prefix, redis_up

pytestmark = pytest.mark.network


class Shop:
    """A FastAPI app whose handlers count their effects, with a gate to hold one open."""

    def __init__(self, keys: Idempotency) -> None:
        self.effects: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        app = FastAPI()
        add_resilience(app, idempotency=keys)
        self.app = app

        @app.post("/orders")
        async def create(request: Request) -> Response:
            body = await request.body()
            self.effects.append(body.decode())
            self.entered.set()
            await asyncio.to_thread(self.gate.wait, 10)
            return JSONResponse(
                {"order": len(self.effects)},
                status_code=201,
                headers={"location": f"/orders/{len(self.effects)}", "set-cookie": "s=1"},
            )

        @app.post("/orders/{order_id}/items")
        def add_item(order_id: int, request: Request) -> dict[str, int]:
            self.effects.append(f"item-{order_id}")
            return {"items": len(self.effects)}

        @app.post("/payments")
        async def pay() -> dict[str, int]:
            self.effects.append("pay")
            return {"paid": len(self.effects)}

        @app.put("/orders")
        async def replace() -> dict[str, int]:
            self.effects.append("put")
            return {"n": len(self.effects)}

        @app.post("/crash")
        async def crash() -> None:
            self.effects.append("crash")
            if len(self.effects) == 1:
                raise RuntimeError("the first one fails")

        @app.post("/unavailable")
        async def unavailable() -> Response:
            self.effects.append("503")
            return JSONResponse({"later": True}, status_code=503)

        @app.post("/open")
        async def open_circuit() -> None:
            self.effects.append("open")
            raise CircuitOpenError("payments", retry_after=2.0)

        @app.post("/big")
        async def big() -> Response:
            self.effects.append("big")
            return Response(b"x" * 2048, media_type="application/octet-stream")

        @app.post("/stream")
        async def stream() -> StreamingResponse:
            self.effects.append("stream")

            async def parts() -> AsyncIterator[bytes]:
                for part in (b"one,", b"two,", b"three"):
                    yield part

            return StreamingResponse(parts(), media_type="text/csv")


@pytest.fixture
def keys() -> Idempotency:
    """Settings on a fresh MemoryStore, with a small max_body."""
    return Idempotency(store=MemoryStore(), max_body=1024, lock_timeout=30)


@pytest.fixture
def shop(keys: Idempotency) -> Iterator[tuple[Shop, httpx.Client]]:
    """The shop app on a real uvicorn, and a client for it."""
    app = Shop(keys)
    with serve_asgi(app.app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield app, client


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def test_a_repeat_gets_the_first_response_replayed(shop: tuple[Shop, httpx.Client]) -> None:
    """Same key, same request: the handler runs once; the repeat replays status, body, headers."""
    app, client = shop
    headers = _key()
    first = client.post("/orders", content=b'{"sku": 1}', headers=headers)
    again = client.post("/orders", content=b'{"sku": 1}', headers=headers)
    assert app.effects == ['{"sku": 1}']
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content == b'{"order":1}'
    assert again.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert again.headers["location"] == "/orders/1"
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert "set-cookie" not in again.headers  # not a content header: not part of the result


def test_same_key_with_another_body_or_path_is_422(shop: tuple[Shop, httpx.Client]) -> None:
    """A key reused for a different body, or another path of the same route, is 422."""
    app, client = shop
    headers = _key()
    assert client.post("/orders", content=b"a", headers=headers).status_code == 201
    mismatch = client.post("/orders", content=b"b", headers=headers)
    assert mismatch.status_code == 422
    assert mismatch.json()["error"] == "idempotency_key_reused"
    item = _key()
    assert client.post("/orders/1/items", headers=item).status_code == 200
    assert client.post("/orders/2/items", headers=item).status_code == 422  # same template
    assert app.effects == ["a", "item-1"]


def test_keys_are_scoped_per_route(shop: tuple[Shop, httpx.Client]) -> None:
    """One key on two routes is two keys: both run."""
    app, client = shop
    headers = _key()
    assert client.post("/orders", content=b"a", headers=headers).status_code == 201
    assert client.post("/payments", headers=headers).status_code == 200
    assert app.effects == ["a", "pay"]


def test_same_key_while_running_is_409_with_retry_after(shop: tuple[Shop, httpx.Client]) -> None:
    """While the first request runs, a repeat gets 409 and Retry-After; later, the replay."""
    app, client = shop
    headers = _key()
    app.gate.clear()
    answers: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: answers.append(client.post("/orders", content=b"x", headers=headers))
    )
    first.start()
    assert app.entered.wait(10)
    busy = client.post("/orders", content=b"x", headers=headers)
    assert busy.status_code == 409
    assert 1 <= int(busy.headers["retry-after"]) <= 30
    other = client.post("/orders", content=b"y", headers=headers)
    assert other.status_code == 422  # a different request is 422 even while running
    app.gate.set()
    first.join(10)
    assert answers[0].status_code == 201
    replay = client.post("/orders", content=b"x", headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert app.effects == ["x"]


def test_a_crashed_handler_frees_the_key(shop: tuple[Shop, httpx.Client]) -> None:
    """An exception is not stored: the key is released and the retry runs."""
    app, client = shop
    headers = _key()
    # uvicorn drops the connection after an unhandled error: do not reuse it.
    assert client.post("/crash", headers={**headers, "connection": "close"}).status_code == 500
    assert client.post("/crash", headers=headers).status_code == 200
    assert app.effects == ["crash", "crash"]


def test_server_errors_are_not_stored(shop: tuple[Shop, httpx.Client]) -> None:
    """A 5xx answer (returned, or mapped from CircuitOpenError) releases the key."""
    app, client = shop
    for path in ("/unavailable", "/open"):
        headers = _key()
        assert client.post(path, headers=headers).status_code == 503
        assert client.post(path, headers=headers).status_code == 503
    assert app.effects == ["503", "503", "open", "open"]


def test_a_body_over_max_body_is_not_stored(shop: tuple[Shop, httpx.Client]) -> None:
    """A response larger than max_body goes out whole but is not kept: a repeat runs again."""
    app, client = shop
    headers = _key()
    assert len(client.post("/big", headers=headers).content) == 2048
    assert len(client.post("/big", headers=headers).content) == 2048
    assert app.effects == ["big", "big"]


def test_a_streamed_response_is_stored_whole(shop: tuple[Shop, httpx.Client]) -> None:
    """A streamed body is recorded as it goes out and replayed in one piece."""
    app, client = shop
    headers = _key()
    assert client.post("/stream", headers=headers).content == b"one,two,three"
    replay = client.post("/stream", headers=headers)
    assert replay.content == b"one,two,three"
    assert replay.headers["content-type"].startswith("text/csv")
    assert app.effects == ["stream"]


def test_other_methods_and_unkeyed_requests_pass(shop: tuple[Shop, httpx.Client]) -> None:
    """PUT (not in methods) and a POST without a key run every time."""
    app, client = shop
    headers = _key()
    client.put("/orders", headers=headers)
    client.put("/orders", headers=headers)
    client.post("/payments")
    client.post("/payments")
    assert app.effects == ["put", "put", "pay", "pay"]


@pytest.mark.parametrize("length", [256, 1000])
def test_a_key_longer_than_255_is_400(shop: tuple[Shop, httpx.Client], length: int) -> None:
    """Keys over 255 characters are refused; 255 is fine."""
    app, client = shop
    refused = client.post("/payments", headers={"Idempotency-Key": "k" * length})
    assert refused.status_code == 400
    assert refused.json()["error"] == "idempotency_key_invalid"
    assert client.post("/payments", headers={"Idempotency-Key": "k" * 255}).status_code == 200
    assert app.effects == ["pay"]


def test_the_key_is_compared_as_sent(shop: tuple[Shop, httpx.Client]) -> None:
    """'"abc"' and 'abc' are two keys (quotes are part of the key)."""
    app, client = shop
    client.post("/payments", headers={"Idempotency-Key": '"abc"'})
    client.post("/payments", headers={"Idempotency-Key": "abc"})
    client.post("/payments", headers={"Idempotency-Key": '"abc"'})
    assert app.effects == ["pay", "pay"]


def test_required_key_missing_is_400() -> None:
    """required=True: a POST without the header gets 400 and runs nothing; GET is untouched."""
    app = Shop(Idempotency(store=MemoryStore(), required=True))

    @app.app.get("/ping")
    async def ping() -> str:
        return "pong"

    with serve_asgi(app.app) as url, httpx.Client(base_url=url) as client:
        missing = client.post("/payments")
        assert missing.status_code == 400
        assert missing.json()["error"] == "idempotency_key_missing"
        assert client.get("/ping").status_code == 200
        assert client.post("/payments", headers=_key()).status_code == 200
    assert app.effects == ["pay"]


def test_a_custom_header_and_methods() -> None:
    """header= and methods= choose what is keyed."""
    app = Shop(Idempotency(store=MemoryStore(), header="X-Request-Id", methods=("PUT",)))
    with serve_asgi(app.app) as url, httpx.Client(base_url=url) as client:
        for _ in range(2):
            client.put("/orders", headers={"X-Request-Id": "r1"})
            client.post("/payments", headers={"X-Request-Id": "r1"})
    assert app.effects == ["put", "pay", "pay"]


def test_routes_inside_a_mount_are_scoped_by_their_full_template() -> None:
    """A Starlette Mount: the key is scoped to '/api/orders/{id}', so two ids clash (422)."""
    effects: list[str] = []

    async def order(request: Any) -> Response:
        effects.append(request.path_params["id"])
        return Response(b"ok")

    app = Starlette(routes=[Mount("/api", routes=[Route("/orders/{id}", order, methods=["POST"])])])
    app.add_middleware(ResilienceMiddleware, idempotency=Idempotency())
    with serve_asgi(app) as url, httpx.Client(base_url=url) as client:
        headers = _key()
        assert client.post("/api/orders/1", headers=headers).status_code == 200
        assert client.post("/api/orders/2", headers=headers).status_code == 422
    assert effects == ["1"]


def test_idempotency_option_is_checked() -> None:
    """Anything but an Idempotency (or None) is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match=r"idempotency must be a resilience\.idempotency"):
        add_resilience(FastAPI(), idempotency={"required": True})  # type: ignore[arg-type]


@pytest.mark.redis
@pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_store_down_is_503_and_nothing_runs() -> None:
    """Redis unreachable: 503 with Retry-After, and the handler does not run (fail closed)."""
    import redis

    proxy = TcpProxy(REDIS_PORT)
    proxy.start()
    with redis_prefix() as prefix:
        store = RedisStore(redis.Redis(port=proxy.port), prefix=prefix, timeout=0.5)
        app = Shop(Idempotency(store=store))
        try:
            with serve_asgi(app.app) as url, httpx.Client(base_url=url) as client:
                assert client.post("/payments", headers=_key()).status_code == 200
                proxy.stop()
                down = client.post("/payments", headers=_key())
                assert down.status_code == 503
                assert down.headers["retry-after"] == "1"
                assert down.json()["error"] == "idempotency_store_unavailable"
                assert client.post("/payments").status_code == 200  # unkeyed: not affected
        finally:
            store.close()
    assert app.effects == ["pay", "pay"]
