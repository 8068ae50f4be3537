"""Fault campaign: a POST without a key never runs twice, whatever the Retry's ``on`` says.

A real server on 127.0.0.1 counts the side effects of every request; a fault proxy in front
of it breaks exchanges after the request reached the server (the answer is cut before its
first byte, truncated mid-body, or swallowed until the client times out) or closes the
connection at once. Clients open one connection per request, so every attempt meets its
own fate. Repeating a request is never the Retry's call: only a request that is safe to
repeat may be sent again once the server may have acted on it.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from resilience import Policy, Retry, backoff
from resilience.httpx import AsyncResilientTransport, ResilientTransport
from tests.helpers import TcpProxy, serve_asgi

pytestmark = pytest.mark.network

REQUESTS = 100  # per case
FATES = {"pass": 0.45, "cut": 0.2, "truncate": 0.2, "stall": 0.05, "refuse": 0.1}
TIMEOUT = httpx.Timeout(2.0, read=0.2)  # a stalled answer ends as a ReadTimeout
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)
BODY = b"x" * 64


class Effects:
    """A plain ASGI app that counts each path's side effects, then answers 64 bytes."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        with self.lock:
            self.counts[scope["path"]] += 1
        headers = [(b"content-length", b"64"), (b"content-type", b"application/octet-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Effects, TcpProxy]]:
    """The counting server and a fault proxy in front of it (shared by the module)."""
    app = Effects()
    with serve_asgi(app, http="h11", log_level="critical", timeout_graceful_shutdown=1) as url:
        proxy = TcpProxy(int(url.rsplit(":", 1)[1]), fates=FATES, seed=20261203)
        proxy.start()
        try:
            yield app, proxy
        finally:
            proxy.stop()


def policy(on: Any) -> Policy:
    """A policy with 3 attempts whose Retry has this ``on`` (and no breaker, which would
    start rejecting under this many faults)."""
    return Policy(retry=Retry(on=on, attempts=3, backoff=backoff.none()))


def name(on: Any) -> str:
    return on.__name__ if isinstance(on, type) else "nothing"


ON = pytest.mark.parametrize("on", [(), httpx.TransportError, httpx.HTTPError, Exception], ids=name)


def _check(app: Effects, proxy: TcpProxy, before: dict[str, int], prefix: str, errors: int) -> None:
    effects = {path: n for path, n in app.counts.items() if path.startswith(prefix)}
    twice = {path: n for path, n in effects.items() if n > 1}
    assert twice == {}, f"{len(twice)} of {REQUESTS} unkeyed POSTs ran more than once"
    # The campaign really broke exchanges after the server acted, and clients saw it.
    assert errors > 0
    assert len(effects) > REQUESTS // 2
    assert all(proxy.fates_seen[fate] > before[fate] for fate in FATES)


@ON
def test_sync_unkeyed_posts_run_at_most_once_under_faults(
    upstream: tuple[Effects, TcpProxy], on: Any
) -> None:
    """Sync: 100 unkeyed POSTs through broken exchanges; no side effect runs twice."""
    app, proxy = upstream
    prefix = f"/sync/{name(on)}/"
    transport = ResilientTransport(httpx.HTTPTransport(limits=NO_KEEPALIVE), policy=policy(on))
    errors = 0
    before = dict(proxy.fates_seen)
    base = f"http://127.0.0.1:{proxy.port}"
    with httpx.Client(transport=transport, timeout=TIMEOUT, base_url=base) as client:
        for i in range(REQUESTS):
            try:
                client.post(f"{prefix}{i}", content=b'{"amount": 100}')
            except httpx.TransportError:
                errors += 1
    _check(app, proxy, before, prefix, errors)


@ON
async def test_async_unkeyed_posts_run_at_most_once_under_faults(
    upstream: tuple[Effects, TcpProxy], on: Any
) -> None:
    """Async: the same, ten requests at a time."""
    app, proxy = upstream
    prefix = f"/async/{name(on)}/"
    inner = httpx.AsyncHTTPTransport(limits=NO_KEEPALIVE)
    transport = AsyncResilientTransport(inner, policy=policy(on))
    errors = 0
    before = dict(proxy.fates_seen)
    base = f"http://127.0.0.1:{proxy.port}"
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT, base_url=base) as client:

        async def post(i: int) -> None:
            nonlocal errors
            try:
                await client.post(f"{prefix}{i}", content=b'{"amount": 100}')
            except httpx.TransportError:
                errors += 1

        for start in range(0, REQUESTS, 10):
            await asyncio.gather(*(post(i) for i in range(start, start + 10)))
    _check(app, proxy, before, prefix, errors)


@pytest.mark.parametrize("on", [(), Exception], ids=name)
def test_keyed_posts_are_still_retried_under_faults(
    upstream: tuple[Effects, TcpProxy], on: Any
) -> None:
    """A POST carrying an Idempotency-Key is safe to repeat: the same faults are retried."""
    app, proxy = upstream
    prefix = f"/keyed/{name(on)}/"
    inner = httpx.HTTPTransport(limits=NO_KEEPALIVE)
    transport = ResilientTransport(
        inner, policy=policy(on), idempotency_keys=True, sleep=lambda seconds: None
    )
    base = f"http://127.0.0.1:{proxy.port}"
    with httpx.Client(transport=transport, timeout=TIMEOUT, base_url=base) as client:
        for i in range(30):
            try:
                client.post(f"{prefix}{i}", content=b"{}")
            except httpx.TransportError:
                pass
    effects = [n for path, n in app.counts.items() if path.startswith(prefix)]
    assert max(effects) > 1  # retried after the server acted: the key makes that safe


# --------------------------------------------------------------------------- libfiu

FIU_SERVER = """
import json, socket, sys
from collections import Counter

import uvicorn

counts = Counter()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["path"] == "/__counts":
        body = json.dumps(counts).encode()
    else:
        counts[scope["path"]] += 1
        body = b"x" * 64
    length = str(len(body)).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", length)]})
    await send({"type": "http.response.body", "body": body})


config = uvicorn.Config(app, log_level="critical", http="h11", lifespan="off")
uvicorn.Server(config).run(sockets=[socket.socket(fileno=int(sys.argv[1]))])
"""
FIU_SEND_FAILURES = "enable_random name=posix/io/net/send,probability=0.1"


@pytest.fixture(scope="module")
def fiu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The counting server in a subprocess whose send() fails at random (libfiu's
    fiu-run): the server acts on a request, then its answer may be lost."""
    fiu_run = shutil.which("fiu-run")
    if fiu_run is None:
        pytest.skip("libfiu's fiu-run is not installed")
    script = tmp_path_factory.mktemp("fiu") / "server.py"
    script.write_text(FIU_SERVER)
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    # -f "": no remote-control pipes; the socket is bound here, so there is no port race.
    command = [fiu_run, "-x", "-f", "", "-c", FIU_SEND_FAILURES]
    command += [sys.executable, str(script), str(listener.fileno())]
    process = subprocess.Popen(command, pass_fds=[listener.fileno()])
    listener.close()
    try:
        _fiu_counts(url)  # ready
        yield url
    finally:
        process.terminate()  # our own child, by PID
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _fiu_counts(url: str) -> dict[str, int]:
    """The server's counts, asked until an answer gets through (bounded: 200 tries)."""
    with httpx.Client(base_url=url, timeout=2.0) as client:
        for _ in range(200):
            try:
                counts: dict[str, int] = client.get("/__counts").json()
            except (httpx.TransportError, ValueError):
                time.sleep(0.05)
                continue
            return counts
    msg = "the libfiu server never answered"
    raise AssertionError(msg)


@ON
def test_unkeyed_posts_run_at_most_once_when_the_servers_send_fails(
    fiu_server: str, on: Any
) -> None:
    """libfiu makes 10 % of the server's send() calls fail: 100 unkeyed POSTs, none twice."""
    prefix = f"/fiu/{name(on)}/"
    transport = ResilientTransport(httpx.HTTPTransport(limits=NO_KEEPALIVE), policy=policy(on))
    errors = 0
    with httpx.Client(transport=transport, timeout=TIMEOUT, base_url=fiu_server) as client:
        for i in range(REQUESTS):
            try:
                client.post(f"{prefix}{i}", content=b'{"amount": 100}')
            except httpx.TransportError:
                errors += 1
    effects = {path: n for path, n in _fiu_counts(fiu_server).items() if path.startswith(prefix)}
    twice = {path: n for path, n in effects.items() if n > 1}
    assert twice == {}, f"{len(twice)} of {REQUESTS} unkeyed POSTs ran more than once"
    assert errors > 0  # answers were lost after the server acted
    assert len(effects) == REQUESTS  # each POST reached the server (send() is the only fault)
