"""A deadline from the caller is a budget, not a verdict on the host.

An attempt whose httpx timeouts the active deadline shortened, and which then times out,
ran out of the caller's time: its host's breaker gives the permit back and records nothing.
Otherwise any client could open a server's outgoing breakers for everybody by sending a
tiny inbound deadline header. A host that hangs still trips its breaker, through the
transport's own configured timeout (or the policy's ``attempt_timeout``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from flask import Flask

from resilience import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    DeadlineExceeded,
    Policy,
    deadline,
)
from resilience.httpx import AsyncResilientTransport, ResilientTransport
from resilience.integrations.fastapi import add_resilience
from resilience.integrations.flask import Resilience
from tests.helpers import serve_asgi, serve_wsgi

pytestmark = pytest.mark.network

HOSTILE = {"x-envoy-expected-rq-timeout-ms": "60"}


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def policy(name: str, **slots: Any) -> Policy:
    return Policy(breaker=CircuitBreaker(name, consecutive_failures=3), **slots)


# --------------------------------------------------------------------------- a hanging host


async def test_async_hanging_host_trips_its_breaker_through_its_own_timeout(
    hanging_url: str,
) -> None:
    """Async: 3 read timeouts of the client's own 0.2 s open the host's breaker, even inside
    a longer deadline."""
    transport = AsyncResilientTransport(policy=policy("hang-async"))
    async with httpx.AsyncClient(transport=transport, timeout=0.2) as http:
        for _ in range(3):
            with pytest.raises(httpx.ReadTimeout):
                async with deadline(30.0):
                    await http.get(hanging_url)
        with pytest.raises(CircuitOpenError):
            await http.get(hanging_url)
    (breaker,) = transport.breakers.values()
    assert breaker.metrics().failures == 3


def test_sync_hanging_host_trips_its_breaker_through_its_own_timeout(hanging_url: str) -> None:
    """Sync: the same, with the cooperative deadline."""
    transport = ResilientTransport(policy=policy("hang-sync"))
    with httpx.Client(transport=transport, timeout=0.2) as http:
        for _ in range(3):
            with deadline(30.0), pytest.raises(httpx.ReadTimeout):
                http.get(hanging_url)
        with pytest.raises(CircuitOpenError):
            http.get(hanging_url)


def test_attempt_timeout_is_the_hosts_own_limit(hanging_url: str) -> None:
    """The policy's attempt_timeout is the transport's own setting: its timeouts count."""
    transport = ResilientTransport(policy=policy("hang-attempt", attempt_timeout=0.2))
    with httpx.Client(transport=transport) as http:
        for _ in range(3):
            with deadline(30.0), pytest.raises(httpx.ReadTimeout):
                http.get(hanging_url)
        with pytest.raises(CircuitOpenError):
            http.get(hanging_url)


async def test_async_attempt_timeout_is_the_hosts_own_limit(hanging_url: str) -> None:
    """Async: the same through the policy's attempt_timeout, inside a longer total timeout."""
    transport = AsyncResilientTransport(
        policy=policy("hang-attempt-async", timeout=30.0, attempt_timeout=0.2)
    )
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(3):
            with pytest.raises(httpx.ReadTimeout):
                await http.get(hanging_url)
        with pytest.raises(CircuitOpenError):
            await http.get(hanging_url)


# --------------------------------------------------------------------------- the caller's budget


async def test_async_deadline_cut_is_not_a_host_failure(hanging_url: str) -> None:
    """Async: requests cut by a 0.2 s deadline (client timeout 5 s) leave the breaker closed."""
    transport = AsyncResilientTransport(policy=policy("budget-async"))
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(4):
            with pytest.raises(DeadlineExceeded):
                async with deadline(0.2):
                    await http.get(hanging_url)
    (breaker,) = transport.breakers.values()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics().failures == 0


def test_sync_deadline_cut_is_not_a_host_failure(hanging_url: str) -> None:
    """Sync: the same; the permit is given back, so the breaker saw no call at all."""
    transport = ResilientTransport(policy=policy("budget-sync"))
    with httpx.Client(transport=transport) as http:
        for _ in range(4):
            with deadline(0.2), pytest.raises(DeadlineExceeded) as caught:
                http.get(hanging_url)
            assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    (breaker,) = transport.breakers.values()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics().calls == 0


async def test_async_caller_deadline_inside_a_policy_timeout_is_a_budget(
    hanging_url: str,
) -> None:
    """Async: a caller's 0.2 s deadline inside the policy's 5 s timeout records nothing."""
    transport = AsyncResilientTransport(policy=policy("budget-scope", timeout=5.0))
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(4):
            with pytest.raises(DeadlineExceeded):
                async with deadline(0.2):
                    await http.get(hanging_url)
    (breaker,) = transport.breakers.values()
    assert breaker.metrics().failures == 0


async def test_async_deadline_cut_is_on_time(hanging_url: str) -> None:
    """The cut comes at the deadline, not at httpx's default 5 s timeout."""
    transport = AsyncResilientTransport(policy=policy("deadline-time"))
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(transport=transport) as http:
        started = loop.time()
        with pytest.raises(DeadlineExceeded):
            async with deadline(0.3):
                await http.get(hanging_url)
    assert loop.time() - started < 2.0


# --------------------------------------------------------------------------- end to end (F01)


async def _healthy(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An upstream that answers every request after 200 ms (plain ASGI)."""
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.2)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"fine"})


def _fastapi_front(upstream: str, transport: AsyncResilientTransport) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with httpx.AsyncClient(transport=transport, base_url=upstream) as client:
            yield {"http": client}

    app = FastAPI(lifespan=lifespan)
    add_resilience(app, timeout=5.0)

    @app.get("/page")
    async def page(request: Request) -> dict[str, str]:
        response = await request.state.http.get("/data")
        return {"upstream": response.text}

    return app


def _flask_front(upstream: str, client: httpx.Client) -> Flask:
    app = Flask("front")
    Resilience(app, timeout=5.0)

    @app.get("/page")
    def page() -> dict[str, str]:
        return {"upstream": client.get(f"{upstream}/data").text}

    return app


def _attack(front: str) -> list[int]:
    """Twelve requests with a 60 ms inbound budget, then one legitimate request."""
    with httpx.Client(base_url=front, timeout=10) as client:
        statuses = [client.get("/page", headers=HOSTILE).status_code for _ in range(12)]
        statuses.append(client.get("/page").status_code)
    return statuses


def test_short_inbound_budgets_cannot_open_a_fastapi_apps_breakers() -> None:
    """FastAPI: anonymous requests with a 60 ms deadline header leave the healthy upstream's
    breaker closed, and the next legitimate request gets its 200."""
    transport = AsyncResilientTransport()
    with (
        serve_asgi(_healthy) as upstream,
        serve_asgi(_fastapi_front(upstream, transport), lifespan="on") as front,
    ):
        *hostile, legit = _attack(front)
    assert set(hostile) <= {200, 504}  # 504: the caller's own budget ran out, never a 503
    assert legit == 200
    (breaker,) = transport.breakers.values()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics().failures == 0


def test_short_inbound_budgets_cannot_open_a_flask_apps_breakers() -> None:
    """Flask: the same with the sync transport."""
    transport = ResilientTransport()
    with (
        serve_asgi(_healthy) as upstream,
        httpx.Client(transport=transport) as client,
        serve_wsgi(_flask_front(upstream, client)) as front,
    ):
        *hostile, legit = _attack(front)
    assert set(hostile) <= {200, 504}
    assert legit == 200
    (breaker,) = transport.breakers.values()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics().failures == 0
