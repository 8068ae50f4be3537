"""Redaction: credentials never leave through URLs, headers, events, logs or spans."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from resilience import events
from resilience._observe import _otel_gate
from resilience._observe._redact import (
    REDACTED,
    is_secret_parameter,
    redact_name,
    redact_url,
)
from resilience.httpx import ResilientTransport
from resilience.testing import capture_events

SECRETS = ("Bearer s3cr3t-token", "c00kie", "k3y-v4lue", "hunter2", "t0k3n", "s1gn4ture")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://bob:hunter2@api.test/v1?page=2&api_key=abc",
            "https://REDACTED:REDACTED@api.test/v1?page=2&api_key=REDACTED",
        ),
        ("https://tok3n@github.test/repo", "https://REDACTED:REDACTED@github.test/repo"),
        ("http://h.test/p?token=1&TOKEN=2", "http://h.test/p?token=REDACTED&TOKEN=REDACTED"),
        (
            "https://s3.test/o?X-Amz-Signature=ab&X-Amz-Credential=AK%2F1&X-Amz-Date=1",
            "https://s3.test/o?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&X-Amz-Date=1",
        ),
        (
            "https://h.test/cb#access_token=x&state=s",
            "https://h.test/cb#access_token=REDACTED&state=s",
        ),
        (
            "http://h.test/p?apiKey=1&pageToken=2",
            "http://h.test/p?apiKey=REDACTED&pageToken=REDACTED",
        ),
        (
            "http://h.test/p?sig=1&client_secret=2",
            "http://h.test/p?sig=REDACTED&client_secret=REDACTED",
        ),
        ("http://h.test:8080/a/b?q=search&page=3", "http://h.test:8080/a/b?q=search&page=3"),
        ("http://h.test/p?flag&key=", "http://h.test/p?flag&key="),
        ("/relative?password=pw", "/relative?password=REDACTED"),
        ("http://h.test/p?", "http://h.test/p?"),
        ("http://[::1", REDACTED),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    """Userinfo and secret-looking parameter values are replaced; the rest is kept as written."""
    assert redact_url(url) == expected


def test_redact_url_accepts_httpx_url() -> None:
    """An httpx.URL is redacted like its string form."""
    url = httpx.URL("https://u:p@api.test:8443/a?api_key=1&x=2")
    assert redact_url(url) == "https://REDACTED:REDACTED@api.test:8443/a?api_key=REDACTED&x=2"


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "apikey",
        "api-key",
        "token",
        "access_token",
        "key",
        "secret",
        "password",
        "passwd",
        "signature",
        "sig",
        "auth",
        "credential",
        "credentials",
        "client_secret",
        "X-Goog-Signature",
        "refresh_token",
        "code",
        "session_id",
    ],
)
def test_secret_parameter_names(name: str) -> None:
    """The well-known secret parameter names are recognised."""
    assert is_secret_parameter(name)


# Compounds without separators that slipped through a word list (audit F08), and more.
SHAPED = [
    "accesstoken",
    "authtoken",
    "apitoken",
    "clientsecret",
    "secretkey",
    "sessiontoken",
    "pass",
    "jsessionid",
    "PHPSESSID",
    "connect.sid",
    "oauth_verifier",
    "X-CSRF-Token",
    "myApiKeyV2",
    "user_pwd",
    "passcode",
    "totp",
    "SAMLResponse",
    "bearer",
    "x-goog-credential",
    "jwt",
    "AWSAccessKeyId",
    "api%5Fkey",  # percent-encoded api_key
]


@pytest.mark.parametrize("name", SHAPED)
def test_secret_words_anywhere_in_a_name_make_it_secret(name: str) -> None:
    """A secret word anywhere in the name, with or without separators, makes it secret."""
    assert is_secret_parameter(name)


@pytest.mark.parametrize(
    "name", ["page", "q", "limit", "sort", "id", "status_code", "inside", "country_code"]
)
def test_ordinary_parameter_names(name: str) -> None:
    """Ordinary parameter names are kept (short words like sid and code match whole only)."""
    assert not is_secret_parameter(name)


def test_semicolon_separated_pairs_are_redacted() -> None:
    """Query strings split by ';' are redacted as those split by '&'."""
    assert (
        redact_url("http://h.test/p?page=1;authtoken=abc;x=2&pass=pw")
        == "http://h.test/p?page=1;authtoken=REDACTED;x=2&pass=REDACTED"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("payments", "payments"),
        ("http:https://api.test:443", "http:https://api.test:443"),
        (
            "GET https://bob:pw@api.test/v1?accesstoken=abc&page=2",
            "GET https://REDACTED:REDACTED@api.test/v1?accesstoken=REDACTED&page=2",
        ),
        ("fetch?apitoken=abc", "fetch?apitoken=REDACTED"),
        ("a=b", "a=b"),
    ],
)
def test_redact_name(name: str, expected: str) -> None:
    """Names keep their text; URLs and query strings in them lose their credentials."""
    assert redact_name(name) == expected


_value = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=4, max_size=12)


@given(secret=_value, name=st.sampled_from(["api_key", "token", "password", "sig", "Secret"]))
def test_secret_values_never_survive(secret: str, name: str) -> None:
    """Whatever the secret value, it does not appear in the redacted URL."""
    secret = f"S3CR3T{secret}"  # a marker no other part of the URL can contain
    url = f"https://user:{secret}@h.test/path?page=1&{name}={secret}#{name}={secret}"
    assert secret not in redact_url(url)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Our spans go to an in-memory exporter for the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    events.set_tracer_provider(provider)
    yield exporter
    events.set_tracer_provider(None)


@pytest.fixture
def structlog_configured() -> Iterator[None]:
    """An application that configured structlog."""
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("structlog_configured")
def test_no_secret_in_logs_events_or_spans(spans: InMemorySpanExporter) -> None:
    """Authorization, cookies, URL passwords and ?api_key= values reach no log, event or span."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url} with {request.headers}")

    def traced(request: httpx.Request) -> httpx.Response:
        # Stands in for the transport's per-attempt instrumentation.
        with _otel_gate.http_attempt(request, 0) as attempt:
            try:
                return handler(request)
            except Exception as exc:
                attempt.error(exc)
                raise

    transport = ResilientTransport(httpx.MockTransport(traced), sleep=lambda s: None)
    with (
        capture_events() as seen,
        capture_logs() as logs,
        httpx.Client(transport=transport) as http,
        pytest.raises(httpx.ConnectError),
    ):
        http.get(
            "http://user:hunter2@svc.test/x?api_key=k3y-v4lue&token=t0k3n&sig=s1gn4ture",
            headers={"Authorization": "Bearer s3cr3t-token", "Cookie": "sessionid=c00kie"},
        )
    assert logs
    assert seen
    finished = spans.get_finished_spans()
    assert finished
    text = repr(logs) + repr(seen)
    for span in finished:
        text += repr(dict(span.attributes or {}))
        text += repr([(e.name, dict(e.attributes or {})) for e in span.events])
    for secret in SECRETS:
        assert secret not in text


