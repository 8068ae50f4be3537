"""API.md "httpx transports", statement by statement, against httpx's MockTransport."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from resilience import (
    CircuitBreaker,
    CircuitOpenError,
    DeadlineExceeded,
    Policy,
    Retry,
    backoff,
    deadline,
)
from resilience.httpx import AsyncResilientTransport, ResilientTransport
from resilience.testing import FakeClock

Handler = Callable[[httpx.Request], httpx.Response]


class Upstream:
    """A scripted upstream: answers in order, records what it was sent."""

    def __init__(self, *answers: int | Exception | httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(answer, text=f"status {answer}")


def client(upstream: Upstream, waits: list[float] | None = None, **kwargs: object) -> httpx.Client:
    recorded = [] if waits is None else waits
    transport = ResilientTransport(
        httpx.MockTransport(upstream),
        sleep=recorded.append,
        **kwargs,  # type: ignore[arg-type]
    )
    return httpx.Client(transport=transport, base_url="http://api.test")


def test_defaults_three_attempts_then_last_response_returned() -> None:
    """Defaults: 3 attempts; when retries end on a retryable status, the last response returns."""
    upstream = Upstream(503)
    waits: list[float] = []
    response = client(upstream, waits).get("/x")
    assert response.status_code == 503
    assert len(upstream.requests) == 3
    assert len(waits) == 2


@pytest.mark.parametrize("status", [429, 502, 503, 504])
@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"])
def test_retryable_statuses_for_idempotent_methods(status: int, method: str) -> None:
    """Statuses 429, 502, 503, 504 are retried for idempotent methods."""
    upstream = Upstream(status, 200)
    assert client(upstream).request(method, "/x").status_code == 200
    assert len(upstream.requests) == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_non_idempotent_methods_are_not_retried_on_status(method: str) -> None:
    """POST and PATCH without an Idempotency-Key are sent once."""
    upstream = Upstream(503, 200)
    assert client(upstream).request(method, "/x", content=b"{}").status_code == 503
    assert len(upstream.requests) == 1


def test_idempotency_key_header_makes_post_retryable() -> None:
    """Any method that carries an Idempotency-Key header is retried."""
    upstream = Upstream(503, 200)
    response = client(upstream).post("/x", content=b"{}", headers={"Idempotency-Key": "k1"})
    assert response.status_code == 200
    assert len(upstream.requests) == 2


def test_idempotency_keys_option_adds_the_same_key_on_every_attempt() -> None:
    """idempotency_keys=True: a POST gets a fresh key, the same on every attempt."""
    upstream = Upstream(503, 503, 200)
    response = client(upstream, idempotency_keys=True).post("/x", content=b"{}")
    assert response.status_code == 200
    keys = {r.headers["Idempotency-Key"] for r in upstream.requests}
    assert len(keys) == 1
    assert len(upstream.requests) == 3


def test_connect_errors_are_retried_for_any_method() -> None:
    """Connect errors are retried whatever the method (nothing was sent)."""
    upstream = Upstream(httpx.ConnectError("refused"), 200)
    assert client(upstream).post("/x", content=b"{}").status_code == 200
    assert len(upstream.requests) == 2


def test_read_errors_only_for_idempotent_methods() -> None:
    """Read errors are retried for GET, not for POST."""
    upstream = Upstream(httpx.ReadError("reset"), 200)
    assert client(upstream).get("/x").status_code == 200
    upstream = Upstream(httpx.ReadError("reset"), 200)
    with pytest.raises(httpx.ReadError):
        client(upstream).post("/x", content=b"{}")
    assert len(upstream.requests) == 1


def test_retry_after_seconds_is_honoured_and_capped() -> None:
    """The wait is the larger of backoff and Retry-After, capped at max_retry_after."""
    upstream = Upstream(httpx.Response(503, headers={"Retry-After": "7"}), 200)
    waits: list[float] = []
    client(upstream, waits).get("/x")
    assert waits == [7.0]
    upstream = Upstream(httpx.Response(503, headers={"Retry-After": "3600"}), 200)
    waits = []
    client(upstream, waits, max_retry_after=60.0).get("/x")
    assert waits == [60.0]


def test_retry_after_garbage_is_ignored() -> None:
    """A Retry-After that does not parse is ignored (the backoff applies)."""
    upstream = Upstream(httpx.Response(503, headers={"Retry-After": "soon-ish"}), 200)
    waits: list[float] = []
    assert client(upstream, waits).get("/x").status_code == 200
    assert len(waits) == 1
    assert waits[0] < 10


def test_open_breaker_raises_and_sends_nothing() -> None:
    """Open breaker: CircuitOpenError, and no bytes go to the network."""
    upstream = Upstream(500)
    transport = ResilientTransport(
        httpx.MockTransport(upstream),
        policy=Policy(breaker=CircuitBreaker("contract-http", consecutive_failures=2)),
    )
    with httpx.Client(transport=transport) as http:
        for _ in range(2):
            assert http.get("http://svc.test/x").status_code == 500
        sent = len(upstream.requests)
        with pytest.raises(CircuitOpenError) as info:
            http.get("http://svc.test/x")
    assert len(upstream.requests) == sent
    assert info.value.breaker.startswith("contract-http:")


def test_per_host_breakers_named_after_the_policy_breaker() -> None:
    """One breaker per scheme://host:port, named <policy breaker name>:<authority>."""
    upstream = Upstream(200)
    transport = ResilientTransport(
        httpx.MockTransport(upstream), policy=Policy(breaker=CircuitBreaker("contract-hosts"))
    )
    with httpx.Client(transport=transport) as http:
        http.get("http://a.test/x")
        http.get("http://a.test:80/y")
        http.get("https://a.test/x")
        http.get("http://b.test:8080/x")
    breakers = transport.breakers
    assert len(breakers) == 3
    for key, breaker in breakers.items():
        assert isinstance(breaker, CircuitBreaker)
        assert breaker.name == f"contract-hosts:{key}"


