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

from resilience import _telemetry
from resilience._redact import (
    REDACTED,
    is_secret_header,
    is_secret_parameter,
    redact_headers,
    redact_url,
)
from resilience.httpx import ResilientTransport

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


@pytest.mark.parametrize("name", ["page", "q", "limit", "monkey", "sort", "id", "status_code"])
def test_ordinary_parameter_names(name: str) -> None:
    """Ordinary parameter names are kept."""
    assert not is_secret_parameter(name)


def test_redact_headers() -> None:
    """Credential headers become REDACTED, others are kept, repeated ones are joined."""
    headers = httpx.Headers(
        [
            ("Authorization", "Bearer s3cr3t-token"),
            ("Proxy-Authorization", "Basic abc"),
            ("Cookie", "a=c00kie"),
            ("Set-Cookie", "b=c00kie"),
            ("X-Api-Key", "k3y-v4lue"),
            ("X-Auth-Token", "t0k3n"),
            ("Accept", "application/json"),
            ("Idempotency-Key", "abc-123"),
            ("X-Trace", "1"),
            ("x-trace", "2"),
        ]
    )
    assert redact_headers(headers) == {
        "authorization": REDACTED,
        "proxy-authorization": REDACTED,
        "cookie": REDACTED,
        "set-cookie": REDACTED,
        "x-api-key": REDACTED,
        "x-auth-token": REDACTED,
        "accept": "application/json",
        "idempotency-key": "abc-123",
        "x-trace": "1, 2",
    }


def test_redact_headers_accepts_mappings_and_pairs() -> None:
    """Plain dicts keep their names' case; pairs are accepted too."""
    assert redact_headers({"Authorization": "x", "Accept": "*/*"}) == {
        "Authorization": REDACTED,
        "Accept": "*/*",
    }
    assert redact_headers([("Cookie", "a"), ("cookie", "b")]) == {
        "Cookie": REDACTED,
        "cookie": REDACTED,
    }


def test_public_headers_are_not_secret() -> None:
    """Headers with a secret word that never carry credentials are kept."""
    assert not is_secret_header("WWW-Authenticate")
    assert not is_secret_header("Content-Type")
    assert is_secret_header("Private-Token")


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
    _telemetry.set_tracer_provider(provider)
    yield exporter
    _telemetry.set_tracer_provider(None)


@pytest.fixture
def structlog_configured() -> Iterator[None]:
    """An application that configured structlog."""
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("structlog_configured")
def test_no_secret_in_logs_events_or_spans(spans: InMemorySpanExporter) -> None:
    """Authorization, cookies, URL passwords and ?api_key= values reach no log, event or span."""
    from resilience import events

    seen: list[events.Event] = []

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url} with {request.headers}")

    def traced(request: httpx.Request) -> httpx.Response:
        # Stands in for the transport's per-attempt instrumentation.
        with _telemetry.http_attempt(request, 0) as attempt:
            try:
                return handler(request)
            except Exception as exc:
                attempt.error(exc)
                raise

    transport = ResilientTransport(httpx.MockTransport(traced), sleep=lambda s: None)
    events.add_listener(seen.append)
    try:
        with (
            capture_logs() as logs,
            httpx.Client(transport=transport) as http,
            pytest.raises(httpx.ConnectError),
        ):
            http.get(
                "http://user:hunter2@svc.test/x?api_key=k3y-v4lue&token=t0k3n&sig=s1gn4ture",
                headers={"Authorization": "Bearer s3cr3t-token", "Cookie": "sessionid=c00kie"},
            )
    finally:
        events.remove_listener(seen.append)
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
