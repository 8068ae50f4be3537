"""Load shedding counts requests that have arrived: a body still arriving holds no slot.

Real uvicorn and werkzeug servers on 127.0.0.1, slow clients on raw sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Annotated, Any

import flask
import httpx
import pytest
from fastapi import Body, FastAPI, Request
from starlette.types import Message, Receive, Scope, Send

from resilience.integrations.fastapi import ResilienceMiddleware, add_resilience
from resilience.integrations.flask import Resilience
from tests.helpers import SlowUpload, port_of, read_answer, serve_asgi, serve_wsgi

pytestmark = pytest.mark.network

Serve = Callable[[threading.Event], AbstractContextManager[str]]


def fastapi_server(**options: Any) -> Serve:
    """A FastAPI app with /ping, /upload (reads the body), /ignore (does not) and /hold."""

    def serve(gate: threading.Event) -> AbstractContextManager[str]:
        app = FastAPI()
        add_resilience(app, **options)

        @app.get("/ping")
        async def ping() -> dict[str, bool]:
            return {"ok": True}

        @app.post("/upload")
        async def upload(request: Request) -> dict[str, int]:
            return {"bytes": len(await request.body())}

        @app.post("/ignore")
        async def ignore() -> dict[str, bool]:
            return {"ignored": True}

        @app.get("/hold")
        async def hold() -> dict[str, bool]:
            give_up = time.monotonic() + 30
            # The gate is a threading.Event: the test opens it from its own thread.
            while not gate.is_set() and time.monotonic() < give_up:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            return {"held": True}

        return serve_asgi(app)

    return serve


def flask_server(**options: Any) -> Serve:
    """The same app in Flask."""

    def serve(gate: threading.Event) -> AbstractContextManager[str]:
        app = flask.Flask(f"shedding-{uuid.uuid4().hex[:6]}")
        Resilience(app, **options)

        @app.get("/ping")
        def ping() -> dict[str, bool]:
            return {"ok": True}

        @app.post("/upload")
        def upload() -> dict[str, int]:
            return {"bytes": len(flask.request.get_data())}

        @app.post("/ignore")
        def ignore() -> dict[str, bool]:
            return {"ignored": True}

        @app.get("/hold")
        def hold() -> dict[str, bool]:
            gate.wait(30)
            return {"held": True}

        return serve_wsgi(app)

    return serve


SERVERS = [pytest.param(fastapi_server, id="fastapi"), pytest.param(flask_server, id="flask")]


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll *condition* until true (real servers: generous margins)."""
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event the /hold handlers wait on; opened at the end so no handler outlives a test."""
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize("server", SERVERS)
def test_trickling_uploads_do_not_shed_requests_that_arrived(
    server: Callable[..., Serve], gate: threading.Event
) -> None:
    """max_concurrent slow-body clients leave every request that arrived whole unshed."""
    with server(max_concurrent=4)(gate) as url:
        attackers = [SlowUpload(url, length=400, interval=0.05).start() for _ in range(4)]
        try:
            wait_for(lambda: all(a.sent >= 3 for a in attackers))
            with httpx.Client(base_url=url, timeout=10) as client:
                statuses = [client.get("/ping").status_code for _ in range(10)]
                statuses += [
                    client.post("/upload", content=b"x" * 1000).status_code for _ in range(10)
                ]
            assert all(not a.answer for a in attackers)  # still trickling all along
        finally:
            for attacker in attackers:
                attacker.join()
    assert statuses == [200] * 20


@pytest.mark.parametrize("server", SERVERS)
def test_a_slow_body_that_completes_reaches_the_handler_whole(
    server: Callable[..., Serve], gate: threading.Event
) -> None:
    """A trickled body, buffered before the slot, is handed to the handler intact."""
    with server(max_concurrent=1)(gate) as url:
        upload = SlowUpload(url, length=30, interval=0.01).start()
        upload.wait()
    assert upload.status_line == "HTTP/1.1 200 OK"
    assert upload.answer.rstrip().endswith(b'{"bytes":30}')


@pytest.mark.parametrize("server", SERVERS)
def test_a_body_that_does_not_arrive_in_time_gets_408(
    server: Callable[..., Serve], gate: threading.Event
) -> None:
    """Past body_timeout the request is answered 408 without ever holding a slot."""
    with server(max_concurrent=1, body_timeout=0.5)(gate) as url:
        upload = SlowUpload(url, length=200, interval=0.05).start()
        started = time.monotonic()
        wait_for(lambda: bool(upload.answer), timeout=20)
        elapsed = time.monotonic() - started
        upload.join()
        assert httpx.get(f"{url}/ping").status_code == 200  # no slot was left behind
    assert upload.status_line.startswith("HTTP/1.1 408")
    assert b'"request_timeout"' in upload.answer
    assert 0.4 < elapsed < 8.0


@pytest.mark.parametrize("server", SERVERS)
def test_a_request_deadline_shorter_than_body_timeout_gives_504(
    server: Callable[..., Serve], gate: threading.Event
) -> None:
    """The request's deadline covers its body: a body late for it ends in 504."""
    with server(max_concurrent=1, timeout=0.4)(gate) as url:
        upload = SlowUpload(url, length=200, interval=0.05).start()
        wait_for(lambda: bool(upload.answer), timeout=20)
        upload.join()
    assert upload.status_line.startswith("HTTP/1.1 504")
    assert b'"deadline_exceeded"' in upload.answer


