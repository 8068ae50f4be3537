"""Memory: bytes per breaker (10,000 live breakers), what a transport's per-host breakers
take for 10,000 hosts, and what a breaker holds after 1,000,000 calls (a time-window breaker
must stay bounded however many calls it has seen).

Measured with tracemalloc: bytes still allocated after the breakers are built (or after the
calls), divided by their number. Names are allocated before tracing, so they are not counted.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiobreaker
import circuitbreaker
import httpx
import purgatory
import pybreaker

from resilience.httpx import ResilientTransport
from resilience.testing import FakeClock

from ._harness import Case, Contender, Row, Settings, failed_row, measure
from .case_breaker import our_breaker

PER_BREAKER = "memory per breaker (10,000 breakers)"
AFTER_CALLS = "memory of one breaker after 1,000,000 calls (1 in 10 fails)"
PER_HOST = "memory of a transport's per-host breakers (10,000 hosts)"
BREAKERS = 10_000
HOSTS = 10_000


def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes that `build()` leaves allocated, and what it built (kept alive by the caller)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, built
    finally:
        tracemalloc.stop()


def bytes_per_breaker(make: Callable[[str], Any], count: int) -> float:
    """Average bytes per breaker when `count` of them are alive at once."""
    names = [f"bench-mem-{i}" for i in range(count)]
    slots: list[Any] = [None] * count  # allocated before tracing: only the breakers count

    def build() -> list[Any]:
        for i, name in enumerate(names):
            slots[i] = make(name)
        return slots

    used, _ = _traced(build)
    slots.clear()
    return used / count


def _purgatory_maker() -> Callable[[str], Any]:
    factory = purgatory.SyncCircuitBreakerFactory()
    return factory.get_breaker


def per_breaker_contenders() -> list[Contender]:
    """One maker of a named breaker per library."""
    return [
        Contender("resilience", "us", lambda: _our_maker(), "count window of 100 (default)"),
        Contender(
            "resilience (time window)",
            "us",
            lambda: _our_maker(window_seconds=60.0),
            "window_seconds=60",
        ),
        Contender("pybreaker", "peer", lambda: lambda name: pybreaker.CircuitBreaker(name=name)),
        Contender(
            "circuitbreaker",
            "peer",
            lambda: lambda name: circuitbreaker.CircuitBreaker(name=name),
        ),
        Contender("purgatory", "peer", _purgatory_maker, "in-memory unit of work"),
        Contender("aiobreaker", "peer", lambda: lambda name: aiobreaker.CircuitBreaker(name=name)),
    ]


def _our_maker(**options: Any) -> Callable[[str], Any]:
    our_breaker("bench-mem-probe", **options)  # n/a now rather than inside the traced loop
    return lambda name: our_breaker(name, **options)


def run_per_breaker(settings: Settings) -> list[Row]:
    """10,000 breakers of each library alive at once (2,000 in quick mode)."""
    count = settings.scale(BREAKERS, 2_000)
    return [
        measure(
            PER_BREAKER,
            f"{count:,} breakers",
            c,
            "bytes/breaker",
            "lower",
            lambda make: bytes_per_breaker(make, count),
        )
        for c in per_breaker_contenders()
    ]


# ---------------------------------------------------------------------------------------------
# Per-host breakers


def bytes_per_host(count: int) -> float:
    """Bytes a transport keeps per host after one request to each of *count* hosts.

    What a host costs in a transport with no policy: its breaker (the default per-host
    settings), its name, its authority and its entry in the bounded map. The requests and
    responses are gone by then (collected before the figure is read).
    """
    urls = [f"http://h{i}.bench.test/" for i in range(count)]
    transport = ResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)), max_hosts=count + 1
    )
    with httpx.Client(transport=transport) as client:
        client.get("http://warm-up.bench.test/")

        def build() -> None:
            for url in urls:
                client.get(url)

        used, _ = _traced(build)
        assert len(transport.breakers) == count + 1
    return used / count


def run_per_host(settings: Settings) -> list[Row]:
    """A transport's per-host breakers after 10,000 hosts (2,000 in quick mode)."""
    count = settings.scale(HOSTS, 2_000)
    contender = Contender(
        "resilience",
        "us",
        lambda: count,
        "default per-host breaker (window=200): breaker, name, map entry",
    )
    return [measure(PER_HOST, f"{count:,} hosts", contender, "bytes/host", "lower", bytes_per_host)]


