"""What the transports do across attempts: bodies, closing, Retry-After, deadlines, breakers.

The inner transport here is scripted and reads the request stream the way a real one does,
so a body that cannot be replayed really cannot be (a respx or MockTransport handler would
read it into memory and hide the bug).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable, Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from resilience import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    DeadlineExceeded,
    Policy,
    Retry,
    RetryBudget,
    backoff,
    deadline,
)
from resilience._observe._events import Event, RetryScheduled, add_listener, remove_listener
from resilience.httpx import AsyncResilientTransport, ResilientTransport
from resilience.testing import FakeClock, set_testing

URL = "https://api.example.com/v1/items?api_key=hunter2"

Outcome = httpx.Response | BaseException | type[BaseException] | Callable[[httpx.Request], Any]

HEADROOM = 0.01  # resilience._http._core._TIMEOUT_HEADROOM


class Tracked(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that records being closed and can break part-way."""

    def __init__(self, *chunks: bytes, fail: Exception | None = None) -> None:
        self.chunks = chunks
        self.fail = fail
        self.closed = False
        self.read = False

    def __iter__(self) -> Iterator[bytes]:
        self.read = True
        yield from self.chunks
        if self.fail is not None:
            raise self.fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read = True
        for chunk in self.chunks:
            yield chunk
        if self.fail is not None:
            raise self.fail

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class Scripted(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport that consumes the request body and plays scripted outcomes."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.bodies: list[bytes] = []
        self.headers: list[httpx.Headers] = []
        self.extensions: list[dict[str, Any]] = []
        self.closed = False
        self.entered = False

    @property
    def calls(self) -> int:
        return len(self.bodies)

    def _play(self, request: httpx.Request, body: bytes) -> httpx.Response:
        self.bodies.append(body)
        self.headers.append(httpx.Headers(request.headers))
        self.extensions.append(dict(request.extensions))
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, type):
            raise outcome("scripted")
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, httpx.Response):
            return outcome
        result = outcome(request)
        assert isinstance(result, httpx.Response)
        return result

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = b"".join(request.stream)  # type: ignore[arg-type]  # a sync request stream
        return self._play(request, body)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = b"".join([c async for c in request.stream])  # type: ignore[union-attr]  # async
        return self._play(request, body)

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True

    def __enter__(self) -> Scripted:
        self.entered = True
        return self

    async def __aenter__(self) -> Scripted:
        self.entered = True
        return self


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run the test through ResilientTransport and through AsyncResilientTransport."""
    return str(request.param)


class Run:
    """Sends requests through one transport of the mode under test; records the waits."""

    def __init__(self, mode: str, inner: Scripted, **options: Any) -> None:
        self.mode = mode
        self.slept: list[float] = []
        clock = options.get("clock")

        def sleep(seconds: float) -> None:
            self.slept.append(seconds)
            if isinstance(clock, FakeClock):
                clock.advance(seconds)

        async def asleep(seconds: float) -> None:
            sleep(seconds)

        self.transport: ResilientTransport | AsyncResilientTransport
        if mode == "sync":
            self.transport = ResilientTransport(inner, sleep=sleep, **options)
        else:
            self.transport = AsyncResilientTransport(inner, sleep=asleep, **options)

    async def __call__(self, method: str = "GET", url: str = URL, **kwargs: Any) -> httpx.Response:
        if isinstance(self.transport, ResilientTransport):
            with httpx.Client(transport=self.transport) as client:
                return client.request(method, url, **kwargs)  # noqa: ASYNC212  # sync twin
        async with httpx.AsyncClient(transport=self.transport) as aclient:
            return await aclient.request(method, url, **kwargs)


def policy(**slots: Any) -> Policy:
    """A policy whose retry never sleeps long, with the given slots replacing the defaults."""
    return Policy(**slots)


# --------------------------------------------------------------------------- responses


async def test_retried_response_is_closed_before_the_next_attempt(mode: str) -> None:
    """A discarded response (unsized body) is closed before the next attempt is sent."""
    first = Tracked(b"busy")
    seen_closed: list[bool] = []

    def second(request: httpx.Request) -> httpx.Response:
        seen_closed.append(first.closed)
        return httpx.Response(200, content=b"ok")

    inner = Scripted(httpx.Response(503, stream=first), second)
    response = await Run(mode, inner)()
    assert response.status_code == 200
    assert seen_closed == [True]


async def test_small_sized_body_is_read_in_the_transport(mode: str) -> None:
    """A body with a Content-Length under buffer_limit is read before the transport returns."""
    body = Tracked(b"hello")
    inner = Scripted(httpx.Response(200, headers={"Content-Length": "5"}, stream=body))
    transport = Run(mode, inner).transport
    request = httpx.Request("GET", URL)
    if isinstance(transport, ResilientTransport):
        response = transport.handle_request(request)
    else:
        response = await transport.handle_async_request(request)
    assert body.read
    assert body.closed  # the connection went back to the pool
    assert isinstance(response.stream, httpx.ByteStream)
    assert response.read() == b"hello"


@pytest.mark.parametrize(
    "headers", [{}, {"Content-Length": "11"}], ids=["unsized", "over-buffer-limit"]
)
async def test_large_or_unsized_bodies_stream_through(mode: str, headers: dict[str, str]) -> None:
    """Bodies without a length, or longer than buffer_limit, are left for the client."""
    body = Tracked(b"hello world")
    inner = Scripted(httpx.Response(200, headers=headers, stream=body))
    transport = Run(mode, inner, buffer_limit=10).transport
    request = httpx.Request("GET", URL)
    if isinstance(transport, ResilientTransport):
        response = transport.handle_request(request)
    else:
        response = await transport.handle_async_request(request)
    assert response.stream is body
    assert not body.read


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout])
async def test_broken_body_is_retried_for_idempotent_requests(
    mode: str, error: type[Exception]
) -> None:
    """A connection that breaks while a small body arrives is retried like a read error."""
    broken = Tracked(b"hal", fail=error("peer closed connection"))
    inner = Scripted(
        httpx.Response(200, headers={"Content-Length": "5"}, stream=broken),
        httpx.Response(200, content=b"whole"),
    )
    response = await Run(mode, inner)()
    assert response.content == b"whole"
    assert inner.calls == 2
    assert broken.closed


async def test_broken_body_of_a_post_is_not_retried(mode: str) -> None:
    """A POST whose response body breaks propagates the read error after one attempt."""
    broken = Tracked(b"hal", fail=httpx.RemoteProtocolError("incomplete"))
    inner = Scripted(
        httpx.Response(200, headers={"Content-Length": "5"}, stream=broken),
        httpx.Response(200, content=b"whole"),
    )
    with pytest.raises(httpx.RemoteProtocolError):
        await Run(mode, inner)("POST", content=b"x")
    assert inner.calls == 1
    assert broken.closed


# --------------------------------------------------------------------------- request bodies


async def test_bytes_body_is_sent_whole_on_every_attempt(mode: str) -> None:
    """A bytes/json body is replayed identically on each attempt."""
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    await Run(mode, inner)("PUT", json={"a": 1})
    assert inner.bodies == [b'{"a":1}', b'{"a":1}']


async def test_generator_body_is_sent_once(mode: str) -> None:
    """A streaming body without a known length cannot be replayed: one attempt only."""
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    if mode == "sync":

        def chunks() -> Iterator[bytes]:
            yield b"a"
            yield b"b"

        response = await Run(mode, inner)("PUT", content=chunks())
    else:

        async def achunks() -> AsyncIterator[bytes]:
            yield b"a"
            yield b"b"

        response = await Run(mode, inner)("PUT", content=achunks())
    assert response.status_code == 503
    assert inner.bodies == [b"ab"]


async def test_sized_stream_body_is_buffered_and_replayed() -> None:
    """A file body with a known length under buffer_limit is read first, then replayed."""
    inner = Scripted(httpx.Response(503), httpx.ConnectError("x"), httpx.Response(200))
    response = await Run("sync", inner)("PUT", content=io.BytesIO(b"file-data"))
    assert response.status_code == 200
    assert inner.bodies == [b"file-data"] * 3


async def test_sized_body_over_the_limit_is_sent_once() -> None:
    """A file body longer than buffer_limit is streamed once and never retried."""
    inner = Scripted(httpx.ConnectError("x"), httpx.Response(200))
    with pytest.raises(httpx.ConnectError):
        await Run("sync", inner, buffer_limit=4)("PUT", content=io.BytesIO(b"file-data"))
    assert inner.calls == 1


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("3600", 60.0), ("HTTP-DATE+7", 7.0), ("later", None)],
    ids=["seconds", "capped", "http-date", "garbage"],
)
async def test_retry_after_is_honoured_and_capped(
    mode: str, header: str, expected: float | None
) -> None:
    """Waits follow Retry-After (seconds or date), capped at 60 s; garbage means backoff."""
    now = 1_700_000_000.0
    if header == "HTTP-DATE+7":
        header = formatdate(now + 7, usegmt=True)
    inner = Scripted(httpx.Response(503, headers={"Retry-After": header}), httpx.Response(200))
    run = Run(mode, inner, wall_clock=lambda: now)
    response = await run()
    assert response.status_code == 200
    assert len(run.slept) == 1
    if expected is None:
        assert run.slept[0] < 1.0  # the default backoff's first wait
    else:
        assert run.slept == [expected]


async def test_max_retry_after_is_configurable(mode: str) -> None:
    """max_retry_after sets the cap."""
    inner = Scripted(httpx.Response(429, headers={"Retry-After": "30"}), httpx.Response(200))
    run = Run(mode, inner, max_retry_after=5.0)
    await run()
    assert run.slept == [5.0]


async def test_test_mode_zeroes_retry_after(mode: str) -> None:
    """Under set_testing(True) every wait is zero, Retry-After included."""
    inner = Scripted(httpx.Response(503, headers={"Retry-After": "30"}), httpx.Response(200))
    run = Run(mode, inner)
    with set_testing(True):
        await run()
    assert run.slept == [0.0]


# --------------------------------------------------------------------------- deadlines


async def test_attempt_timeouts_are_clamped_to_the_deadline(mode: str, clock: FakeClock) -> None:
    """Inside a deadline each attempt's httpx timeouts are at most what remains."""
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    run = Run(mode, inner, clock=clock, retry_statuses={503})
    with deadline(2.0, clock=clock):
        await run(timeout=httpx.Timeout(10.0, connect=0.5))
    first, second = (ext["timeout"] for ext in inner.extensions)
    # httpx's own timeouts end HEADROOM before the deadline, so the breaker sees a timeout.
    limit = 2.0 - HEADROOM
    assert first == {"connect": 0.5, "read": limit, "write": limit, "pool": limit}
    assert second["read"] == pytest.approx(2.0 - run.slept[0] - HEADROOM)
    assert second["connect"] == 0.5


