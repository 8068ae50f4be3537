"""One behaviour table, every client: httpx and httpx2 (sync and async), requests, aiohttp.

Each row runs against a real uvicorn server on 127.0.0.1 (the fake LLM API, which records
every attempt), through the client's own adapter: `resilience.httpx`, `resilience.httpx2`,
`resilience.requests.ResilientAdapter` and `resilience.aiohttp.middleware`. The rules are
the transports' (docs/httpx.md); a client that passes every row behaves like the others.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from resilience import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    DeadlineExceeded,
    Policy,
    Retry,
    deadline,
)
from resilience._http._hosts import BreakerMap
from tests.helpers import FakeLLM, serve_llm

pytestmark = pytest.mark.network

PATH = "/v1/chat/completions"
KINDS = ["httpx", "httpx-async", "httpx2", "httpx2-async", "requests", "aiohttp"]


class Driver:
    """One client library behind our adapter, driven the same way by every test.

    ``call`` sends one request and returns (status, body); inside *within* seconds of a
    deadline when given (``async with deadline`` for the async clients).
    """

    def __init__(self, kind: str, options: dict[str, Any]) -> None:
        self.kind = kind
        self.waits: list[float] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._close: Callable[[], object] = lambda: None
        if kind.endswith("-async") or kind == "aiohttp":
            self._loop = asyncio.new_event_loop()

            async def record(seconds: float) -> None:
                self.waits.append(seconds)

            options = {"sleep": record, **options}
        else:
            options = {"sleep": self.waits.append, **options}
        self.breakers: BreakerMap
        self._build(kind, options)

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return self._loop.run_until_complete(coro)

    def _build(self, kind: str, options: dict[str, Any]) -> None:
        if kind.startswith(("httpx2", "httpx")):
            if kind.startswith("httpx2"):
                import httpx2 as lib

                from resilience import httpx2 as ours
            else:
                import httpx as lib  # type: ignore[no-redef]

                from resilience import httpx as ours  # type: ignore[no-redef]
            if kind.endswith("-async"):
                transport: Any = ours.AsyncResilientTransport(**options)
                client: Any = lib.AsyncClient(transport=transport, timeout=10.0)
                self._close = lambda: self._run(client.aclose())
            else:
                transport = ours.ResilientTransport(**options)
                client = lib.Client(transport=transport, timeout=10.0)
                self._close = client.close
            self._client = client
            self.adapter: Any = transport
            self.breakers = transport.breakers
        elif kind == "requests":
            import requests

            from resilience.requests import ResilientAdapter

            adapter = ResilientAdapter(**options)
            session = requests.Session()
            session.mount("http://", adapter)
            self._client = session
            self._close = session.close
            self.adapter = adapter
            self.breakers = adapter.breakers
        else:
            import aiohttp

            from resilience.aiohttp import middleware

            ours_mw = middleware(**options)

            async def make() -> aiohttp.ClientSession:
                return aiohttp.ClientSession(
                    middlewares=(ours_mw,), timeout=aiohttp.ClientTimeout(total=10.0)
                )

            session = self._run(make())
            self._client = session
            self._close = lambda: self._run(session.close())
            self.adapter = ours_mw
            self.breakers = ours_mw.breakers

    def url(self, text: str) -> Any:
        """*text* as the client's own URL type (what its responses carry)."""
        if self.kind.startswith("httpx2"):
            import httpx2

            return httpx2.URL(text)
        if self.kind.startswith("httpx"):
            import httpx

            return httpx.URL(text)
        if self.kind == "aiohttp":
            import yarl

            return yarl.URL(text)
        return text  # requests has no URL type: a string

    def call(
        self, method: str, url: str, *, within: float | None = None, json: object = None
    ) -> tuple[int, bytes]:
        """Send one request; return its status and body."""
        kind = self.kind
        if kind == "aiohttp":
            return self._run(self._aiohttp(method, url, within, json))  # type: ignore[no-any-return]
        if self._loop is not None:
            return self._run(self._httpx_async(method, url, within, json))  # type: ignore[no-any-return]
        if within is None:
            return self._sync(method, url, json)
        with deadline(within):
            return self._sync(method, url, json)

    def _sync(self, method: str, url: str, json: object) -> tuple[int, bytes]:
        response = self._client.request(method, url, json=json, timeout=10.0)
        return response.status_code, response.content

    async def _httpx_async(
        self, method: str, url: str, within: float | None, json: object
    ) -> tuple[int, bytes]:
        if within is None:
            response = await self._client.request(method, url, json=json)
        else:
            async with deadline(within):
                response = await self._client.request(method, url, json=json)
        return response.status_code, response.content

    async def _aiohttp(
        self, method: str, url: str, within: float | None, json: object
    ) -> tuple[int, bytes]:
        async def go() -> tuple[int, bytes]:
            async with self._client.request(method, url, json=json) as response:
                return response.status, await response.read()

        if within is None:
            return await go()
        async with deadline(within):
            return await go()

    def close(self) -> None:
        self._close()
        if self._loop is not None:
            self._loop.close()


@pytest.fixture(scope="module")
def llm() -> Iterator[tuple[str, FakeLLM]]:
    """One fake API for the module; each test starts with an empty record and script."""
    with serve_llm() as served:
        yield served