# ---------------------------------------------------------------------------------------------
# After many calls


def ok() -> None:
    """A successful call."""


def after_calls(
    wrap: Callable[[Callable[[], None]], Callable[[], None]], calls: int
) -> tuple[float, float]:
    """Bytes a breaker holds after a tenth of `calls` and after all of them (1 in 10 fail).

    The two figures side by side show whether memory grows with the number of calls.
    """

    def fail() -> None:
        raise ConnectionError

    def drive(good: Callable[[], None], bad: Callable[[], None], count: int) -> None:
        for i in range(count):
            if i % 10 == 9:
                try:
                    bad()
                except Exception:
                    continue
            else:
                good()

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        good, bad = wrap(ok), wrap(fail)
        drive(good, bad, calls // 10)
        gc.collect()
        early = tracemalloc.get_traced_memory()[0] - before
        drive(good, bad, calls - calls // 10)
        gc.collect()
        return float(early), float(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()


def _our_wrap(name: str, **options: Any) -> Callable[[Callable[[], None]], Callable[[], None]]:
    fake = FakeClock()
    breaker = our_breaker(name, clock=fake, **options)

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        guarded = breaker(fn)

        def call() -> None:
            fake.advance(0.001)  # 1,000 calls per simulated second: the window keeps rolling
            guarded()

        return call

    return wrap


def after_calls_contenders() -> list[Contender]:
    """A single breaker per library, both wrapped functions going through it."""
    return [
        Contender(
            "resilience",
            "us",
            lambda: _our_wrap("bench-mem-time", window_seconds=60.0),
            "window_seconds=60, 1,000 calls per simulated second",
        ),
        Contender(
            "resilience (count window)",
            "us",
            lambda: _our_wrap("bench-mem-count", window=100),
            "window=100",
        ),
        Contender(
            "pybreaker",
            "peer",
            lambda: _shared(pybreaker.CircuitBreaker()),
            "no time window: consecutive count",
        ),
        Contender(
            "circuitbreaker",
            "peer",
            lambda: _shared(circuitbreaker.CircuitBreaker(name="c-mem")),
            "no time window: consecutive count",
        ),
        Contender(
            "purgatory",
            "peer",
            lambda: _shared(purgatory.SyncCircuitBreakerFactory()("p-mem")),
            "no time window: consecutive count",
        ),
        Contender(
            "aiobreaker",
            "peer",
            lambda: _shared(aiobreaker.CircuitBreaker(timeout_duration=timedelta(seconds=60))),
            "no time window: consecutive count; sync path",
        ),
    ]


def _shared(decorate: Callable[[Any], Any]) -> Callable[[Callable[[], None]], Callable[[], None]]:
    return lambda fn: decorate(fn)


def run_after_calls(settings: Settings) -> list[Row]:
    """One breaker per library after 1,000,000 calls (20,000 in quick mode)."""
    calls = settings.scale(1_000_000, 20_000)
    variant = f"{calls:,} calls"
    rows = []
    for c in after_calls_contenders():
        try:
            early, late = after_calls(c.build(), calls)
        except Exception as exc:
            rows.append(failed_row(AFTER_CALLS, variant, c, "bytes", "lower", exc))
            continue
        note = f"{early:,.0f} after {calls // 10:,} calls"
        rows.append(
            Row(
                case=AFTER_CALLS,
                variant=variant,
                library=c.library,
                role=c.role,
                value=late,
                unit="bytes",
                better="lower",
                note=f"{note}; {c.note}" if c.note else note,
            )
        )
    return rows


CASES = [
    Case("memory-breakers", PER_BREAKER, run_per_breaker),
    Case("memory-hosts", PER_HOST, run_per_host),
    Case("memory-calls", AFTER_CALLS, run_after_calls),
]
