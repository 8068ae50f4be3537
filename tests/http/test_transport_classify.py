"""Classification tables through respx: every status, method and error class, sync and async.

respx's default mocker patches httpcore, so the request goes through our transport and the
real `httpx.HTTPTransport` under it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from resilience.httpx import AsyncResilientTransport, ResilientTransport

URL = "https://api.example.com/resource"

METHODS = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "POST", "PATCH"]
IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
STATUSES = [200, 201, 204, 301, 400, 401, 404, 408, 409, 422, 429, 500, 501, 502, 503, 504]
RETRIED_STATUSES = {429, 502, 503, 504}

NOT_SENT = [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout]
MAYBE_SENT = [
    httpx.ReadError,
    httpx.ReadTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.RemoteProtocolError,
]
NEVER = [httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.ProxyError, httpx.CloseError]


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run the test through ResilientTransport and through AsyncResilientTransport."""
    return str(request.param)


async def send(
    mode: str, method: str, *, headers: dict[str, str] | None = None, **options: Any
) -> httpx.Response:
    """One request through a fresh transport that records its waits instead of sleeping."""
    slept: list[float] = []
    if mode == "sync":
        # verify=False only skips loading the CA bundle (40 ms): respx answers below TLS.
        transport = ResilientTransport(
            httpx.HTTPTransport(verify=False), sleep=slept.append, **options
        )
        with httpx.Client(transport=transport) as client:
            return client.request(method, URL, headers=headers)  # noqa: ASYNC212  # sync twin under test

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    async_transport = AsyncResilientTransport(
        httpx.AsyncHTTPTransport(verify=False), sleep=asleep, **options
    )
    async with httpx.AsyncClient(transport=async_transport) as aclient:
        return await aclient.request(method, URL, headers=headers)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("status", STATUSES)
async def test_status_is_retried_only_when_retryable_and_idempotent(
    mode: str, method: str, status: int
) -> None:
    """429/502/503/504 are retried for idempotent methods; everything else is returned."""
    with respx.mock:
        route = respx.route(method=method, url=URL).mock(
            side_effect=[httpx.Response(status), httpx.Response(200)]
        )
        response = await send(mode, method)
    retried = status in RETRIED_STATUSES and method in IDEMPOTENT
    assert route.call_count == (2 if retried else 1)
    assert response.status_code == (200 if retried else status)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("status", sorted(RETRIED_STATUSES))
async def test_idempotency_key_makes_unsafe_methods_retryable(
    mode: str, method: str, status: int
) -> None:
    """A POST or PATCH carrying an Idempotency-Key is retried like an idempotent method."""
    with respx.mock:
        route = respx.route(method=method, url=URL).mock(
            side_effect=[httpx.Response(status), httpx.Response(200)]
        )
        response = await send(mode, method, headers={"Idempotency-Key": '"k-1"'})
    assert route.call_count == 2
    assert response.status_code == 200


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("error", NOT_SENT + MAYBE_SENT + NEVER)
async def test_error_is_retried_by_phase_and_method(
    mode: str, method: str, error: type[Exception]
) -> None:
    """Not-sent errors retry for any method; maybe-sent ones for idempotent methods only."""
    with respx.mock:
        route = respx.route(method=method, url=URL).mock(side_effect=[error, httpx.Response(200)])
        if error in NOT_SENT or (error in MAYBE_SENT and method in IDEMPOTENT):
            response = await send(mode, method)
            assert response.status_code == 200
            assert route.call_count == 2
        else:
            with pytest.raises(error):
                await send(mode, method)
            assert route.call_count == 1


@pytest.mark.parametrize("error", MAYBE_SENT)
async def test_idempotency_key_makes_read_errors_retryable(
    mode: str, error: type[Exception]
) -> None:
    """A POST with an Idempotency-Key is retried after a read or write error."""
    with respx.mock:
        route = respx.post(URL).mock(side_effect=[error, httpx.Response(200)])
        response = await send(mode, "POST", headers={"Idempotency-Key": '"k-2"'})
    assert response.status_code == 200
    assert route.call_count == 2


async def test_three_attempts_by_default_then_the_last_status_is_returned(mode: str) -> None:
    """With no arguments: 3 attempts; the last retryable response comes back, not an error."""
    with respx.mock:
        route = respx.get(URL).mock(return_value=httpx.Response(503, text="busy"))
        response = await send(mode, "GET")
    assert route.call_count == 3
    assert response.status_code == 503
    assert response.text == "busy"


async def test_errors_exhaust_with_a_note(mode: str) -> None:
    """When attempts run out on an error, that error propagates with a note."""
    with respx.mock:
        route = respx.get(URL).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(httpx.ConnectError) as caught:
            await send(mode, "GET")
    assert route.call_count == 3
    assert any("3 attempts" in note for note in caught.value.__notes__)