async def test_deadline_header_carries_the_remaining_milliseconds(
    mode: str, clock: FakeClock
) -> None:
    """deadline_header sends the attempt's remaining budget in ms; none outside a deadline."""
    inner = Scripted(httpx.Response(200))
    run = Run(mode, inner, clock=clock, deadline_header="x-envoy-expected-rq-timeout-ms")
    with deadline(1.5, clock=clock):
        await run()
    await run()
    assert inner.headers[0]["x-envoy-expected-rq-timeout-ms"] == "1500"
    assert "x-envoy-expected-rq-timeout-ms" not in inner.headers[1]


@pytest.mark.parametrize(
    ("left", "sent"), [(0.0015, "1"), (0.0019999, "1"), (0.2999, "299"), (2.0, "2000")]
)
async def test_deadline_header_is_whole_milliseconds_rounded_down(
    mode: str, clock: FakeClock, left: float, sent: str
) -> None:
    """The header never promises more than remains: whole milliseconds, rounded down."""
    inner = Scripted(httpx.Response(200))
    run = Run(mode, inner, clock=clock, deadline_header="x-envoy-expected-rq-timeout-ms")
    with deadline(left, clock=clock):
        await run()
    assert inner.headers[0]["x-envoy-expected-rq-timeout-ms"] == sent


