"""The Flask integration, against a real threaded werkzeug server on 127.0.0.1."""

from __future__ import annotations

import contextvars
import importlib
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import flask
import httpx
import pytest

from resilience import (
    BulkheadFull,
    CircuitBreaker,
    CircuitOpenError,
    ConfigError,
    DeadlineExceeded,
    Policy,
    remaining,
)
from resilience._deadline import check_deadline
from resilience.integrations.flask import Resilience
from tests.helpers import serve_wsgi as serve

pytestmark = pytest.mark.network


ERRORS: dict[str, Exception] = {
    "open": CircuitOpenError("payments", retry_after=2.2),
    "open-soon": CircuitOpenError("payments", retry_after=0.05),
    "forced": CircuitOpenError("payments", retry_after=None),
    "bulkhead": BulkheadFull("db"),
    "deadline": DeadlineExceeded("too slow"),
    "other": RuntimeError("boom"),
}


def error_app(**options: Any) -> flask.Flask:
    """An app whose routes raise each mapped error and report the deadline."""
    app = flask.Flask(f"errors-{uuid.uuid4().hex[:6]}")
    Resilience(app, **options)

    @app.get("/raise/<kind>")
    def raise_error(kind: str) -> str:
        raise ERRORS[kind]

    @app.get("/remaining")
    def read_remaining() -> dict[str, float | None]:
        return {"remaining": remaining()}

    @app.get("/late")
    def late() -> str:
        time.sleep(0.3)
        check_deadline("the database call")  # what our components do inside a view
        return "should not get here"

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """One server for the error-mapping and deadline tests (timeout=5 s)."""
    with serve(error_app(timeout=5.0)) as url:
        yield url


def test_circuit_open_maps_to_503_with_retry_after_rounded_up(base_url: str) -> None:
    """CircuitOpenError becomes 503 with Retry-After = ceil(retry_after) and a JSON body."""
    response = httpx.get(f"{base_url}/raise/open")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "circuit_open"
    assert isinstance(response.json()["detail"], str)


def test_retry_after_is_at_least_one_second(base_url: str) -> None:
    """A breaker about to half-open still asks for a whole second."""
    assert httpx.get(f"{base_url}/raise/open-soon").headers["retry-after"] == "1"


def test_forced_open_leaves_retry_after_out(base_url: str) -> None:
    """A forced-open breaker has no known end, so no Retry-After is sent."""
    response = httpx.get(f"{base_url}/raise/forced")
    assert response.status_code == 503
    assert "retry-after" not in response.headers


def test_bulkhead_full_and_deadline_exceeded(base_url: str) -> None:
    """BulkheadFull becomes 503, DeadlineExceeded 504, both with JSON bodies."""
    full = httpx.get(f"{base_url}/raise/bulkhead")
    late = httpx.get(f"{base_url}/raise/deadline")
    assert (full.status_code, full.json()["error"]) == (503, "bulkhead_full")
    assert (late.status_code, late.json()["error"]) == (504, "deadline_exceeded")


def test_other_errors_are_left_to_flask(base_url: str) -> None:
    """An exception that is not ours still becomes Flask's 500."""
    assert httpx.get(f"{base_url}/raise/other").status_code == 500


def test_view_runs_inside_the_server_timeout(base_url: str) -> None:
    """With no inbound header the view sees the server's timeout as its deadline."""
    assert 4.0 < httpx.get(f"{base_url}/remaining").json()["remaining"] <= 5.0


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"x-envoy-expected-rq-timeout-ms": "800"}, 0.3, 0.8),
        ({"grpc-timeout": "700m"}, 0.2, 0.7),
        ({"x-envoy-expected-rq-timeout-ms": "60000"}, 4.0, 5.0),  # clamped to timeout
        ({"x-envoy-expected-rq-timeout-ms": "soon"}, 4.0, 5.0),  # malformed: ignored
        ({"grpc-timeout": "99"}, 4.0, 5.0),
    ],
)
def test_inbound_deadline_header_shortens_the_deadline(
    base_url: str, headers: dict[str, str], low: float, high: float
) -> None:
    """A valid inbound deadline header shortens the deadline; a bad one is ignored."""
    response = httpx.get(f"{base_url}/remaining", headers=headers)
    assert response.status_code == 200
    assert low < response.json()["remaining"] <= high


