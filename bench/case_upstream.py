"""Upstreams: what callers see when the endpoints of one service are not alike, and what
routing costs per request.

Three endpoints in a child process (``bench._upstreamserver``): healthy ones answer in
5 ms; one is 10x slower; in the second scenario another fails half its requests with a 503.
Concurrent callers (2 and 8 in the first scenario, 4 in the second) send GETs through
`AsyncResilientTransport` with each balancer, through a naive client that picks an
endpoint at random with no retries and no ejection, and (first scenario) through a pool of
the two healthy endpoints alone: the reference the slowed pool should come close to.
Figures: caller-visible errors (an exception or a 5xx), p50 and p99 latency.

How it measures, so that the contenders are compared alike:

- every contender keeps one client (and its transport's state) for the whole scenario and
  first sends `WARMUP` GETs per caller that are not counted: connections are open and the
  balancers have seen each endpoint answer, so the figures are the steady state;
- then `ROUNDS` rounds (2 with ``--quick``), each contender in a freshly shuffled order
  every round: a burst of load from elsewhere on the machine falls on all of them alike
  rather than on whichever ran at that moment;
- every contender sends exactly the same number of GETs (the variant says how many: at
  least 2,400 in a full run, so a p99 rests on 24 answers or more).

The routing cost is timed with no network at all (an inner transport that answers at
once): a request to an upstream's logical host against the same transport sending to a
plain host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx

from resilience import CircuitBreaker, Policy, Retry, backoff
from resilience.httpx import AsyncResilientTransport, ResilientTransport, Upstream

from ._harness import Case, Contender, Row, Settings, bench_sync, failed_row
from ._servers import ROOT, _wait_for_port

BASE = 0.005
SLOW = 10 * BASE
FAIL = 0.5
CALLERS = 4
"""Concurrent callers in the mixed scenario; the slowed one runs with 2 and with 8."""
WARMUP = 25
"""GETs per caller each contender sends before anything is measured."""
ROUNDS = 6
"""Measured rounds per contender (2 with ``--quick``), in a shuffled order each round."""
BALANCERS = ("peak_ewma", "least_request", "round_robin", "random")

P99 = "upstream: p99 latency, 3 endpoints"
P50 = "upstream: p50 latency, 3 endpoints"
ERRORS = "upstream: caller-visible errors, 3 endpoints"
CALL = "upstream: transport call with an instant inner transport"
OVERHEAD = "upstream: routing cost per request over the plain transport"
SLOWED = "one 10x slower"
MIXED = "one 10x slower, one failing 50%"


@contextmanager
def endpoints(specs: Sequence[tuple[float, float]], seed: int) -> Iterator[list[str]]:
    """The endpoints of `bench._upstreamserver` in a child process; yields their URLs."""
    args = [f"{delay}:{fail}" for delay, fail in specs]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._upstreamserver", *args, "--seed", str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ports = proc.stdout.readline().split()
        if len(ports) != len(specs):
            msg = f"the upstream server did not start (said {ports!r})"
            raise RuntimeError(msg)
        for port in ports:
            _wait_for_port(int(port), proc)
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def _policy(name: str) -> Policy:
    return Policy(
        retry=Retry(on=httpx.TransportError, attempts=3, backoff=backoff.exponential(0.005, 0.05)),
        breaker=CircuitBreaker(
            name,
            failure_rate=0.5,
            minimum_calls=10,
            window=50,
            open_duration=backoff.exponential(5.0, 60.0, jitter=False),
        ),
        attempt_timeout=2.0,
    )


class Naive:
    """A client picking an endpoint at random per request: no retry, no ejection."""

    def __init__(self, urls: Sequence[str], seed: int) -> None:
        self.urls = list(urls)
        self.rng = random.Random(seed)
        self.transport = httpx.AsyncHTTPTransport()

    def url(self, path: str) -> str:
        return self.rng.choice(self.urls) + path


class _Run:
    """One contender's client, kept open across the rounds, and what it measured."""

    def __init__(self, contender: Contender) -> None:
        self.contender = contender
        built = contender.build()
        self.naive = built if isinstance(built, Naive) else None
        transport = built.transport if self.naive is not None else built
        self.client = httpx.AsyncClient(transport=transport, timeout=5.0, trust_env=False)
        self.latencies: list[float] = []
        self.errors = 0
        self.failure: Exception | None = None

    async def send(self, per_caller: int, callers: int, *, record: bool) -> None:
        """*per_caller* GETs from each of *callers* concurrent workers."""
        if self.failure is not None:
            return
        client = self.client
        naive = self.naive
        latencies: list[float] = []
        errors = 0

        async def worker() -> None:
            nonlocal errors
            for _ in range(per_caller):
                url = naive.url("/item") if naive is not None else "http://svc/item"
                start = time.perf_counter()
                try:
                    response = await client.get(url)
                    failed = response.status_code >= 500
                except httpx.HTTPError:
                    failed = True
                latencies.append(time.perf_counter() - start)
                errors += failed

        try:
            await asyncio.gather(*(worker() for _ in range(callers)))
        except Exception as exc:  # the row says why; the other contenders go on
            self.failure = exc
            return
        if record:
            self.latencies += latencies
            self.errors += errors