def test_policy_without_retry_slot_means_no_retries() -> None:
    """With a policy, its slots replace the defaults: no retry slot, no retries."""
    upstream = Upstream(503, 200)
    transport = ResilientTransport(
        httpx.MockTransport(upstream), policy=Policy(breaker=CircuitBreaker("contract-noretry"))
    )
    with httpx.Client(transport=transport) as http:
        assert http.get("http://svc.test/x").status_code == 503
    assert len(upstream.requests) == 1


def test_policy_retry_gives_attempts_and_backoff() -> None:
    """The policy's Retry gives the attempts and backoff; HTTP rules decide what is retryable."""
    upstream = Upstream(503)
    waits: list[float] = []
    transport = ResilientTransport(
        httpx.MockTransport(upstream),
        policy=Policy(retry=Retry(on=(), attempts=5, backoff=backoff.constant(0.5))),
        sleep=waits.append,
    )
    with httpx.Client(transport=transport) as http:
        assert http.get("http://svc.test/x").status_code == 503
    assert len(upstream.requests) == 5
    assert waits == [0.5] * 4


def test_non_replayable_body_is_sent_once() -> None:
    """A request whose body cannot be replayed is sent once."""
    upstream = Upstream(503, 200)

    def stream() -> object:
        yield b"chunk"

    with client(upstream) as http:
        response = http.put("/x", content=stream())  # type: ignore[arg-type]
    assert response.status_code == 503
    assert len(upstream.requests) == 1


def test_deadline_header_carries_remaining_milliseconds() -> None:
    """deadline_header: each attempt carries the remaining budget in milliseconds."""
    upstream = Upstream(200)
    clock = FakeClock()
    with (
        client(upstream, deadline_header="x-envoy-expected-rq-timeout-ms", clock=clock) as http,
        deadline(2.0, clock=clock),
    ):
        http.get("/x")
    value = int(upstream.requests[0].headers["x-envoy-expected-rq-timeout-ms"])
    assert 0 < value <= 2000


def test_wait_crossing_the_deadline_is_not_taken() -> None:
    """Inside deadline(...), a Retry-After that would cross the deadline is not waited."""
    upstream = Upstream(httpx.Response(503, headers={"Retry-After": "30"}), 200)
    waits: list[float] = []
    with client(upstream, waits) as http, deadline(5.0):
        response = http.get("/x")
    assert waits == []
    assert response.status_code == 503