@pytest.mark.parametrize("left", [0.0009, 0.0005, 0.000001])
async def test_deadline_header_is_never_zero(mode: str, clock: FakeClock, left: float) -> None:
    """With under 1 ms left, DeadlineExceeded comes before sending: "0" means no deadline."""
    inner = Scripted(httpx.Response(200))
    breaker = CircuitBreaker("header-zero", consecutive_failures=1, clock=clock)
    run = Run(
        mode,
        inner,
        clock=clock,
        deadline_header="x-envoy-expected-rq-timeout-ms",
        policy=policy(breaker=breaker, retry=Retry(on=())),
    )
    with deadline(left, clock=clock), pytest.raises(DeadlineExceeded):
        await run()
    assert inner.calls == 0
    assert run.transport.breakers[URL].metrics()["calls"] == 0


async def test_under_a_millisecond_without_the_header_still_sends(
    mode: str, clock: FakeClock
) -> None:
    """Without deadline_header, a request with a sliver of budget left is still sent."""
    inner = Scripted(httpx.Response(200))
    run = Run(mode, inner, clock=clock)
    with deadline(0.0005, clock=clock):
        assert (await run()).status_code == 200


def _times_out_after(clock: FakeClock, seconds: float, error: type[Exception]) -> Outcome:
    def outcome(request: httpx.Request) -> httpx.Response:
        clock.advance(seconds)
        raise error("timed out")

    return outcome


async def test_timeout_the_deadline_shortened_is_not_a_host_failure(
    mode: str, clock: FakeClock
) -> None:
    """A read timeout clamped by the deadline below the client's 5 s gives the permit back."""
    inner = Scripted(_times_out_after(clock, 1.0, httpx.ReadTimeout))
    breaker = CircuitBreaker("budget", consecutive_failures=1, clock=clock)
    run = Run(mode, inner, clock=clock, policy=policy(breaker=breaker))
    for _ in range(3):
        with deadline(1.0, clock=clock), pytest.raises(DeadlineExceeded):
            await run(timeout=5.0)
    host = run.transport.breakers[URL]
    assert host.state is CircuitState.CLOSED
    assert host.metrics()["calls"] == 0


async def test_timeout_of_a_part_the_deadline_left_alone_is_a_host_failure(
    mode: str, clock: FakeClock
) -> None:
    """Only the parts the deadline shortened are the caller's: a 0.1 s connect timeout
    inside a 1 s deadline is the host's."""
    inner = Scripted(_times_out_after(clock, 0.1, httpx.ConnectTimeout))
    breaker = CircuitBreaker("connect", consecutive_failures=1, clock=clock)
    run = Run(mode, inner, clock=clock, policy=policy(breaker=breaker))
    with deadline(1.0, clock=clock), pytest.raises(httpx.ConnectTimeout):
        await run(timeout=httpx.Timeout(5.0, connect=0.1))
    assert run.transport.breakers[URL].state is CircuitState.OPEN


async def test_timeout_cut_by_the_policys_total_timeout_is_not_a_host_failure(
    mode: str, clock: FakeClock
) -> None:
    """As for decorated calls, the policy's total timeout is a budget; attempt_timeout is the
    per-attempt verdict."""
    inner = Scripted(_times_out_after(clock, 1.0, httpx.ReadTimeout))
    breaker = CircuitBreaker("total", consecutive_failures=1, clock=clock)
    run = Run(mode, inner, clock=clock, policy=policy(breaker=breaker, timeout=1.0))
    with pytest.raises(DeadlineExceeded):
        await run(timeout=5.0)
    assert inner.extensions[0]["timeout"]["read"] == 1.0 - HEADROOM
    assert run.transport.breakers[URL].state is CircuitState.CLOSED


