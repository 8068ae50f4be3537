"""The status path: who may read it, the payload (breakers, upstreams), and the cache that
bounds its cost."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import ipaddress
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

from resilience._observe._redact import redact_name
from resilience._validate import Clock

from ._answers import JSON_CONTENT_TYPE
from ._options import StatusAccess

__all__ = [
    "STATUS_COST_SHARE",
    "STATUS_HEADERS",
    "StatusCache",
    "is_loopback",
    "status_allowed",
    "status_body",
    "status_headers",
    "status_payload",
]

STATUS_HEADERS: Final = (
    ("content-type", JSON_CONTENT_TYPE),
    ("cache-control", "no-store"),  # a snapshot: never serve it from a cache
)

STATUS_COST_SHARE: Final = 20
"""A status payload is reused for 20 times as long as it took to build: however often it is
asked for, building it takes at most about 1/21 of one CPU (a few breakers: always fresh)."""


_IN_PROCESS: Final = "testclient"
"""The client address Starlette's ``TestClient`` reports: a call in the same process.

A server always reports the peer's IP address (or one a trusted proxy forwarded), so no
network client can appear under this name, and tests need not configure anything.
"""


def is_loopback(host: object) -> bool:
    """True for a client on 127.0.0.0/8 or ``::1`` (also IPv4-mapped), or in process.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("10.0.0.7")
        (True, True, False)
        >>> is_loopback("::ffff:127.0.0.1"), is_loopback("testclient"), is_loopback(None)
        (True, True, False)
    """
    if not isinstance(host, str) or not host:
        return False  # no address (a Unix socket): nothing says the client is local
    if host == _IN_PROCESS:
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # drop an IPv6 zone
    except ValueError:
        return False
    if address.is_loopback:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped is not None and bool(mapped.is_loopback)


def status_allowed(access: StatusAccess, request: object, host: object) -> bool:
    """Whether *request* (from client address *host*) may read the status path.

    Example:
        >>> status_allowed("loopback", None, "127.0.0.1")
        True
        >>> status_allowed("loopback", None, "192.0.2.1")
        False
        >>> status_allowed("any", None, None), status_allowed(lambda request: False, None, "::1")
        (True, False)
    """
    if access == "loopback":
        return is_loopback(host)
    if access == "any":
        return True
    assert callable(access)
    return bool(access(request))


def _plain(value: object) -> object:
    """A JSON-ready metric value: enums as their value, NaN and infinities as null."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _metrics_dict(metrics: object) -> dict[str, object]:
    # A breaker's metrics snapshot is a Mapping (and a dataclass); accept either.
    if isinstance(metrics, Mapping):
        raw: Mapping[object, object] = metrics
    elif dataclasses.is_dataclass(metrics) and not isinstance(metrics, type):
        raw = {f.name: getattr(metrics, f.name) for f in dataclasses.fields(metrics)}
    else:
        msg = f"breaker metrics must be a mapping or a dataclass, got {metrics!r}"
        raise TypeError(msg)
    return {str(k): _plain(v) for k, v in raw.items()}


def status_payload() -> dict[str, list[dict[str, object]]]:
    """Every live breaker (`resilience.breakers`) with its state and window numbers, and
    every upstream of every live transport with its endpoints, by name.

    Each endpoint shows its ``url``, ``healthy``, ``state`` (its breaker's), ``in_rotation``,
    ``in_flight``, ``ewma_latency`` (seconds), ``weight`` and ``breaker`` (its breaker's
    name); names and URLs are redacted as everywhere else (credentials, secret-looking
    query parameters).

    Example:
        >>> from resilience import CircuitBreaker
        >>> from resilience.httpx import ResilientTransport, Upstream
        >>> _ = CircuitBreaker("doc-status")
        >>> transport = ResilientTransport(
        ...     upstreams=[Upstream("doc-status-svc", endpoints=["http://10.0.0.5:8001"])])
        >>> payload = status_payload()
        >>> entry = next(b for b in payload["breakers"] if b["name"] == "doc-status")
        >>> entry["state"]
        'closed'
        >>> svc = next(u for u in payload["upstreams"] if u["name"] == "doc-status-svc")
        >>> [(e["url"], e["healthy"], e["in_flight"]) for e in svc["endpoints"]]
        [('http://10.0.0.5:8001', True, 0)]
    """
    from resilience import breakers as live_breakers

    breakers = []
    for breaker in live_breakers():
        metrics = _metrics_dict(breaker.metrics())  # its state is read fresh (OPEN -> HALF_OPEN)
        name = metrics.pop("name", breaker.name)
        state = metrics.pop("state", None) or _plain(breaker.state)
        breakers.append({"name": redact_name(str(name)), "state": state, **metrics})
    breakers.sort(key=lambda entry: str(entry["name"]))
    return {"breakers": breakers, "upstreams": _upstreams()}