def test_cooperative_deadline_in_the_view_gives_504(base_url: str) -> None:
    """Code in the view that checks the inbound deadline after it passed ends in a 504."""
    response = httpx.get(f"{base_url}/late", headers={"grpc-timeout": "100m"})
    assert response.status_code == 504
    assert response.json()["error"] == "deadline_exceeded"


def test_no_timeout_and_no_header_means_no_deadline() -> None:
    """Without timeout= or an inbound header the view runs without a deadline."""
    with serve(error_app(timeout=timedelta(seconds=3), status_path=None)) as url:
        assert 2.0 < httpx.get(f"{url}/remaining").json()["remaining"] <= 3.0
    with serve(error_app()) as url:
        assert httpx.get(f"{url}/remaining").json() == {"remaining": None}


def test_application_error_handlers_win() -> None:
    """An app's own handler for one of our errors is kept, not replaced."""
    app = flask.Flask("own-handler")

    @app.errorhandler(BulkheadFull)
    def busy(exc: BulkheadFull) -> tuple[str, int]:
        return "busy, try later", 429

    @app.get("/busy")
    def raise_busy() -> str:
        raise BulkheadFull("db")

    Resilience(app)
    with serve(app) as url:
        response = httpx.get(f"{url}/busy")
    assert (response.status_code, response.text) == (429, "busy, try later")