def test_w3c_trace_context_injection_is_harmless_without_sdk() -> None:
    """Trace context is injected through opentelemetry-api; with no SDK, nothing breaks."""
    upstream = Upstream(200)
    assert client(upstream).get("/x").status_code == 200


async def test_async_transport_with_inner_and_policy() -> None:
    """AsyncResilientTransport(inner=..., policy=...) retries like the sync one."""
    upstream = Upstream(502, 200)
    waits: list[float] = []

    async def asleep(seconds: float) -> None:
        waits.append(seconds)

    transport = AsyncResilientTransport(
        inner=httpx.MockTransport(upstream),
        policy=Policy(retry=Retry(on=(), attempts=3), breaker=CircuitBreaker("contract-async")),
        sleep=asleep,
    )
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.get("http://svc.test/x")
    assert response.status_code == 200
    assert len(waits) == 1
    assert list(transport.breakers) == ["http://svc.test:80"]


# --------------------------------------------------------------------------- wave 2


@pytest.mark.parametrize("on", [httpx.TransportError, httpx.HTTPError, Exception])
@pytest.mark.parametrize(
    "error", [httpx.ReadError("reset"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")]
)
def test_repeating_a_request_is_never_the_retrys_call(
    on: type[Exception], error: Exception
) -> None:
    """`Retry(on=httpx.TransportError)` must never run a POST's side effect twice."""
    upstream = Upstream(error, 200)
    policy = Policy(retry=Retry(on=on, backoff=backoff.none()))
    with client(upstream, policy=policy) as http, pytest.raises(type(error)):
        http.post("/charges", json={"amount": 1})
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "safe",
    [
        {"method": "PUT"},
        {"method": "POST", "headers": {"Idempotency-Key": '"k"'}},
        {"method": "POST", "extensions": {"resilience": {"idempotent": True}}},
    ],
)
def test_on_widens_the_retried_errors_of_requests_safe_to_repeat(safe: dict[str, object]) -> None:
    """A request is safe to repeat by its method, an Idempotency-Key, or the extension."""
    upstream = Upstream(httpx.DecodingError("bad body"), 200)
    policy = Policy(retry=Retry(on=httpx.DecodingError, backoff=backoff.none()))
    with client(upstream, policy=policy) as http:
        response = http.request(url="/x", content=b"{}", **safe)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert len(upstream.requests) == 2


def test_unsafe_request_is_sent_again_when_nothing_reached_the_server() -> None:
    """Connect errors, connect and pool timeouts: sent again whatever the method."""
    upstream = Upstream(httpx.ConnectError("refused"), httpx.PoolTimeout("pool"), 200)
    with client(upstream) as http:
        assert http.post("/charges", json={}).status_code == 200
    assert len(upstream.requests) == 3


def test_deadline_header_rounds_down_and_is_never_zero() -> None:
    """Whole milliseconds, rounded down; with under 1 ms left, DeadlineExceeded before sending."""
    upstream = Upstream(200)
    clock = FakeClock()
    header = "x-envoy-expected-rq-timeout-ms"
    with client(upstream, deadline_header=header, clock=clock) as http:
        with deadline(0.0019, clock=clock):
            http.get("/x")
        with deadline(0.0009, clock=clock), pytest.raises(DeadlineExceeded):
            http.get("/x")
    assert [r.headers[header] for r in upstream.requests] == ["1"]


def test_deadline_cut_is_not_recorded_as_a_host_failure() -> None:
    """An attempt cut short because an outer deadline left less time than the host's own
    timeout is never recorded as a host failure."""
    clock = FakeClock()

    def hangs(request: httpx.Request) -> httpx.Response:
        clock.advance(0.5)
        raise httpx.ReadTimeout("no answer", request=request)

    policy = Policy(breaker=CircuitBreaker("contract-budget", consecutive_failures=1))
    transport = ResilientTransport(httpx.MockTransport(hangs), policy=policy, clock=clock)
    with httpx.Client(transport=transport, timeout=5.0) as http:
        for _ in range(3):
            with deadline(0.5, clock=clock), pytest.raises(DeadlineExceeded):
                http.get("http://svc.test/x")
    assert transport.breakers["http://svc.test"].metrics()["failures"] == 0