async def _drive(
    contenders: Sequence[Contender], per_caller: int, callers: int, rounds: int, seed: int
) -> list[_Run]:
    """Warm every contender up, then send *per_caller* GETs per caller in each of *rounds*
    rounds, the contenders in a shuffled order each round (see the module docstring)."""
    runs = [_Run(contender) for contender in contenders]
    rng = random.Random(seed)
    try:
        for run in runs:
            await run.send(WARMUP, callers, record=False)
        for _ in range(rounds):
            order = list(runs)
            rng.shuffle(order)
            for run in order:
                await run.send(per_caller, callers, record=True)
    finally:
        for run in runs:
            await run.client.aclose()
    return runs


def _ours(urls: Sequence[str], balancer: str) -> Callable[[], Any]:
    def build() -> Any:
        return AsyncResilientTransport(
            upstreams=[Upstream("svc", endpoints=list(urls), balancer=balancer)],
            policy=_policy(f"bench-upstream-{balancer}"),
        )

    return build


def _contenders(urls: Sequence[str], scenario: str, seed: int) -> list[Contender]:
    found = [
        Contender(f"resilience ({name})", "us", _ours(urls, name), "retries elsewhere, ejects")
        for name in BALANCERS
    ]
    if scenario == SLOWED:
        found.append(
            Contender(
                "two healthy endpoints alone",
                "baseline",
                _ours(urls[:2], "peak_ewma"),
                "reference: the slow one removed",
            )
        )
    found.append(
        Contender(
            "naive random client",
            "baseline",
            lambda: Naive(urls, seed),
            "random endpoint, no retry, no ejection",
        )
    )
    return found