class Gate:
    """Holds requests inside the view until released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.entered = 0

    def hold(self) -> None:
        with self.lock:
            self.running += 1
            self.entered += 1
            self.peak = max(self.peak, self.running)
        try:
            self.release.wait(30)
        finally:
            with self.lock:
                self.running -= 1


def gated_app(gate: Gate, extension: Resilience) -> flask.Flask:
    """An app whose /work view waits at the gate."""
    app = flask.Flask(f"gated-{uuid.uuid4().hex[:6]}")
    extension.init_app(app)

    @app.get("/work")
    def work() -> dict[str, str]:
        gate.hold()
        return {"status": "done"}

    @app.get("/stream")
    def stream() -> flask.Response:
        def body() -> Iterator[str]:
            yield "start;"
            gate.hold()
            yield "end"

        return flask.Response(body())

    return app


def wait_for(condition: Any, timeout: float = 15.0) -> None:
    """Poll *condition* until true (real servers: generous margins)."""
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "condition not met in time"
        time.sleep(0.01)


@pytest.mark.parametrize("path", ["/work", "/stream"])
def test_load_shedding_runs_exactly_max_concurrent_across_threads(path: str) -> None:
    """Under 20 concurrent requests exactly max_concurrent run; the rest get 503 at once."""
    gate = Gate()
    app = gated_app(gate, Resilience(max_concurrent=4))
    with (
        serve(app) as url,
        ThreadPoolExecutor(max_workers=20) as pool,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        futures = [pool.submit(client.get, path) for _ in range(20)]
        wait_for(lambda: sum(f.done() for f in futures) == 16)
        # the shed answers came back while 4 views were still held at the gate
        assert gate.running == 4
        shed = [f.result() for f in futures if f.done()]
        gate.release.set()
        responses = [f.result() for f in futures]
    assert sorted(r.status_code for r in responses) == [200] * 4 + [503] * 16
    assert gate.peak == 4
    assert gate.entered == 4
    for response in shed:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"] == "overloaded"


def test_slots_are_given_back_after_each_request() -> None:
    """Finished requests (streamed ones included) free their slot: later waves all succeed."""
    gate = Gate()
    gate.release.set()
    extension = Resilience(max_concurrent=2)
    app = gated_app(gate, extension)
    with (
        serve(app) as url,
        ThreadPoolExecutor(max_workers=2) as pool,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        for path in ["/work", "/stream"] * 3:
            results = [r.status_code for r in pool.map(client.get, [path, path])]
            assert results == [200, 200]
    wait_for(lambda: extension.limiter is not None and extension.limiter.in_flight == 0)


def test_status_route_lists_breakers_and_is_shed_like_any_request() -> None:
    """GET /resilience lists every breaker with state and numbers; at capacity it is shed."""
    suffix = uuid.uuid4().hex[:8]
    healthy = CircuitBreaker(f"flask-healthy-{suffix}")
    broken = CircuitBreaker(f"flask-broken-{suffix}")
    healthy.call(lambda: None)
    broken.force_open()
    gate = Gate()
    app = gated_app(gate, Resilience(max_concurrent=1))
    with serve(app) as url, ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(httpx.get, f"{url}/work", timeout=30)
        wait_for(lambda: gate.running == 1)
        assert httpx.get(f"{url}/work").status_code == 503
        shed = httpx.get(f"{url}/resilience")
        gate.release.set()
        assert held.result().status_code == 200
        response = httpx.get(f"{url}/resilience")
    assert (shed.status_code, shed.json()["error"]) == (503, "overloaded")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    entries = {entry["name"]: entry for entry in response.json()["breakers"]}
    assert entries[healthy.name]["state"] == "closed"
    assert entries[healthy.name]["calls"] == 1
    assert entries[broken.name]["state"] == "forced_open"
    for field in ("calls", "failures", "slow_calls", "failure_rate", "slow_call_rate"):
        assert field in entries[healthy.name]


def test_status_path_can_be_moved_or_turned_off() -> None:
    """status_path names the route; None leaves it out (404)."""
    with serve(error_app(status_path="/ops/breakers")) as url:
        assert httpx.get(f"{url}/ops/breakers").json().keys() == {"breakers", "upstreams"}
        assert httpx.get(f"{url}/resilience").status_code == 404
        assert httpx.post(f"{url}/ops/breakers").status_code == 405
    with serve(error_app(status_path=None)) as url:
        assert httpx.get(f"{url}/resilience").status_code == 404


def test_status_route_goes_through_the_apps_own_checks() -> None:
    """The status route is a Flask route, so the app's before_request guard protects it."""
    app = error_app()

    @app.before_request
    def require_token() -> tuple[str, int] | None:
        if flask.request.headers.get("authorization") != "Bearer ops":
            return "unauthorized", 401
        return None

    with serve(app) as url:
        assert httpx.get(f"{url}/resilience").status_code == 401
        allowed = httpx.get(f"{url}/resilience", headers={"authorization": "Bearer ops"})
        assert allowed.status_code == 200


def test_init_app_pattern_and_extensions_state() -> None:
    """Resilience().init_app(app) registers itself in app.extensions; repeating is harmless."""
    extension = Resilience(timeout=1.0)
    first, second = flask.Flask("first"), flask.Flask("second")
    extension.init_app(first)
    extension.init_app(first)
    extension.init_app(second)
    assert first.extensions["resilience"] is extension
    assert second.extensions["resilience"] is extension
    with pytest.raises(RuntimeError, match="already has"):
        Resilience().init_app(first)