async def test_timeout_cut_by_attempt_timeout_is_a_host_failure(
    mode: str, clock: FakeClock
) -> None:
    """attempt_timeout inside a longer total timeout is the transport's own limit."""
    inner = Scripted(_times_out_after(clock, 0.5, httpx.ReadTimeout))
    breaker = CircuitBreaker("per-attempt", consecutive_failures=1, clock=clock)
    run = Run(
        mode,
        inner,
        clock=clock,
        policy=policy(breaker=breaker, timeout=3.0, attempt_timeout=0.5),
    )
    with pytest.raises(httpx.ReadTimeout):
        await run(timeout=5.0)
    assert inner.extensions[0]["timeout"]["read"] == 0.5
    assert run.transport.breakers[URL].state is CircuitState.OPEN


async def test_caller_deadline_inside_the_policys_timeout_is_a_budget(
    mode: str, clock: FakeClock
) -> None:
    """A caller's 1 s deadline, shorter than the policy's 3 s, cuts without a verdict."""
    inner = Scripted(_times_out_after(clock, 1.0, httpx.ReadTimeout))
    breaker = CircuitBreaker("caller-scope", consecutive_failures=1, clock=clock)
    run = Run(mode, inner, clock=clock, policy=policy(breaker=breaker, timeout=3.0))
    with deadline(1.0, clock=clock), pytest.raises(DeadlineExceeded):
        await run(timeout=5.0)
    assert inner.extensions[0]["timeout"]["read"] == 1.0 - HEADROOM
    host = run.transport.breakers[URL]
    assert host.state is CircuitState.CLOSED
    assert host.metrics()["calls"] == 0


async def test_timeout_shorter_than_the_deadline_is_a_host_failure(
    mode: str, clock: FakeClock
) -> None:
    """The client's own 0.5 s read timeout inside a 10 s deadline counts against the host."""
    inner = Scripted(_times_out_after(clock, 0.5, httpx.ReadTimeout))
    breaker = CircuitBreaker("own-timeout", consecutive_failures=1, clock=clock)
    run = Run(mode, inner, clock=clock, policy=policy(breaker=breaker))
    with deadline(10.0, clock=clock), pytest.raises(httpx.ReadTimeout):
        await run(timeout=0.5)
    assert run.transport.breakers[URL].state is CircuitState.OPEN


async def test_wait_that_would_cross_the_deadline_is_not_taken(mode: str, clock: FakeClock) -> None:
    """A Retry-After longer than what remains returns the response instead of waiting."""
    inner = Scripted(httpx.Response(503, headers={"Retry-After": "10"}), httpx.Response(200))
    run = Run(mode, inner, clock=clock)
    with deadline(5.0, clock=clock):
        response = await run()
    assert response.status_code == 503
    assert run.slept == []
    assert inner.calls == 1


async def test_expired_deadline_sends_nothing(mode: str, clock: FakeClock) -> None:
    """An expired deadline raises DeadlineExceeded before any byte is sent."""
    inner = Scripted(httpx.Response(200))
    run = Run(mode, inner, clock=clock)
    with deadline(1.0, clock=clock):
        clock.advance(1.0)
        with pytest.raises(DeadlineExceeded):
            await run()
    assert inner.calls == 0


async def test_timeout_at_the_deadline_raises_deadline_exceeded(
    mode: str, clock: FakeClock
) -> None:
    """An attempt timing out because the deadline ran out gives DeadlineExceeded."""

    def slow(request: httpx.Request) -> httpx.Response:
        clock.advance(3.0)
        raise httpx.ReadTimeout("timed out")

    inner = Scripted(slow)
    run = Run(mode, inner, clock=clock)
    with deadline(3.0, clock=clock), pytest.raises(DeadlineExceeded) as caught:
        await run()
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert inner.calls == 1


async def test_policy_timeout_is_a_deadline_for_the_request(mode: str, clock: FakeClock) -> None:
    """A policy's timeout bounds all attempts and waits like deadline(...)."""
    inner = Scripted(httpx.Response(503, headers={"Retry-After": "4"}), httpx.Response(200))
    run = Run(
        mode,
        inner,
        clock=clock,
        policy=policy(timeout=3.0, retry=Retry(on=(), backoff=backoff.none())),
    )
    response = await run()
    assert response.status_code == 503
    assert inner.extensions[0]["timeout"]["read"] == 3.0 - HEADROOM


async def test_policy_attempt_timeout_clamps_each_attempt(mode: str) -> None:
    """attempt_timeout caps every attempt's httpx timeouts."""
    inner = Scripted(httpx.Response(200))
    await Run(mode, inner, policy=policy(attempt_timeout=0.25))()
    assert inner.extensions[0]["timeout"] == {
        "connect": 0.25,
        "read": 0.25,
        "write": 0.25,
        "pool": 0.25,
    }


# --------------------------------------------------------------------------- idempotency keys


async def test_idempotency_keys_make_post_retryable_with_one_key(mode: str) -> None:
    """idempotency_keys=True adds one fresh key to a POST, the same on every attempt."""
    inner = Scripted(httpx.Response(503), httpx.Response(503), httpx.Response(201))
    response = await Run(mode, inner, idempotency_keys=True)("POST", json={"amount": 5})
    assert response.status_code == 201
    keys = [h["idempotency-key"] for h in inner.headers]
    assert len(keys) == 3
    assert len(set(keys)) == 1
    assert keys[0].startswith('"')
    assert keys[0].endswith('"')
    assert len(keys[0]) == 38  # a quoted UUID


