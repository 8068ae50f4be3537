"""Retry cost when the first attempt succeeds (the path nearly every call takes), sync and async."""

from __future__ import annotations

from typing import Any

import backoff
import stamina
import tenacity

from resilience import Retry

from ._harness import Case, Contender, Row, Settings, bench_async, bench_sync
from .case_breaker import anoop, noop

TITLE = "retry, first try succeeds"


def our_retry(fn: Any) -> Any:
    """Our Retry with three attempts on ConnectionError."""
    return Retry(on=ConnectionError, attempts=3)(fn)


def tenacity_retry(fn: Any) -> Any:
    """tenacity configured like ours: 3 attempts, exponential jittered waits, re-raise."""
    return tenacity.retry(
        retry=tenacity.retry_if_exception_type(ConnectionError),
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential_jitter(initial=0.1, max=10.0),
        reraise=True,
    )(fn)


def stamina_retry(fn: Any) -> Any:
    """stamina configured like ours."""
    return stamina.retry(on=ConnectionError, attempts=3)(fn)


def backoff_retry(fn: Any) -> Any:
    """backoff configured like ours."""
    return backoff.on_exception(backoff.expo, ConnectionError, max_tries=3, max_value=10)(fn)


def contenders(fn: Any, bare: str, variant: str) -> list[Contender]:
    """The same four retries around `fn`."""
    return [
        Contender(bare, "baseline", lambda: fn),
        Contender("resilience", "us", lambda: our_retry(fn)),
        Contender("tenacity", "peer", lambda: tenacity_retry(fn)),
        Contender("stamina", "peer", lambda: stamina_retry(fn)),
        Contender("backoff", "peer", lambda: backoff_retry(fn)),
    ]


def run(settings: Settings) -> list[Row]:
    """Happy path of a retry decorator."""
    return [
        *bench_sync(TITLE, "sync", contenders(noop, "bare call", "sync"), settings),
        *bench_async(TITLE, "async", contenders(anoop, "bare await", "async"), settings),
    ]


CASES = [Case("retry-ok", TITLE, run)]
