"""OpenTelemetry: per-attempt HTTP CLIENT spans, span events, metrics; free without an SDK."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from resilience import (
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    DeadlineExceeded,
    Retry,
    backoff,
    events,
)
from resilience._breaker._registry import all_breakers
from resilience._observe import _events as internal
from resilience._observe import _labels, _otel, _otel_gate
from resilience.httpx import ResilientTransport


@dataclass
class Otel:
    """The in-memory SDK our spans and metrics go to during a test."""

    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, point) for each data point of metric *name*."""
        data = self.reader.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        assert scope.scope.name == "resilience"
                        found.extend((dict(p.attributes or {}), p) for p in metric.data.data_points)
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Our providers point at an in-memory SDK for the test, then back at the globals."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    events.set_tracer_provider(tracer_provider)
    events.set_meter_provider(MeterProvider(metric_readers=[reader]))
    yield Otel(exporter, reader, tracer_provider)
    events.set_tracer_provider(None)
    events.set_meter_provider(None)


def request(method: str = "GET", url: str = "https://api.test/items?page=2") -> httpx.Request:
    return httpx.Request(method, url)


# ---------------------------------------------------------------------------- no SDK


def test_no_sdk_means_a_shared_do_nothing_attempt() -> None:
    """Without an SDK, http_attempt returns one shared object and starts no span."""
    first = _otel_gate.http_attempt(request(), 0)
    second = _otel_gate.http_attempt(request(), 3)
    assert first is second
    with first as attempt:
        attempt.response(503)
        attempt.error(ValueError())
        assert not trace.get_current_span().get_span_context().is_valid


def test_no_sdk_passes_incoming_context_through() -> None:
    """With no SDK, an incoming trace context still reaches the outgoing headers."""
    parent = trace.SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=trace.TraceFlags(1),
    )
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    try:
        headers = httpx.Headers()
        with _otel_gate.http_attempt(request(), 0):
            _otel_gate.inject_context(headers)
    finally:
        otel_context.detach(token)
    assert headers["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_no_context_injects_nothing() -> None:
    """With no SDK and no incoming context, no header is written."""
    headers: dict[str, str] = {}
    _otel_gate.inject_context(headers)
    assert headers == {}


def test_no_sdk_events_touch_nothing() -> None:
    """Without an SDK, emitting an event adds no span event and builds no instrument."""
    internal.emit(events.RetryScheduled(name="f", attempt=1, wait=0.1, error="E"))
    assert _otel.instruments() is None
    assert _otel.tracer() is None


# ---------------------------------------------------------------------------- HTTP spans


def test_attempt_span_follows_http_conventions(otel: Otel) -> None:
    """One CLIENT span named after the method, with the required HTTP attributes."""
    with _otel_gate.http_attempt(request(), 0) as attempt:
        attempt.response(200)
    (span,) = otel.finished()
    assert span.name == "GET"
    assert span.kind is SpanKind.CLIENT
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "resilience"
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "server.address": "api.test",
        "server.port": 443,
        "url.full": "https://api.test/items?page=2",
        "http.response.status_code": 200,
    }
    assert span.status.status_code is StatusCode.UNSET


def test_resend_count_only_on_resends(otel: Otel) -> None:
    """The first attempt has no resend count; the n-th resend has n."""
    for resend in range(3):
        with _otel_gate.http_attempt(request(), resend) as attempt:
            attempt.response(503)
    counts = [(s.attributes or {}).get("http.request.resend_count") for s in otel.finished()]
    assert counts == [None, 1, 2]


@pytest.mark.parametrize(("status", "error"), [(404, "404"), (503, "503"), (302, None)])
def test_error_statuses_mark_the_span(otel: Otel, status: int, error: str | None) -> None:
    """4xx and 5xx set status ERROR and error.type to the code; other codes leave it unset."""
    with _otel_gate.http_attempt(request(), 0) as attempt:
        attempt.response(status)
    (span,) = otel.finished()
    assert (span.attributes or {}).get("error.type") == error
    expected = StatusCode.ERROR if error else StatusCode.UNSET
    assert span.status.status_code is expected
    assert span.status.description is None