async def test_idempotency_keys_differ_between_requests_and_keep_given_ones(mode: str) -> None:
    """Each logical request gets its own key; a key the caller set is kept."""
    inner = Scripted(httpx.Response(200))
    run = Run(mode, inner, idempotency_keys=True)
    await run("PATCH", json={})
    await run("POST", json={})
    await run("POST", json={}, headers={"Idempotency-Key": "mine"})
    await run("PUT", json={})
    await run("GET")
    keys = [h.get("idempotency-key") for h in inner.headers]
    assert keys[0] != keys[1]
    assert keys[2] == "mine"
    assert keys[3:] == [None, None]


async def test_post_is_not_retried_without_a_key(mode: str) -> None:
    """Without a key (and without the option) a POST that got 503 is sent once."""
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    response = await Run(mode, inner)("POST", json={})
    assert response.status_code == 503
    assert inner.calls == 1


# --------------------------------------------------------------------------- overrides


async def test_override_disables_retries(mode: str) -> None:
    """extensions={"resilience": {"retry": False}} sends the request once."""
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    response = await Run(mode, inner)(extensions={"resilience": {"retry": False}})
    assert response.status_code == 503
    assert inner.calls == 1


async def test_override_sets_the_attempts(mode: str) -> None:
    """extensions={"resilience": {"attempts": 5}} makes up to five attempts."""
    inner = Scripted(httpx.Response(503))
    await Run(mode, inner)(extensions={"resilience": {"attempts": 5}})
    assert inner.calls == 5


async def test_override_marks_a_post_idempotent(mode: str) -> None:
    """{"idempotent": True} lets a POST be retried; {"idempotent": False} stops a GET."""
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    run = Run(mode, inner)
    assert (await run("POST", extensions={"resilience": {"idempotent": True}})).status_code == 200
    inner2 = Scripted(httpx.Response(503), httpx.Response(200))
    run2 = Run(mode, inner2)
    assert (await run2("GET", extensions={"resilience": {"idempotent": False}})).status_code == 503


async def test_override_replaces_the_retry(mode: str) -> None:
    """{"retry": Retry(...)} gives this request its own attempts and backoff."""
    inner = Scripted(httpx.Response(502))
    run = Run(mode, inner)
    custom = Retry(on=(), attempts=2, backoff=backoff.constant(1.5))
    await run(extensions={"resilience": {"retry": custom}})
    assert inner.calls == 2
    assert run.slept == [1.5]


async def test_malformed_override_is_a_config_error(mode: str) -> None:
    """An unknown override key fails before anything is sent."""
    inner = Scripted(httpx.Response(200))
    with pytest.raises(ConfigError, match="atempts"):
        await Run(mode, inner)(extensions={"resilience": {"atempts": 2}})
    assert inner.calls == 0


async def test_caller_extensions_are_not_mutated(mode: str) -> None:
    """Per-attempt data goes on a copy: the caller's extension dict is unchanged."""
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    mine = {"resilience": {"attempts": 2}}
    await Run(mode, inner)(extensions=mine)
    assert mine == {"resilience": {"attempts": 2}}
    assert "resilience.resend_count" not in inner.extensions[0]
    assert inner.extensions[1]["resilience.resend_count"] == 1


# --------------------------------------------------------------------------- policy retry


async def test_policy_without_retry_never_retries(mode: str) -> None:
    """A policy with no retry slot: one attempt."""
    inner = Scripted(httpx.ConnectError("x"), httpx.Response(200))
    with pytest.raises(httpx.ConnectError):
        await Run(mode, inner, policy=policy(breaker=CircuitBreaker("no-retry")))()
    assert inner.calls == 1


async def test_policy_retry_gives_attempts_and_backoff(mode: str) -> None:
    """The policy's Retry sets the attempts and the waits."""
    inner = Scripted(httpx.Response(503))
    run = Run(
        mode, inner, policy=policy(retry=Retry(on=(), attempts=4, backoff=backoff.constant(0.2)))
    )
    await run()
    assert inner.calls == 4
    assert run.slept == [0.2, 0.2, 0.2]


@pytest.mark.parametrize(
    ("method", "extensions"),
    [
        ("PUT", {}),
        ("POST", {"resilience": {"idempotent": True}}),
    ],
)
async def test_retry_on_adds_exception_types_for_requests_safe_to_repeat(
    mode: str, method: str, extensions: dict[str, Any]
) -> None:
    """Retry(on=...) widens the retried errors of a request that is safe to repeat."""
    inner = Scripted(httpx.DecodingError("bad gzip"), httpx.Response(200))
    run = Run(mode, inner, policy=policy(retry=Retry(on=httpx.DecodingError)))
    response = await run(method, content=b"x", extensions=extensions)
    assert response.status_code == 200
    assert inner.calls == 2


