"""The status path lists the upstreams of the process's live transports and their endpoints.

Real servers on 127.0.0.1: the endpoints are uvicorn servers, the status path is a FastAPI
app on uvicorn or a Flask app on werkzeug, and the transport routing to the endpoints lives
in the same process (as an app's own client would).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import flask
import httpx
import pytest
from fastapi import FastAPI

from resilience import CircuitBreaker, Policy, Retry, backoff
from resilience.httpx import ResilientTransport, Upstream
from resilience.integrations.fastapi import add_resilience
from resilience.integrations.flask import Resilience
from tests.helpers import serve_asgi, serve_wsgi

pytestmark = pytest.mark.network

Scope = dict[str, Any]


class Replica:
    """An endpoint: answers *status*; a request to ``/hold`` waits until `gate` is set."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.gate = threading.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        while (await receive()).get("more_body", False):
            pass
        if scope["path"] == "/hold":
            await asyncio.to_thread(self.gate.wait, 10)
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def replicas(*statuses: int) -> Iterator[tuple[list[str], list[Replica]]]:
    """One uvicorn server per status; yields their URLs and apps."""
    apps = [Replica(status) for status in statuses]
    with ExitStack() as stack:
        urls = [stack.enter_context(serve_asgi(app, timeout_graceful_shutdown=1)) for app in apps]
        try:
            yield urls, apps
        finally:
            for app in apps:
                app.gate.set()


def fastapi_status() -> AbstractContextManager[str]:
    """A FastAPI app with the status path, on uvicorn."""
    app = FastAPI()
    add_resilience(app)
    return serve_asgi(app)


def flask_status() -> AbstractContextManager[str]:
    """A Flask app with the status path, on werkzeug."""
    app = flask.Flask(f"status-upstreams-{uuid.uuid4().hex[:6]}")
    Resilience(app)
    return serve_wsgi(app)


SERVERS = [
    pytest.param(fastapi_status, id="fastapi"),
    pytest.param(flask_status, id="flask"),
]


def policy(breaker_name: str) -> Policy:
    """Two failures in a row eject an endpoint for a minute; 503s are retried elsewhere."""
    return Policy(
        retry=Retry(on=httpx.TransportError, attempts=3, backoff=backoff.constant(0.001)),
        breaker=CircuitBreaker(breaker_name, consecutive_failures=2, open_duration=60.0),
        attempt_timeout=10.0,
    )


def upstream_entry(status_url: str, name: str) -> dict[str, Any]:
    """The status path's entry for the upstream *name*."""
    answer = httpx.get(f"{status_url}/resilience", headers={"accept": "application/json"})
    assert answer.status_code == 200
    payload = answer.json()
    assert set(payload) == {"breakers", "upstreams"}
    matches = [u for u in payload["upstreams"] if u["name"] == name]
    assert len(matches) == 1
    entry: dict[str, Any] = matches[0]
    return entry


@pytest.mark.parametrize("server", SERVERS)
def test_status_lists_upstream_endpoints_with_health_load_and_latency(
    server: Callable[[], AbstractContextManager[str]],
) -> None:
    """An ejected endpoint shows unhealthy with its open breaker; a busy one its request in
    flight and its latency."""
    name = f"inventory-{uuid.uuid4().hex[:8]}"
    base = f"status-{name}"
    with replicas(503, 200) as (urls, apps), server() as status_url:
        transport = ResilientTransport(
            upstreams=[Upstream(name, endpoints=urls, balancer="round_robin")],
            policy=policy(base),
        )
        with httpx.Client(transport=transport, timeout=15.0) as client:
            for _ in range(6):  # the 503s are retried on the other endpoint
                assert client.get(f"http://{name}/ok").status_code == 200
            view = transport.upstreams[name]
            bad, good = view.endpoints
            assert not bad.healthy
            held = threading.Thread(target=client.get, args=(f"http://{name}/hold",))
            held.start()
            try:
                for _ in range(1000):  # bounded: the request reaches the good endpoint
                    if good.in_flight == 1:
                        break
                    held.join(0.01)
                assert good.in_flight == 1
                entry = upstream_entry(status_url, name)
            finally:
                apps[1].gate.set()
                held.join(15)
    assert entry["balancer"] == "round_robin"
    assert entry["panic"] is False
    shown = {e["url"]: e for e in entry["endpoints"]}
    assert list(shown) == urls
    ejected, busy = shown[urls[0]], shown[urls[1]]
    assert ejected["healthy"] is False
    assert ejected["state"] == "open"
    assert ejected["in_rotation"] is False
    assert ejected["breaker"] == f"{base}:{urls[0]}"
    assert busy["healthy"] is True
    assert busy["state"] == "closed"
    assert busy["in_flight"] == 1
    assert busy["ewma_latency"] > 0.0
    assert busy["breaker"] == f"{base}:{urls[1]}"


@pytest.mark.parametrize("server", SERVERS)
def test_status_redacts_secrets_in_upstream_names(
    server: Callable[[], AbstractContextManager[str]],
) -> None:
    """A breaker named after a URL with credentials and an API key shows neither: endpoint
    breakers carry their template's name."""
    name = f"search-{uuid.uuid4().hex[:8]}"
    secret_base = "https://ops:hunter2@gateway.test/?api_key=s3cret"
    with replicas(200) as (urls, _), server() as status_url:
        transport = ResilientTransport(
            upstreams=[Upstream(name, endpoints=urls)], policy=policy(secret_base)
        )
        with httpx.Client(transport=transport, timeout=15.0) as client:
            assert client.get(f"http://{name}/").status_code == 200
            entry = upstream_entry(status_url, name)
            text = httpx.get(f"{status_url}/resilience").text
    (endpoint,) = entry["endpoints"]
    assert endpoint["url"] == urls[0]
    assert "REDACTED" in endpoint["breaker"]
    for secret in ("hunter2", "s3cret"):
        assert secret not in str(entry)
        assert secret not in text


def test_dropped_transports_leave_the_status_payload() -> None:
    """Upstreams are listed while their transport lives: a dropped one is gone at once."""
    from resilience.integrations._status import status_payload

    name = f"gone-{uuid.uuid4().hex[:8]}"
    transport = ResilientTransport(upstreams=[Upstream(name, endpoints=["http://10.0.0.9:80"])])
    assert name in [u["name"] for u in status_payload()["upstreams"]]
    del transport
    assert name not in [u["name"] for u in status_payload()["upstreams"]]