def test_exception_sets_qualified_error_type(otel: Otel) -> None:
    """An exception leaving the block becomes error.type (fully qualified), no message kept."""
    with (
        pytest.raises(httpx.ConnectError),
        _otel_gate.http_attempt(request(url="http://u:pw@h.test/?token=t0k3n"), 1),
    ):
        raise httpx.ConnectError("cannot reach http://u:pw@h.test/?token=t0k3n")
    (span,) = otel.finished()
    attrs = dict(span.attributes or {})
    assert attrs["error.type"] == "httpx.ConnectError"
    assert attrs["url.full"] == "http://REDACTED:REDACTED@h.test/?token=REDACTED"
    assert attrs["server.port"] == 80
    assert span.status.status_code is StatusCode.ERROR
    assert span.events == ()  # no exception event: its message could carry the URL
    (attrs_m, _) = otel.points("http.client.request.duration")[0]
    assert attrs_m["error.type"] == "httpx.ConnectError"


def test_error_reported_explicitly(otel: Otel) -> None:
    """attempt.error(exc) marks the span even when the exception does not leave the block."""
    with _otel_gate.http_attempt(request(), 0) as attempt:
        attempt.error(httpx.ReadTimeout("slow"))
    (span,) = otel.finished()
    assert (span.attributes or {})["error.type"] == "httpx.ReadTimeout"


def test_builtin_errors_have_short_names() -> None:
    """Builtin exceptions are named without the builtins module."""
    assert _labels.error_type(TimeoutError()) == "TimeoutError"
    assert _labels.error_type(httpx.ConnectError("x")) == "httpx.ConnectError"
    assert _labels.error_type(DeadlineExceeded()) == "resilience.DeadlineExceeded"


async def test_cancellation_is_not_an_error(otel: Otel) -> None:
    """A cancelled attempt ends its span without error status or error.type."""

    async def attempt_forever() -> None:
        with _otel_gate.http_attempt(request(), 0):
            await asyncio.Event().wait()

    task = asyncio.create_task(attempt_forever())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (span,) = otel.finished()
    assert "error.type" not in (span.attributes or {})
    assert span.status.status_code is StatusCode.UNSET


def test_unknown_method_is_other(otel: Otel) -> None:
    """A method outside the known set is named HTTP with _OTHER and the original kept."""
    with _otel_gate.http_attempt(request("PURGE"), 0) as attempt:
        attempt.response(200)
    (span,) = otel.finished()
    attrs = dict(span.attributes or {})
    assert span.name == "HTTP"
    assert attrs["http.request.method"] == "_OTHER"
    assert attrs["http.request.method_original"] == "PURGE"


def test_span_is_current_and_injected(otel: Otel) -> None:
    """Inside the block the attempt's span is current, so traceparent names it."""
    headers = httpx.Headers()
    with _otel_gate.http_attempt(request(), 0):
        _otel_gate.inject_context(headers)
        current = trace.get_current_span()
    assert not trace.get_current_span().get_span_context().is_valid
    (span,) = otel.finished()
    assert span.context is not None
    assert current.get_span_context().span_id == span.context.span_id
    assert headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


def test_attempts_are_siblings_under_the_caller(otel: Otel) -> None:
    """Each attempt is its own span, child of the caller's span (no logical HTTP span)."""
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("caller"):
        for resend in range(2):
            with _otel_gate.http_attempt(request(), resend) as attempt:
                attempt.response(503)
    attempts = [s for s in otel.finished() if s.name == "GET"]
    caller = next(s for s in otel.finished() if s.name == "caller")
    assert caller.context is not None
    assert len(attempts) == 2
    assert all(
        s.parent is not None and s.parent.span_id == caller.context.span_id for s in attempts
    )


def test_duration_metric_uses_semconv_buckets(otel: Otel) -> None:
    """http.client.request.duration is recorded per attempt in seconds with the advised buckets."""
    with _otel_gate.http_attempt(request(), 0) as attempt:
        attempt.response(200)
    with _otel_gate.http_attempt(request("POST"), 1) as attempt:
        attempt.response(503)
    points = otel.points("http.client.request.duration")
    by_method = {attrs["http.request.method"]: (attrs, point) for attrs, point in points}
    attrs, point = by_method["GET"]
    assert attrs == {
        "http.request.method": "GET",
        "server.address": "api.test",
        "server.port": 443,
        "http.response.status_code": 200,
    }
    assert tuple(point.explicit_bounds) == _otel.HTTP_DURATION_BUCKETS
    assert point.count == 1
    assert 0 <= point.sum < 5
    assert by_method["POST"][0]["error.type"] == "503"
    assert "url.full" not in attrs  # unbounded: never a metric label