@pytest.mark.parametrize(
    "on",
    [httpx.ReadTimeout, httpx.TransportError, httpx.HTTPError, Exception, lambda exc: True],
)
@pytest.mark.parametrize(
    "error", [httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError]
)
async def test_retry_on_never_resends_a_post_the_server_may_have_seen(
    mode: str, on: Any, error: type[Exception]
) -> None:
    """However broad the Retry's on, a POST without a key is not sent again once it may
    have reached the server."""
    inner = Scripted(error, httpx.Response(200))
    run = Run(mode, inner, policy=policy(retry=Retry(on=on, backoff=backoff.none())))
    with pytest.raises(error):
        await run("POST", content=b"x")
    assert inner.calls == 1


async def test_post_is_resent_when_nothing_reached_the_server_whatever_on_says(
    mode: str,
) -> None:
    """A connect error is retried for a POST even when the Retry's on does not name it."""
    inner = Scripted(httpx.ConnectError("refused"), httpx.Response(200))
    run = Run(mode, inner, policy=policy(retry=Retry(on=(), backoff=backoff.none())))
    assert (await run("POST", content=b"x")).status_code == 200
    assert inner.calls == 2


async def test_retry_on_does_not_retry_statuses_of_a_post(mode: str) -> None:
    """A 503 to a POST is returned, not retried, whatever the Retry's on says."""
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    run = Run(mode, inner, policy=policy(retry=Retry(on=Exception, backoff=backoff.none())))
    assert (await run("POST", content=b"x")).status_code == 503
    assert inner.calls == 1


async def test_exhausted_budget_stops_retries_with_a_note(mode: str) -> None:
    """With no retry budget left the error propagates at once, saying why."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.0)
    inner = Scripted(httpx.ConnectError("x"), httpx.Response(200))
    run = Run(mode, inner, policy=policy(retry=Retry(on=(), budget=budget)))
    with pytest.raises(httpx.ConnectError) as caught:
        await run()
    assert inner.calls == 1
    assert any("budget" in note for note in caught.value.__notes__)


class _Reset(httpx.NetworkError):
    """A custom inner transport's own network error."""


class _Stalled(httpx.TimeoutException):
    """A custom inner transport's own timeout."""


class _Refused(httpx.ConnectError):
    """A custom inner transport's own connect error."""


@pytest.mark.parametrize("error", [_Reset, _Stalled, httpx.NetworkError, httpx.TimeoutException])
async def test_custom_maybe_sent_errors_follow_the_http_rules(
    mode: str, error: type[Exception]
) -> None:
    """Subclasses of httpx.NetworkError or TimeoutException are retried for a GET, not a POST,
    and count against the host."""
    inner = Scripted(error, httpx.Response(200))
    breaker = CircuitBreaker("custom", consecutive_failures=5)
    run = Run(mode, inner, policy=policy(breaker=breaker, retry=Retry(on=())))
    assert (await run("GET")).status_code == 200
    assert inner.calls == 2
    inner.outcomes = [error, httpx.Response(200)]
    with pytest.raises(error):
        await run("POST", content=b"x")
    assert inner.calls == 3
    assert run.transport.breakers[URL].metrics()["failures"] == 2


async def test_custom_connect_error_is_resent_for_a_post(mode: str) -> None:
    """A subclass of httpx.ConnectError still means nothing reached the server."""
    inner = Scripted(_Refused, httpx.Response(200))
    run = Run(mode, inner)
    assert (await run("POST", content=b"x")).status_code == 200
    assert inner.calls == 2


# --------------------------------------------------------------------------- breakers


async def test_breakers_are_per_host_and_named_after_the_policy_breaker(mode: str) -> None:
    """One breaker per scheme://host:port, named <policy breaker name>:<authority>."""
    inner = Scripted(httpx.Response(200))
    run = Run(mode, inner, policy=policy(breaker=CircuitBreaker("payments")))
    await run(url="https://a.example.com/x")
    await run(url="https://b.example.com:8443/y")
    await run(url="https://a.example.com/z")
    breakers = run.transport.breakers
    assert sorted(breakers) == ["https://a.example.com:443", "https://b.example.com:8443"]
    assert breakers["https://a.example.com:443"].name == "payments:https://a.example.com:443"


async def test_open_breaker_rejects_without_sending(mode: str) -> None:
    """5xx responses open the host's breaker; then CircuitOpenError and nothing is sent."""
    inner = Scripted(httpx.Response(500))
    breaker = CircuitBreaker("trip", consecutive_failures=2)
    run = Run(mode, inner, policy=policy(breaker=breaker))
    await run()
    await run()
    with pytest.raises(CircuitOpenError) as caught:
        await run()
    assert inner.calls == 2
    assert caught.value.breaker == "trip:https://api.example.com:443"
    assert breaker.state is CircuitState.CLOSED  # the template itself is never used


async def test_breaker_counts_transport_errors_and_not_4xx(mode: str) -> None:
    """Transport errors count as failures, 4xx responses as successes."""
    inner = Scripted(httpx.Response(404), httpx.ReadError("x"), httpx.Response(429))
    run = Run(mode, inner, policy=policy(breaker=CircuitBreaker("count")))
    await run()
    with pytest.raises(httpx.ReadError):
        await run()
    await run()
    metrics = run.transport.breakers["https://api.example.com"].metrics()
    assert metrics["calls"] == 3
    assert metrics["failures"] == 1


async def test_policy_without_breaker_has_none(mode: str) -> None:
    """A policy with no breaker slot: no per-host breakers."""
    inner = Scripted(httpx.Response(500))
    run = Run(mode, inner, policy=policy(retry=Retry(on=())))
    await run()
    assert dict(run.transport.breakers) == {}


