"""Idempotency: what server-side ``Idempotency-Key`` costs on the happy path, and whether it
holds under network faults.

- Overhead: a keyed POST through the ASGI middleware, in process (no sockets), with and
  without ``idempotency=``: the difference is what a request pays (claim, run, record,
  store). With a `RedisStore`, the number of Redis round trips per request is counted.
- Fault campaign: our client (``ResilientTransport(idempotency_keys=True)`` with retries)
  sends keyed POSTs to a server run under libfiu's ``fiu-run``, which makes a share of every
  send() and recv() of the server fail (its clients' sockets and its Redis connections).
  Every POST the client saw succeed must have run its effect exactly once, and no key may run
  twice. Needs Redis on 127.0.0.1:6379 and ``fiu-run`` (Debian: fiu-utils).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from resilience import Policy, Retry
from resilience.backoff import exponential
from resilience.httpx import ResilientTransport
from resilience.idempotency import Idempotency
from resilience.integrations.fastapi import add_resilience
from resilience.stores import MemoryStore, RedisStore

from ._harness import Case, Contender, Row, Settings, Unsupported, failed_row
from ._idemserver import IdemServer, fiu_available, read_effects

OVERHEAD_TITLE = "idempotency: server overhead per keyed POST (ASGI, in process)"
TRIPS_TITLE = "idempotency: Redis round trips per keyed POST"
CAMPAIGN_TITLE = "idempotency: keyed POSTs under fiu-run faults (2% of send/recv fail)"
FAULTS = 0.02
REDIS_PORT = 6379


# ------------------------------------------------------------------------------ the campaign


@dataclasses.dataclass(frozen=True, slots=True)
class Campaign:
    """What a fault campaign saw: client outcomes and the server's effects per key."""

    posts: int
    succeeded: int
    replayed: int  # successes answered from the store (a retry after a lost response)
    failures: dict[str, int]  # final outcome of the POSTs that did not succeed
    runs: collections.Counter[str]  # effects per key, as the server recorded them
    success_keys: tuple[str, ...]
    seconds: float

    @property
    def keys_run_twice(self) -> int:
        """Keys whose effect ran more than once (must be 0)."""
        return sum(1 for n in self.runs.values() if n > 1)

    @property
    def successes_not_run_once(self) -> int:
        """Successful POSTs whose effect did not run exactly once (must be 0)."""
        return sum(1 for key in self.success_keys if self.runs[key] != 1)


def _client(posts: int) -> httpx.Client:
    transport = ResilientTransport(
        idempotency_keys=True,
        policy=Policy(
            retry=Retry(
                on=httpx.TransportError,
                attempts=6,
                backoff=exponential(initial=0.01, maximum=0.2, jitter=True),
            )
        ),
        # 409: the same key still runs on the server (its response was lost mid-way).
        retry_statuses=frozenset({409, 429, 502, 503, 504}),
        max_retry_after=1.0,
    )
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(5.0),
        limits=httpx.Limits(max_connections=posts),
        trust_env=False,
    )


def run_campaign(posts: int, *, faults: float = FAULTS, workers: int = 4) -> Campaign:
    """Send *posts* keyed POSTs, *workers* at a time, to a server under *faults*."""
    if not fiu_available():
        msg = "fiu-run is not installed (Debian: fiu-utils)"
        raise Unsupported(msg)
    import redis

    prefix = f"bench-idem:{uuid.uuid4().hex[:10]}:"
    outcomes: list[tuple[str, str]] = []  # (outcome, key)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="idem-") as folder:
        effects = Path(folder) / "effects.txt"
        try:
            with IdemServer(prefix, effects, faults=faults) as server, _client(posts) as client:

                def post(i: int) -> tuple[str, str]:
                    try:
                        response = client.post(server.url + "effect", json={"n": i})
                    except httpx.HTTPError as exc:
                        return type(exc).__name__, ""
                    if response.status_code != 200:
                        return f"HTTP {response.status_code}", ""
                    replayed = response.headers.get("idempotent-replayed") == "true"
                    return ("replayed" if replayed else "ok"), str(response.json()["key"])

                with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                    outcomes = list(pool.map(post, range(posts)))
            runs = read_effects(effects)
        finally:
            conn = redis.Redis(port=REDIS_PORT, socket_timeout=5)
            keys = list(conn.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 500):
                conn.delete(*keys[start : start + 500])
            conn.close()
    failures = collections.Counter(o for o, _ in outcomes if o not in ("ok", "replayed"))
    return Campaign(
        posts=posts,
        succeeded=sum(1 for o, _ in outcomes if o in ("ok", "replayed")),
        replayed=sum(1 for o, _ in outcomes if o == "replayed"),
        failures=dict(failures),
        runs=runs,
        success_keys=tuple(key for o, key in outcomes if o in ("ok", "replayed")),
        seconds=time.perf_counter() - started,
    )


# ------------------------------------------------------------------------------ the overhead


def _asgi_app(idempotency: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def order(request: Any) -> Response:
        await request.body()
        return Response(b'{"ok":true}', media_type="application/json")

    async def other(request: Any) -> Response:
        return Response(b"")

    routes = [Route(f"/other/{i}", other, methods=["POST"]) for i in range(8)]
    app = Starlette(routes=[*routes, Route("/orders/{id}", order, methods=["POST"])])
    if idempotency is None:
        add_resilience(app)
    else:
        add_resilience(app, idempotency=idempotency)
    return app


def _keyed_post(app: Any) -> Callable[[], Awaitable[None]]:
    """One keyed POST straight into the ASGI app (a fresh key each time: the full path)."""
    counter = iter(range(1 << 62))

    async def call() -> None:
        key = f"k-{next(counter)}".encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/orders/7",
            "raw_path": b"/orders/7",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"bench"),
                (b"content-type", b"application/json"),
                (b"idempotency-key", key),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b'{"sku": 1}', "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            msg = f"unexpected status {sent[0]['status']}"
            raise RuntimeError(msg)

    return call


