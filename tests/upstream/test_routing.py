"""The transports with upstreams, over httpx.MockTransport: routing, retries elsewhere,
breakers per endpoint, refresh, spans, events and the live view (sync and async)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigError,
    Policy,
    Retry,
    backoff,
    events,
)
from resilience._http._compat import with_origin
from resilience._http._hosts import DEFAULT_HOST_BREAKER
from resilience.httpx import AsyncResilientTransport, ResilientTransport, Upstream, dns
from resilience.testing import FakeClock

A, B, C = "http://10.0.0.1:8001", "http://10.0.0.2:8002", "http://10.0.0.3:8003"
Handler = Callable[[httpx.Request], httpx.Response]


class Sent:
    """What one attempt sent: the URL, headers and extensions as they were at that moment
    (the request object is reused by every attempt, and its URL restored afterwards)."""

    def __init__(self, request: httpx.Request) -> None:
        self.url = str(request.url)
        self.headers = httpx.Headers(request.headers)
        self.extensions = dict(request.extensions)


class Recorder:
    """A MockTransport handler that records every attempt it sees and answers per host."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.seen: list[Sent] = []
        self.answer = answer or (lambda request: httpx.Response(200, text=request.url.host))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(Sent(request))
        return self.answer(request)

    def origins(self) -> Counter[str]:
        return Counter(sent.url.split("/", 3)[2] for sent in self.seen)


def no_wait() -> Policy:
    return Policy(
        retry=Retry(on=httpx.TransportError, attempts=3, backoff=backoff.none()),
        breaker=CircuitBreaker("routing", consecutive_failures=2, open_duration=10),
    )


def client(recorder: Recorder, *upstreams: Upstream, policy: Policy | None = None) -> httpx.Client:
    transport = ResilientTransport(
        httpx.MockTransport(recorder), upstreams=list(upstreams), policy=policy or no_wait()
    )
    return httpx.Client(transport=transport)


@pytest.fixture
def seen_events() -> Iterator[list[events.Event]]:
    """Upstream events emitted during the test."""
    got: list[events.Event] = []

    def keep(event: events.Event) -> None:
        if event.event.startswith("upstream."):
            got.append(event)

    events.add_listener(keep)
    yield got
    events.remove_listener(keep)


# ------------------------------------------------------------------ routing


def test_request_goes_to_an_endpoint_with_path_query_and_host_kept() -> None:
    """The URL's origin becomes the endpoint's; path, query and the Host header stay."""
    recorder = Recorder()
    with client(recorder, Upstream("payments", endpoints=[A])) as http:
        response = http.get("http://payments/charges/7?expand=items&x=%20y")
    sent = recorder.seen[0]
    assert sent.url == f"{A}/charges/7?expand=items&x=%20y"
    assert sent.headers["host"] == "payments"
    assert response.request.url == "http://payments/charges/7?expand=items&x=%20y"
    assert response.text == "10.0.0.1"


def test_any_port_of_the_logical_host_is_routed() -> None:
    """http://payments:8080/ matches the upstream too; its Host header keeps the port."""
    recorder = Recorder()
    with client(recorder, Upstream("payments", endpoints=[B])) as http:
        http.get("http://payments:8080/x")
        http.get("https://PAYMENTS/y")
    assert [r.url for r in recorder.seen] == [f"{B}/x", f"{B}/y"]
    assert recorder.seen[0].headers["host"] == "payments:8080"


def test_each_request_reaches_its_own_url_when_paths_repeat_and_change() -> None:
    """An endpoint reuses the URL it made for the last request only for the same URL: a
    repeat, a new path, a new query, userinfo and the old path again each arrive intact."""
    recorder = Recorder()
    asked = [
        "http://payments/charges?id=1",
        "http://payments/charges?id=1",
        "http://payments/charges?id=2",
        "http://payments/refunds?id=2",
        "http://user:secret@payments/refunds?id=2",
        "http://payments/charges?id=1",
    ]
    with client(recorder, Upstream("payments", endpoints=[A])) as http:
        answered = [http.get(url).request.url for url in asked]
    assert [sent.url for sent in recorder.seen] == [
        url.replace("http://payments", A).replace(
            "http://user:secret@payments", A.replace("//", "//user:secret@")
        )
        for url in asked
    ]
    assert [str(url) for url in answered] == asked


