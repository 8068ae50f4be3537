"""A deadline holds against an upstream that drips its answer (audit F05).

httpx's timeouts apply to each socket read, so a server sending a byte every 0.1 s never
trips them. The transports check the deadline again when the response head has come,
between the chunks of a body they read themselves, and between the chunks of a body
streamed to the caller. The first half uses a scripted inner transport and a fake clock;
the second a real dripping server on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from resilience import CircuitBreaker, CircuitState, DeadlineExceeded, Policy, deadline
from resilience.httpx import AsyncResilientTransport, ResilientTransport
from resilience.testing import FakeClock
from tests.helpers import serve_drip

URL = "https://api.example.com/report"


class Drip(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body whose every chunk takes *every* seconds of the fake clock to arrive."""

    def __init__(self, clock: FakeClock, chunks: int, every: float) -> None:
        self.clock = clock
        self.chunks = chunks
        self.every = every
        self.read = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            self.clock.advance(self.every)
            self.read += 1
            yield b"x"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class Answer(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport whose answer head takes *head* seconds, then drips its body."""

    def __init__(self, clock: FakeClock, body: Drip, *, head: float = 0.0, sized: bool) -> None:
        self.clock = clock
        self.body = body
        self.head = head
        self.sized = sized

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.clock.advance(self.head)
        headers = {"content-length": str(self.body.chunks)} if self.sized else {}
        return httpx.Response(200, headers=headers, stream=self.body)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self.handle_request(request)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run the test through ResilientTransport and through AsyncResilientTransport."""
    return str(request.param)


async def get(mode: str, inner: Answer, clock: FakeClock, seconds: float) -> httpx.Response:
    """GET through a transport of *mode* inside ``with deadline(seconds)`` on *clock*."""
    breaker = CircuitBreaker("drip", consecutive_failures=1, clock=clock)
    policy = Policy(breaker=breaker)
    if mode == "sync":
        transport = ResilientTransport(inner, policy=policy, clock=clock)
        with httpx.Client(transport=transport) as client, deadline(seconds, clock=clock):
            response = client.get(URL)  # noqa: ASYNC212  # the sync twin under test
    else:
        atransport = AsyncResilientTransport(inner, policy=policy, clock=clock)
        async with httpx.AsyncClient(transport=atransport) as aclient:
            with deadline(seconds, clock=clock):  # the cooperative form, in async code
                response = await aclient.get(URL)
    return response


async def test_sized_body_read_stops_between_chunks_at_the_deadline(
    mode: str, clock: FakeClock
) -> None:
    """A small body read inside the transport stops at the first chunk after the deadline."""
    body = Drip(clock, chunks=40, every=0.1)
    with pytest.raises(DeadlineExceeded, match="body"):
        await get(mode, Answer(clock, body, sized=True), clock, 1.0)
    assert body.read == 10
    assert body.closed


async def test_late_head_raises_and_closes_the_response(mode: str, clock: FakeClock) -> None:
    """A response whose head came after the deadline is closed and DeadlineExceeded raised."""
    body = Drip(clock, chunks=4, every=0.0)
    with pytest.raises(DeadlineExceeded, match="headers"):
        await get(mode, Answer(clock, body, head=1.5, sized=True), clock, 1.0)
    assert body.read == 0
    assert body.closed


async def test_streamed_body_stops_between_chunks_at_the_deadline(
    mode: str, clock: FakeClock
) -> None:
    """A body without a length streams to the caller, who gets DeadlineExceeded mid-way."""
    body = Drip(clock, chunks=40, every=0.1)
    with pytest.raises(DeadlineExceeded, match="body"):
        await get(mode, Answer(clock, body, sized=False), clock, 1.0)
    assert body.read == 10
    assert body.closed


async def test_a_drip_within_the_deadline_is_untouched(mode: str, clock: FakeClock) -> None:
    """Sized or streamed, a body that arrives in time reads whole."""
    for sized in (True, False):
        body = Drip(clock, chunks=9, every=0.1)
        response = await get(mode, Answer(clock, body, sized=sized), clock, 1.0)
        assert response.content == b"x" * 9


def test_a_drip_cut_by_the_deadline_is_not_a_host_failure(clock: FakeClock) -> None:
    """The caller's deadline, not the host, ended the read: the breaker records nothing."""
    body = Drip(clock, chunks=40, every=0.1)
    breaker = CircuitBreaker("drip-budget", consecutive_failures=1, clock=clock)
    transport = ResilientTransport(Answer(clock, body, sized=True), policy=Policy(breaker=breaker))
    with httpx.Client(transport=transport) as client:
        for _ in range(3):
            body.read = 0
            with deadline(1.0, clock=clock), pytest.raises(DeadlineExceeded):
                client.get(URL)
    host = transport.breakers[URL]
    assert host.state is CircuitState.CLOSED
    assert host.metrics()["calls"] == 0


# --------------------------------------------------------------------------- a real drip

BODY_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n"
BODY_DRIP = [b"x"] * 40  # 4 s at 0.1 s a byte
HEADERS_HEAD = b"HTTP/1.1 200 OK\r\n"
HEADERS_DRIP = [f"X-Drip-{i}: {i}\r\n".encode() for i in range(12)] + [
    b"Content-Length: 0\r\n\r\n"
]  # 1.3 s at 0.1 s a line
EVERY = 0.1


@pytest.mark.network
def test_sync_deadline_holds_against_a_body_drip() -> None:
    """Sync, with deadline(0.5): DeadlineExceeded well before the 4 s drip ends."""
    with (
        serve_drip(BODY_HEAD, BODY_DRIP, every=EVERY) as url,
        httpx.Client(transport=ResilientTransport()) as client,
    ):
        started = time.monotonic()
        with deadline(0.5), pytest.raises(DeadlineExceeded):
            client.get(url)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0


@pytest.mark.network
def test_sync_deadline_holds_against_a_streamed_body_drip() -> None:
    """Sync, streaming a body larger than buffer_limit: the iteration stops at the deadline."""
    with (
        serve_drip(BODY_HEAD, BODY_DRIP, every=EVERY) as url,
        httpx.Client(transport=ResilientTransport(buffer_limit=10)) as client,
    ):
        started = time.monotonic()
        with (
            deadline(0.5),
            pytest.raises(DeadlineExceeded),
            client.stream("GET", url) as response,
        ):
            for _ in response.iter_raw():
                pass
        elapsed = time.monotonic() - started
    assert elapsed < 3.0


@pytest.mark.network
def test_sync_deadline_is_reported_after_a_header_drip() -> None:
    """Sync: per-read timeouts cannot cut a drip in the head, but the late answer is not
    passed off as a success: DeadlineExceeded once it has come."""
    with (
        serve_drip(HEADERS_HEAD, HEADERS_DRIP, every=EVERY) as url,
        httpx.Client(transport=ResilientTransport()) as client,
        deadline(0.4),
        pytest.raises(DeadlineExceeded),
    ):
        client.get(url)


@pytest.mark.network
async def test_async_cooperative_deadline_holds_against_a_body_drip() -> None:
    """Async code with the cooperative ``with deadline(0.5)``: the same as sync."""
    with serve_drip(BODY_HEAD, BODY_DRIP, every=EVERY) as url:
        async with httpx.AsyncClient(transport=AsyncResilientTransport()) as client:
            started = time.monotonic()
            with deadline(0.5), pytest.raises(DeadlineExceeded):
                await client.get(url)
            elapsed = time.monotonic() - started
    assert elapsed < 3.0


@pytest.mark.network
async def test_async_deadline_holds_against_a_body_drip() -> None:
    """Async with ``async with deadline(0.5)``: cancelled at the deadline, as before."""
    with serve_drip(BODY_HEAD, BODY_DRIP, every=EVERY) as url:
        async with httpx.AsyncClient(transport=AsyncResilientTransport()) as client:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                async with deadline(0.5):
                    await client.get(url)
            elapsed = time.monotonic() - started
    assert elapsed < 3.0
