"""The framework-free core of the integrations: mapping, header parsing, shedding, status."""

from __future__ import annotations

import importlib
import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from resilience import BulkheadFull, CircuitBreaker, CircuitOpenError, ConfigError, DeadlineExceeded
from resilience._propagation import (
    DEADLINE_HEADERS,
    LONGEST_WAIT,
    inbound_budget,
    parse_grpc_timeout,
    parse_milliseconds,
)
from resilience.integrations._answers import (
    ShedRequest,
    error_response,
    retry_after_header,
    shed_response,
    upstream_status,
)
from resilience.integrations._inbound import (
    DeadlineHeaders,
    asgi_header_budget,
    content_length,
    environ_budget,
    request_budget,
)
from resilience.integrations._options import DEFAULT_BODY_BUFFER, DEFAULT_BODY_TIMEOUT, Options
from resilience.integrations._shedding import ConcurrencyLimiter
from resilience.integrations._status import status_body, status_payload


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
    from resilience.integrations._status import _metrics_dict, _plain

    assert _plain(CircuitState.HALF_OPEN) == "half_open"
    assert _plain(float("nan")) is None
    assert _plain(float("inf")) is None
    assert _plain(0.25) == 0.25
    assert str(_plain(object())).startswith("<object")
    assert _metrics_dict({"state": CircuitState.OPEN, "calls": 3}) == {"state": "open", "calls": 3}
    with pytest.raises(TypeError):
        _metrics_dict(42)


# ---------------------------------------------------------------- options added in wave 2


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("timeout", 1e10),  # beyond threading.TIMEOUT_MAX: no thread could wait for it
        ("body_timeout", 1e10),
        ("body_timeout", 0),
        ("body_timeout", None),
        ("body_buffer", -1),
        ("body_buffer", 1.5),
        ("status_access", "public"),
        ("status_access", 7),
        ("deadline_headers", "grpc-timeout"),  # a string, not a collection of names
        ("deadline_headers", ["x-request-timeout"]),
        ("deadline_headers", [3]),
        ("deadline_headers", None),
    ],
)
def test_wave_two_options_fail_with_config_error_naming_them(setting: str, value: object) -> None:
    """Each new setting rejects a bad value with ConfigError naming the setting and value."""
    with pytest.raises(ConfigError, match=setting) as caught:
        Options(**{setting: value})  # type: ignore[arg-type]
    assert repr(value) in str(caught.value)


def test_wave_two_options_defaults_and_normalising() -> None:
    """Defaults are named constants; deadline_headers becomes the tuple of honoured names."""
    options = Options()
    assert options.status_access == "loopback"
    assert options.body_buffer == DEFAULT_BODY_BUFFER == 256 * 1024
    assert options.body_timeout == DEFAULT_BODY_TIMEOUT
    assert options.deadline_headers == tuple(name for name, _ in DEADLINE_HEADERS)
    assert Options(deadline_headers=False).deadline_headers == ()
    assert Options(deadline_headers={"GRPC-Timeout"}).deadline_headers == ("grpc-timeout",)
    assert Options(body_buffer=0, body_timeout=timedelta(seconds=2)).body_timeout == 2.0  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="timeout"):  # beyond every wait: refused at setup
        Options(timeout=LONGEST_WAIT)


# ---------------------------------------------------------------- inbound headers


@pytest.mark.parametrize(
    ("headers", "budget"),
    [
        ({"grpc-timeout": "99999999H"}, None),  # 3.6e11 s: beyond any wait, so no budget
        ({"grpc-timeout": "2562048H"}, None),  # just past threading.TIMEOUT_MAX
        ({"grpc-timeout": "2562047H"}, 2562047 * 3600.0),
        ({"grpc-timeout": "99999999H", "x-envoy-expected-rq-timeout-ms": "300"}, 0.3),
    ],
)
def test_a_budget_beyond_any_wait_counts_as_none(
    headers: dict[str, str], budget: float | None
) -> None:
    """An inbound budget longer than threading.TIMEOUT_MAX is ignored, like a malformed one."""
    assert inbound_budget(headers) == budget
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    assert asgi_header_budget(raw) == budget