def test_secret_shaped_parameters_never_reach_a_span(spans: InMemorySpanExporter) -> None:
    """Every secret-shaped query value (accesstoken, pass, jsessionid...) is gone from url.full."""
    markers = {name: f"SECRET{index}x" for index, name in enumerate(SHAPED)}
    query = "&".join(f"{name}={value}" for name, value in markers.items())
    transport = ResilientTransport(httpx.MockTransport(lambda r: httpx.Response(200)))
    with httpx.Client(transport=transport) as http:
        http.get(f"http://svc.test/items?page=2&{query}")
    (span,) = spans.get_finished_spans()
    url = str((span.attributes or {})["url.full"])
    assert url.startswith("http://svc.test/items?page=2&accesstoken=REDACTED&")
    for value in markers.values():
        assert value not in url


@pytest.mark.usefixtures("structlog_configured")
def test_names_built_from_urls_lose_their_secrets_everywhere() -> None:
    """A retry or breaker named after a URL shows no credential in any output.

    Events, logs, span events, metric labels, the status payload and the error message.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from resilience import CircuitBreaker, CircuitOpenError, Retry, backoff, events
    from resilience.integrations._status import status_payload

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    events.set_meter_provider(MeterProvider(metric_readers=[reader]))
    url = "https://bob:hunter2@api.test/v1?authtoken=t0k3n&page=1"
    breaker = CircuitBreaker(f"GET {url}", consecutive_failures=1)
    retry = Retry(on=ConnectionError, attempts=2, backoff=backoff.none(), name=f"GET {url}")

    def down() -> None:
        raise ConnectionError

    try:
        # The first attempt trips the breaker; the retry is rejected by it.
        with (
            capture_events() as seen,
            capture_logs() as logs,
            provider.get_tracer("t").start_as_current_span("s"),
            pytest.raises(CircuitOpenError) as rejected,
        ):
            retry.call(breaker.call, down)
        status = status_payload()
        metrics = reader.get_metrics_data()
    finally:
        events.set_meter_provider(None)
    assert {type(e).__name__ for e in seen} >= {"CircuitStateChanged", "RetryScheduled"}
    assert logs
    names = [entry["name"] for entry in status["breakers"]]
    assert "GET https://REDACTED:REDACTED@api.test/v1?authtoken=REDACTED&page=1" in names
    (span,) = exporter.get_finished_spans()
    assert len(span.events) >= 3
    labels = [
        dict(point.attributes or {})
        for rm in metrics.resource_metrics  # type: ignore[union-attr]
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
    ]
    assert any("REDACTED" in str(label) for label in labels)
    text = repr(seen) + repr(logs) + repr(status) + str(rejected.value) + repr(labels)
    text += repr([dict(event.attributes or {}) for event in span.events])
    assert "hunter2" not in text
    assert "t0k3n" not in text
