"""The framework-free core of the integrations: mapping, header parsing, shedding, status."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest

from resilience import BulkheadFull, CircuitBreaker, CircuitOpenError, ConfigError, DeadlineExceeded
from resilience.integrations._common import (
    ConcurrencyLimiter,
    Options,
    asgi_header_budget,
    environ_budget,
    error_response,
    inbound_budget,
    parse_grpc_timeout,
    parse_milliseconds,
    request_budget,
    retry_after_header,
    shed_response,
    status_body,
    status_payload,
)


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(0.0, "1"), (0.001, "1"), (1.0, "1"), (1.01, "2"), (2.2, "3"), (29.99, "30"), (None, None)],
)
def test_retry_after_is_whole_seconds_rounded_up_at_least_one(
    retry_after: float | None, header: str | None
) -> None:
    """Retry-After is ceil(retry_after), at least 1, absent when unknown."""
    assert retry_after_header(retry_after) == header


def test_non_finite_retry_after_is_left_out() -> None:
    """NaN or infinity never becomes a header value."""
    assert retry_after_header(float("nan")) is None
    assert retry_after_header(float("inf")) is None


def test_circuit_open_answer() -> None:
    """CircuitOpenError -> 503, Retry-After, JSON error circuit_open without the breaker name."""
    answer = error_response(CircuitOpenError("secret-internal-name", retry_after=4.5))
    assert answer is not None
    assert answer.status == 503
    headers = dict(answer.headers)
    assert headers["retry-after"] == "5"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(answer.body))
    body = json.loads(answer.body)
    assert body["error"] == "circuit_open"
    assert "secret-internal-name" not in answer.body.decode()


def test_forced_open_answer_has_no_retry_after() -> None:
    """A forced-open breaker (retry_after None) gives a 503 without Retry-After."""
    answer = error_response(CircuitOpenError("x", retry_after=None))
    assert answer is not None
    assert answer.status == 503
    assert "retry-after" not in dict(answer.headers)


def test_bulkhead_and_deadline_answers() -> None:
    """BulkheadFull -> 503 bulkhead_full; DeadlineExceeded -> 504 deadline_exceeded."""
    full = error_response(BulkheadFull("db"))
    late = error_response(DeadlineExceeded("late"))
    assert full is not None
    assert late is not None
    assert (full.status, json.loads(full.body)["error"]) == (503, "bulkhead_full")
    assert (late.status, json.loads(late.body)["error"]) == (504, "deadline_exceeded")
    assert full.reason == "Service Unavailable"
    assert late.reason == "Gateway Timeout"


def test_other_exceptions_are_not_mapped() -> None:
    """Exceptions that are not ours (even TimeoutError) are left to the framework."""
    assert error_response(RuntimeError("x")) is None
    assert error_response(TimeoutError()) is None


def test_shed_answer() -> None:
    """Load shedding answers 503 overloaded with Retry-After: 1."""
    answer = shed_response()
    assert answer.status == 503
    assert dict(answer.headers)["retry-after"] == "1"
    assert json.loads(answer.body)["error"] == "overloaded"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1S", 1.0),
        ("250m", 0.25),
        ("2M", 120.0),
        ("1H", 3600.0),
        ("1500000u", 1.5),
        ("99999999n", 0.099999999),
        (" 3S ", 3.0),
        ("123456789S", None),  # more than 8 digits
        ("5s", None),
        ("S", None),
        ("", None),
        ("-1S", None),
        ("+1S", None),
        ("1.5S", None),
        ("0S", None),
        ("\uff15S", None),  # fullwidth digit five
    ],
)
def test_grpc_timeout_parsing(value: str, seconds: float | None) -> None:
    """grpc-timeout: up to 8 ASCII digits and one of H M S m u n; anything else is ignored."""
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1500", 1.5),
        ("1", 0.001),
        (" 20 ", 0.02),
        ("0", None),
        ("-5", None),
        ("+5", None),
        ("1e3", None),
        ("12345678901", None),
        ("", None),
        ("\u0663", None),  # Arabic-Indic digit three
    ],
)
def test_millisecond_header_parsing(value: str, seconds: float | None) -> None:
    """Millisecond headers: ASCII digits only, positive; anything else is ignored."""
    assert parse_milliseconds(value) == pytest.approx(seconds)


def test_inbound_budget_takes_the_shortest_valid_header() -> None:
    """With several deadline headers the earliest wins; malformed ones are skipped."""
    headers = {
        "grpc-timeout": "2S",
        "x-envoy-expected-rq-timeout-ms": "bad",
        "connect-timeout-ms": "1500",
    }
    assert inbound_budget(headers) == 1.5
    assert inbound_budget({}) is None
    assert inbound_budget({"grpc-timeout": "later"}) is None


def test_raw_asgi_headers() -> None:
    """Raw ASGI header pairs are read without a framework; undecodable values are ignored."""
    assert asgi_header_budget([(b"host", b"x"), (b"grpc-timeout", b"100m")]) == 0.1
    assert asgi_header_budget([(b"host", b"x")]) is None
    assert asgi_header_budget([(b"grpc-timeout", b"\xff1S")]) is None


def test_wsgi_environ_headers() -> None:
    """WSGI environ keys (HTTP_*) are read the same way; non-string values are ignored."""
    environ = {"HTTP_GRPC_TIMEOUT": "2S", "HTTP_X_ENVOY_EXPECTED_RQ_TIMEOUT_MS": "700"}
    assert environ_budget(environ) == 0.7
    assert environ_budget({"HTTP_HOST": "x"}) is None
    assert environ_budget({"HTTP_GRPC_TIMEOUT": b"1S"}) is None


@pytest.mark.parametrize(
    ("timeout", "inbound", "budget"),
    [(None, None, None), (2.0, None, 2.0), (None, 0.5, 0.5), (2.0, 0.5, 0.5), (2.0, 9.0, 2.0)],
)
def test_request_budget_is_clamped_to_the_timeout(
    timeout: float | None, inbound: float | None, budget: float | None
) -> None:
    """The inbound budget can shorten the server timeout, never extend it."""
    assert request_budget(timeout, inbound) == budget


def test_options_validate_and_normalise() -> None:
    """Options turn a timedelta into seconds and reject bad values with ConfigError."""
    # The field is typed as the normalised float; the constructor accepts a timedelta too.
    assert Options(timeout=timedelta(milliseconds=1500)).timeout == 1.5  # type: ignore[arg-type]
    assert Options().status_path == "/resilience"
    with pytest.raises(ConfigError, match="max_concurrent"):
        Options(max_concurrent=0)
    with pytest.raises(ConfigError, match="timeout"):
        Options(timeout=0)
    with pytest.raises(ConfigError, match="status_path"):
        Options(status_path="")


def test_limiter_admits_exactly_the_limit_across_threads() -> None:
    """Many threads racing for slots: exactly `limit` get one."""
    limiter = ConcurrencyLimiter(5)
    barrier = threading.Barrier(50)
    results: list[bool] = []
    lock = threading.Lock()

    def grab() -> None:
        barrier.wait()
        got = limiter.try_acquire()
        with lock:
            results.append(got)

    threads = [threading.Thread(target=grab) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 5
    assert limiter.in_flight == 5
    for _ in range(5):
        limiter.release()
    assert limiter.in_flight == 0
    assert limiter.try_acquire()


def test_status_payload_lists_breakers_sorted_with_plain_values() -> None:
    """The payload has each breaker's name, state string, counts and rates, JSON-ready."""
    suffix = uuid.uuid4().hex[:8]
    first = CircuitBreaker(f"common-a-{suffix}")
    second = CircuitBreaker(f"common-b-{suffix}")
    first.call(lambda: None)
    payload = status_payload()
    names = [entry["name"] for entry in payload["breakers"]]
    assert names == sorted(names, key=str)
    entry = next(e for e in payload["breakers"] if e["name"] == first.name)
    assert entry["state"] == "closed"
    assert entry["calls"] == 1
    assert {"failures", "slow_calls", "failure_rate", "slow_call_rate"} <= entry.keys()
    assert second.name in names
    decoded = json.loads(status_body())
    assert any(e["name"] == second.name for e in decoded["breakers"])


def test_metric_values_become_json_ready() -> None:
    """Enums become their value and non-finite floats null, so the payload is valid JSON."""
    from resilience import CircuitState
    from resilience.integrations._common import _metrics_dict, _plain

    assert _plain(CircuitState.HALF_OPEN) == "half_open"
    assert _plain(float("nan")) is None
    assert _plain(float("inf")) is None
    assert _plain(0.25) == 0.25
    assert str(_plain(object())).startswith("<object")
    assert _metrics_dict({"state": CircuitState.OPEN, "calls": 3}) == {"state": "open", "calls": 3}
    with pytest.raises(TypeError):
        _metrics_dict(42)