def test_deadline_headers_reads_only_the_names_it_is_given() -> None:
    """A DeadlineHeaders for some names ignores the others, from every header source."""
    envoy = DeadlineHeaders(["x-envoy-expected-rq-timeout-ms"])
    both = {"grpc-timeout": "100m", "x-envoy-expected-rq-timeout-ms": "400"}
    assert envoy.mapping(both) == 0.4
    assert envoy.mapping({"grpc-timeout": "100m"}) is None
    assert envoy.asgi([(b"grpc-timeout", b"100m"), (b"x-envoy-expected-rq-timeout-ms", b"400")])
    assert envoy.environ({"HTTP_GRPC_TIMEOUT": "100m"}) is None
    assert envoy.environ({"HTTP_X_ENVOY_EXPECTED_RQ_TIMEOUT_MS": "400"}) == 0.4
    none = DeadlineHeaders(())
    assert not none
    assert none.asgi([(b"grpc-timeout", b"100m")]) is None


@pytest.mark.parametrize(
    ("value", "length"),
    [("12", 12), (b"0", 0), (" 7 ", 7), ("", None), ("-1", None), ("1e3", None), ("\uff17", None)],
)
def test_content_length_parsing(value: str | bytes, length: int | None) -> None:
    """Content-Length: ASCII digits only; anything else is no length."""
    assert content_length(value) == length


# ---------------------------------------------------------------- errors anywhere in the chain


class SdkError(Exception):
    """What a vendor SDK raises around the error it caught."""


def wrapped(inner: BaseException, *, how: str) -> BaseException:
    """*inner* wrapped in an SdkError as a cause, a context, or a suppressed context."""
    try:
        try:
            raise inner
        except BaseException as exc:
            if how == "cause":
                raise SdkError("the SDK failed") from exc
            if how == "suppressed":
                raise SdkError("the SDK failed") from None
            raise SdkError("the SDK failed")  # noqa: B904  # a context, on purpose
    except SdkError as outer:
        return outer
    raise AssertionError("unreachable")


@pytest.mark.parametrize("how", ["cause", "context", "suppressed"])
@pytest.mark.parametrize(
    ("inner", "status", "kind"),
    [
        (CircuitOpenError("payments", retry_after=2.2), 503, "circuit_open"),
        (BulkheadFull("db"), 503, "bulkhead_full"),
        (DeadlineExceeded("late"), 504, "deadline_exceeded"),
    ],
)
def test_our_errors_are_found_anywhere_in_the_chain(
    inner: Exception, status: int, kind: str, how: str
) -> None:
    """An SDK's error around ours (as cause or context) gets our answer."""
    answer = error_response(wrapped(inner, how=how))
    assert answer is not None
    assert (answer.status, json.loads(answer.body)["error"]) == (status, kind)
    if isinstance(inner, CircuitOpenError):
        assert dict(answer.headers)["retry-after"] == "3"


def test_deeply_wrapped_and_grouped_errors_are_found() -> None:
    """Two wrappers deep, or inside an exception group, our error is still found."""
    deep = wrapped(wrapped(BulkheadFull("db"), how="cause"), how="context")
    grouped = ExceptionGroup("tasks", [ValueError("other"), DeadlineExceeded("late")])
    assert getattr(error_response(deep), "status", None) == 503
    assert getattr(error_response(grouped), "status", None) == 504


def test_the_nearest_error_in_the_chain_wins() -> None:
    """A deadline raised while handling an open circuit answers as the deadline (504)."""
    answer = error_response(wrapped(CircuitOpenError("x", retry_after=1.0), how="cause"))
    assert answer is not None
    late = DeadlineExceeded("late")
    late.__context__ = CircuitOpenError("x", retry_after=1.0)
    assert getattr(error_response(late), "status", None) == 504


def test_a_chain_that_loops_ends() -> None:
    """A cyclic chain (a rare bug elsewhere) is walked once, not forever."""
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__context__, second.__context__ = second, first
    assert error_response(first) is None