def test_other_hosts_pass_through() -> None:
    """A request to a host that is no upstream's name is sent as is."""
    recorder = Recorder()
    with client(recorder, Upstream("payments", endpoints=[A])) as http:
        http.get("http://api.test/v1?q=1")
    assert recorder.seen[0].url == "http://api.test/v1?q=1"


def test_https_endpoint_gets_the_logical_name_for_tls() -> None:
    """An https endpoint is verified against the name asked for (SNI), not its address."""
    recorder = Recorder()
    with client(recorder, Upstream("payments.internal", endpoints=["https://10.0.0.9"])) as http:
        http.get("https://payments.internal/x")
    sent = recorder.seen[0]
    assert sent.url == "https://10.0.0.9/x"
    assert sent.extensions["sni_hostname"] == "payments.internal"


def test_with_origin_matches_httpx_copy_with() -> None:
    """The fast URL rewrite gives the same URL as httpx's own copy_with, IPv6 included."""
    url = httpx.URL("http://user:pw@payments:81/a/b?c=d&e=%2F#frag")
    for scheme, host, port in [("https", "10.0.0.5", 8443), ("http", "::1", None)]:
        fast = with_origin(url, scheme, host, port)
        slow = url.copy_with(scheme=scheme, host=host, port=port)
        assert fast == slow
        assert fast.raw_path == slow.raw_path
        assert (fast.host, fast.port, fast.netloc) == (slow.host, slow.port, slow.netloc)


# ------------------------------------------------------------------ balancing and retries


def test_requests_are_spread_over_the_endpoints() -> None:
    """round_robin sends each endpoint its share."""
    recorder = Recorder()
    upstream = Upstream("svc", endpoints=[A, B, C], balancer="round_robin")
    with client(recorder, upstream) as http:
        for _ in range(30):
            http.get("http://svc/")
    assert set(recorder.origins().values()) == {10}


def test_retry_goes_to_another_endpoint() -> None:
    """A failed attempt is retried on an endpoint this request has not tried yet."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "10.0.0.1":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    recorder = Recorder(answer)
    upstream = Upstream("svc", endpoints=[A, B, C], balancer="round_robin")
    with client(recorder, upstream) as http:
        for _ in range(12):
            assert http.get("http://svc/").status_code == 200
    tried_after_a = [
        recorder.seen[i + 1].url for i, r in enumerate(recorder.seen[:-1]) if r.url.startswith(A)
    ]
    assert tried_after_a
    assert not any(url.startswith(A) for url in tried_after_a)


def test_retried_503_goes_elsewhere_and_the_last_answer_is_kept() -> None:
    """A 503 is retried on other endpoints; when all answer 503, the last response is returned."""
    recorder = Recorder(lambda request: httpx.Response(503))
    upstream = Upstream("svc", endpoints=[A, B, C], max_ejection_percent=0)
    with client(recorder, upstream) as http:
        response = http.get("http://svc/")
    assert response.status_code == 503
    assert len(recorder.seen) == 3
    assert len(recorder.origins()) == 3
    assert response.request.url == "http://svc/"


def test_each_endpoint_has_its_own_breaker_named_after_the_policy() -> None:
    """Endpoint breakers are clones of the policy breaker, named <name>:<endpoint URL>."""
    recorder = Recorder()
    transport = ResilientTransport(
        httpx.MockTransport(recorder),
        upstreams=[Upstream("svc", endpoints=[A, B])],
        policy=Policy(breaker=CircuitBreaker("pay", failure_rate=0.2)),
    )
    view = transport.upstreams["svc"]
    assert [e.breaker.name for e in view.endpoints] == [f"pay:{A}", f"pay:{B}"]
    assert all(e.breaker.config.failure_rate == 0.2 for e in view.endpoints)


def test_without_policy_breaker_endpoints_get_the_default_breaker() -> None:
    """No policy, or a policy without breaker: endpoints get the default per-host breaker."""
    for policy in (None, Policy(retry=Retry(on=ConnectionError))):
        transport = ResilientTransport(
            httpx.MockTransport(Recorder()),
            upstreams=[Upstream("svc", endpoints=[A])],
            policy=policy,
        )
        (endpoint,) = transport.upstreams["svc"].endpoints
        assert endpoint.breaker.name == f"http:{A}"
        config = endpoint.breaker.config
        assert config.consecutive_failures == DEFAULT_HOST_BREAKER["consecutive_failures"]
        assert config.minimum_calls == DEFAULT_HOST_BREAKER["minimum_calls"]


def test_dead_endpoint_is_ejected_and_reported(seen_events: list[events.Event]) -> None:
    """Once its breaker opens, a failing endpoint gets no more requests; an event says so."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "10.0.0.2":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    recorder = Recorder(answer)
    upstream = Upstream("svc", endpoints=[A, B, C])
    with client(recorder, upstream) as http:
        for _ in range(60):
            assert http.get("http://svc/").status_code == 200
        before = recorder.origins()["10.0.0.2:8002"]
        for _ in range(60):
            http.get("http://svc/")
        assert recorder.origins()["10.0.0.2:8002"] == before == 2
        view = http._transport.upstreams["svc"]  # type: ignore[attr-defined]
    states = {e.url: (e.healthy, e.in_rotation) for e in view.endpoints}
    assert states == {A: (True, True), B: (False, False), C: (True, True)}
    ejected = [e for e in seen_events if isinstance(e, events.EndpointEjected)]
    assert [(e.name, e.endpoint, e.kept_in) for e in ejected] == [("svc", B, False)]


