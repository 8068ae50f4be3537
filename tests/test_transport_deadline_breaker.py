"""A hanging upstream cut by the caller's deadline counts against its host's breaker.

Without this, a service behind `add_resilience(timeout=...)` would wait its whole budget on
every request to a dead upstream and never fail fast.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from resilience import CircuitBreaker, CircuitOpenError, DeadlineExceeded, Policy, deadline
from resilience.httpx import AsyncResilientTransport, ResilientTransport

pytestmark = pytest.mark.network


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


def policy(name: str) -> Policy:
    return Policy(breaker=CircuitBreaker(name, consecutive_failures=3))


async def test_async_deadline_cut_counts_as_breaker_failure(hanging_url: str) -> None:
    """Async: 3 requests cut by a 0.2 s deadline open the host's breaker."""
    transport = AsyncResilientTransport(policy=policy("deadline-async"))
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(3):
            with pytest.raises(DeadlineExceeded):
                async with deadline(0.2):
                    await http.get(hanging_url)
        with pytest.raises(CircuitOpenError):
            async with deadline(0.2):
                await http.get(hanging_url)
    (breaker,) = transport.breakers.values()
    assert breaker.metrics().failures == 3


def test_sync_deadline_cut_counts_as_breaker_failure(hanging_url: str) -> None:
    """Sync: the same, with the cooperative deadline clamping httpx's timeouts."""
    transport = ResilientTransport(policy=policy("deadline-sync"))
    with httpx.Client(transport=transport) as http:
        for _ in range(3):
            with deadline(0.2), pytest.raises(DeadlineExceeded):
                http.get(hanging_url)
        with deadline(0.2), pytest.raises(CircuitOpenError):
            http.get(hanging_url)


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
