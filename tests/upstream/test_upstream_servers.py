"""Upstreams against real uvicorn servers on 127.0.0.1: a server killed mid-run, a slow one,
one answering 503s, endpoint sets changed by the resolver mid-run, panic mode.

Timing assertions use wide margins (two shared cores); the strict figures are the bench's
(``python -m bench --only upstream``).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from resilience import CircuitBreaker, Policy, Retry, backoff, events
from resilience.httpx import AsyncResilientTransport, ResilientTransport, Upstream
from tests.upstream.backends import Fleet, fleet

pytestmark = pytest.mark.network


def policy(name: str, **breaker: object) -> Policy:
    settings: dict[str, object] = {"consecutive_failures": 3, "open_duration": 30.0}
    settings.update(breaker)
    return Policy(
        retry=Retry(on=httpx.TransportError, attempts=3, backoff=backoff.constant(0.001)),
        breaker=CircuitBreaker(name, **settings),  # type: ignore[arg-type]
        attempt_timeout=5.0,
    )


@pytest.fixture
def ejections() -> Iterator[list[events.Event]]:
    """EndpointEjected / EndpointReturned events, in order."""
    got: list[events.Event] = []

    def keep(event: events.Event) -> None:
        if isinstance(event, events.EndpointEjected | events.EndpointReturned):
            got.append(event)

    events.add_listener(keep)
    yield got
    events.remove_listener(keep)


def test_killed_endpoint_costs_no_errors_after_ejection(
    ejections: list[events.Event],
) -> None:
    """One of three servers killed mid-run: after its ejection, at most 0.1 % of GETs fail."""
    with fleet(3) as running:
        transport = ResilientTransport(
            upstreams=[Upstream("svc", endpoints=running.urls)], policy=policy("killed")
        )
        outcomes: list[tuple[bool, bool]] = []  # (ok, after the first ejection)
        with httpx.Client(transport=transport, timeout=5.0) as http:
            for i in range(500):
                if i == 100:
                    running.stop(1)
                ejected = bool(ejections)
                try:
                    ok = http.get("http://svc/item?i=1").status_code == 200
                except httpx.HTTPError:
                    ok = False
                outcomes.append((ok, ejected))
        view = transport.upstreams["svc"]
        states = {e.url: e.healthy for e in view.endpoints}
    after = [ok for ok, ejected in outcomes if ejected]
    assert len(after) >= 300
    assert after.count(False) <= len(after) * 0.001
    assert all(ok for ok, _ in outcomes)  # before the ejection, retries covered it too
    assert states == {running.urls[0]: True, running.urls[1]: False, running.urls[2]: True}
    assert [(e.event, e.endpoint) for e in ejections] == [  # type: ignore[attr-defined]
        ("upstream.endpoint_ejected", running.urls[1])
    ]


def test_killed_endpoint_async(ejections: list[events.Event]) -> None:
    """The async transport: concurrent GETs through a kill see no failure at all."""

    async def main(running: Fleet) -> list[int]:
        transport = AsyncResilientTransport(
            upstreams=[Upstream("svc", endpoints=running.urls)], policy=policy("akilled")
        )
        statuses: list[int] = []
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as http:

            async def worker(count: int) -> None:
                for _ in range(count):
                    response = await http.get("http://svc/")
                    statuses.append(response.status_code)

            first = [asyncio.create_task(worker(25)) for _ in range(4)]
            await asyncio.sleep(0.05)
            await asyncio.to_thread(running.stop, 0)
            await asyncio.gather(*first)
            await asyncio.gather(*(worker(25) for _ in range(4)))
        return statuses

    with fleet(3) as running:
        statuses = asyncio.run(main(running))
    assert statuses == [200] * 200
    assert any(getattr(e, "endpoint", None) == running.urls[0] for e in ejections)


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _latencies(balancer: str, running: Fleet, urls: list[str], n: int) -> list[float]:
    async def main() -> list[float]:
        transport = AsyncResilientTransport(
            upstreams=[Upstream("svc", endpoints=urls, balancer=balancer)],
            policy=policy(f"slow-{balancer}"),
        )
        took: list[float] = []
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as http:

            async def worker(count: int) -> None:
                for _ in range(count):
                    start = time.perf_counter()
                    response = await http.get("http://svc/")
                    took.append(time.perf_counter() - start)
                    assert response.status_code == 200

            await asyncio.gather(*(worker(n // 4) for _ in range(4)))
        return took

    return asyncio.run(main())


def test_peak_ewma_avoids_a_slowed_endpoint() -> None:
    """One of three 10x slower: peak_ewma sends it little and keeps p90 near the fast ones;
    round_robin sends it a third, so its p90 is the slow endpoint's latency."""
    fast, slow = 0.01, 0.1
    with fleet(3) as running:
        for backend in running.backends:
            backend.delay = fast
        running.backends[2].delay = slow
        ewma = _latencies("peak_ewma", running, running.urls, 240)
        slow_share_ewma = running.backends[2].hits / 240
        running.backends[2].hits = 0
        rr = _latencies("round_robin", running, running.urls, 240)
        slow_share_rr = running.backends[2].hits / 240
    assert slow_share_ewma < 0.10
    assert slow_share_rr > 0.25
    assert _p(ewma, 90) < 0.6 * slow
    assert _p(rr, 90) >= 0.9 * slow