def _quantile(values: Sequence[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _scenario(
    scenario: str,
    specs: Sequence[tuple[float, float]],
    settings: Settings,
    callers: int,
    count: int,
) -> list[Row]:
    rounds = settings.scale(ROUNDS, 2)
    per_caller = count // (rounds * callers)
    variant = f"{scenario}, {per_caller * rounds * callers} GETs, {callers} callers"
    rows: list[Row] = []
    with endpoints(specs, settings.seed) as urls:
        contenders = _contenders(urls, scenario, settings.seed)
        runs = asyncio.run(_drive(contenders, per_caller, callers, rounds, settings.seed))
    for run in runs:
        contender = run.contender
        if run.failure is not None:
            for title, unit in ((ERRORS, "%"), (P50, "ms"), (P99, "ms")):
                rows.append(failed_row(title, variant, contender, unit, "lower", run.failure))
            continue
        latencies = run.latencies
        figures = (
            (ERRORS, "%", 100.0 * run.errors / len(latencies)),
            (P50, "ms", 1000 * _quantile(latencies, 50)),
            (P99, "ms", 1000 * _quantile(latencies, 99)),
        )
        for title, unit, value in figures:
            rows.append(
                Row(
                    case=title,
                    variant=variant,
                    library=contender.library,
                    role=contender.role,
                    value=value,
                    unit=unit,
                    better="lower",
                    note=contender.note,
                )
            )
    return rows


class Instant(httpx.BaseTransport):
    """An inner transport that answers at once with the same small response."""

    def __init__(self) -> None:
        self.response = httpx.Response(200, content=b"ok")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.response


PATHS = 64
"""Paths the routing cost's second variant cycles through (an endpoint reuses the URL it
made only for the same URL again, so the first variant shows a fixed path, this one not)."""


def _call(
    make_transport: Callable[[], Any], url: str, paths: int
) -> Callable[[], Callable[[], object]]:
    def build() -> Callable[[], object]:
        transport = make_transport()
        if paths == 1:
            request = httpx.Request("GET", url)
            return lambda: transport.handle_request(request)
        turn = itertools.cycle([httpx.Request("GET", f"{url}/{i}") for i in range(paths)])
        return lambda: transport.handle_request(next(turn))

    return build


def _overhead(settings: Settings) -> list[Row]:
    def transport(**options: Any) -> Any:
        return ResilientTransport(Instant(), **options)

    urls = ["http://10.0.0.1:8001", "http://10.0.0.2:8002", "http://10.0.0.3:8003"]

    def routed(balancer: str) -> Callable[[], Any]:
        return lambda: transport(upstreams=[Upstream("svc", endpoints=urls, balancer=balancer)])

    rows: list[Row] = []
    for paths in (1, PATHS):
        contenders = [
            Contender(
                "resilience (plain host)",
                "baseline",
                _call(transport, urls[0] + "/item", paths),
                "per-host breaker",
            ),
            *(
                Contender(
                    f"resilience (upstream, {name})",
                    "us",
                    _call(routed(name), "http://svc/item", paths),
                )
                for name in BALANCERS
            ),
        ]
        # One path keeps the variant's old name, so `--compare` matches it with earlier runs.
        variant = "sync, no network" + ("" if paths == 1 else f", {paths} paths in turn")
        # CPU time: the time the process waits for a core (a shared machine) is left out.
        # Paired: each routed sample minus the plain host's of the same turn, the median.
        timed = bench_sync(CALL, variant, contenders, settings, cpu=True, paired=True)
        rows += [
            dataclasses.replace(row, note=contender.note)
            for row, contender in zip(timed, contenders, strict=True)
        ]
        for row in timed[1:]:
            if row.added is None:
                continue
            rows.append(
                Row(
                    case=OVERHEAD,
                    variant=variant,
                    library=row.library,
                    role="us",
                    value=row.added,
                    unit="ns/request",
                    better="lower",
                    note="target: at most 2,000 ns; median per-turn difference",
                )
            )
    return rows


def run(settings: Settings) -> list[Row]:
    """Both latency scenarios, then the routing cost."""
    slowed = [(BASE, 0.0), (BASE, 0.0), (SLOW, 0.0)]
    rows = _scenario(SLOWED, slowed, settings, 2, settings.scale(2400, 300))
    # Busier callers: peak-EWMA x in-flight then sends the fast endpoints' overflow (and
    # their latency tails, held as peaks) to the slow one too.
    rows += _scenario(SLOWED, slowed, settings, 8, settings.scale(2400, 400))
    mixed = [(BASE, 0.0), (SLOW, 0.0), (BASE, FAIL)]
    rows += _scenario(MIXED, mixed, settings, CALLERS, settings.scale(2400, 400))
    rows += _overhead(settings)
    order = {ERRORS: 0, P50: 1, P99: 2, CALL: 3, OVERHEAD: 4}
    return sorted(rows, key=lambda r: order[r.case])


CASES = [Case("upstream", "upstream: balancers, ejection and routing cost", run)]