async def test_default_breakers_are_named_http(mode: str) -> None:
    """Without a policy the per-host breakers are named http:<authority>."""
    run = Run(mode, Scripted(httpx.Response(200)))
    await run()
    assert run.transport.breakers["https://api.example.com"].name == (
        "http:https://api.example.com:443"
    )


async def test_breakers_are_bounded(mode: str) -> None:
    """max_hosts bounds the breakers kept; the least recently used goes."""
    run = Run(mode, Scripted(httpx.Response(200)), max_hosts=2)
    for host in ["a", "b", "a", "c"]:
        await run(url=f"http://{host}.test/")
    assert sorted(run.transport.breakers) == ["http://a.test:80", "http://c.test:80"]


async def test_cancellation_gives_the_probe_back(clock: FakeClock) -> None:
    """A cancelled attempt in HALF_OPEN releases its probe slot and records nothing."""
    breaker = CircuitBreaker("cancel", consecutive_failures=1, open_duration=1.0, clock=clock)
    inner = Scripted(httpx.Response(500), asyncio.CancelledError(), httpx.Response(200))
    run = Run("async", inner, policy=policy(breaker=breaker))
    await run()
    clock.advance(1.0)
    with pytest.raises(asyncio.CancelledError):
        await run()
    host = run.transport.breakers["https://api.example.com"]
    assert host.state is CircuitState.HALF_OPEN
    assert (await run()).status_code == 200
    assert host.state is CircuitState.CLOSED


async def test_bulkhead_slot_limits_concurrent_requests(mode: str) -> None:
    """A policy's bulkhead holds a permit for the whole request."""
    from resilience import Bulkhead, BulkheadFull

    bulkhead = Bulkhead(1)
    inner = Scripted(httpx.Response(200))
    run = Run(mode, inner, policy=policy(bulkhead=bulkhead))
    bulkhead.acquire()
    with pytest.raises(BulkheadFull):
        await run()
    bulkhead.release()
    assert (await run()).status_code == 200
    assert bulkhead.available == 1


# --------------------------------------------------------------------------- tracing, events


async def test_trace_context_is_injected_per_attempt(mode: str) -> None:
    """Each attempt carries the current W3C traceparent."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    with tracer.start_as_current_span("parent") as span:
        await Run(mode, inner)()
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert [h["traceparent"].split("-")[1] for h in inner.headers] == [trace_id, trace_id]


async def test_no_trace_headers_without_a_span(mode: str) -> None:
    """With no active span (no SDK) nothing is injected."""
    inner = Scripted(httpx.Response(200))
    await Run(mode, inner)()
    assert "traceparent" not in inner.headers[0]


async def test_events_name_the_host_but_never_the_query(mode: str) -> None:
    """Retry events carry the breaker name and status, never URL secrets."""
    events: list[Event] = []
    add_listener(events.append)
    try:
        inner = Scripted(httpx.Response(503), httpx.ConnectError("token=abc"), httpx.Response(200))
        await Run(mode, inner)()
    finally:
        remove_listener(events.append)
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [e.error for e in scheduled] == ["HTTP 503", "ConnectError"]
    assert [e.attempt for e in scheduled] == [1, 2]
    for event in events:
        assert "hunter2" not in repr(event)
        assert "abc" not in repr(event)


# --------------------------------------------------------------------------- lifecycle


def test_close_and_context_manager_are_forwarded() -> None:
    """close() and with-blocks reach the inner transport."""
    inner = Scripted(httpx.Response(200))
    with ResilientTransport(inner) as transport:
        assert inner.entered
        assert transport.inner is inner
    assert inner.closed
    inner2 = Scripted(httpx.Response(200))
    ResilientTransport(inner2).close()
    assert inner2.closed


async def test_aclose_and_async_context_manager_are_forwarded() -> None:
    """aclose() and async with-blocks reach the inner transport."""
    inner = Scripted(httpx.Response(200))
    async with AsyncResilientTransport(inner) as transport:
        assert inner.entered
        assert transport.inner is inner
    assert inner.closed
    inner2 = Scripted(httpx.Response(200))
    await AsyncResilientTransport(inner2).aclose()
    assert inner2.closed
    assert "AsyncResilientTransport" in repr(transport)


def test_default_inner_transports_are_httpx_own() -> None:
    """Without inner, httpx's HTTPTransport / AsyncHTTPTransport do the I/O."""
    assert isinstance(ResilientTransport().inner, httpx.HTTPTransport)
    assert isinstance(AsyncResilientTransport().inner, httpx.AsyncHTTPTransport)


async def test_one_client_span_per_attempt_with_resend_count(mode: str) -> None:
    """With an SDK, each attempt is a CLIENT span and its traceparent names that span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from resilience.events import set_tracer_provider

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_tracer_provider(provider)
    try:
        inner = Scripted(httpx.Response(503), httpx.Response(200))
        await Run(mode, inner)()
    finally:
        set_tracer_provider(None)
    spans = exporter.get_finished_spans()
    assert [s.kind for s in spans] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert [(s.attributes or {}).get("http.request.resend_count") for s in spans] == [None, 1]
    assert [(s.attributes or {}).get("http.response.status_code") for s in spans] == [503, 200]
    sent = [h["traceparent"].split("-")[2] for h in inner.headers]
    assert sent == [format(s.context.span_id, "016x") for s in spans if s.context is not None]
    for span in spans:
        assert "hunter2" not in str(span.attributes)


def test_default_sleep_is_looked_up_at_each_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patching time.sleep in a test reaches the transport's default sleep."""
    import time

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    inner = Scripted(httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(200))
    with httpx.Client(transport=ResilientTransport(inner)) as client:
        assert client.get(URL).status_code == 200
    assert slept == [2.0]


