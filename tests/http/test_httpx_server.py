"""End to end: the transports against a real uvicorn server on 127.0.0.1 (a thread here).

Mocks hide what matters most for a retrying transport: connection reuse, bodies that break
on the wire, real timeouts. Timing assertions use wide margins (two shared cores).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from resilience import CircuitBreaker, DeadlineExceeded, Policy, Retry, backoff, deadline
from resilience.httpx import AsyncResilientTransport, ResilientTransport
from tests.helpers import serve_asgi

pytestmark = pytest.mark.network

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class App:
    """A tiny ASGI app with endpoints that misbehave on purpose, counting what it sees."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.keys: dict[str, list[str | None]] = {}
        self.clients: set[tuple[str, int]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        self.clients.add((scope["client"][0], scope["client"][1]))
        parts = scope["path"].strip("/").split("/")
        route, key = parts[0], "/".join(parts[1:])
        self.counts[key] += 1
        count = self.counts[key]
        headers = dict(scope["headers"])
        self.keys.setdefault(key, []).append(headers.get(b"idempotency-key", b"").decode() or None)
        self.times.setdefault(key, []).append(time.monotonic())
        if route == "ok":
            await self._reply(send, 200, b"ok")
        elif route == "flaky":  # /flaky/<name>/<failures>
            failures = int(parts[-1])
            await self._reply(send, 503 if count <= failures else 200, b"flaky")
        elif route == "effect":  # a side effect on every call, and a 503 every time
            await self._reply(send, 503, b"charged")
        elif route == "retry-after":
            if count == 1:
                await self._reply(send, 503, b"later", [(b"retry-after", b"1")])
            else:
                await self._reply(send, 200, b"now")
        elif route == "slow":  # /slow/<name>/<seconds>
            await asyncio.sleep(float(parts[-1]))
            await self._reply(send, 200, b"slow")
        elif route == "broken":  # the first response dies part-way through its body
            if count == 1:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", b"100")],
                    }
                )
                await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
                return  # uvicorn closes the connection: the body never completes
            await self._reply(send, 200, b"y" * 100)
        elif route == "alternate":  # odd calls 503, even calls 200
            await self._reply(send, 503 if count % 2 else 200, b"alternate")
        else:
            await self._reply(send, 404, b"no such route")

    @staticmethod
    async def _reply(
        send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Server:
    """The running server: its base URL and its app."""

    def __init__(self, url: str, app: App) -> None:
        self.url = url
        self.app = app


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """uvicorn on 127.0.0.1 and a free port, in a thread, for the whole module."""
    app = App()
    with serve_asgi(app, http="h11", log_level="critical", timeout_graceful_shutdown=1) as url:
        yield Server(url, app)


@pytest.fixture
def no_sleep() -> list[float]:
    """Waits the transports asked for (recorded instead of slept)."""
    return []


def sync_client(slept: list[float], **options: Any) -> httpx.Client:
    return httpx.Client(transport=ResilientTransport(sleep=slept.append, **options))


def async_client(slept: list[float], **options: Any) -> httpx.AsyncClient:
    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    return httpx.AsyncClient(transport=AsyncResilientTransport(sleep=asleep, **options))


def test_flaky_endpoint_succeeds_after_failures(server: Server, no_sleep: list[float]) -> None:
    """An endpoint failing twice with 503 then answering is retried to success."""
    with sync_client(no_sleep) as client:
        response = client.get(f"{server.url}/flaky/sync-flaky/2")
    assert response.status_code == 200
    assert server.app.counts["sync-flaky/2"] == 3
    assert len(no_sleep) == 2


async def test_flaky_endpoint_succeeds_after_failures_async(
    server: Server, no_sleep: list[float]
) -> None:
    """The async transport retries the flaky endpoint the same way."""
    async with async_client(no_sleep) as client:
        response = await client.get(f"{server.url}/flaky/async-flaky/2")
    assert response.status_code == 200
    assert server.app.counts["async-flaky/2"] == 3


def test_post_side_effect_runs_once_without_a_key(server: Server, no_sleep: list[float]) -> None:
    """A POST answered with 503 is not repeated: the side effect ran exactly once."""
    with sync_client(no_sleep) as client:
        response = client.post(f"{server.url}/effect/sync-post", json={"cents": 100})
    assert response.status_code == 503
    assert server.app.counts["sync-post"] == 1


async def test_post_with_generated_key_is_retried_with_the_same_key(
    server: Server, no_sleep: list[float]
) -> None:
    """With idempotency_keys=True the POST is retried, carrying one key every time."""
    async with async_client(no_sleep, idempotency_keys=True) as client:
        response = await client.post(f"{server.url}/effect/async-keyed", json={"cents": 100})
    assert response.status_code == 503
    keys = server.app.keys["async-keyed"]
    assert len(keys) == 3
    assert len(set(keys)) == 1
    assert keys[0] is not None


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_retry_after_is_honoured_on_the_wire(server: Server, flavour: str) -> None:
    """Retry-After: 1 makes the second attempt arrive at least a second after the first."""
    key = f"{flavour}-ra"
    url = f"{server.url}/retry-after/{key}"
    if flavour == "sync":
        with httpx.Client(transport=ResilientTransport()) as client:
            response = client.get(url)  # noqa: ASYNC212  # the sync transport under test
    else:
        async with httpx.AsyncClient(transport=AsyncResilientTransport()) as aclient:
            response = await aclient.get(url)
    assert response.status_code == 200
    first, second = server.app.times[key]
    assert 0.95 <= second - first < 5.0


def test_connection_refused_is_retried_then_raised(no_sleep: list[float]) -> None:
    """A dead port: every attempt is refused, and ConnectError says how many were made."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with sync_client(no_sleep) as client, pytest.raises(httpx.ConnectError) as caught:
        client.post(f"http://127.0.0.1:{port}/anything", json={})
    assert len(no_sleep) == 2  # connect errors are retried even for POST
    assert any("3 attempts" in note for note in caught.value.__notes__)


def test_slow_endpoint_inside_a_deadline_fails_on_time(server: Server) -> None:
    """A sync request to a slow endpoint ends with DeadlineExceeded at the deadline."""
    started = time.monotonic()
    with (
        httpx.Client(transport=ResilientTransport()) as client,
        deadline(0.5),
        pytest.raises(DeadlineExceeded),
    ):
        client.get(f"{server.url}/slow/sync-slow/3")
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 1.5


async def test_slow_endpoint_inside_an_async_deadline_fails_on_time(server: Server) -> None:
    """An async request to a slow endpoint is cut at the deadline with DeadlineExceeded."""
    started = time.monotonic()
    async with httpx.AsyncClient(transport=AsyncResilientTransport()) as client:
        with pytest.raises(DeadlineExceeded):
            async with deadline(0.5):
                await client.get(f"{server.url}/slow/async-slow/3")
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 1.5


def test_body_broken_mid_transfer_is_retried(server: Server, no_sleep: list[float]) -> None:
    """A GET whose response body is cut off is retried and the whole body comes back."""
    with sync_client(no_sleep) as client:
        response = client.get(f"{server.url}/broken/sync-broken")
    assert response.content == b"y" * 100
    assert server.app.counts["sync-broken"] == 2


async def test_body_broken_mid_transfer_of_a_post_propagates(
    server: Server, no_sleep: list[float]
) -> None:
    """A POST whose response body is cut off is not repeated."""
    async with async_client(no_sleep) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{server.url}/broken/async-broken", content=b"x")
    assert server.app.counts["async-broken"] == 1


def lenient(name: str, minimum_calls: int = 50) -> Policy:
    """Retries, and a breaker that opens only when every call fails (half the calls 503)."""
    return Policy(
        retry=Retry(on=(), backoff=backoff.none()),
        breaker=CircuitBreaker(
            name, failure_rate=1.0, minimum_calls=minimum_calls, window=max(100, minimum_calls)
        ),
    )


def test_no_connection_leak_after_a_thousand_retried_requests(server: Server) -> None:
    """1,000 requests that each need a retry leave a small, healthy pool."""
    inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))
    before = len(server.app.clients)
    slept: list[float] = []
    with httpx.Client(
        transport=ResilientTransport(inner, sleep=slept.append, policy=lenient("leak-sync")),
        timeout=httpx.Timeout(5.0),
    ) as client:
        for index in range(1000):
            response = client.get(f"{server.url}/alternate/leak-sync-{index}")
            assert response.status_code == 200
        assert len(inner._pool.connections) <= 4
        assert client.get(f"{server.url}/ok/after-sync").status_code == 200
    assert len(slept) == 1000
    assert len(server.app.clients) - before <= 4  # connections were reused, not torn down


async def test_no_connection_leak_after_a_thousand_retried_requests_async(server: Server) -> None:
    """1,000 concurrent-ish retried requests through the async transport keep the pool small."""
    inner = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=4)
    )
    before = len(server.app.clients)

    async def asleep(seconds: float) -> None:
        await asyncio.sleep(0)

    async with httpx.AsyncClient(
        transport=AsyncResilientTransport(inner, sleep=asleep, policy=lenient("leak-async")),
        timeout=httpx.Timeout(10.0),
    ) as client:

        async def one(index: int) -> int:
            response = await client.get(f"{server.url}/alternate/leak-async-{index}")
            return response.status_code

        for batch in range(0, 1000, 20):
            statuses = await asyncio.gather(*(one(i) for i in range(batch, batch + 20)))
            assert statuses == [200] * 20
        assert len(inner._pool.connections) <= 4
        assert (await client.get(f"{server.url}/ok/after-async")).status_code == 200
    assert len(server.app.clients) - before <= 4


def test_one_transport_serves_many_threads(server: Server) -> None:
    """16 threads sharing one sync transport all get their answers; one breaker per host."""
    transport = ResilientTransport(sleep=lambda seconds: None, policy=lenient("threads", 1000))
    client = httpx.Client(transport=transport, timeout=30.0)
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def worker(thread: int) -> None:
        try:
            barrier.wait()
            for index in range(25):
                response = client.get(f"{server.url}/alternate/threads-{thread}-{index}")
                assert response.status_code == 200
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    client.close()
    assert errors == []
    assert list(transport.breakers) == [server.url]
    assert transport.breakers[server.url].metrics()["calls"] == 16 * 25 * 2


async def test_one_async_transport_serves_many_tasks(server: Server) -> None:
    """200 concurrent tasks through one async transport all get their answers."""

    async def asleep(seconds: float) -> None:
        await asyncio.sleep(0)

    transport = AsyncResilientTransport(sleep=asleep, policy=lenient("tasks", 1000))
    async with httpx.AsyncClient(transport=transport, timeout=30.0) as client:

        async def one(index: int) -> int:
            return (await client.get(f"{server.url}/alternate/tasks-{index}")).status_code

        statuses = await asyncio.gather(*(one(i) for i in range(200)))
    assert statuses == [200] * 200
    assert transport.breakers[server.url].metrics()["calls"] == 400
