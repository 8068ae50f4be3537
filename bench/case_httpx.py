"""Requests per second through our transports, bare httpx and httpx-retries, against the same
local uvicorn server (in its own process), sync and async.

Requests go one after another on a kept-alive connection, so each request's time is the
server's time plus the client's: the client-side overhead shows up directly in the figure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.util
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import httpx_retries

from resilience.httpx import AsyncResilientTransport, ResilientTransport

from ._harness import (
    Case,
    Contender,
    Row,
    Settings,
    Unsupported,
    bench_async,
    bench_sync,
    failed_row,
    median,
)
from ._servers import AppServer

TITLE = "httpx GET, local uvicorn server"
UNIT = "req/s"
# Contenders take turns in blocks of BLOCK requests, in a new order each turn, and each figure
# is the median block: drift from the other core's load then hits every contender alike.
BLOCK = 50
BLOCKS = 40
BLOCKS_QUICK = 6


def sync_contenders() -> list[Contender]:
    """Transports for httpx.Client."""
    return [
        Contender("httpx (bare)", "baseline", httpx.HTTPTransport),
        Contender("resilience", "us", ResilientTransport),
        Contender("httpx-retries", "peer", lambda: httpx_retries.RetryTransport()),
    ]


def async_contenders() -> list[Contender]:
    """Transports for httpx.AsyncClient."""
    return [
        Contender("httpx (bare)", "baseline", httpx.AsyncHTTPTransport),
        Contender("resilience", "us", AsyncResilientTransport),
        Contender(
            "httpx-retries",
            "peer",
            lambda: httpx_retries.RetryTransport(transport=httpx.AsyncHTTPTransport()),
        ),
    ]


def _rows(
    variant: str,
    contenders: Sequence[Contender],
    rps: dict[str, list[float]],
    failed: dict[str, Row],
) -> list[Row]:
    rows = []
    bare = median(rps["httpx (bare)"]) if rps.get("httpx (bare)") else None
    for c in contenders:
        if c.library in failed:
            rows.append(failed[c.library])
            continue
        value = median(rps[c.library])
        note = c.note
        if bare and c.role != "baseline":
            note = f"{(1 / value - 1 / bare) * 1e6:+.0f} µs/request vs bare httpx"
        rows.append(
            Row(
                case=TITLE,
                variant=variant,
                library=c.library,
                role=c.role,
                value=value,
                unit=UNIT,
                better="higher",
                note=note,
            )
        )
    return rows


def run_sync(url: str, settings: Settings) -> list[Row]:
    """Sequential GETs with httpx.Client, contenders interleaved in shuffled rounds."""
    blocks = settings.scale(BLOCKS, BLOCKS_QUICK)
    clients: dict[str, httpx.Client] = {}
    failed: dict[str, Row] = {}
    contenders = sync_contenders()
    for c in contenders:
        try:
            client = httpx.Client(transport=c.build(), trust_env=False)
            for _ in range(20):
                client.get(url).raise_for_status()
            clients[c.library] = client
        except Exception as exc:
            failed[c.library] = failed_row(TITLE, "sync", c, UNIT, "higher", exc)
    rps: dict[str, list[float]] = {name: [] for name in clients}
    rng = random.Random(settings.seed)
    try:
        for _ in range(blocks):
            order = list(clients)
            rng.shuffle(order)
            for name in order:
                get = clients[name].get
                start = time.perf_counter()
                for _ in range(BLOCK):
                    get(url)
                rps[name].append(BLOCK / (time.perf_counter() - start))
    finally:
        for client in clients.values():
            client.close()
    return _rows("sync", contenders, rps, failed)


async def run_async(url: str, settings: Settings) -> list[Row]:
    """Sequential awaited GETs with httpx.AsyncClient, interleaved in shuffled rounds."""
    blocks = settings.scale(BLOCKS, BLOCKS_QUICK)
    clients: dict[str, httpx.AsyncClient] = {}
    failed: dict[str, Row] = {}
    contenders = async_contenders()
    for c in contenders:
        try:
            client = httpx.AsyncClient(transport=c.build(), trust_env=False)
            for _ in range(20):
                (await client.get(url)).raise_for_status()
            clients[c.library] = client
        except Exception as exc:
            failed[c.library] = failed_row(TITLE, "async", c, UNIT, "higher", exc)
    rps: dict[str, list[float]] = {name: [] for name in clients}
    rng = random.Random(settings.seed)
    try:
        for _ in range(blocks):
            order = list(clients)
            rng.shuffle(order)
            for name in order:
                get: Callable[[str], Any] = clients[name].get
                start = time.perf_counter()
                for _ in range(BLOCK):
                    await get(url)
                rps[name].append(BLOCK / (time.perf_counter() - start))
    finally:
        for client in clients.values():
            await client.aclose()
    return _rows("async", contenders, rps, failed)


def run(settings: Settings) -> list[Row]:
    """Both variants against one server process (n/a rows when uvicorn is not installed)."""
    if importlib.util.find_spec("uvicorn") is None:
        missing = Unsupported("uvicorn is not installed")
        return [
            failed_row(TITLE, variant, c, UNIT, "higher", missing)
            for variant, contenders in (("sync", sync_contenders()), ("async", async_contenders()))
            for c in contenders
        ]
    with AppServer() as server:
        return [*run_sync(server.url, settings), *asyncio.run(run_async(server.url, settings))]


# ---------------------------------------------------------------------------------------------
# The same clients on an in-memory inner transport: no network, no server, only client cost.

MOCK_TITLE = "httpx GET, in-memory inner transport (client-side cost only)"
MOCK_URL = "http://bench.invalid/"


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def _mock_get(transport: Any) -> Callable[[], Any]:
    client = httpx.Client(transport=transport, trust_env=False)
    return functools.partial(client.get, MOCK_URL)


def _amock_get(transport: Any) -> Callable[[], Any]:
    client = httpx.AsyncClient(transport=transport, trust_env=False)
    return functools.partial(client.get, MOCK_URL)


def mock_contenders(is_async: bool) -> list[Contender]:
    """Clients whose innermost transport answers from memory."""
    wrap = _amock_get if is_async else _mock_get
    ours = AsyncResilientTransport if is_async else ResilientTransport
    return [
        Contender("httpx (bare)", "baseline", lambda: wrap(httpx.MockTransport(_answer))),
        Contender(
            "resilience",
            "us",
            lambda: wrap(ours(inner=httpx.MockTransport(_answer))),
        ),
        Contender(
            "httpx-retries",
            "peer",
            lambda: wrap(httpx_retries.RetryTransport(transport=httpx.MockTransport(_answer))),
        ),
    ]


def run_mock(settings: Settings) -> list[Row]:
    """Median CPU ns per client.get() with the network taken out."""
    # ~100 µs a call: short samples (about 30 ms), many turns, and the process's CPU time
    # rather than the wall clock, so that differences of a few µs between transports stand
    # out of the noise of a shared machine (time spent waiting for a core is not counted).
    fewer = dataclasses.replace(
        settings, number=settings.scale(300, 200), repeat=settings.scale(20, 3)
    )
    # Each "+N ns" note is the median of the per-turn differences to bare httpx.
    return [
        *bench_sync(MOCK_TITLE, "sync", mock_contenders(False), fewer, cpu=True, paired=True),
        *bench_async(MOCK_TITLE, "async", mock_contenders(True), fewer, cpu=True, paired=True),
    ]


CASES = [Case("httpx-mock", MOCK_TITLE, run_mock), Case("httpx-server", TITLE, run)]
