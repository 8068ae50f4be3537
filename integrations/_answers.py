"""Outcomes as HTTP answers: our errors, an upstream's 5xx, a shed request, a late body.

An `Answer` is framework-free (status, headers, JSON body); `send_answer` and `wsgi_answer`
write one over ASGI and WSGI. The details are fixed sentences: exception messages name
internal breakers, bulkheads and hosts, which a public client has no business seeing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final

from resilience._errors import BulkheadFull, CircuitOpenError, DeadlineExceeded

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from starlette.types import Send

__all__ = [
    "JSON_CONTENT_TYPE",
    "MAPPED_ERRORS",
    "SHED_RETRY_AFTER",
    "Answer",
    "ShedRequest",
    "deadline_response",
    "error_response",
    "method_not_allowed_response",
    "request_timeout_response",
    "retry_after_header",
    "send_answer",
    "shed_response",
    "upstream_status",
    "wsgi_answer",
]

JSON_CONTENT_TYPE: Final = "application/json"
SHED_RETRY_AFTER: Final = 1
"""Seconds a shed client is told to wait: overload passes quickly, and 1 is the smallest hint."""


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer ready for any framework: status, headers and a JSON body (bytes).

    Example:
        >>> shed_response().status
        503
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def reason(self) -> str:
        """The reason phrase for the status line (WSGI needs one)."""
        return _REASONS.get(self.status, "Error")


_REASONS: Final[Mapping[int, str]] = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _json(status: int, kind: str, detail: str, headers: Iterable[tuple[str, str]] = ()) -> Answer:
    body = json.dumps({"error": kind, "detail": detail}).encode()
    return Answer(
        status=status,
        headers=(
            ("content-type", JSON_CONTENT_TYPE),
            ("content-length", str(len(body))),
            *headers,
        ),
        body=body,
    )


# Fixed details: exception messages name internal breakers, bulkheads and hosts (an upstream
# error's message holds its URL, query secrets included), which a public client has no
# business seeing (the status endpoint is the place for names, and it can be off).
_BULKHEAD_FULL: Final = _json(
    503, "bulkhead_full", "Too many calls to a dependency are in progress; retry later."
)
_DEADLINE_EXCEEDED: Final = _json(
    504, "deadline_exceeded", "The request did not complete within its deadline."
)
_CIRCUIT_OPEN_DETAIL: Final = "A dependency is temporarily unavailable; retry later."
_FORCED_OPEN: Final = _json(503, "circuit_open", _CIRCUIT_OPEN_DETAIL)
_SHED: Final = _json(
    503,
    "overloaded",
    "The server is handling as many requests as it can; retry later.",
    (("retry-after", str(SHED_RETRY_AFTER)),),
)
_REQUEST_TIMEOUT: Final = _json(
    408, "request_timeout", "The request body did not arrive in time; send it again."
)
_METHOD_NOT_ALLOWED: Final = _json(405, "method_not_allowed", "Use GET.", (("allow", "GET, HEAD"),))


class ShedRequest(Exception):  # an outcome, like BulkheadFull
    """No ``max_concurrent`` slot was free when a large body's handler started reading it.

    Raised from the body read inside the handler; the integrations answer it with the same
    503 as any shed request.
    """


MAPPED_ERRORS: Final = (CircuitOpenError, BulkheadFull, DeadlineExceeded)
"""Our errors the integrations turn into HTTP answers (found anywhere in a chain)."""

_CHAIN_LIMIT: Final = 32
"""Exceptions looked at, at most, in one chain: chains are short, and a loop must end."""


def retry_after_header(retry_after: float | None) -> str | None:
    """``Retry-After`` in whole seconds, rounded up and at least 1; None when unknown.

    Example:
        >>> retry_after_header(0.2), retry_after_header(2.01), retry_after_header(None)
        ('1', '3', None)
    """
    if retry_after is None or math.isnan(retry_after):
        return None
    if math.isinf(retry_after):
        return None
    return str(max(1, math.ceil(retry_after)))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """*exc*, then what it wraps: causes, contexts and a group's members, nearest first.

    Contexts are followed even when suppressed (``raise ... from None``): SDKs hide the
    httpx error they turned into their own that way.
    """
    queue: deque[BaseException] = deque((exc,))
    seen: set[int] = set()
    while queue and len(seen) < _CHAIN_LIMIT:
        current = queue.popleft()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            queue.extend(current.exceptions)
        if current.__cause__ is not None:
            queue.append(current.__cause__)
        if current.__context__ is not None:
            queue.append(current.__context__)


# Upstream errors that carry their status elsewhere than ``.response.status_code``.
_STATUS_ATTRIBUTE: Final = {("aiohttp", "ClientResponseError"): "status"}


def upstream_status(exc: BaseException) -> int | None:
    """The 5xx status of an upstream HTTP error (httpx, httpx2, requests, aiohttp); else None.

    Duck-typed, so no HTTP library is imported: an exception carrying ``.response`` with an
    ``int`` ``status_code`` (httpx's and httpx2's ``HTTPStatusError``, requests' ``HTTPError``,
    SDK errors built on them), or aiohttp's ``ClientResponseError`` (``.status``).

    Example:
        >>> import httpx
        >>> request = httpx.Request("GET", "https://api.example/v1")
        >>> response = httpx.Response(503, request=request)
        >>> upstream_status(httpx.HTTPStatusError("x", request=request, response=response))
        503
        >>> upstream_status(ValueError("x")) is None
        True
    """
    try:
        response = getattr(exc, "response", None)
        status = None if response is None else getattr(response, "status_code", None)
        if status is None:
            for cls in type(exc).__mro__:
                attribute = _STATUS_ATTRIBUTE.get((cls.__module__.partition(".")[0], cls.__name__))
                if attribute is not None:
                    status = getattr(exc, attribute, None)
                    break
    except Exception:  # a property that raises is not an HTTP status
        return None
    if isinstance(status, int) and not isinstance(status, bool) and 500 <= status <= 599:
        return status
    return None


def _answer_for(exc: BaseException) -> Answer | None:
    if isinstance(exc, CircuitOpenError):
        header = retry_after_header(exc.retry_after)
        if header is None:
            return _FORCED_OPEN
        return _json(503, "circuit_open", _CIRCUIT_OPEN_DETAIL, (("retry-after", header),))
    if isinstance(exc, BulkheadFull):
        return _BULKHEAD_FULL
    if isinstance(exc, DeadlineExceeded):
        return _DEADLINE_EXCEEDED
    if isinstance(exc, ShedRequest):
        return _SHED
    status = upstream_status(exc)
    if status is not None:
        detail = f"An upstream service answered with an error (HTTP {status}); retry later."
        return _json(502, "bad_gateway", detail)
    return None


def error_response(exc: BaseException) -> Answer | None:
    """The HTTP answer for one of our errors, or an upstream's 5xx, found in *exc*'s chain.

    The chain is *exc*, its ``__cause__`` and ``__context__`` (and theirs), and the members
    of an exception group; the nearest match wins. None: leave *exc* to the framework.

    Example:
        >>> from resilience import CircuitOpenError
        >>> answer = error_response(CircuitOpenError("payments", retry_after=2.2))
        >>> answer.status, dict(answer.headers)["retry-after"]
        (503, '3')
        >>> try:
        ...     try:
        ...         raise CircuitOpenError("payments", retry_after=1.0)
        ...     except CircuitOpenError as exc:
        ...         raise RuntimeError("the SDK's own error") from exc
        ... except RuntimeError as wrapped:
        ...     error_response(wrapped).status
        503
    """
    for link in _chain(exc):
        answer = _answer_for(link)
        if answer is not None:
            return answer
    return None


def shed_response() -> Answer:
    """The 503 sent at once when ``max_concurrent`` requests are already running."""
    return _SHED


def request_timeout_response() -> Answer:
    """The 408 sent when a request body does not arrive within ``body_timeout``."""
    return _REQUEST_TIMEOUT


def deadline_response() -> Answer:
    """The 504 for a request whose deadline passed (here: while its body was arriving)."""
    return _DEADLINE_EXCEEDED


def method_not_allowed_response() -> Answer:
    """The 405 for a status path asked with a method other than GET or HEAD.

    Example:
        >>> answer = method_not_allowed_response()
        >>> answer.status, dict(answer.headers)["allow"]
        (405, 'GET, HEAD')
    """
    return _METHOD_NOT_ALLOWED


# ---------------------------------------------------------------------------- writing one


def _encode(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def send_answer(send: Send, answer: Answer, *, head: bool = False) -> None:
    """Send *answer* over ASGI (no body for a HEAD request)."""
    await send(
        {"type": "http.response.start", "status": answer.status, "headers": _encode(answer.headers)}
    )
    await send({"type": "http.response.body", "body": b"" if head else answer.body})


def wsgi_answer(
    environ: WSGIEnvironment, start_response: StartResponse, answer: Answer
) -> Iterable[bytes]:
    """Start *answer* over WSGI and return its body (none for a HEAD request)."""
    start_response(f"{answer.status} {answer.reason}", list(answer.headers))
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [answer.body]