async def _interleaved(
    without: Callable[[], Awaitable[None]],
    with_: Callable[[], Awaitable[None]],
    number: int,
    rounds: int,
    seed: int,
) -> tuple[float, float, float]:
    """µs per call of each, and the median of the per-round differences.

    Each round times both, in a random order: a burst of load from elsewhere on the machine
    then lands on both alike, and the difference of one round is measured under one load.
    """
    import random

    rng = random.Random(seed)
    for fn in (without, with_):
        for _ in range(200):
            await fn()  # warm-up
    plain: list[float] = []
    keyed: list[float] = []
    for _ in range(rounds):
        pair = [(without, plain), (with_, keyed)]
        rng.shuffle(pair)
        for fn, samples in pair:
            start = time.perf_counter_ns()
            for _ in range(number):
                await fn()
            samples.append((time.perf_counter_ns() - start) / number / 1000)
    differences = [k - p for p, k in zip(plain, keyed, strict=True)]
    return statistics.median(plain), statistics.median(keyed), statistics.median(differences)


def run_overhead(settings: Settings) -> list[Row]:
    """µs per keyed POST with and without idempotency (MemoryStore), in one event loop."""
    contender = Contender("resilience (MemoryStore)", "us", lambda: None)
    try:
        without = _keyed_post(_asgi_app(None))
        with_ = _keyed_post(_asgi_app(Idempotency(store=MemoryStore())))
        number = settings.scale(2_000, 500)
        rounds = settings.scale(15, 5)
        plain, keyed, overhead = asyncio.run(
            _interleaved(without, with_, number, rounds, settings.seed)
        )
    except Exception as exc:
        return [failed_row(OVERHEAD_TITLE, "memory store", contender, "µs/request", "lower", exc)]
    return [
        Row(
            case=OVERHEAD_TITLE,
            variant="memory store",
            library="starlette + add_resilience()",
            role="baseline",
            value=plain,
            unit="µs/request",
            better="lower",
            note="a keyed POST, idempotency off",
        ),
        Row(
            case=OVERHEAD_TITLE,
            variant="memory store",
            library=contender.library,
            role="us",
            value=keyed,
            unit="µs/request",
            better="lower",
            note=f"{overhead:+.1f} µs/request for idempotency (target <= 30)",
        ),
    ]


def run_round_trips(settings: Settings) -> list[Row]:
    """Redis commands sent per keyed POST (happy path), and µs per request with Redis."""
    contender = Contender("resilience (RedisStore)", "us", lambda: None)
    try:
        import redis

        prefix = f"bench-idem:{uuid.uuid4().hex[:10]}:"
        store = RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix, timeout=1.0)
        try:
            store._client.ping()
        except (redis.RedisError, OSError) as exc:
            store.close()
            msg = "no Redis on 127.0.0.1:6379"
            raise Unsupported(msg) from exc
        commands = 0
        execute = store._client.execute_command

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal commands
            commands += 1
            return execute(*args, **kwargs)

        try:
            fn = _keyed_post(_asgi_app(Idempotency(store=store)))
            requests = settings.scale(1_000, 200)

            async def drive() -> float:
                nonlocal commands
                for _ in range(20):
                    await fn()  # warm-up: scripts loaded
                store._client.execute_command = counted
                start = time.perf_counter()
                for _ in range(requests):
                    await fn()
                return (time.perf_counter() - start) / requests * 1e6

            per_request = asyncio.run(drive())
        finally:
            store.close()
            conn = redis.Redis(port=REDIS_PORT)
            keys = list(conn.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 500):
                conn.delete(*keys[start : start + 500])
            conn.close()
    except Exception as exc:
        return [failed_row(TRIPS_TITLE, "redis store", contender, "round trips", "lower", exc)]
    return [
        Row(
            case=TRIPS_TITLE,
            variant="redis store",
            library=contender.library,
            role="us",
            value=commands / requests,
            unit="round trips",
            better="lower",
            note=f"{per_request:.0f} µs/request in process (target <= 2 round trips)",
        )
    ]


def run_faults(settings: Settings) -> list[Row]:
    """The fault campaign: 2,000 keyed POSTs (200 in quick mode)."""
    contender = Contender("resilience (idempotency_keys=True)", "us", lambda: None)
    posts = settings.scale(2_000, 200)
    variant = f"{posts:,} POSTs"
    try:
        result = run_campaign(posts)
    except Exception as exc:
        return [failed_row(CAMPAIGN_TITLE, variant, contender, "keys run twice", "lower", exc)]
    failures = ", ".join(f"{n} {what}" for what, n in sorted(result.failures.items()))
    note = (
        f"{100 * result.succeeded / posts:.1f}% succeeded ({result.replayed} answered by a "
        f"replay), {result.successes_not_run_once} successes not run exactly once, "
        f"{sum(result.runs.values())} effects; failed: {failures or 'none'}; "
        f"{result.seconds:.0f} s"
    )
    return [
        Row(
            case=CAMPAIGN_TITLE,
            variant=variant,
            library=contender.library,
            role="us",
            value=float(result.keys_run_twice),
            unit="keys run twice",
            better="lower",
            note=note,
        )
    ]


def run(settings: Settings) -> list[Row]:
    """Overhead (memory), round trips (Redis), then the fault campaign."""
    return [*run_overhead(settings), *run_round_trips(settings), *run_faults(settings)]


CASES = [Case("idempotency", "idempotency: overhead, Redis round trips, fault campaign", run)]
