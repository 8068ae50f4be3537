"""A transport under an SDK that retries (``x-stainless-retry-count``): no multiplication.

Each of the SDK's attempts reaches the transport as a new request; the transport joins it
to the call it repeats, so the call keeps one idempotency key and one budget of attempts.
These tests play the SDK by hand with httpx2's MockTransport (no network).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

import httpx2
import pytest

from resilience import Policy, Retry, RetryBudget, backoff
from resilience.httpx2 import AsyncResilientTransport, ResilientTransport

URL = "https://api.llm.example/v1/messages"


class Server:
    """A mock API answering *status* to everything, recording each request's key."""

    def __init__(self, status: int = 503) -> None:
        self.status = status
        self.keys: list[str | None] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.keys.append(request.headers.get("idempotency-key"))
        return httpx2.Response(self.status)


def _sdk_call(client: httpx2.Client, sdk_attempts: int, url: str = URL) -> None:
    """What a Stainless SDK does for one call: POST, then retry, counting its attempts."""
    for count in range(sdk_attempts):
        client.post(url, json={"q": 1}, headers={"x-stainless-retry-count": str(count)})


def _no_wait(seconds: float) -> None:
    """A sleep that does not: the tests count attempts, not seconds."""


async def _ano_wait(seconds: float) -> None:
    """The async twin of `_no_wait`."""


def _in_fresh_context(fn: Callable[[], None]) -> None:
    contextvars.Context().run(fn)


def test_sdk_retries_share_the_calls_key_and_attempts() -> None:
    """Three SDK attempts of a call always answered 503: 3 + 1 + 1 sends, all with one key."""
    server = Server()
    transport = ResilientTransport(
        httpx2.MockTransport(server), idempotency_keys=True, sleep=_no_wait
    )

    def run() -> None:
        with httpx2.Client(transport=transport) as client:
            _sdk_call(client, 3)

    _in_fresh_context(run)
    assert len(server.keys) == 5
    assert len(set(server.keys)) == 1
    assert server.keys[0] is not None


def test_each_sdk_call_gets_its_own_key() -> None:
    """Two calls (each starting at retry count 0) get two keys; their retries keep theirs."""
    server = Server()
    transport = ResilientTransport(
        httpx2.MockTransport(server), idempotency_keys=True, sleep=_no_wait
    )

    def run() -> None:
        with httpx2.Client(transport=transport) as client:
            _sdk_call(client, 2)
            _sdk_call(client, 2)

    _in_fresh_context(run)
    assert len(server.keys) == 8
    first, second = server.keys[:4], server.keys[4:]
    assert len(set(first)) == 1
    assert len(set(second)) == 1
    assert first[0] != second[0]


def test_a_retry_of_another_url_is_a_call_of_its_own() -> None:
    """An SDK retry whose URL is not the last call's gets a fresh key and full attempts."""
    server = Server()
    transport = ResilientTransport(
        httpx2.MockTransport(server), idempotency_keys=True, sleep=_no_wait
    )

    def run() -> None:
        with httpx2.Client(transport=transport) as client:
            client.post(URL, json={}, headers={"x-stainless-retry-count": "0"})
            client.post(URL + "/other", json={}, headers={"x-stainless-retry-count": "1"})

    _in_fresh_context(run)
    assert len(server.keys) == 6
    assert len(set(server.keys)) == 2


def test_a_key_the_request_carries_is_kept() -> None:
    """A key the SDK (or the caller) set is sent as it is, on every attempt."""
    server = Server()
    transport = ResilientTransport(
        httpx2.MockTransport(server), idempotency_keys=True, sleep=_no_wait
    )

    def run() -> None:
        with httpx2.Client(transport=transport) as client:
            for count in range(2):
                client.post(
                    URL,
                    json={},
                    headers={"x-stainless-retry-count": str(count), "Idempotency-Key": "sdk-1"},
                )

    _in_fresh_context(run)
    assert server.keys == ["sdk-1"] * 4


def test_requests_without_the_header_are_calls_of_their_own() -> None:
    """Without an SDK's retry count nothing changes: each POST has its key and 3 attempts."""
    server = Server()
    transport = ResilientTransport(
        httpx2.MockTransport(server), idempotency_keys=True, sleep=_no_wait
    )
    with httpx2.Client(transport=transport) as client:
        client.post(URL, json={})
        client.post(URL, json={})
    assert len(server.keys) == 6
    assert len(set(server.keys)) == 2


def test_an_sdk_retry_is_not_a_new_call_for_the_retry_budget() -> None:
    """The retry budget counts the call once, however many times the SDK repeats it."""
    budget = RetryBudget(ratio=1.0, min_per_second=0.0)
    server = Server(status=200)
    transport = ResilientTransport(
        httpx2.MockTransport(server),
        policy=Policy(retry=Retry(on=(), attempts=3, backoff=backoff.none(), budget=budget)),
    )

    def run() -> None:
        with httpx2.Client(transport=transport) as client:
            _sdk_call(client, 3)

    _in_fresh_context(run)
    assert budget.available() == 1


async def test_concurrent_sdk_calls_keep_their_own_keys() -> None:
    """Two calls retried by the SDK at the same time in two tasks never share a key."""
    import asyncio

    server = Server()
    transport = AsyncResilientTransport(
        httpx2.MockTransport(server), idempotency_keys=True, sleep=_ano_wait
    )
    gate = asyncio.Event()

    async def call(client: httpx2.AsyncClient) -> None:
        await client.post(URL, json={}, headers={"x-stainless-retry-count": "0"})
        await gate.wait()  # both calls made their first attempt before either retries
        await client.post(URL, json={}, headers={"x-stainless-retry-count": "1"})

    async with httpx2.AsyncClient(transport=transport) as client:
        tasks = [asyncio.create_task(call(client)) for _ in range(2)]
        for _ in range(1000):
            if len(server.keys) >= 6:
                break
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tasks)
    assert len(server.keys) == 8
    firsts, retries = server.keys[:6], server.keys[6:]
    assert len(set(firsts)) == 2
    assert set(retries) == set(firsts)
    assert retries[0] != retries[1]


@pytest.mark.parametrize(
    "transport_type", [ResilientTransport, AsyncResilientTransport], ids=["sync", "async"]
)
def test_a_transport_in_the_other_librarys_client_is_a_config_error(
    transport_type: type[ResilientTransport] | type[AsyncResilientTransport],
) -> None:
    """resilience.httpx2's transport given an httpx transport to wrap says what to use."""
    import httpx

    from resilience import ConfigError

    inner = (
        httpx.HTTPTransport()
        if transport_type is ResilientTransport
        else httpx.AsyncHTTPTransport()
    )
    with pytest.raises(ConfigError, match=r"resilience\.httpx's transports"):
        transport_type(inner)  # type: ignore[arg-type]


def test_resilience_httpx_in_an_httpx2_client_names_the_fix() -> None:
    """resilience.httpx's transport in an httpx2.Client raises ConfigError naming httpx2's."""
    from resilience import ConfigError
    from resilience import httpx as ours

    with (
        httpx2.Client(transport=ours.ResilientTransport()) as client,  # type: ignore[arg-type]
        pytest.raises(ConfigError, match=r"resilience\.httpx2\.ResilientTransport"),
    ):
        client.get("https://api.example.com/")
