"""`python -m bench --profile TARGET`: where the time of one of our paths goes (cProfile).

Prints ns per call without the profiler, then the top functions by own time for N calls, so
the owner of a slow path sees which lines to look at.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import timeit
from collections.abc import Callable
from typing import Any

import httpx

from resilience.httpx import AsyncResilientTransport, ResilientTransport

from ._harness import CHUNK
from .case_breaker import HOUR, aboom, anoop, atripped, boom, noop, our_breaker, tripped
from .case_httpx import _amock_get, _answer, _mock_get
from .case_policy import our_policy
from .case_retry import our_retry

CALLS = 50_000
TRANSPORT_CALLS = 5_000

# name -> (build the callable, is it async, does it raise)
TARGETS: dict[str, tuple[Callable[[], Any], bool, bool]] = {
    "breaker-sync": (lambda: our_breaker("profile-breaker")(noop), False, False),
    "breaker-async": (lambda: our_breaker("profile-abreaker")(anoop), True, False),
    "breaker-time-sync": (
        lambda: our_breaker("profile-tbreaker", window_seconds=60.0)(noop),
        False,
        False,
    ),
    "breaker-time-async": (
        lambda: our_breaker("profile-atbreaker", window_seconds=60.0)(anoop),
        True,
        False,
    ),
    "breaker-open": (
        lambda: tripped(
            our_breaker("profile-open", consecutive_failures=1, open_duration=HOUR)(boom)
        ),
        False,
        True,
    ),
    "breaker-open-async": (
        lambda: atripped(
            our_breaker("profile-aopen", consecutive_failures=1, open_duration=HOUR)(aboom)
        ),
        True,
        True,
    ),
    "retry-sync": (lambda: our_retry(noop), False, False),
    "retry-async": (lambda: our_retry(anoop), True, False),
    "policy-sync": (lambda: our_policy("profile-policy", noop), False, False),
    "policy-async": (lambda: our_policy("profile-apolicy", anoop), True, False),
    "transport-sync": (lambda: _transport(False), False, False),
    "transport-async": (lambda: _transport(True), True, False),
}


def _transport(is_async: bool) -> Any:
    """client.get through our transport on an in-memory inner transport (no network)."""
    ours = AsyncResilientTransport if is_async else ResilientTransport
    transport = ours(inner=httpx.MockTransport(_answer))
    wrap = _amock_get if is_async else _mock_get
    return wrap(transport)


def _sync_loop(fn: Callable[[], Any], calls: int, failing: bool) -> None:
    for _ in range(calls):
        try:
            fn()
        except Exception:
            if not failing:
                raise


async def _async_loop(fn: Callable[[], Any], calls: int, failing: bool) -> None:
    for i in range(calls):
        if not i % CHUNK:
            await asyncio.sleep(0)  # let the loop run, as bench_async does
        try:
            await fn()
        except Exception:
            if not failing:
                raise


def profile(target: str) -> int:
    """Print ns/call and the cProfile top 25 for `target`; returns the exit status."""
    if target not in TARGETS:
        print(f"unknown target {target!r}; choose from: {', '.join(TARGETS)}")
        return 2
    build, is_async, failing = TARGETS[target]
    calls = TRANSPORT_CALLS if target.startswith("transport") else CALLS
    if is_async:
        return asyncio.run(_profile_async(target, build, failing, calls))
    fn = build()
    seconds = timeit.timeit(lambda: _sync_loop(fn, calls, failing), number=1)
    print(f"{target}: {seconds * 1e9 / calls:,.0f} ns/call without the profiler")
    profiler = cProfile.Profile()
    profiler.runcall(_sync_loop, fn, calls, failing)
    _print(profiler, calls)
    return 0


async def _profile_async(target: str, build: Callable[[], Any], failing: bool, calls: int) -> int:
    fn = build()
    if asyncio.iscoroutine(fn):
        fn = await fn
    loop = asyncio.get_running_loop()
    start = loop.time()
    await _async_loop(fn, calls, failing)
    print(f"{target}: {(loop.time() - start) * 1e9 / calls:,.0f} ns/call without the profiler")
    profiler = cProfile.Profile()
    profiler.enable()
    await _async_loop(fn, calls, failing)
    profiler.disable()
    _print(profiler, calls)
    return 0


def _print(profiler: cProfile.Profile, calls: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    print(f"cProfile of {calls:,} calls, by own time:")
    print(out.getvalue())
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(r"resilience[/\\]", 20)
    print("Our functions only, by cumulative time:")
    print(out.getvalue())