def httpx_status_error(module: Any, status: int, url: str) -> Exception:
    """An HTTPStatusError from *module* (httpx or httpx2) for a response of *status*."""
    request = module.Request("GET", url)
    response = module.Response(status, request=request)
    error: Exception = module.HTTPStatusError(
        f"{status} for {url}", request=request, response=response
    )
    return error


SECRET_URL = "https://internal.example/v1/charge?api_key=sk_live_123&token=abc"


@pytest.mark.parametrize("client", ["httpx", "httpx2", "requests"])
@pytest.mark.parametrize("how", ["raised", "cause", "suppressed"])
def test_an_escaped_upstream_5xx_is_a_502_without_details(client: str, how: str) -> None:
    """httpx/httpx2 HTTPStatusError and requests' HTTPError for a 5xx -> 502 bad_gateway."""
    if client == "requests":
        import requests

        response = requests.Response()
        response.status_code = 503
        response.url = SECRET_URL
        error: Exception = requests.HTTPError(f"503 for {SECRET_URL}", response=response)
    else:
        error = httpx_status_error(importlib.import_module(client), 503, SECRET_URL)
    answer = error_response(error if how == "raised" else wrapped(error, how=how))
    assert answer is not None
    assert answer.status == 502
    body = json.loads(answer.body)
    assert body["error"] == "bad_gateway"
    assert "503" in body["detail"]
    for secret in ("internal.example", "sk_live_123", "abc", "Traceback"):
        assert secret not in answer.body.decode()


@pytest.mark.parametrize("status", [400, 404, 429, 600])
def test_an_upstream_status_that_is_not_5xx_is_left_to_the_framework(status: int) -> None:
    """Only 5xx upstream errors are answered 502; a 4xx is the app's own business."""
    assert error_response(httpx_status_error(httpx, status, "https://x.example/")) is None


def test_upstream_errors_are_recognised_without_importing_their_library() -> None:
    """Duck typing: .response.status_code, or aiohttp's ClientResponseError.status."""

    class Response:
        status_code = 502

    class VendorError(Exception):
        response = Response()

    class NoResponse(Exception):
        response = None

    class Broken(Exception):
        @property
        def response(self) -> object:
            raise RuntimeError("no")

    ClientResponseError = type("ClientResponseError", (Exception,), {"status": 500})
    ClientResponseError.__module__ = "aiohttp.client_exceptions"
    assert upstream_status(VendorError()) == 502
    assert upstream_status(ClientResponseError()) == 500
    assert upstream_status(NoResponse()) is None
    assert upstream_status(Broken()) is None
    shed = error_response(ShedRequest("late slot"))
    assert shed is not None
    assert shed.status == 503


@pytest.mark.parametrize(
    ("headers", "http_version", "length"),
    [
        ([(b"host", b"x")], "1.1", 0),  # HTTP/1.x without a length has no body
        ([(b"content-length", b"0")], "1.1", 0),
        ([(b"content-length", b"120")], "1.0", 120),
        ([(b"transfer-encoding", b"chunked")], "1.1", -1),
        ([(b"content-length", b"5"), (b"transfer-encoding", b"chunked")], "1.1", -1),
        ([(b"content-length", b"soon")], "1.1", -1),  # unreadable: read it to its end
        ([(b"host", b"x")], "2", -1),  # HTTP/2 may send a body without a length
        ([(b"content-length", b"7")], "2", 7),
    ],
)
def test_one_pass_reads_the_budget_and_the_body_length(
    headers: list[tuple[bytes, bytes]], http_version: str, length: int
) -> None:
    """asgi_and_body finds the declared body length (0 none, -1 unknown) with the budget."""
    budget, found = DeadlineHeaders().asgi_and_body(
        [*headers, (b"grpc-timeout", b"300m")], http_version
    )
    assert (budget, found) == (0.3, length)
    assert DeadlineHeaders(()).asgi_and_body(headers, http_version) == (None, length)