def test_span_and_metric_have_the_same_duration(otel: Otel) -> None:
    """The span lasts exactly what the metric recorded."""
    with _otel_gate.http_attempt(request(), 0) as attempt:
        attempt.response(200)
    (span,) = otel.finished()
    ((_, point),) = otel.points("http.client.request.duration")
    assert span.end_time is not None
    assert span.start_time is not None
    assert abs((span.end_time - span.start_time) / 1e9 - point.sum) < 1e-6


def test_no_duplicate_when_contrib_httpx_is_active(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When opentelemetry-instrumentation-httpx patched httpx, we add no span or metric."""
    original = httpx.HTTPTransport.handle_request

    def patched(self: httpx.HTTPTransport, req: httpx.Request) -> httpx.Response:
        return original(self, req)

    patched.__wrapped__ = original  # type: ignore[attr-defined]  # what wrapt leaves behind
    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", patched)
    with _otel_gate.http_attempt(request(), 0) as attempt:
        attempt.response(200)
    assert otel.finished() == []
    assert otel.points("http.client.request.duration") == []


def test_providers_go_back_to_the_globals(otel: Otel) -> None:
    """set_*_provider(None) returns to the (here unconfigured) global providers."""
    assert _otel.get_tracer_provider() is otel.tracer_provider
    events.set_tracer_provider(None)
    events.set_meter_provider(None)
    assert _otel.get_tracer_provider() is trace.get_tracer_provider()
    assert _otel_gate.http_attempt(request(), 0) is _otel_gate.http_attempt(request(), 0)


# ---------------------------------------------------------------------------- span events


def test_events_become_span_events_on_the_current_span(otel: Otel) -> None:
    """Retries and rejections inside a traced call show up as events on its span."""
    tracer = otel.tracer_provider.get_tracer("app")
    breaker = CircuitBreaker("tel-span-events", consecutive_failures=1)
    calls = 0

    @Retry(on=ConnectionError, attempts=2, backoff=backoff.none())
    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return "ok"

    with tracer.start_as_current_span("handler"):
        assert flaky() == "ok"
        breaker.force_open()
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: None)
    (span,) = otel.finished()
    by_name = {e.name: dict(e.attributes or {}) for e in span.events}
    assert by_name["resilience.retry.scheduled"] == {
        "resilience.retry.name": flaky.__qualname__,
        "resilience.retry.attempt": 1,
        "resilience.retry.wait": 0.0,
        "error.type": "ConnectionError",
    }
    changed = by_name["resilience.circuit_breaker.state_changed"]
    assert changed["resilience.circuit_breaker.name"] == "tel-span-events"
    assert changed["resilience.circuit_breaker.new_state"] == "forced_open"
    rejected = by_name["resilience.circuit_breaker.call_rejected"]
    assert rejected == {
        "resilience.circuit_breaker.name": "tel-span-events",
        "resilience.circuit_breaker.state": "forced_open",
    }


def test_no_span_event_without_a_recording_span(otel: Otel) -> None:
    """Outside any span, an event adds nothing to any span."""
    internal.emit(events.RetryScheduled(name="f", attempt=1, wait=0.1, error="E"))
    assert otel.finished() == []


# ---------------------------------------------------------------------------- metrics


def test_breaker_state_gauge_and_transitions(otel: Otel) -> None:
    """The state gauge shows 1 for each breaker's state; transitions are counted by from/to."""
    breaker = CircuitBreaker("tel-gauge", consecutive_failures=1)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    states = {
        attrs["resilience.circuit_breaker.state"]: point.value
        for attrs, point in otel.points("resilience.circuit_breaker.state")
        if attrs["resilience.circuit_breaker.name"] == "tel-gauge"
    }
    assert states == {"closed": 0, "open": 1, "half_open": 0, "forced_open": 0, "disabled": 0}
    transitions = [
        (attrs, point.value)
        for attrs, point in otel.points("resilience.circuit_breaker.transitions")
        if attrs["resilience.circuit_breaker.name"] == "tel-gauge"
    ]
    assert transitions == [
        (
            {
                "resilience.circuit_breaker.name": "tel-gauge",
                "resilience.circuit_breaker.old_state": "closed",
                "resilience.circuit_breaker.new_state": "open",
            },
            1,
        )
    ]


def test_breaker_window_gauges(otel: Otel) -> None:
    """Window calls by outcome and the failure rate are observed per breaker."""
    breaker = CircuitBreaker("tel-window", failure_rate=1.0, minimum_calls=10)
    for _ in range(3):
        breaker.call(lambda: None)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    window = {
        attrs["resilience.circuit_breaker.outcome"]: point.value
        for attrs, point in otel.points("resilience.circuit_breaker.window.calls")
        if attrs["resilience.circuit_breaker.name"] == "tel-window"
    }
    assert window == {"success": 3, "failure": 1}
    rates = [
        point.value
        for attrs, point in otel.points("resilience.circuit_breaker.failure_rate")
        if attrs["resilience.circuit_breaker.name"] == "tel-window"
    ]
    assert rates == [0.25]


def test_rejections_by_reason(otel: Otel) -> None:
    """Rejections are counted with their reason: breaker, bulkhead, budget, deadline."""
    breaker = CircuitBreaker("tel-reject")
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    pool = Bulkhead(1, name="tel-pool")
    pool.acquire()
    try:
        with pytest.raises(BulkheadFull):
            pool.call(lambda: None)
    finally:
        pool.release()
    internal.emit(events.RetryBudgetExhausted(name="tel-fn", attempt=1, error="E"))
    internal.emit(events.DeadlineExceededEvent(where="test"))
    counted = {
        (attrs["resilience.rejection.reason"], attrs.get("resilience.circuit_breaker.name"))
        for attrs, _ in otel.points("resilience.rejections")
    }
    assert counted == {
        ("breaker", "tel-reject"),
        ("bulkhead", None),
        ("budget", None),
        ("deadline", None),
    }
    names = {
        attrs.get("resilience.bulkhead.name") or attrs.get("resilience.retry.name")
        for attrs, _ in otel.points("resilience.rejections")
    }
    assert {"tel-pool", "tel-fn"} <= names


def test_retries_exhaustion_and_fallbacks_are_counted(otel: Otel) -> None:
    """Scheduled retries, exhausted calls and fallbacks each have a counter."""

    @Retry(on=ConnectionError, attempts=3, backoff=backoff.none())
    def down() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        down()
    internal.emit(events.FallbackUsed(name="tel-fb", error="ConnectionError"))
    ((retry_attrs, retries),) = otel.points("resilience.retries")
    assert retries.value == 2
    assert retry_attrs == {
        "resilience.retry.name": down.__qualname__,
        "error.type": "ConnectionError",
    }
    ((_, exhausted),) = otel.points("resilience.retry.exhausted")
    assert exhausted.value == 1
    ((fb_attrs, fallbacks),) = otel.points("resilience.fallbacks")
    assert (fb_attrs["resilience.fallback.name"], fallbacks.value) == ("tel-fb", 1)


def test_metric_labels_are_bounded(otel: Otel) -> None:
    """Many different URLs add no metric series beyond one per host."""
    for n in range(50):
        with _otel_gate.http_attempt(request(url=f"https://api.test/items/{n}?q={n}"), 0) as a:
            a.response(200)
    assert len(otel.points("http.client.request.duration")) == 1


def test_instruments_built_once_per_provider(otel: Otel) -> None:
    """Instruments (and the gauge callbacks) are registered once, not per event."""
    first = _otel.instruments()
    internal.emit(events.DeadlineExceededEvent(where="test"))
    assert _otel.instruments() is first


def test_global_sdk_set_after_import_is_used() -> None:
    """An SDK set globally after importing resilience gets our spans and the breaker gauges."""
    script = textwrap.dedent(
        """
        import httpx
        from resilience import CircuitBreaker
        from resilience._observe import _otel_gate
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        breaker = CircuitBreaker("global-gauge")
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with _otel_gate.http_attempt(httpx.Request("GET", "http://h.test/"), 0) as a:
            a.response(200)
        names = {
            m.name
            for rm in reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }
        assert "resilience.circuit_breaker.state" in names, names
        assert "http.client.request.duration" in names, names
        assert [s.name for s in exporter.get_finished_spans()] == ["GET"]
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
    assert done.stderr == ""


def test_gauges_start_when_a_breaker_is_built_after_opentelemetry_arrives() -> None:
    """Breakers built before OpenTelemetry was imported are reported once a later one is built."""
    script = textwrap.dedent(
        """
        import sys
        from resilience import CircuitBreaker

        early = CircuitBreaker("early")
        assert "opentelemetry" not in sys.modules
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        late = CircuitBreaker("late")  # no event: building it is enough
        names = {
            dict(point.attributes)["resilience.circuit_breaker.name"]
            for rm in reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "resilience.circuit_breaker.state"
            for point in m.data.data_points
        }
        assert names == {"early", "late"}, names
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


# ---------------------------------------------------------------------------- cardinality


def _series(data: Any, name: str, key: str) -> dict[str, float]:
    """Sum of the points of metric *name* in one collection, per value of attribute *key*."""
    totals: dict[str, float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    value = point.count if hasattr(point, "count") else point.value
                    totals[attrs[key]] = totals.get(attrs[key], 0) + value
    return totals


def test_metric_series_stay_bounded_however_many_hosts_are_called(otel: Otel) -> None:
    """Past MAX_LABEL_VALUES hosts, new hosts share one '_other' series; no count is lost."""
    hosts = _labels.MAX_LABEL_VALUES + 150
    seen: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        first = request.url.host not in seen
        seen.add(request.url.host)
        return httpx.Response(503 if first else 200)  # one retry per host

    transport = ResilientTransport(
        httpx.MockTransport(handler), sleep=lambda seconds: None, max_hosts=hosts
    )
    with httpx.Client(transport=transport) as client:
        for index in range(hosts):
            assert client.get(f"http://h{index}.test/").status_code == 200
    gc.collect()  # breakers other tests left behind are gone, or stay for both reads below
    live = [breaker.metrics() for breaker in all_breakers()]
    data = otel.reader.get_metrics_data()  # one collection: the gauges read `live` again
    assert data is not None

    durations = _series(data, "http.client.request.duration", "server.address")
    assert len(durations) == _labels.MAX_LABEL_VALUES + 1
    assert durations[_labels.OVERFLOW_LABEL] == 2 * 150
    assert sum(durations.values()) == 2 * hosts
    assert durations["h0.test"] == 2

    retries = _series(data, "resilience.retries", "resilience.retry.name")
    assert len(retries) == _labels.MAX_LABEL_VALUES + 1
    assert retries[_labels.OVERFLOW_LABEL] == 150
    assert sum(retries.values()) == hosts

    # The gauges: every live breaker (the transport's and any other) is counted once.
    states = _series(data, "resilience.circuit_breaker.state", "resilience.circuit_breaker.name")
    assert len(states) == _labels.MAX_LABEL_VALUES + 1
    assert sum(states.values()) == len(live)  # one state at 1 per breaker
    assert states[_labels.OVERFLOW_LABEL] == len(live) - _labels.MAX_LABEL_VALUES
    calls = _series(
        data, "resilience.circuit_breaker.window.calls", "resilience.circuit_breaker.name"
    )
    assert len(calls) == _labels.MAX_LABEL_VALUES + 1
    assert sum(calls.values()) == sum(snapshot.calls for snapshot in live)
    rates = _series(
        data, "resilience.circuit_breaker.failure_rate", "resilience.circuit_breaker.name"
    )
    assert len(rates) == _labels.MAX_LABEL_VALUES + 1
    assert 0.0 <= rates[_labels.OVERFLOW_LABEL] <= 1.0

    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    # The SDK never had to merge series itself.
                    assert "otel.metric.overflow" not in attrs, metric.name
                    if attrs.get("server.address") == _labels.OVERFLOW_LABEL:
                        assert "server.port" not in attrs


def test_gauge_series_follow_the_live_breakers() -> None:
    """A breaker keeps its gauge series while it lives; a slot freed by one gone is reused."""
    cap = _labels.GaugeCap(limit=2)
    assert cap.admit(["a", "b", "c"]) == {"a", "b"}
    assert cap.admit(["c", "b", "a"]) == {"a", "b"}  # admitted names keep their series
    assert cap.admit(["c", "b"]) == {"b", "c"}  # "a" is gone: "c" takes its slot
    labels = _labels.LabelCap(limit=1)
    assert [labels("x"), labels("y"), labels("x")] == ["x", "_other", "x"]