@pytest.mark.parametrize("server", SERVERS)
def test_a_large_body_takes_its_slot_only_when_the_handler_reads_it(
    server: Callable[..., Serve], gate: threading.Event
) -> None:
    """Beyond body_buffer: no slot until the handler reads the body, and 503 if none is free."""
    big = b"x" * 5000
    with (
        server(max_concurrent=1, body_buffer=1024)(gate) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        assert client.post("/upload", content=big).json() == {"bytes": 5000}
        held = threading.Thread(target=client.get, args=("/hold",))
        held.start()
        try:
            wait_for(lambda: client.get("/ping").status_code == 503)  # the slot is taken
            assert client.post("/ignore", content=big).status_code == 200  # never read it
            refused = client.post("/upload", content=big)
            assert refused.status_code == 503
            assert refused.json()["error"] == "overloaded"
            assert refused.headers["retry-after"] == "1"
            assert client.post("/upload", content=b"x" * 100).status_code == 503
        finally:
            gate.set()
            held.join(30)
        assert client.post("/upload", content=big).json() == {"bytes": 5000}


@pytest.mark.parametrize("server", SERVERS)
def test_a_large_body_holds_its_slot_while_the_handler_reads_it(
    server: Callable[..., Serve], gate: threading.Event
) -> None:
    """Once the handler reads past the buffer, the request counts until it is answered."""
    with server(max_concurrent=1, body_buffer=1024)(gate) as url:
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=15) as raw:
            raw.sendall(
                b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 4000\r\n\r\n" + b"x" * 2000
            )
            wait_for(lambda: httpx.get(f"{url}/ping").status_code == 503)
            raw.sendall(b"x" * 2000)
            answer = read_answer(raw)
        assert httpx.get(f"{url}/ping").status_code == 200
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.rstrip().endswith(b'{"bytes":4000}')


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("size", [3000, 20_000])
def test_chunked_bodies_reach_the_handler_whole(
    server: Callable[..., Serve], gate: threading.Event, size: int
) -> None:
    """A body of unknown length (chunked) is buffered, or read late when larger, intact."""

    def chunks() -> Iterator[bytes]:
        for _ in range(size // 1000):
            yield b"y" * 1000

    with server(max_concurrent=2, body_buffer=8192)(gate) as url:
        response = httpx.post(f"{url}/upload", content=chunks())
    assert response.json() == {"bytes": size}


class Records(logging.Handler):
    """Keeps the log records of one logger (uvicorn's own do not reach pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_fastapi_body_parameters_beyond_the_buffer_are_shed_with_503(
    gate: threading.Event,
) -> None:
    """FastAPI turns errors in body parsing into 400: a late shed still answers 503, cleanly."""
    app = FastAPI()
    add_resilience(app, max_concurrent=1, body_buffer=1024)

    @app.post("/items")
    async def items(payload: Annotated[dict[str, Any], Body()]) -> dict[str, int]:
        return {"keys": len(payload)}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/hold")
    async def hold() -> dict[str, bool]:
        give_up = time.monotonic() + 30
        while not gate.is_set() and time.monotonic() < give_up:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return {"held": True}

    big = {f"key{i}": "v" * 50 for i in range(100)}  # about 6 KB of JSON
    errors = Records()
    logging.getLogger("uvicorn.error").addHandler(errors)
    try:
        with serve_asgi(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            assert client.post("/items", json=big).json() == {"keys": 100}
            held = threading.Thread(target=client.get, args=("/hold",))
            held.start()
            try:
                wait_for(lambda: client.post("/raw", content=b"").status_code == 503)
                answers = [client.post("/items", json=big), client.post("/raw", json=big)]
            finally:
                gate.set()
                held.join(30)
            assert client.post("/items", json=big).json() == {"keys": 100}
    finally:
        logging.getLogger("uvicorn.error").removeHandler(errors)
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json()["error"] == "overloaded"
    assert [r.getMessage() for r in errors.records if r.levelno >= logging.ERROR] == []


# ---------------------------------------------------------------- the ASGI side, in process


def recording_app(seen: list[Message]) -> Callable[[Scope, Receive, Send], Any]:
    """An ASGI app that reads the whole body, records the messages and answers 200."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def post_scope(headers: list[tuple[bytes, bytes]], http_version: str = "1.1") -> Scope:
    """An HTTP POST scope."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "headers": headers,
        "http_version": http_version,
        "client": ("127.0.0.1", 5000),
    }


async def test_a_client_that_leaves_before_its_body_arrives_never_takes_a_slot() -> None:
    """A disconnect while the body is buffered ends the request: the app is never called."""
    seen: list[Message] = []
    middleware = ResilienceMiddleware(recording_app(seen), max_concurrent=1)
    messages: list[Message] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(post_scope([(b"content-length", b"10")]), receive, send)
    assert seen == []
    assert sent == []
    assert middleware._limiter is not None
    assert middleware._limiter.in_flight == 0


async def test_buffered_chunks_are_handed_over_as_one_message() -> None:
    """The app receives the buffered body whole; an HTTP/2 body without a length is buffered."""
    seen: list[Message] = []
    middleware = ResilienceMiddleware(recording_app(seen), max_concurrent=1)
    messages: list[Message] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        pass

    await middleware(post_scope([], http_version="2"), receive, send)
    assert seen == [{"type": "http.request", "body": b"abcd", "more_body": False}]


async def test_body_buffer_zero_takes_the_slot_at_once() -> None:
    """body_buffer=0 turns buffering off: the app reads the server's messages itself."""
    seen: list[Message] = []
    middleware = ResilienceMiddleware(recording_app(seen), max_concurrent=1, body_buffer=0)
    messages: list[Message] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        pass

    await middleware(post_scope([(b"content-length", b"4")]), receive, send)
    assert [m["body"] for m in seen] == [b"ab", b"cd"]


# ---------------------------------------------------------------- the WSGI side, in process


@pytest.mark.parametrize("reader", ["form", "json", "data", "stream"])
def test_flask_views_reading_a_large_body_without_a_slot_get_503(reader: str) -> None:
    """However the view reads a body past the buffer (form, JSON, data, stream): 503 if full."""
    extension = Resilience(max_concurrent=1, body_buffer=1024)
    app = flask.Flask(f"late-{reader}")
    extension.init_app(app)

    @app.post("/read")
    def read() -> dict[str, int]:
        request = flask.request
        if reader == "form":
            return {"size": len(request.form["text"])}
        if reader == "json":
            return {"size": len(request.get_json()["text"])}
        if reader == "data":
            return {"size": len(request.get_data())}
        return {"size": len(request.stream.read())}

    text = "t" * 5000
    client = app.test_client()
    if reader == "form":
        send: dict[str, Any] = {"data": {"text": text}, "content_type": "multipart/form-data"}
    elif reader == "json":
        send = {"json": {"text": text}}
    else:
        send = {"data": text.encode()}
    assert client.post("/read", **send).status_code == 200
    assert extension.limiter is not None
    assert extension.limiter.try_acquire()  # another request holds the only slot
    try:
        refused = client.post("/read", **send)
    finally:
        extension.limiter.release()
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "overloaded"
    assert extension.limiter.in_flight == 0
