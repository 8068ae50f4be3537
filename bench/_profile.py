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

from ._harness import NotBuilt
from .case_breaker import HOUR, aboom, anoop, atripped, boom, noop, our_breaker, tripped
from .case_policy import our_policy
from .case_retry import our_retry

CALLS = 50_000

# name -> (build the callable, is it async, does it raise)
TARGETS: dict[str, tuple[Callable[[], Any], bool, bool]] = {
    "breaker-sync": (lambda: our_breaker("profile-breaker")(noop), False, False),
    "breaker-async": (lambda: our_breaker("profile-abreaker")(anoop), True, False),
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
}


def _sync_loop(fn: Callable[[], Any], calls: int, failing: bool) -> None:
    for _ in range(calls):
        try:
            fn()
        except Exception:
            if not failing:
                raise


async def _async_loop(fn: Callable[[], Any], calls: int, failing: bool) -> None:
    for _ in range(calls):
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
    try:
        if is_async:
            return asyncio.run(_profile_async(target, build, failing))
        fn = build()
    except NotBuilt as exc:
        print(f"{target}: n/a ({exc})")
        return 0
    seconds = timeit.timeit(lambda: _sync_loop(fn, CALLS, failing), number=1)
    print(f"{target}: {seconds * 1e9 / CALLS:,.0f} ns/call without the profiler")
    profiler = cProfile.Profile()
    profiler.runcall(_sync_loop, fn, CALLS, failing)
    _print(profiler)
    return 0


async def _profile_async(target: str, build: Callable[[], Any], failing: bool) -> int:
    fn = build()
    if asyncio.iscoroutine(fn):
        fn = await fn
    loop = asyncio.get_running_loop()
    start = loop.time()
    await _async_loop(fn, CALLS, failing)
    print(f"{target}: {(loop.time() - start) * 1e9 / CALLS:,.0f} ns/call without the profiler")
    profiler = cProfile.Profile()
    profiler.enable()
    await _async_loop(fn, CALLS, failing)
    profiler.disable()
    _print(profiler)
    return 0


def _print(profiler: cProfile.Profile) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    print(f"cProfile of {CALLS:,} calls, by own time:")
    print(out.getvalue())