@pytest.fixture
def server(llm: tuple[str, FakeLLM]) -> tuple[str, FakeLLM]:
    """The module's fake API, reset."""
    url, fake = llm
    fake.reset()
    return url, fake


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest) -> Iterator[Callable[..., Driver]]:
    """Builds a driver of the parametrised client kind (closed when the test ends)."""
    drivers: list[Driver] = []

    def build(**options: Any) -> Driver:
        driver = Driver(request.param, options)
        drivers.append(driver)
        return driver

    yield build
    for driver in drivers:
        driver.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_get_answered_503_is_retried(
    make: Callable[..., Driver], server: tuple[str, FakeLLM]
) -> None:
    """A GET answered 503 twice is sent a third time and its 200 comes back."""
    url, fake = server
    fake.script("503", "503")
    status, _ = make().call("GET", url + PATH)
    assert status == 200
    assert len(fake.attempts) == 3


def test_unkeyed_post_answered_503_is_not_retried(
    make: Callable[..., Driver], server: tuple[str, FakeLLM]
) -> None:
    """A POST without a key answered 503 is sent once: its 503 comes back."""
    url, fake = server
    fake.script("503", "503")
    status, _ = make().call("POST", url + PATH, json={"q": 1})
    assert status == 503
    assert len(fake.attempts) == 1


def test_unkeyed_post_cut_after_the_server_acted_is_not_retried(
    make: Callable[..., Driver], server: tuple[str, FakeLLM]
) -> None:
    """A POST whose answer broke mid-body is not sent again: the server may have acted."""
    url, fake = server
    fake.script("cut")
    driver = make()
    with pytest.raises(Exception) as caught:
        driver.call("POST", url + PATH, json={"q": 1})
    assert not isinstance(caught.value, CircuitOpenError | DeadlineExceeded)
    assert len(fake.attempts) == 1


def test_keyed_post_is_retried_under_one_key(
    make: Callable[..., Driver], server: tuple[str, FakeLLM]
) -> None:
    """With idempotency_keys=True a POST cut mid-body then answered 503 is retried, one key."""
    url, fake = server
    fake.script("cut", "503")
    status, body = make(idempotency_keys=True).call("POST", url + PATH, json={"q": 1})
    assert status == 200
    assert b"chat.completion" in body
    keys = fake.keys()
    assert len(keys) == 3
    assert keys[0] is not None
    assert len(set(keys)) == 1


def test_retry_after_is_honoured(make: Callable[..., Driver], server: tuple[str, FakeLLM]) -> None:
    """A 429 with Retry-After: 3 makes the next attempt wait 3 s (more than the backoff)."""
    url, fake = server
    fake.script("429:3")
    driver = make()
    status, _ = driver.call("GET", url + PATH)
    assert status == 200
    assert driver.waits == [3.0]


def test_refused_connection_is_retried_for_any_method(make: Callable[..., Driver]) -> None:
    """Nothing reached the server: even a POST without a key is tried three times."""
    driver = make()
    with pytest.raises(Exception) as caught:
        driver.call("POST", f"http://127.0.0.1:{_free_port()}{PATH}", json={"q": 1})
    assert not isinstance(caught.value, CircuitOpenError)
    assert len(driver.waits) == 2


def test_breaker_per_host_opens_and_rejects_without_sending(
    make: Callable[..., Driver], server: tuple[str, FakeLLM]
) -> None:
    """Two 503s open the host's breaker; the third call fails fast and sends nothing."""
    url, fake = server
    fake.script("503", "503", "503")
    driver = make(policy=Policy(breaker=CircuitBreaker("table", consecutive_failures=2)))
    assert driver.call("GET", url + PATH)[0] == 503
    assert driver.call("GET", url + PATH)[0] == 503
    with pytest.raises(CircuitOpenError) as caught:
        driver.call("GET", url + PATH)
    assert caught.value.breaker.startswith("table:http://127.0.0.1:")
    assert len(fake.attempts) == 2
    assert driver.breakers[url].state is CircuitState.OPEN
    assert driver.breakers[driver.url(url)] is driver.breakers[url]


def test_deadline_clamps_the_attempt_and_spares_the_breaker(
    make: Callable[..., Driver], server: tuple[str, FakeLLM]
) -> None:
    """Inside deadline(0.3) a 5 s answer ends in DeadlineExceeded in time; no host failure."""
    url, fake = server
    fake.script("sleep:5")
    driver = make(policy=Policy(retry=Retry(on=(), attempts=3), breaker=CircuitBreaker("dl")))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        driver.call("GET", url + PATH, within=0.3)
    assert time.monotonic() - started < 2.0
    assert len(fake.attempts) == 1
    breaker = driver.breakers[url]
    assert breaker.metrics().failures == 0


def test_deadline_header_carries_the_remaining_budget(
    make: Callable[..., Driver], server: tuple[str, FakeLLM]
) -> None:
    """deadline_header sends the milliseconds left: at most the deadline, close to it."""
    url, fake = server
    driver = make(deadline_header="x-budget-ms")
    driver.call("GET", url + PATH, within=2.0)
    sent = int(fake.attempts[0].headers["x-budget-ms"])
    assert 1000 <= sent <= 2000


def test_policy_timeout_and_bulkhead_hold_the_whole_request(
    make: Callable[..., Driver], server: tuple[str, FakeLLM]
) -> None:
    """A policy's total timeout ends a slow request in time; its bulkhead slot comes back."""
    url, fake = server
    fake.script("sleep:5")
    policy = Policy(timeout=0.3, bulkhead=Bulkhead(1), retry=Retry(on=(), attempts=2))
    driver = make(policy=policy)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        driver.call("GET", url + PATH)
    assert time.monotonic() - started < 2.0
    assert driver.call("GET", url + PATH)[0] == 200  # the one slot was given back


def test_repr_names_the_adapter(make: Callable[..., Driver]) -> None:
    """Each adapter's repr says what it is and shows its policy."""
    driver = make()
    assert "policy=None" in repr(driver.adapter)
    assert type(driver.adapter).__name__ in repr(driver.adapter)
