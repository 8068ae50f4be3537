"""Inbound deadline headers on real servers: which ones count, and budgets no wait can hold."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import flask
import httpx
import pytest
from fastapi import FastAPI

from resilience import Bulkhead, remaining
from resilience.integrations.fastapi import add_resilience
from resilience.integrations.flask import Resilience
from tests.helpers import serve_asgi, serve_wsgi

pytestmark = pytest.mark.network


def fastapi_server(**options: Any) -> tuple[AbstractContextManager[str], Bulkhead]:
    """A FastAPI app: /left reports remaining(); /report (a plain def) waits for a Bulkhead."""
    app = FastAPI()
    add_resilience(app, **options)
    slot = Bulkhead(1, max_waiting=4, name=f"report-{uuid.uuid4().hex[:6]}")

    @app.get("/left")
    def left() -> dict[str, float | None]:
        return {"left": remaining()}

    @app.get("/report")
    @slot
    def report() -> dict[str, bool]:  # runs in a worker thread: a real thread wait
        time.sleep(0.3)
        return {"ok": True}

    return serve_asgi(app), slot


def flask_server(**options: Any) -> tuple[AbstractContextManager[str], Bulkhead]:
    """The same app in Flask."""
    app = flask.Flask(f"deadlines-{uuid.uuid4().hex[:6]}")
    Resilience(app, **options)
    slot = Bulkhead(1, max_waiting=4, name=f"report-{uuid.uuid4().hex[:6]}")

    @app.get("/left")
    def left() -> dict[str, float | None]:
        return {"left": remaining()}

    @app.get("/report")
    @slot
    def report() -> dict[str, bool]:
        time.sleep(0.3)
        return {"ok": True}

    return serve_wsgi(app), slot


SERVERS = [pytest.param(fastapi_server, id="fastapi"), pytest.param(flask_server, id="flask")]
Server = Callable[..., tuple[AbstractContextManager[str], Bulkhead]]


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("value", ["99999999H", "2562048H"])  # 3.6e11 s; just past TIMEOUT_MAX
def test_a_budget_longer_than_any_wait_counts_as_none(server: Server, value: str) -> None:
    """grpc-timeout beyond threading.TIMEOUT_MAX: no deadline, and a Bulkhead wait works."""
    context, _ = server()
    with context as url:
        left = httpx.get(f"{url}/left", headers={"grpc-timeout": value}).json()["left"]
        first: list[int] = []
        holder = threading.Thread(
            target=lambda: first.append(httpx.get(f"{url}/report", timeout=10).status_code)
        )
        holder.start()
        time.sleep(0.1)  # the first request holds the only slot; the second waits for it
        second = httpx.get(f"{url}/report", headers={"grpc-timeout": value}, timeout=10)
        holder.join(10)
    assert left is None
    assert first == [200]
    assert second.status_code == 200
    assert second.json() == {"ok": True}


@pytest.mark.parametrize("server", SERVERS)
def test_a_long_budget_within_any_wait_still_counts(server: Server) -> None:
    """2562047H (just under threading.TIMEOUT_MAX) can be waited for: it is the budget."""
    context, _ = server()
    with context as url:
        left = httpx.get(f"{url}/left", headers={"grpc-timeout": "2562047H"}).json()["left"]
    assert 2562047 * 3600 - 60 < left <= 2562047 * 3600


@pytest.mark.parametrize("server", SERVERS)
def test_deadline_headers_false_ignores_what_callers_send(server: Server) -> None:
    """deadline_headers=False: the server's timeout alone sets the deadline."""
    context, _ = server(timeout=5.0, deadline_headers=False)
    with context as url:
        left = httpx.get(
            f"{url}/left",
            headers={"grpc-timeout": "100m", "x-envoy-expected-rq-timeout-ms": "100"},
        ).json()["left"]
    assert 4.0 < left <= 5.0


@pytest.mark.parametrize("server", SERVERS)
def test_deadline_headers_can_name_the_ones_a_proxy_sets(server: Server) -> None:
    """deadline_headers=[...]: only the named headers shorten the deadline."""
    context, _ = server(timeout=5.0, deadline_headers=["x-envoy-expected-rq-timeout-ms"])
    with context as url, httpx.Client(base_url=url) as client:
        ignored = client.get("/left", headers={"grpc-timeout": "100m"}).json()["left"]
        honoured = client.get("/left", headers={"x-envoy-expected-rq-timeout-ms": "800"})
    assert 4.0 < ignored <= 5.0
    assert 0.3 < honoured.json()["left"] <= 0.8
