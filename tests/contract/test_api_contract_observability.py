"""API.md "Observability": event names, silence when unconfigured, no secrets."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from resilience import (
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    DeadlineExceeded,
    Retry,
    backoff,
    deadline,
)
from resilience.httpx import ResilientTransport

SECRETS = ("Bearer s3cr3t-token", "sessionid=c00kie", "k3y-v4lue", "hunter2", "t0k3n")


def test_unconfigured_application_prints_nothing() -> None:
    """With no logging or structlog configuration, the library prints nothing at all."""
    script = textwrap.dedent(
        """
        import httpx
        from resilience import CircuitBreaker, Retry, backoff
        from resilience.httpx import ResilientTransport

        breaker = CircuitBreaker("quiet", consecutive_failures=1)
        retry = Retry(on=ConnectionError, attempts=3, backoff=backoff.none())

        @retry
        @breaker
        def fail():
            raise ConnectionError("down")

        try:
            fail()
        except Exception:
            pass

        def handler(request):
            return httpx.Response(503)

        transport = ResilientTransport(httpx.MockTransport(handler), sleep=lambda s: None)
        httpx.Client(transport=transport).get("http://svc.test/")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == ""


def test_stdlib_logger_has_a_null_handler() -> None:
    """The events go to the stdlib logger `resilience`, which has a NullHandler."""
    import resilience  # noqa: F401  # importing sets the handler up

    handlers = logging.getLogger("resilience").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


@pytest.fixture
def structlog_configured() -> object:
    """An application that configured structlog (capture_logs needs a configuration)."""
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    yield
    structlog.reset_defaults()


async def slow_under_deadline() -> None:
    async with deadline(0.01):
        await asyncio.sleep(30)


@pytest.mark.usefixtures("structlog_configured")
def test_structlog_event_names_and_keys() -> None:
    """The events of API.md reach structlog with their structured keys."""
    breaker = CircuitBreaker("obs-contract", consecutive_failures=1)
    retry = Retry(on=ConnectionError, attempts=2, backoff=backoff.constant(0.0))
    bulkhead = Bulkhead(1, name="obs-pool")

    @retry
    def flaky() -> None:
        raise ConnectionError("down")

    with capture_logs() as logs:
        with pytest.raises(ConnectionError):
            breaker.call(flaky)
        bulkhead.acquire()
        try:
            with pytest.raises(BulkheadFull):
                bulkhead.call(lambda: None)
        finally:
            bulkhead.release()
        with pytest.raises(DeadlineExceeded):
            asyncio.run(slow_under_deadline())
    by_name: dict[str, list[Any]] = {}
    for entry in logs:
        by_name.setdefault(str(entry["event"]), []).append(entry)
    changed = by_name["circuit_breaker.state_changed"][0]
    assert (changed["breaker"], changed["old_state"], changed["new_state"]) == (
        "obs-contract",
        "closed",
        "open",
    )
    scheduled = by_name["retry.scheduled"][0]
    assert {"attempt", "wait", "error"} <= set(scheduled)
    assert "retry.exhausted" in by_name
    assert "bulkhead.rejected" in by_name
    assert "deadline.exceeded" in by_name


@pytest.mark.usefixtures("structlog_configured")
def test_no_secret_reaches_an_event() -> None:
    """Authorization, Cookie, URL passwords and secret query values never appear in events."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    transport = ResilientTransport(httpx.MockTransport(handler), sleep=lambda s: None)
    with (
        capture_logs() as logs,
        httpx.Client(transport=transport) as http,
        pytest.raises(httpx.ConnectError),
    ):
        http.get(
            "http://user:hunter2@svc.test/x?api_key=k3y-v4lue&token=t0k3n",
            headers={"Authorization": "Bearer s3cr3t-token", "Cookie": "sessionid=c00kie"},
        )
    assert logs, "the retries should have been logged"
    text = repr(logs)
    for secret in SECRETS:
        assert secret not in text