def test_contextvars_set_before_the_request_reach_the_view() -> None:
    """A contextvar set in a before_request hook is visible in the view with the deadline."""
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="unset")
    app = flask.Flask("ctx")
    Resilience(app, timeout=2.0)

    @app.before_request
    def set_tenant() -> None:
        tenant.set(flask.request.headers.get("x-tenant", "none"))

    @app.get("/who")
    def who() -> dict[str, object]:
        return {"tenant": tenant.get(), "remaining": remaining()}

    with serve(app) as url:
        body = httpx.get(f"{url}/who", headers={"x-tenant": "acme"}).json()
    assert body["tenant"] == "acme"
    assert 1.0 < body["remaining"] <= 2.0


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_concurrent", 0), ("timeout", -1.0), ("status_path", "nope"), ("clock", None)],
)
def test_invalid_options_fail_at_construction(option: str, value: object) -> None:
    """A bad setting raises ConfigError naming it."""
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigError, match=option):
        Resilience(**options)


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Flask, importing the module says which extra to install."""
    monkeypatch.setitem(sys.modules, "flask", None)
    monkeypatch.delitem(sys.modules, "resilience.integrations.flask")
    with pytest.raises(ImportError, match=r"pip install 'resilience-mesh\[flask\]'"):
        importlib.import_module("resilience.integrations.flask")


def test_a_policy_applies_per_route_under_the_route_decorator() -> None:
    """A Policy put under @app.get protects that view; its errors become 503."""
    suffix = uuid.uuid4().hex[:8]
    payments = Policy(
        breaker=CircuitBreaker(f"flask-route-{suffix}", consecutive_failures=1, open_duration=30.0)
    )
    calls: list[int] = []
    app = flask.Flask("policy-route")
    Resilience(app)

    @app.get("/charge/<int:cents>")
    @payments
    def charge(cents: int) -> dict[str, int]:
        calls.append(cents)
        if cents == 0:
            raise RuntimeError("card declined")
        return {"charged": cents}

    with serve(app) as url:
        assert httpx.get(f"{url}/charge/250").json() == {"charged": 250}
        assert httpx.get(f"{url}/charge/0").status_code == 500
        rejected = httpx.get(f"{url}/charge/5")
        assert rejected.status_code == 503
        assert rejected.headers["retry-after"] == "30"
    assert calls == [250, 0]


def test_a_catch_all_error_handler_does_not_hide_the_mapping() -> None:
    """Flask picks the most specific handler, so a catch-all Exception handler keeps our 503."""
    app = flask.Flask("catch-all")

    @app.errorhandler(Exception)
    def everything(exc: Exception) -> tuple[str, int]:
        return "oops", 500

    Resilience(app)

    @app.get("/pay")
    def pay() -> str:
        raise CircuitOpenError("payments", retry_after=2.0)

    response = app.test_client().get("/pay")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"


def test_slot_is_given_back_when_the_app_raises() -> None:
    """With exceptions propagating (testing mode), a failed request still frees its slot."""
    extension = Resilience(max_concurrent=1)
    app = flask.Flask("propagating")
    app.testing = True  # exceptions reach the WSGI layer instead of becoming a 500
    extension.init_app(app)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    client = app.test_client()
    for _ in range(3):
        with pytest.raises(RuntimeError):
            client.get("/boom")
    assert extension.limiter is not None
    assert extension.limiter.in_flight == 0
    assert "max_concurrent=1" in repr(extension)


def test_test_client_requests_do_not_keep_their_slots() -> None:
    """Werkzeug's test client never closes bodies: complete responses free their slot anyway."""
    extension = Resilience(max_concurrent=1)
    app = flask.Flask("test-client")
    extension.init_app(app)

    @app.get("/plain")
    def plain() -> str:
        return "ok"

    @app.get("/missing-item")
    def missing() -> str:
        flask.abort(404)

    @app.get("/fail")
    def fail() -> str:
        raise RuntimeError("boom")

    @app.get("/stream")
    def stream() -> flask.Response:
        return flask.Response(iter(["a", "b"]))

    client = app.test_client()
    statuses = [client.get(path).status_code for path in ["/plain", "/missing-item", "/fail"] * 3]
    assert statuses == [200, 404, 500] * 3
    assert client.get("/stream", buffered=True).status_code == 200
    with client.get("/stream") as response:
        assert response.status_code == 200
        assert client.get("/plain").status_code == 503  # the stream still holds the slot
    assert client.get("/plain").status_code == 200
    assert extension.limiter is not None
    assert extension.limiter.in_flight == 0


# ---------------------------------------------------------------- errors others wrapped


class SdkError(Exception):
    """What a vendor SDK raises around the error it caught."""


def upstream() -> flask.Flask:
    """A real upstream that answers the status named in the path."""
    app = flask.Flask("upstream")

    @app.get("/status/<int:code>")
    def answer(code: int) -> tuple[str, int]:
        return "upstream says no", code

    return app