def _upstreams() -> list[dict[str, object]]:
    """`status_payload`'s upstreams: plain, redacted values, sorted by name."""
    from resilience._upstream._view import all_upstreams

    found: list[dict[str, object]] = []
    for view in all_upstreams():  # sorted by name already
        endpoints = []
        for endpoint in view.endpoints:
            entry = {key: _plain(value) for key, value in endpoint.as_dict().items()}
            entry["url"] = redact_name(str(entry["url"]))
            entry["breaker"] = redact_name(str(entry["breaker"]))
            endpoints.append(entry)
        found.append(
            {
                "name": redact_name(view.name),
                "balancer": view.balancer,
                "panic": view.panic,
                "endpoints": endpoints,
            }
        )
    return found


def status_body() -> bytes:
    """`status_payload` as JSON bytes."""
    return json.dumps(status_payload()).encode()


def status_headers(body: bytes) -> tuple[tuple[str, str], ...]:
    """`STATUS_HEADERS` with the ``content-length`` of *body*."""
    return (*STATUS_HEADERS, ("content-length", str(len(body))))


class StatusCache:
    """The status body, rebuilt at most once at a time and reused while it is cheap to.

    A body is reused for `STATUS_COST_SHARE` times as long as it took to build, so polling
    the status path costs a bounded share of a CPU however many breakers there are; with a
    few breakers a build takes microseconds and every answer is fresh. `aget` builds in a
    worker thread, off the event loop. Concurrent callers share one build.

    Example:
        >>> cache = StatusCache(build=lambda: b'{"breakers": []}')
        >>> cache.get()
        b'{"breakers": []}'
    """

    __slots__ = ("_body", "_build", "_clock", "_fresh_until", "_lock", "_pending")

    def __init__(
        self, *, build: Callable[[], bytes] = status_body, clock: Clock = time.monotonic
    ) -> None:
        self._build = build
        self._clock = clock
        self._body: bytes | None = None
        self._fresh_until = -math.inf
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[bytes] | None = None

    def fresh(self) -> bytes | None:
        """The cached body while it is fresh, else None."""
        body = self._body
        return body if body is not None and self._clock() < self._fresh_until else None

    def _rebuild(self) -> bytes:
        started = self._clock()
        body = self._build()
        done = self._clock()
        self._body = body
        self._fresh_until = done + (done - started) * STATUS_COST_SHARE
        return body

    def get(self) -> bytes:
        """The body, built in this thread if stale (threads arriving meanwhile wait for it)."""
        body = self.fresh()
        if body is not None:
            return body
        future, owner = self._join()
        if owner:
            self._fill(future)
        return future.result()

    async def aget(self) -> bytes:
        """The body, built in a worker thread if stale (callers meanwhile share that build)."""
        body = self.fresh()
        if body is not None:
            return body
        future, owner = self._join()
        if owner:
            asyncio.get_running_loop().run_in_executor(None, self._fill, future)
        return await asyncio.wrap_future(future)

    def _join(self) -> tuple[concurrent.futures.Future[bytes], bool]:
        with self._lock:
            future = self._pending
            if future is not None:
                return future, False
            future = self._pending = concurrent.futures.Future()
            # Running: one waiter's cancellation (its deadline) cannot cancel the others' build.
            future.set_running_or_notify_cancel()
            return future, True

    def _fill(self, future: concurrent.futures.Future[bytes]) -> None:
        try:
            body = self._rebuild()
        except BaseException as exc:  # the waiters get it (a 500), the next call retries
            with self._lock:
                self._pending = None
            future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        with self._lock:
            self._pending = None
        future.set_result(body)
