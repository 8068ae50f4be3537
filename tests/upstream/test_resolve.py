"""Resolvers: dns() and the sync and async refresh drivers."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from resilience import CircuitBreaker, ConfigError, events
from resilience._upstream._config import Upstream
from resilience._upstream._pool import Pool
from resilience._upstream._resolve import arefresh, dns, refresh
from resilience.testing import FakeClock


def pool_for(clock: FakeClock, resolver: object, refresh_every: float = 5.0) -> Pool:
    return Pool(
        Upstream("svc", resolver=resolver, refresh=refresh_every),  # type: ignore[arg-type]
        breaker=lambda url: CircuitBreaker(f"resolve:{url}", clock=clock),
        clock=clock,
        random=random.Random(1).random,
    )


def test_dns_reads_localhost() -> None:
    """dns() turns getaddrinfo's answers into one URL per address, IPv6 in brackets."""
    urls = dns("localhost", 8001, scheme="https")()
    assert "https://127.0.0.1:8001" in urls
    assert all(u.startswith("https://") and u.endswith(":8001") for u in urls)
    assert len(urls) == len(set(urls))


def test_dns_async_reads_localhost() -> None:
    """aresolve() reads through the event loop with the same answer."""
    resolver = dns("localhost", 8002)
    assert sorted(asyncio.run(resolver.aresolve())) == sorted(resolver())


@pytest.mark.parametrize(
    ("args", "kwargs", "setting"),
    [
        (("http://payments", 80), {}, "host"),
        (("payments:80", 80), {}, "host"),
        (("", 80), {}, "host"),
        (("payments", 0), {}, "port"),
        (("payments", 70000), {}, "port"),
        (("payments", "80"), {}, "port"),
        (("payments", 80), {"scheme": "ftp"}, "scheme"),
    ],
)
def test_dns_validates(args: tuple[object, ...], kwargs: dict[str, object], setting: str) -> None:
    """Bad host, port or scheme is a ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=setting):
        dns(*args, **kwargs)  # type: ignore[arg-type]


def test_dns_resolvers_compare_by_settings() -> None:
    """Two dns() resolvers with the same settings are equal (config reloads can compare)."""
    assert dns("a", 1) == dns("a", 1)
    assert hash(dns("a", 1)) == hash(dns("a", 1))
    assert dns("a", 1) != dns("a", 1, scheme="https")


def test_sync_refresh_reads_when_due(clock: FakeClock) -> None:
    """The sync driver reads on the first request and again once refresh has passed."""
    calls: list[int] = []

    def resolver() -> list[str]:
        calls.append(1)
        return [f"http://10.0.0.{len(calls)}:80"]

    pool = pool_for(clock, resolver)
    refresh(pool)
    refresh(pool)
    assert len(calls) == 1
    assert [e.url for e in pool.endpoints] == ["http://10.0.0.1:80"]
    clock.advance(5)
    refresh(pool)
    assert [e.url for e in pool.endpoints] == ["http://10.0.0.2:80"]


def test_sync_refresh_keeps_set_when_resolver_raises(clock: FakeClock) -> None:
    """A resolver that raises keeps the last set; the error never reaches the caller."""
    answers: list[object] = [["http://10.0.0.1"], OSError("dns down")]

    def resolver() -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    pool = pool_for(clock, resolver)
    refresh(pool)
    clock.advance(5)
    refresh(pool)
    assert [e.url for e in pool.endpoints] == ["http://10.0.0.1:80"]


def test_sync_refresh_refuses_awaitables(clock: FakeClock) -> None:
    """A coroutine returned to the sync driver fails the read (it is closed: no warning)."""
    seen: list[events.Event] = []
    events.add_listener(seen.append)

    async def answer() -> list[str]:
        return ["http://10.0.0.1"]

    try:
        pool = pool_for(clock, lambda: answer())
        refresh(pool)
    finally:
        events.remove_listener(seen.append)
    assert pool.endpoints == ()
    assert [e.error for e in seen if isinstance(e, events.UpstreamResolveFailed)] == ["TypeError"]


def test_sync_refresh_interrupted_frees_the_claim(clock: FakeClock) -> None:
    """A KeyboardInterrupt while reading propagates and the next request may read."""
    state = {"interrupt": True}

    def resolver() -> list[str]:
        if state["interrupt"]:
            state["interrupt"] = False
            raise KeyboardInterrupt
        return ["http://10.0.0.1"]

    pool = pool_for(clock, resolver)
    with pytest.raises(KeyboardInterrupt):
        refresh(pool)
    refresh(pool)
    assert len(pool.endpoints) == 1


def test_async_refresh_awaits_async_resolvers(clock: FakeClock) -> None:
    """An async def resolver is awaited by the async driver."""

    async def resolver() -> list[str]:
        await asyncio.sleep(0)
        return ["http://10.0.0.7:81"]

    pool = pool_for(clock, resolver)
    asyncio.run(arefresh(pool))
    assert [e.url for e in pool.endpoints] == ["http://10.0.0.7:81"]


def test_async_refresh_runs_sync_resolvers_in_a_thread(clock: FakeClock) -> None:
    """A plain function resolver runs off the event loop's thread."""
    threads: list[threading.Thread] = []

    def resolver() -> list[str]:
        threads.append(threading.current_thread())
        return ["http://10.0.0.8"]

    pool = pool_for(clock, resolver)

    async def main() -> threading.Thread:
        await arefresh(pool)
        return threading.current_thread()

    loop_thread = asyncio.run(main())
    assert threads
    assert threads[0] is not loop_thread
    assert len(pool.endpoints) == 1


def test_async_refresh_uses_aresolve(clock: FakeClock) -> None:
    """A resolver with aresolve() (like dns()) is read through it in async code."""

    class Both:
        def __call__(self) -> list[str]:
            raise AssertionError("the sync path must not be used")

        async def aresolve(self) -> list[str]:
            return ["http://10.0.0.9"]

    pool = pool_for(clock, Both())
    asyncio.run(arefresh(pool))
    assert len(pool.endpoints) == 1


def test_async_refresh_failure_keeps_set(clock: FakeClock) -> None:
    """An async resolver that raises keeps the last set."""
    answers: list[object] = [["http://10.0.0.1"], RuntimeError("boom")]

    async def resolver() -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    pool = pool_for(clock, resolver)

    async def main() -> None:
        await arefresh(pool)
        clock.advance(5)
        await arefresh(pool)

    asyncio.run(main())
    assert [e.url for e in pool.endpoints] == ["http://10.0.0.1:80"]


def test_async_refresh_cancelled_frees_the_claim(clock: FakeClock) -> None:
    """A read cancelled mid-way propagates the cancellation and lets the next one read."""
    gate = {"block": True}

    async def resolver() -> list[str]:
        if gate["block"]:
            gate["block"] = False
            await asyncio.sleep(60)
        return ["http://10.0.0.1"]

    pool = pool_for(clock, resolver)

    async def main() -> None:
        task = asyncio.create_task(arefresh(pool))
        await asyncio.sleep(0)  # the read starts and blocks
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await arefresh(pool)

    asyncio.run(main())
    assert len(pool.endpoints) == 1