def test_all_ejected_fails_fast_with_circuit_open() -> None:
    """With panic off and the only endpoint ejected, requests fail fast, nothing is sent."""
    recorder = Recorder(lambda request: httpx.Response(503))
    upstream = Upstream("svc", endpoints=[A], panic_threshold=0)
    once = Policy(breaker=CircuitBreaker("routing-once", consecutive_failures=2))
    with client(recorder, upstream, policy=once) as http:
        assert http.get("http://svc/").status_code == 503
        assert http.get("http://svc/").status_code == 503  # the second failure opens it
        sent = len(recorder.seen)
        with pytest.raises(CircuitOpenError) as caught:
            http.get("http://svc/")
    assert len(recorder.seen) == sent
    assert caught.value.breaker == f"routing-once:{A}"


def test_panic_mode_still_sends(seen_events: list[events.Event]) -> None:
    """With the default panic threshold a lone ejected endpoint still gets requests."""
    calls = {"n": 0}

    def answer(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(503 if calls["n"] <= 2 else 200)

    recorder = Recorder(answer)
    with client(recorder, Upstream("svc", endpoints=[A])) as http:
        http.get("http://svc/")
        assert http.get("http://svc/").status_code == 200
        view = http._transport.upstreams["svc"]  # type: ignore[attr-defined]
        assert view.panic is True
        assert view.endpoints[0].breaker.state is CircuitState.OPEN
    ejected = [e for e in seen_events if isinstance(e, events.EndpointEjected)]
    assert [e.kept_in for e in ejected] == [True]


def test_forced_sends_record_nothing_in_the_breaker() -> None:
    """A request sent despite the breaker (panic) does not count in that breaker's window."""
    recorder = Recorder(lambda request: httpx.Response(200))
    with client(recorder, Upstream("svc", endpoints=[A])) as http:
        breaker = http._transport.upstreams["svc"].endpoints[0].breaker  # type: ignore[attr-defined]
        breaker.force_open()
        assert http.get("http://svc/").status_code == 200
        assert breaker.state is CircuitState.FORCED_OPEN
        assert breaker.metrics().calls == 0


# ------------------------------------------------------------------ resolvers


def test_resolver_is_read_again_after_refresh() -> None:
    """A request that finds the set older than refresh re-reads it before picking."""
    clock = FakeClock()
    answers = [[A], [B]]
    reads: list[int] = []

    def resolver() -> list[str]:
        reads.append(1)
        return answers[min(len(reads), 2) - 1]

    recorder = Recorder()
    transport = ResilientTransport(
        httpx.MockTransport(recorder),
        upstreams=[Upstream("svc", resolver=resolver, refresh=5)],
        policy=no_wait(),
        clock=clock,
    )
    with httpx.Client(transport=transport) as http:
        http.get("http://svc/")
        clock.advance(4.9)
        http.get("http://svc/")
        clock.advance(0.1)
        http.get("http://svc/")
    assert len(reads) == 2
    assert [r.url for r in recorder.seen] == [f"{A}/", f"{A}/", f"{B}/"]


def test_no_endpoints_yet_is_a_connect_error() -> None:
    """A resolver that never answered: the request fails like a refused connection."""

    def resolver() -> list[str]:
        raise OSError("dns down")

    recorder = Recorder()
    transport = ResilientTransport(
        httpx.MockTransport(recorder),
        upstreams=[Upstream("svc", resolver=resolver)],
        policy=Policy(),
    )
    with httpx.Client(transport=transport) as http, pytest.raises(httpx.ConnectError) as caught:
        http.get("http://svc/")
    assert "no endpoints" in str(caught.value)
    assert recorder.seen == []


def test_sync_transport_refuses_an_async_resolver() -> None:
    """An async resolver needs the async transport: a ConfigError says so at construction."""

    async def resolver() -> list[str]:
        return [A]

    with pytest.raises(ConfigError, match="AsyncResilientTransport"):
        ResilientTransport(upstreams=[Upstream("svc", resolver=resolver)])
    AsyncResilientTransport(upstreams=[Upstream("svc", resolver=resolver)])


def test_bad_upstreams_argument() -> None:
    """Duplicate names and items that are not Upstream are ConfigErrors."""
    with pytest.raises(ConfigError, match="two upstreams named 'svc'"):
        ResilientTransport(
            upstreams=[Upstream("svc", endpoints=[A]), Upstream("SVC", endpoints=[B])]
        )
    with pytest.raises(ConfigError, match="upstreams must be a list"):
        ResilientTransport(upstreams=["http://svc"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="upstreams must be a list"):
        ResilientTransport(upstreams="svc")  # type: ignore[arg-type]


def test_dns_resolver_routes_to_localhost() -> None:
    """dns('localhost', port) resolves to 127.0.0.1 and requests go there."""
    recorder = Recorder()
    upstream = Upstream("svc", resolver=dns("localhost", 8009))
    with client(recorder, upstream) as http:
        http.get("http://svc/")
    assert recorder.seen[0].url in (
        "http://127.0.0.1:8009/",
        "http://[::1]:8009/",
    )


# ------------------------------------------------------------------ views, spans


def test_view_is_live() -> None:
    """transport.upstreams shows endpoints with url, healthy, in_flight, latency, breaker."""
    clock = FakeClock()

    def answer(request: httpx.Request) -> httpx.Response:
        clock.advance(0.25)
        return httpx.Response(200)

    transport = ResilientTransport(
        httpx.MockTransport(Recorder(answer)),
        upstreams=[Upstream("svc", endpoints=[A])],
        policy=no_wait(),
        clock=clock,
    )
    view = transport.upstreams["svc"]
    (endpoint,) = view.endpoints
    assert endpoint.ewma_latency == 0.0
    with httpx.Client(transport=transport) as http:
        http.get("http://svc/")
    assert endpoint.ewma_latency == pytest.approx(0.25)
    assert endpoint.in_flight == 0
    assert endpoint.healthy is True
    assert isinstance(endpoint.breaker, CircuitBreaker)
    assert view.as_dict()["endpoints"][0]["url"] == A
    assert list(transport.upstreams) == ["svc"]
    assert ResilientTransport().upstreams == {}


def test_spans_show_the_endpoint() -> None:
    """Each attempt's span carries the endpoint's server.address and server.port."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    events.set_tracer_provider(provider)
    try:

        def answer(request: httpx.Request) -> httpx.Response:
            return httpx.Response(503 if request.url.host == "10.0.0.1" else 200)

        upstream = Upstream("svc", endpoints=[A, B], balancer="round_robin")
        with client(Recorder(answer), upstream) as http:
            for _ in range(2):
                http.get("http://svc/p")
    finally:
        events.set_tracer_provider(None)
    spans = exporter.get_finished_spans()
    addresses = [(s.attributes or {}).get("server.address") for s in spans]
    ports = {(s.attributes or {}).get("server.port") for s in spans}
    assert set(addresses) == {"10.0.0.1", "10.0.0.2"}
    assert ports == {8001, 8002}
    retried = [s for s in spans if (s.attributes or {}).get("http.request.resend_count")]
    assert retried
    assert {(s.attributes or {}).get("server.address") for s in retried} == {"10.0.0.2"}


# ------------------------------------------------------------------ async twin


def test_async_routes_retries_and_refreshes_with_an_async_resolver() -> None:
    """The async transport routes, retries elsewhere and awaits an async resolver."""

    async def resolver() -> list[str]:
        await asyncio.sleep(0)
        return [A, B]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "10.0.0.1":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, text="ok")

    recorder = Recorder(answer)

    async def main() -> list[int]:
        transport = AsyncResilientTransport(
            httpx.MockTransport(recorder),
            upstreams=[Upstream("svc", resolver=resolver)],
            policy=no_wait(),
        )
        async with httpx.AsyncClient(transport=transport) as http:
            responses = [await http.get("http://svc/x?y=1") for _ in range(10)]
        assert all(r.request.url == "http://svc/x?y=1" for r in responses)
        return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * 10
    assert recorder.seen[0].headers["host"] == "svc"


def test_async_cancelled_attempt_is_counted_out() -> None:
    """A cancelled attempt leaves no request counted in flight and restores the URL."""
    started = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(60)
        return httpx.Response(200)

    async def main() -> None:
        transport = AsyncResilientTransport(
            httpx.MockTransport(slow), upstreams=[Upstream("svc", endpoints=[A])]
        )
        request = httpx.Request("GET", "http://svc/z")
        task = asyncio.create_task(transport.handle_async_request(request))
        await started.wait()
        (endpoint,) = transport.upstreams["svc"].endpoints
        assert endpoint.in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert endpoint.in_flight == 0
        assert request.url == "http://svc/z"

    asyncio.run(main())


def test_slow_calls_are_timed_on_the_breakers_clock() -> None:
    """An endpoint breaker with its own clock times attempts on that clock (slow calls)."""
    breaker_clock = FakeClock()

    def answer(request: httpx.Request) -> httpx.Response:
        breaker_clock.advance(2.0)  # the attempt takes 2 s on the breaker's clock
        return httpx.Response(200)

    policy = Policy(
        breaker=CircuitBreaker(
            "slowclock", slow_call_duration=1.0, minimum_calls=1, clock=breaker_clock
        )
    )
    transport = ResilientTransport(
        httpx.MockTransport(answer), upstreams=[Upstream("svc", endpoints=[A])], policy=policy
    )
    with httpx.Client(transport=transport) as http:
        http.get("http://svc/")
    (endpoint,) = transport.upstreams["svc"].endpoints
    assert endpoint.breaker.state is CircuitState.OPEN  # the one call was slow


def test_httpx2_transports_refuse_upstreams_with_a_clear_error() -> None:
    """upstreams= is an httpx-transport feature: httpx2's transports say so at construction."""
    import resilience.httpx2

    payments = Upstream("payments", endpoints=["http://127.0.0.1:8001"])
    for kind in (resilience.httpx2.ResilientTransport, resilience.httpx2.AsyncResilientTransport):
        with pytest.raises(ConfigError, match=r"upstreams= is supported by resilience\.httpx"):
            kind(upstreams=[payments])