INNER: dict[str, Exception] = {
    "open": CircuitOpenError("payments", retry_after=2.2),
    "bulkhead": BulkheadFull("db"),
    "deadline": DeadlineExceeded("late"),
}


def wrapping_app(**options: Any) -> flask.Flask:
    """An app whose views raise an SdkError around one of our errors."""
    app = flask.Flask(f"wrapping-{uuid.uuid4().hex[:6]}")
    Resilience(app, **options)

    @app.get("/cause/<kind>")
    def cause(kind: str) -> str:
        try:
            raise INNER[kind]
        except Exception as exc:
            raise SdkError("the SDK failed") from exc

    @app.get("/context/<kind>")
    def context(kind: str) -> str:
        try:
            raise INNER[kind]
        except Exception:
            raise SdkError("the SDK failed")  # noqa: B904  # a context, as careless SDKs do

    return app


def test_our_errors_wrapped_by_an_sdk_get_our_answers() -> None:
    """An SDK's error raised from ours (or while handling it) is answered as ours."""
    with serve(wrapping_app()) as url, httpx.Client(base_url=url) as client:
        for how in ("cause", "context"):
            opened = client.get(f"/{how}/open")
            assert (opened.status_code, opened.headers["retry-after"]) == (503, "3")
            assert client.get(f"/{how}/bulkhead").json()["error"] == "bulkhead_full"
            assert client.get(f"/{how}/deadline").status_code == 504


def test_an_escaped_upstream_5xx_becomes_a_502_json_answer() -> None:
    """requests' or httpx's raise_for_status() on an upstream 5xx is a 502 with no details."""
    import requests

    app = flask.Flask("proxying")
    Resilience(app)
    where: dict[str, str] = {}

    @app.get("/requests/<int:code>")
    def with_requests(code: int) -> str:
        response = requests.get(f"{where['upstream']}/status/{code}?token=abc123", timeout=5)
        response.raise_for_status()
        return response.text

    @app.get("/httpx/<int:code>")
    def with_httpx(code: int) -> str:
        response = httpx.get(f"{where['upstream']}/status/{code}")
        response.raise_for_status()
        return response.text

    with serve(upstream()) as where["upstream"], serve(app) as url:
        answers = [httpx.get(f"{url}/requests/503"), httpx.get(f"{url}/httpx/500")]
        missing = httpx.get(f"{url}/requests/404")
    for answer in answers:
        assert answer.status_code == 502
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"] == "bad_gateway"
        for leak in ("abc123", "127.0.0.1", "Traceback", "upstream says no"):
            assert leak not in answer.text
    assert missing.status_code == 500  # an upstream 4xx is the app's own bug


def test_an_apps_catch_all_handler_keeps_everything_but_our_errors() -> None:
    """An Exception handler registered before init_app still answers what is not ours."""
    app = flask.Flask("catch-all-chain")

    @app.errorhandler(Exception)
    def everything(exc: Exception) -> tuple[str, int]:
        return f"oops: {type(exc).__name__}", 500

    Resilience(app)

    @app.get("/wrapped")
    def wrapped() -> str:
        try:
            raise CircuitOpenError("payments", retry_after=1.0)
        except CircuitOpenError as exc:
            raise SdkError("the SDK failed") from exc

    @app.get("/other")
    def other() -> str:
        raise SdkError("unrelated")

    @app.get("/missing")
    def missing() -> str:
        flask.abort(404)

    client = app.test_client()
    assert client.get("/wrapped").status_code == 503
    assert client.get("/other").get_data(as_text=True) == "oops: SdkError"
    assert client.get("/missing").get_data(as_text=True) == "oops: NotFound"  # Flask's way


def test_an_sdk_error_handler_of_the_app_wins() -> None:
    """An app's handler for the SDK's error class is more specific than ours: it answers."""
    app = wrapping_app()

    @app.errorhandler(SdkError)
    def sdk_error(exc: SdkError) -> tuple[str, int]:
        return "the app's own answer", 500

    response = app.test_client().get("/cause/open")
    assert (response.status_code, response.get_data(as_text=True)) == (500, "the app's own answer")
