"""A full policy (bulkhead, total timeout, retry, breaker) around a no-op, sync and async.

No peer composes these patterns, so each peer row is the nearest stack a user would build by
hand from peers: a semaphore as bulkhead, the retry library's own total-time bound (or
asyncio.timeout) as timeout, its retry, and a breaker, in our order (outermost first).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import aiobreaker
import backoff
import circuitbreaker
import pybreaker
import stamina
import tenacity

from resilience import Bulkhead, CircuitBreaker, Policy, Retry

from ._harness import Case, Contender, Row, Settings, bench_async, bench_sync
from .case_breaker import anoop, noop

TITLE = "full policy (bulkhead+timeout+retry+breaker)"
LIMIT = 20
TOTAL = 5.0


class Full(Exception):
    """The hand-made bulkhead is full."""


def our_policy(name: str, fn: Any) -> Any:
    """Our Policy(timeout, retry, breaker, bulkhead)."""
    return Policy(
        timeout=TOTAL,
        retry=Retry(on=ConnectionError, attempts=3),
        breaker=CircuitBreaker(name),
        bulkhead=Bulkhead(LIMIT),
    )(fn)


def with_semaphore(inner: Callable[[], Any]) -> Callable[[], Any]:
    """A non-blocking bulkhead from a BoundedSemaphore."""
    sem = threading.BoundedSemaphore(LIMIT)

    def call() -> Any:
        if not sem.acquire(blocking=False):
            raise Full
        try:
            return inner()
        finally:
            sem.release()

    return call


def with_async_semaphore_and_timeout(
    inner: Callable[[], Awaitable[Any]],
) -> Callable[[], Awaitable[Any]]:
    """A non-blocking asyncio bulkhead and a total asyncio.timeout."""
    sem = asyncio.Semaphore(LIMIT)

    async def call() -> Any:
        if sem.locked():
            raise Full
        async with sem, asyncio.timeout(TOTAL):
            return await inner()

    return call


def asyncio_timeout_alone(inner: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """A bare ``async with asyncio.timeout(TOTAL)`` block: what one loop timer per call costs.

    Our whole async policy is held to half of it (issue 15): its total timeout shares a loop
    timer between calls instead of arming one per call.
    """

    async def call() -> Any:
        async with asyncio.timeout(TOTAL):
            return await inner()

    return call


def tenacity_retry(fn: Any) -> Any:
    """tenacity with 3 attempts, a 5 s total bound and jittered exponential waits."""
    return tenacity.retry(
        retry=tenacity.retry_if_exception_type(ConnectionError),
        stop=tenacity.stop_after_attempt(3) | tenacity.stop_after_delay(TOTAL),
        wait=tenacity.wait_exponential_jitter(initial=0.1, max=10.0),
        reraise=True,
    )(fn)


def stamina_retry(fn: Any) -> Any:
    """stamina with 3 attempts and a 5 s total bound."""
    return stamina.retry(on=ConnectionError, attempts=3, timeout=TOTAL)(fn)


def backoff_retry(fn: Any) -> Any:
    """backoff with 3 tries and a 5 s total bound."""
    return backoff.on_exception(
        backoff.expo, ConnectionError, max_tries=3, max_time=TOTAL, max_value=10
    )(fn)


def sync_contenders() -> list[Contender]:
    """Our policy and three hand-built peer stacks, sync."""
    return [
        Contender("bare call", "baseline", lambda: noop),
        Contender("resilience", "us", lambda: our_policy("bench-policy-sync", noop)),
        Contender(
            "tenacity+pybreaker+semaphore",
            "peer",
            lambda: with_semaphore(tenacity_retry(pybreaker.CircuitBreaker()(noop))),
        ),
        Contender(
            "stamina+circuitbreaker+semaphore",
            "peer",
            lambda: with_semaphore(
                stamina_retry(circuitbreaker.CircuitBreaker(name="c-pol-sync")(noop))
            ),
        ),
        Contender(
            "backoff+circuitbreaker+semaphore",
            "peer",
            lambda: with_semaphore(
                backoff_retry(circuitbreaker.CircuitBreaker(name="c-pol-sync2")(noop))
            ),
        ),
    ]


def async_contenders() -> list[Contender]:
    """Our policy and three hand-built peer stacks, async."""
    return [
        Contender("bare await", "baseline", lambda: anoop),
        Contender("asyncio.timeout alone", "baseline", lambda: asyncio_timeout_alone(anoop)),
        Contender("resilience", "us", lambda: our_policy("bench-policy-async", anoop)),
        Contender(
            "tenacity+aiobreaker+timeout+semaphore",
            "peer",
            lambda: with_async_semaphore_and_timeout(
                tenacity_retry(aiobreaker.CircuitBreaker()(anoop))
            ),
        ),
        Contender(
            "stamina+aiobreaker+timeout+semaphore",
            "peer",
            lambda: with_async_semaphore_and_timeout(
                stamina_retry(aiobreaker.CircuitBreaker()(anoop))
            ),
        ),
        Contender(
            "backoff+circuitbreaker+timeout+semaphore",
            "peer",
            lambda: with_async_semaphore_and_timeout(
                backoff_retry(circuitbreaker.CircuitBreaker(name="c-pol-async")(anoop))
            ),
        ),
    ]


def run(settings: Settings) -> list[Row]:
    """Happy path through every layer."""
    return [
        *bench_sync(TITLE, "sync", sync_contenders(), settings),
        *bench_async(TITLE, "async", async_contenders(), settings),
    ]


CASES = [Case("policy", TITLE, run)]