async def test_default_async_sleep_is_looked_up_at_each_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Patching asyncio.sleep in a test reaches the async transport's default sleep."""
    slept: list[float] = []

    async def fake(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake)
    inner = Scripted(httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(200))
    async with httpx.AsyncClient(transport=AsyncResilientTransport(inner)) as client:
        assert (await client.get(URL)).status_code == 200
    assert slept == [2.0]


async def test_idempotency_key_factory_replaces_the_quoted_uuid(mode: str) -> None:
    """idempotency_keys can be a function making the keys (e.g. bare UUIDs)."""
    made = iter(["key-1", "key-2"])
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    run = Run(mode, inner, idempotency_keys=lambda: next(made))
    await run("POST", json={})
    assert [h["idempotency-key"] for h in inner.headers] == ["key-1", "key-1"]


async def test_buffered_bodies_still_stream_raw_and_decode(mode: str) -> None:
    """A body read in the transport keeps its encoding: iter_raw and gzip decoding work."""
    import gzip

    raw = gzip.compress(b"hello " * 100)

    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"Content-Encoding": "gzip", "Content-Length": str(len(raw))},
            stream=Tracked(raw[:10], raw[10:]),
        )

    run = Run(mode, Scripted(reply))
    if isinstance(run.transport, ResilientTransport):
        with httpx.Client(transport=run.transport) as client:
            assert client.get(URL).text == "hello " * 100  # noqa: ASYNC212  # sync twin
            with client.stream("GET", URL) as response:  # noqa: ASYNC212  # sync twin
                assert b"".join(response.iter_raw()) == raw
    else:
        async with httpx.AsyncClient(transport=run.transport) as aclient:
            assert (await aclient.get(URL)).text == "hello " * 100
            async with aclient.stream("GET", URL) as aresponse:
                assert b"".join([c async for c in aresponse.aiter_raw()]) == raw


async def test_retry_timeout_bounds_the_whole_request(mode: str, clock: FakeClock) -> None:
    """A Retry's own timeout acts as a deadline over all attempts and waits."""
    inner = Scripted(httpx.Response(503, headers={"Retry-After": "3"}), httpx.Response(200))
    retry = Retry(on=(), timeout=2.0, backoff=backoff.none())
    run = Run(mode, inner, clock=clock, policy=policy(retry=retry))
    response = await run()
    assert response.status_code == 503  # the 3 s wait would cross the 2 s budget
    assert inner.extensions[0]["timeout"]["read"] == 2.0 - HEADROOM


async def test_sized_async_stream_body_is_buffered_and_replayed() -> None:
    """An async stream with a declared length under buffer_limit is read, then replayed."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"c"

    inner = Scripted(httpx.ConnectError("x"), httpx.Response(200))
    response = await Run("async", inner)("PUT", content=chunks(), headers={"Content-Length": "3"})
    assert response.status_code == 200
    assert inner.bodies == [b"abc", b"abc"]


async def test_breaker_opening_between_attempts_stops_with_a_note(mode: str) -> None:
    """If the host's breaker opens after an attempt, the retry is rejected, saying so."""
    inner = Scripted(httpx.Response(503), httpx.Response(200))
    run = Run(
        mode,
        inner,
        policy=policy(
            retry=Retry(on=(), backoff=backoff.none()),
            breaker=CircuitBreaker("between", consecutive_failures=1),
        ),
    )
    with pytest.raises(CircuitOpenError) as caught:
        await run()
    assert inner.calls == 1
    assert any("before attempt 2" in note for note in caught.value.__notes__)


def test_interrupt_gives_the_probe_back(clock: FakeClock) -> None:
    """A KeyboardInterrupt during a sync attempt releases the breaker permit."""
    breaker = CircuitBreaker("interrupt", consecutive_failures=1, open_duration=1.0, clock=clock)
    inner = Scripted(httpx.Response(500), KeyboardInterrupt(), httpx.Response(200))
    transport = ResilientTransport(inner, policy=policy(breaker=breaker))
    with httpx.Client(transport=transport) as client:
        client.get(URL)
        clock.advance(1.0)
        with pytest.raises(KeyboardInterrupt):
            client.get(URL)
        assert client.get(URL).status_code == 200
    assert transport.breakers[URL].state is CircuitState.CLOSED


async def test_a_raising_on_predicate_adds_nothing(mode: str) -> None:
    """A Retry whose on-predicate raises leaves the HTTP rules alone."""

    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug in predicate")

    inner = Scripted(httpx.ReadTimeout("slow"), httpx.Response(200))
    run = Run(mode, inner, policy=policy(retry=Retry(on=broken)))
    with pytest.raises(httpx.ReadTimeout):
        await run("POST", content=b"x")
    assert inner.calls == 1