def test_503_endpoint_is_ejected_and_requests_succeed(ejections: list[events.Event]) -> None:
    """An endpoint answering 503: GETs are retried elsewhere, then it gets nothing more."""
    with fleet(3) as running:
        running.backends[0].status = 503
        transport = ResilientTransport(
            upstreams=[Upstream("svc", endpoints=running.urls)], policy=policy("five03")
        )
        with httpx.Client(transport=transport, timeout=5.0) as http:
            statuses = [http.get("http://svc/").status_code for _ in range(100)]
            hits = running.backends[0].hits
            more = [http.get("http://svc/").status_code for _ in range(100)]
    assert statuses == more == [200] * 100
    assert hits == 3  # consecutive_failures=3, then ejected
    assert running.backends[0].hits == hits


def test_endpoint_returns_after_its_probe_succeeds(ejections: list[events.Event]) -> None:
    """A recovered endpoint gets a probe after open_duration and rejoins the rotation."""
    with fleet(2) as running:
        running.backends[1].status = 503
        transport = ResilientTransport(
            upstreams=[Upstream("svc", endpoints=running.urls)],
            policy=policy("returns", open_duration=0.2),
        )
        with httpx.Client(transport=transport, timeout=5.0) as http:
            give_up = time.monotonic() + 10
            while not ejections and time.monotonic() < give_up:
                http.get("http://svc/")
            running.backends[1].status = 200
            time.sleep(0.25)
            while len(ejections) < 2 and time.monotonic() < give_up:
                http.get("http://svc/")
            before = running.backends[1].hits
            for _ in range(40):
                http.get("http://svc/")
    assert [e.event for e in ejections] == [
        "upstream.endpoint_ejected",
        "upstream.endpoint_returned",
    ]
    assert running.backends[1].hits - before >= 10


def test_resolver_changes_the_set_mid_run_without_dropping_requests() -> None:
    """The resolver moves the set from b0,b1 to b1,b2 while threads send: nothing fails,
    b0 stops getting requests, b2 starts."""
    with fleet(3) as running:
        current = {"urls": running.urls[:2]}
        transport = ResilientTransport(
            upstreams=[Upstream("svc", resolver=lambda: current["urls"], refresh=0.05)],
            policy=policy("moving"),
        )
        failures: list[BaseException] = []
        stop = threading.Event()

        def sender(http: httpx.Client) -> None:
            while not stop.is_set():
                try:
                    response = http.get("http://svc/")
                    assert response.status_code == 200
                except BaseException as exc:  # collected for the assertion
                    failures.append(exc)

        for backend in running.backends:
            backend.delay = 0.005
        with httpx.Client(transport=transport, timeout=5.0) as http:
            threads = [threading.Thread(target=sender, args=(http,)) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            current["urls"] = running.urls[1:]
            time.sleep(0.3)  # the next read (within 0.05 s) moves the set
            moved_at = running.backends[0].hits
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(10)
        urls = [e.url for e in transport.upstreams["svc"].endpoints]
    assert failures == []
    assert urls == running.urls[1:]
    assert running.backends[0].hits == moved_at  # nothing more once the set moved
    assert running.backends[2].hits > 0


@pytest.mark.parametrize("panic_threshold", [50, 0])
def test_panic_mode(panic_threshold: int) -> None:
    """Two of three answering 503: with panic mode every endpoint keeps getting requests
    (and retries still find the good one); without it, the bad ones are ejected."""
    with fleet(3) as running:
        running.backends[0].status = 503
        running.backends[1].status = 503
        upstream = Upstream(
            "svc",
            endpoints=running.urls,
            panic_threshold=panic_threshold,
            max_ejection_percent=100 if panic_threshold == 0 else 50,
        )
        transport = ResilientTransport(
            upstreams=[upstream], policy=policy(f"panic{panic_threshold}")
        )
        with httpx.Client(transport=transport, timeout=5.0) as http:
            first = [http.get("http://svc/").status_code for _ in range(30)]
            bad_hits = running.backends[0].hits + running.backends[1].hits
            later = [http.get("http://svc/").status_code for _ in range(30)]
            bad_later = running.backends[0].hits + running.backends[1].hits - bad_hits
        panic = transport.upstreams["svc"].panic
    assert first == later == [200] * 30
    if panic_threshold:
        assert panic is True
        assert bad_later > 5  # still sent to, despite their breakers
    else:
        assert panic is False
        assert bad_later == 0


def test_real_servers_see_the_logical_host_and_the_path() -> None:
    """Over real sockets: the endpoint gets the Host header and the path and query as sent."""
    with fleet(2) as running:
        transport = ResilientTransport(
            upstreams=[Upstream("orders.internal", endpoints=running.urls)],
            policy=policy("hostpath"),
        )
        with httpx.Client(transport=transport, timeout=5.0) as http:
            responses = [http.get("http://orders.internal:8080/v1/items?id=7") for _ in range(6)]
    assert {r.headers["x-backend"] for r in responses} <= {"b0", "b1"}
    assert all(r.request.url == "http://orders.internal:8080/v1/items?id=7" for r in responses)
    seen = running.backends[0].hosts + running.backends[1].hosts
    assert seen == ["orders.internal:8080"] * 6
    targets = running.backends[0].targets + running.backends[1].targets
    assert targets == ["/v1/items?id=7"] * 6
