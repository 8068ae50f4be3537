"""Breakers under concurrency: parallel slow calls (does the breaker serialise them?) and the
half-open stampede (how many callers reach a dependency that is still down?)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import aiobreaker
import circuitbreaker
import purgatory
import pybreaker

from ._harness import Case, Contender, Role, Row, Settings, failed_row, measure, median
from .case_breaker import no_asyncio, our_breaker

PARALLEL = "8 parallel 50 ms calls, one breaker"
STAMPEDE = "half-open stampede: 20 callers, dependency down"
WORKERS = 8
CALL_SECONDS = 0.05
CALLERS = 20
OPEN_SECONDS = 0.3
UNIT = f"of {CALLERS} reached dep."


def slow() -> None:
    """A healthy but slow dependency (real time: this case measures wall time)."""
    time.sleep(CALL_SECONDS)


async def aslow() -> None:
    """The async slow dependency."""
    await asyncio.sleep(CALL_SECONDS)


def _purgatory_sync(fn: Callable[..., Any], name: str, **options: Any) -> Any:
    return purgatory.SyncCircuitBreakerFactory(**options)(name)(fn)


async def _purgatory_async(fn: Callable[..., Any], name: str, **options: Any) -> Any:
    factory = purgatory.AsyncCircuitBreakerFactory(**options)
    await factory.initialize()
    return factory(name)(fn)


def parallel_threads(fn: Callable[[], object], workers: int) -> float:
    """Wall milliseconds for `workers` threads that each call `fn` once, released together."""
    barrier = threading.Barrier(workers + 1)

    def worker() -> None:
        barrier.wait()
        fn()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - start) * 1000


async def parallel_tasks(fn: Callable[[], Awaitable[object]], workers: int) -> float:
    """Wall milliseconds for `workers` tasks that each await `fn` once."""
    start = time.perf_counter()
    await asyncio.gather(*(fn() for _ in range(workers)))
    return (time.perf_counter() - start) * 1000


def run_parallel(settings: Settings) -> list[Row]:
    """8 threads (or tasks) x one 50 ms call each, through one closed breaker: wall time."""
    repeats = settings.scale(5, 2)
    sync = [
        Contender("bare call", "baseline", lambda: slow),
        Contender("resilience", "us", lambda: our_breaker("bench-parallel-sync")(slow)),
        Contender("pybreaker", "peer", lambda: pybreaker.CircuitBreaker()(slow)),
        Contender(
            "circuitbreaker", "peer", lambda: circuitbreaker.CircuitBreaker(name="c-par")(slow)
        ),
        Contender("purgatory", "peer", lambda: _purgatory_sync(slow, "p-par")),
        Contender("aiobreaker", "peer", lambda: aiobreaker.CircuitBreaker()(slow), "sync path"),
    ]
    rows = [
        measure(
            PARALLEL,
            "threads",
            c,
            "ms wall",
            "lower",
            lambda fn: median([parallel_threads(fn, WORKERS) for _ in range(repeats)]),
        )
        for c in sync
    ]
    return rows + asyncio.run(_parallel_async(repeats))


async def _parallel_async(repeats: int) -> list[Row]:
    contenders = [
        Contender("bare await", "baseline", lambda: aslow),
        Contender("resilience", "us", lambda: our_breaker("bench-parallel-async")(aslow)),
        Contender("pybreaker", "peer", no_asyncio),
        Contender(
            "circuitbreaker", "peer", lambda: circuitbreaker.CircuitBreaker(name="c-apar")(aslow)
        ),
        Contender("purgatory", "peer", lambda: _purgatory_async(aslow, "p-apar")),
        Contender("aiobreaker", "peer", lambda: aiobreaker.CircuitBreaker()(aslow)),
    ]
    rows = []
    for c in contenders:
        try:
            fn = c.build()
            if asyncio.iscoroutine(fn):
                fn = await fn
            walls = [await parallel_tasks(fn, WORKERS) for _ in range(repeats)]
        except Exception as exc:
            rows.append(failed_row(PARALLEL, "tasks", c, "ms wall", "lower", exc))
            continue
        rows.append(
            Row(
                case=PARALLEL,
                variant="tasks",
                library=c.library,
                role=c.role,
                value=median(walls),
                unit="ms wall",
                better="lower",
                note=c.note,
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Half-open stampede


class Down:
    """A dependency that is still down: counts who reached it, takes 50 ms, then fails.

    `fn` and `afn` are plain functions (some peers refuse to decorate bound methods).
    """

    def __init__(self) -> None:
        self.calls = 0
        lock = threading.Lock()

        def count() -> None:
            with lock:
                self.calls += 1

        def fn() -> None:
            count()
            time.sleep(CALL_SECONDS)
            raise ConnectionError

        async def afn() -> None:
            count()
            await asyncio.sleep(CALL_SECONDS)
            raise ConnectionError

        self.fn = fn
        self.afn = afn


def _stampede_sync_builders() -> list[tuple[Contender, Down]]:
    pairs = []
    builders: list[tuple[str, Role, Callable[[Down], Any]]] = [
        (
            "resilience",
            "us",
            lambda d: our_breaker(
                "bench-stampede-sync", consecutive_failures=1, open_duration=OPEN_SECONDS
            )(d.fn),
        ),
        ("pybreaker", "peer", lambda d: pybreaker.CircuitBreaker(1, OPEN_SECONDS)(d.fn)),
        (
            "circuitbreaker",
            "peer",
            lambda d: circuitbreaker.CircuitBreaker(1, OPEN_SECONDS, name="c-st")(d.fn),
        ),
        (
            "purgatory",
            "peer",
            lambda d: _purgatory_sync(d.fn, "p-st", default_threshold=1, default_ttl=OPEN_SECONDS),
        ),
        (
            "aiobreaker",
            "peer",
            lambda d: aiobreaker.CircuitBreaker(1, timedelta(seconds=OPEN_SECONDS))(d.fn),
        ),
    ]
    for library, role, make in builders:
        down = Down()
        pairs.append((Contender(library, role, _bind(make, down)), down))
    return pairs


def _bind(make: Callable[[Any], Any], arg: Any) -> Callable[[], Any]:
    return lambda: make(arg)


def _trip(fn: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):
        fn()


def stampede_threads(fn: Callable[[], object]) -> None:
    """CALLERS threads call `fn` at once; every outcome is swallowed."""
    barrier = threading.Barrier(CALLERS)

    def worker() -> None:
        barrier.wait()
        _trip(fn)

    threads = [threading.Thread(target=worker) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_stampede(settings: Settings) -> list[Row]:
    """Trip every breaker, wait out the open period once, then send 20 callers into each."""
    del settings  # counts, not timings: one pass is exact
    rows: list[Row] = []
    ready: list[tuple[Contender, Down, Callable[[], object]]] = []
    for contender, down in _stampede_sync_builders():
        try:
            fn = contender.build()
            _trip(fn)
            ready.append((contender, down, fn))
        except Exception as exc:
            rows.append(failed_row(STAMPEDE, "threads", contender, UNIT, "lower", exc))
    time.sleep(OPEN_SECONDS + 0.3)
    for contender, down, fn in ready:
        down.calls = 0
        stampede_threads(fn)
        rows.append(_stampede_row("threads", contender, down.calls))
    rows.sort(key=lambda r: _ORDER.index(r.library))
    return rows + asyncio.run(_stampede_async())


_ORDER = ["resilience", "pybreaker", "circuitbreaker", "purgatory", "aiobreaker"]


def _stampede_row(variant: str, contender: Contender, calls: int) -> Row:
    return Row(
        case=STAMPEDE,
        variant=variant,
        library=contender.library,
        role=contender.role,
        value=float(calls),
        unit=UNIT,
        better="lower",
        note=contender.note,
    )


async def _stampede_async() -> list[Row]:
    rows: list[Row] = []
    ready: list[tuple[Contender, Down, Callable[[], Awaitable[object]]]] = []
    builders: Sequence[tuple[str, Role, Callable[[Down], Any]]] = [
        (
            "resilience",
            "us",
            lambda d: our_breaker(
                "bench-stampede-async", consecutive_failures=1, open_duration=OPEN_SECONDS
            )(d.afn),
        ),
        ("pybreaker", "peer", lambda d: no_asyncio()),
        (
            "circuitbreaker",
            "peer",
            lambda d: circuitbreaker.CircuitBreaker(1, OPEN_SECONDS, name="c-ast")(d.afn),
        ),
        (
            "purgatory",
            "peer",
            lambda d: _purgatory_async(
                d.afn, "p-ast", default_threshold=1, default_ttl=OPEN_SECONDS
            ),
        ),
        (
            "aiobreaker",
            "peer",
            lambda d: aiobreaker.CircuitBreaker(1, timedelta(seconds=OPEN_SECONDS))(d.afn),
        ),
    ]
    for library, role, make in builders:
        down = Down()
        contender = Contender(library, role, _bind(make, down))
        try:
            fn = contender.build()
            if asyncio.iscoroutine(fn):
                fn = await fn
            with contextlib.suppress(Exception):
                await fn()
            ready.append((contender, down, fn))
        except Exception as exc:
            rows.append(failed_row(STAMPEDE, "tasks", contender, UNIT, "lower", exc))
    await asyncio.sleep(OPEN_SECONDS + 0.3)
    for contender, down, fn in ready:
        down.calls = 0
        await asyncio.gather(*(fn() for _ in range(CALLERS)), return_exceptions=True)
        rows.append(_stampede_row("tasks", contender, down.calls))
    rows.sort(key=lambda r: _ORDER.index(r.library))
    return rows


CASES = [
    Case("threads", PARALLEL, run_parallel),
    Case("stampede", STAMPEDE, run_stampede),
]
