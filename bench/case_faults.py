"""Faults: the share of requests that succeed against a server that breaks 10 % of responses
before the first byte and cuts another 10 % in the middle of the body, and how many times a
POST's side effect ran (never more than once without an idempotency key).

Each client meets the same seeded sequence of fates (the server is reset before each one).
Requests go one after another; retries wait their real backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import httpx_retries

from resilience.httpx import AsyncResilientTransport, ResilientTransport

from ._faultserver import GET_BODY, FaultServer
from ._harness import Case, Contender, Row, Settings, failed_row

CLOSE = 0.10
CUT = 0.10
GET_TITLE = "faults: GETs that succeed (10% closed before response, 10% cut mid-body)"
POST_TITLE = "faults: POSTs that succeed (same faults)"
EFFECT_TITLE = "faults: times a POST's side effect ran, worst POST"
OK_UNIT = "% ok"
EFFECT_UNIT = "runs (max per POST)"


def _retries(**options: Any) -> Any:
    return httpx_retries.RetryTransport(retry=httpx_retries.Retry(**options))


def _aretries(**options: Any) -> Any:
    return httpx_retries.RetryTransport(
        transport=httpx.AsyncHTTPTransport(), retry=httpx_retries.Retry(**options)
    )


def get_contenders(is_async: bool) -> list[Contender]:
    """Clients for the GET run: bare httpx, ours, httpx-retries with 3 attempts and default."""
    if is_async:
        return [
            Contender("httpx (bare)", "baseline", httpx.AsyncHTTPTransport),
            Contender("resilience", "us", AsyncResilientTransport),
            Contender("httpx-retries", "peer", lambda: _aretries(total=2), "3 attempts like ours"),
            Contender("httpx-retries (defaults)", "peer", _aretries, "11 attempts, no backoff"),
        ]
    return [
        Contender("httpx (bare)", "baseline", httpx.HTTPTransport),
        Contender("resilience", "us", ResilientTransport),
        Contender("httpx-retries", "peer", lambda: _retries(total=2), "3 attempts like ours"),
        Contender("httpx-retries (defaults)", "peer", _retries, "11 attempts, no backoff"),
    ]


def post_contenders(is_async: bool) -> list[Contender]:
    """Clients for the POST run, including a blind POST retry for contrast."""
    ours = AsyncResilientTransport if is_async else ResilientTransport
    make = _aretries if is_async else _retries
    bare = httpx.AsyncHTTPTransport if is_async else httpx.HTTPTransport
    return [
        Contender("httpx (bare)", "baseline", bare),
        Contender("resilience", "us", ours, "no key: POST not retried"),
        Contender(
            "resilience (idempotency_keys=True)",
            "us",
            lambda: ours(idempotency_keys=True),
            "a key per POST; the server dedupes",
        ),
        Contender("httpx-retries (defaults)", "peer", make, "POST never retried"),
        Contender(
            "httpx-retries (POST allowed)",
            "peer",
            lambda: make(total=2, allowed_methods=["GET", "POST"]),
            "blind POST retry, shown for contrast",
        ),
    ]


def _get_ok(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.content == GET_BODY


def _sync_gets(client: httpx.Client, url: str, count: int) -> int:
    ok = 0
    for _ in range(count):
        try:
            ok += _get_ok(client.get(url + "get"))
        except Exception:
            continue
    return ok


async def _async_gets(client: httpx.AsyncClient, url: str, count: int) -> int:
    ok = 0
    for _ in range(count):
        try:
            ok += _get_ok(await client.get(url + "get"))
        except Exception:
            continue
    return ok


def _sync_posts(client: httpx.Client, url: str, count: int) -> int:
    ok = 0
    for i in range(count):
        try:
            response = client.post(url + "post", content=b"{}", headers={"x-request-id": str(i)})
            ok += response.status_code == 200 and response.content.startswith(b"{")
        except Exception:
            continue
    return ok


async def _async_posts(client: httpx.AsyncClient, url: str, count: int) -> int:
    ok = 0
    for i in range(count):
        try:
            response = await client.post(
                url + "post", content=b"{}", headers={"x-request-id": str(i)}
            )
            ok += response.status_code == 200 and response.content.startswith(b"{")
        except Exception:
            continue
    return ok


def _row(title: str, variant: str, c: Contender, value: float, unit: str, note: str) -> Row:
    return Row(
        case=title,
        variant=variant,
        library=c.library,
        role=c.role,
        value=value,
        unit=unit,
        better="lower" if unit == EFFECT_UNIT else "higher",
        note="; ".join(n for n in (c.note, note) if n),
    )


def _drive(
    server: FaultServer,
    variant: str,
    c: Contender,
    count: int,
    run: Callable[[Any, str, int], int],
    is_post: bool,
) -> list[Row]:
    """Reset the server, run `count` requests through a client on `c`'s transport."""
    server.reset()
    title = POST_TITLE if is_post else GET_TITLE
    try:
        ok = run(c.build(), server.url, count)
    except Exception as exc:
        rows = [failed_row(title, variant, c, OK_UNIT, "higher", exc)]
        if is_post:
            rows.append(failed_row(EFFECT_TITLE, variant, c, EFFECT_UNIT, "lower", exc))
        return rows
    share = 100.0 * ok / count
    sent = f"{server.requests} requests sent for {count}"
    rows = [_row(title, variant, c, share, OK_UNIT, sent)]
    if is_post:
        effects = server.side_effects
        twice = sum(1 for n in effects.values() if n > 1)
        worst = float(max(effects.values(), default=0))
        rows.append(_row(EFFECT_TITLE, variant, c, worst, EFFECT_UNIT, f"{twice} ran twice+"))
    return rows


def _sync_client(fn: Callable[[httpx.Client, str, int], int]) -> Callable[[Any, str, int], int]:
    def run(transport: Any, url: str, count: int) -> int:
        with httpx.Client(transport=transport, trust_env=False) as client:
            return fn(client, url, count)

    return run


def _async_client(
    fn: Callable[[httpx.AsyncClient, str, int], Any],
) -> Callable[[Any, str, int], int]:
    async def main(transport: Any, url: str, count: int) -> int:
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            result: int = await fn(client, url, count)
            return result

    return lambda transport, url, count: asyncio.run(main(transport, url, count))


def run(settings: Settings) -> list[Row]:
    """GETs and POSTs, sync and async, every client against the same fates."""
    gets = settings.scale(400, 60)
    posts = settings.scale(200, 40)
    rows: list[Row] = []
    with FaultServer(close=CLOSE, cut=CUT, seed=settings.seed) as server:
        for variant, is_async in (("sync", False), ("async", True)):
            get_run = _async_client(_async_gets) if is_async else _sync_client(_sync_gets)
            post_run = _async_client(_async_posts) if is_async else _sync_client(_sync_posts)
            for c in get_contenders(is_async):
                rows += _drive(server, f"{variant}, {gets} GETs", c, gets, get_run, False)
            for c in post_contenders(is_async):
                rows += _drive(server, f"{variant}, {posts} POSTs", c, posts, post_run, True)
    order = {GET_TITLE: 0, POST_TITLE: 1, EFFECT_TITLE: 2}
    return sorted(rows, key=lambda r: order[r.case])


CASES = [Case("faults", GET_TITLE.split(":")[0], run)]
