"""Idempotency-Key on a Flask app, against a real threaded werkzeug server on 127.0.0.1."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import flask
import httpx
import pytest

from resilience import ConfigError
from resilience.idempotency import Idempotency
from resilience.integrations.flask import Resilience
from resilience.stores import MemoryStore, RedisStore
from tests.helpers import REDIS_PORT, TcpProxy
from tests.helpers_idempotency import redis_prefix, redis_up, serve_wsgi

pytestmark = pytest.mark.network


class Shop:
    """A Flask app whose views count their effects, with a gate to hold one open."""

    def __init__(self, keys: Idempotency, **options: object) -> None:
        self.effects: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        app = flask.Flask("idempotent-shop")
        Resilience(app, idempotency=keys, **options)  # type: ignore[arg-type]
        self.app = app

        @app.post("/orders")
        def create() -> flask.Response:
            self.effects.append(flask.request.get_data(as_text=True))
            self.entered.set()
            self.gate.wait(10)
            response = flask.jsonify(order=len(self.effects))
            response.status_code = 201
            response.headers["Location"] = f"/orders/{len(self.effects)}"
            response.set_cookie("s", "1")
            return response

        @app.post("/orders/<int:order_id>/items")
        def add_item(order_id: int) -> dict[str, int]:
            self.effects.append(f"item-{order_id}")
            return {"items": len(self.effects)}

        @app.post("/payments")
        def pay() -> dict[str, int]:
            self.effects.append("pay")
            return {"paid": len(self.effects)}

        @app.post("/crash")
        def crash() -> str:
            self.effects.append("crash")
            if len(self.effects) == 1:
                raise RuntimeError("the first one fails")
            return "ok"

        @app.post("/stream")
        def stream() -> flask.Response:
            self.effects.append("stream")

            def parts() -> Iterator[str]:
                yield from ("one,", "two,", "three")

            return flask.Response(parts(), mimetype="text/csv")

        @app.post("/big")
        def big() -> flask.Response:
            self.effects.append("big")
            return flask.Response(b"x" * 2048, mimetype="application/octet-stream")


@pytest.fixture
def shop() -> Iterator[tuple[Shop, httpx.Client]]:
    """The shop on a MemoryStore (max_body 1 KiB), served, and a client for it."""
    app = Shop(Idempotency(store=MemoryStore(), max_body=1024))
    with serve_wsgi(app.app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield app, client


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def test_a_repeat_gets_the_first_response_replayed(shop: tuple[Shop, httpx.Client]) -> None:
    """Same key, same request: the view runs once; the repeat replays the response."""
    app, client = shop
    headers = _key()
    first = client.post("/orders", content=b"a", headers=headers)
    again = client.post("/orders", content=b"a", headers=headers)
    assert app.effects == ["a"]
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() == {"order": 1}
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert "set-cookie" in first.headers
    assert "set-cookie" not in again.headers


def test_same_key_with_another_request_is_422(shop: tuple[Shop, httpx.Client]) -> None:
    """Another body, or another path of the same rule, with a used key: 422."""
    app, client = shop
    headers = _key()
    client.post("/orders", content=b"a", headers=headers)
    assert client.post("/orders", content=b"b", headers=headers).status_code == 422
    item = _key()
    assert client.post("/orders/1/items", headers=item).status_code == 200
    assert client.post("/orders/2/items", headers=item).status_code == 422
    assert app.effects == ["a", "item-1"]


def test_same_key_while_running_is_409(shop: tuple[Shop, httpx.Client]) -> None:
    """While the first request runs, a repeat gets 409 with Retry-After."""
    app, client = shop
    headers = _key()
    app.gate.clear()
    worker = threading.Thread(target=client.post, args=("/orders",), kwargs={"headers": headers})
    worker.start()
    assert app.entered.wait(10)
    busy = client.post("/orders", headers=headers)
    assert busy.status_code == 409
    assert int(busy.headers["retry-after"]) >= 1
    app.gate.set()
    worker.join(10)
    assert client.post("/orders", headers=headers).headers["idempotent-replayed"] == "true"
    assert app.effects == [""]


def test_a_crashed_view_frees_the_key(shop: tuple[Shop, httpx.Client]) -> None:
    """A view that raises (500) leaves nothing stored: the retry runs."""
    app, client = shop
    headers = _key()
    assert client.post("/crash", headers=headers).status_code == 500
    assert client.post("/crash", headers=headers).text == "ok"
    assert app.effects == ["crash", "crash"]


def test_a_streamed_response_is_stored_whole(shop: tuple[Shop, httpx.Client]) -> None:
    """A streamed body is recorded as it is sent and replayed in one piece."""
    app, client = shop
    headers = _key()
    assert client.post("/stream", headers=headers).text == "one,two,three"
    replay = client.post("/stream", headers=headers)
    assert replay.text == "one,two,three"
    assert replay.headers["idempotent-replayed"] == "true"
    assert app.effects == ["stream"]


def test_a_body_over_max_body_is_not_stored(shop: tuple[Shop, httpx.Client]) -> None:
    """A response larger than max_body is sent but not kept: the repeat runs again."""
    app, client = shop
    headers = _key()
    assert len(client.post("/big", headers=headers).content) == 2048
    assert len(client.post("/big", headers=headers).content) == 2048
    assert app.effects == ["big", "big"]


def test_bad_keys_are_400(shop: tuple[Shop, httpx.Client]) -> None:
    """A key over 255 characters is 400 and nothing runs."""
    app, client = shop
    assert client.post("/payments", headers={"Idempotency-Key": "k" * 256}).status_code == 400
    assert app.effects == []


def test_required_key_missing_is_400() -> None:
    """required=True: a POST without the key is 400; with load shedding on, it still works."""
    app = Shop(Idempotency(store=MemoryStore(), required=True), max_concurrent=4)
    with serve_wsgi(app.app) as url, httpx.Client(base_url=url) as client:
        assert client.post("/payments").status_code == 400
        assert client.post("/payments", headers=_key()).status_code == 200
        assert client.get("/resilience").status_code == 200
    assert app.effects == ["pay"]


def test_idempotency_option_is_checked() -> None:
    """Anything but an Idempotency (or None) is a ConfigError."""
    with pytest.raises(ConfigError, match="idempotency must be"):
        Resilience(idempotency="yes")  # type: ignore[arg-type]


@pytest.mark.redis
@pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_store_down_is_503_and_nothing_runs() -> None:
    """Redis unreachable: 503 with Retry-After; the view does not run."""
    import redis

    proxy = TcpProxy(REDIS_PORT)
    proxy.start()
    with redis_prefix() as prefix:
        store = RedisStore(redis.Redis(port=proxy.port), prefix=prefix, timeout=0.5)
        app = Shop(Idempotency(store=store))
        try:
            with serve_wsgi(app.app) as url, httpx.Client(base_url=url) as client:
                headers = _key()
                assert client.post("/payments", headers=headers).status_code == 200
                assert client.post("/payments", headers=headers).status_code == 200  # replay
                proxy.stop()
                down = client.post("/payments", headers=_key())
                assert down.status_code == 503
                assert down.headers["retry-after"] == "1"
        finally:
            store.close()
    assert app.effects == ["pay"]
