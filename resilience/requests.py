"""A requests adapter that retries, breaks circuits per host and respects deadlines.

Mount it on a `requests.Session` for the schemes (or URL prefixes) it should serve::

    import requests
    from resilience.requests import ResilientAdapter

    session = requests.Session()
    adapter = ResilientAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)

It follows the same rules, with the same options, as `resilience.httpx.ResilientTransport`
(``docs/httpx.md``); urllib3's own retries are off, so attempts are never multiplied.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from . import _validate
from ._deadline import deadline
from ._http._call import Call, check_sleep, inject_trace_context
from ._http._core import (
    DEFAULT_BUFFER_LIMIT,
    DEFAULT_MAX_RETRY_AFTER,
    TransportCore,
    deadline_error,
)
from ._http._hosts import DEFAULT_MAX_HOSTS, BreakerMap
from ._http._rules import DEFAULT_RETRY_STATUSES, deadline_passed
from ._http._streams import LATE_BODY, LATE_HEAD, sized_body
from ._observe._otel_gate import http_attempt

try:
    import requests
    from requests.adapters import DEFAULT_POOLBLOCK, DEFAULT_POOLSIZE, HTTPAdapter

    from ._http._requests_io import (
        REQUESTS_ERRORS,
        RequestView,
        attempt_timeout,
        base_timeouts,
        read_all,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = "resilience.requests needs requests: pip install 'resilience-mesh[requests]'"
    raise ImportError(msg) from exc

if TYPE_CHECKING:
    from ._http._rules import Expiry
    from ._policy import Policy

__all__ = ["ResilientAdapter"]

_CHUNK = 1 << 16


def _blocking_sleep(seconds: float) -> None:
    # Looked up per call, so tests that patch time.sleep see our waits too.
    time.sleep(seconds)


class _RequestsCore(TransportCore):
    """The shared core, knowing requests' in-memory bodies (the view's ``stream`` is the
    request's ``body``): bytes, text, or none."""

    __slots__ = ()
    note: ClassVar[str] = "resilience.requests: "
    in_memory: ClassVar[tuple[type, ...]] = (bytes, str, type(None))


class ResilientAdapter(HTTPAdapter):
    """A requests transport adapter that retries, breaks circuits per host and respects
    deadlines: the rules and options of `resilience.httpx.ResilientTransport`, for requests.

    Args:
        policy, idempotency_keys, max_retry_after, buffer_limit, deadline_header,
            max_hosts, retry_statuses, clock, sleep, wall_clock: as for
            `resilience.httpx.ResilientTransport`.
        pool_connections, pool_maxsize, pool_block: as for `requests.adapters.HTTPAdapter`.
            Its ``max_retries`` is always 0: urllib3 does not retry under this adapter.

    requests has no per-request extensions, so the httpx transports' per-request
    overrides have no equivalent here: mount adapters with different settings on
    different URL prefixes instead. Inside ``deadline(...)`` each attempt's connect and
    read timeouts are clamped to what remains.

    Example:
        >>> import requests
        >>> from resilience.requests import ResilientAdapter
        >>> with requests.Session() as session:
        ...     session.mount("https://", ResilientAdapter(idempotency_keys=True))
    """

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        idempotency_keys: bool | Callable[[], str] = False,
        max_retry_after: _validate.Duration = DEFAULT_MAX_RETRY_AFTER,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        deadline_header: str | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        retry_statuses: frozenset[int] | set[int] | tuple[int, ...] = DEFAULT_RETRY_STATUSES,
        clock: _validate.Clock = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        wall_clock: _validate.Clock = time.time,
        pool_connections: int = DEFAULT_POOLSIZE,
        pool_maxsize: int = DEFAULT_POOLSIZE,
        pool_block: bool = DEFAULT_POOLBLOCK,
    ) -> None:
        self._core = _RequestsCore(
            policy=policy,
            idempotency_keys=idempotency_keys,
            max_retry_after=max_retry_after,
            buffer_limit=buffer_limit,
            deadline_header=deadline_header,
            max_hosts=max_hosts,
            retry_statuses=retry_statuses,
            clock=clock,
            wall_clock=wall_clock,
            errors=REQUESTS_ERRORS,
        )
        self._sleep: Callable[[float], object] = (
            _blocking_sleep if sleep is None else check_sleep(sleep)
        )
        super().__init__(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            max_retries=0,
            pool_block=pool_block,
        )

    @property
    def breakers(self) -> BreakerMap:
        """Each authority (``scheme://host:port``) seen so far and its live breaker."""
        return BreakerMap(self._core.hosts)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send *request*, retrying as the rules allow (the session calls this)."""
        core = self._core
        base = base_timeouts(timeout)
        view = RequestView(request, {} if base is None else {"timeout": base})
        call = core.begin(view)
        if call.must_read:
            request.body = view.stream = read_all(request.body)
        options = (timeout, base, verify, cert, proxies)
        bulkhead = core.bulkhead
        if bulkhead is None:
            return self._scoped(call, request, options)
        bulkhead.acquire()
        try:
            return self._scoped(call, request, options)
        finally:
            bulkhead.release()

    def _scoped(
        self, call: Call, request: requests.PreparedRequest, options: tuple[Any, ...]
    ) -> requests.Response:
        if call.scope is None:
            return self._send(call, request, options)
        with deadline(call.scope, clock=self._core.clock):
            return self._send(call, request, options)

    def _send(
        self, call: Call, request: requests.PreparedRequest, options: tuple[Any, ...]
    ) -> requests.Response:
        core = self._core
        view: Any = call.request
        timeout, base, verify, cert, proxies = options
        limit = core.buffer_limit
        while True:
            core.before_attempt(call)
            failure: Exception | None = None
            with http_attempt(view, call.attempt - 1) as attempt:
                inject_trace_context(request.headers)
                try:
                    # Always streamed: the body is read here (small ones) or by the caller.
                    response = super().send(
                        request,
                        stream=True,
                        timeout=attempt_timeout(view, base, timeout),
                        verify=verify,
                        cert=cert,
                        proxies=proxies,
                    )
                    expiry = call.expiry
                    if deadline_passed(expiry):
                        response.close()
                        raise deadline_error(LATE_HEAD)
                    if sized_body(response, limit):  # type: ignore[arg-type]
                        # The session reads the body after we return, where a broken
                        # connection could no longer be retried: read small bodies here.
                        _read_content(response, expiry)
                except Exception as exc:
                    attempt.error(exc)
                    failure = exc
                except BaseException:
                    core.release(call)
                    raise
                else:
                    attempt.response(response.status_code)
            if failure is not None:
                wait = core.after_error(call, failure)
                if wait is None:
                    raise failure
                self._sleep(wait)
                continue
            wait = core.after_response(call, response, response.status_code, response.headers)
            if wait is None:
                return response
            response.close()
            self._sleep(wait)

    def __repr__(self) -> str:
        return f"ResilientAdapter(policy={self._core.policy!r})"


def _read_content(response: requests.Response, expiry: Expiry | None) -> None:
    """Read the body into ``response._content`` (where requests keeps a body it has read),
    checking the deadline between chunks; the connection goes back to the pool."""
    chunks = []
    try:
        for chunk in response.iter_content(_CHUNK):
            chunks.append(chunk)
            if expiry is not None and expiry.remaining() <= 0.0:
                raise deadline_error(LATE_BODY)
    except BaseException:
        response.close()
        raise
    response._content = b"".join(chunks)
    response._content_consumed = True
