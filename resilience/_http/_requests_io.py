"""What `resilience.requests` needs to drive the shared core with requests and urllib3.

The core reads little of a request: its method, headers, URL parts, a per-request
extensions dict and whether its body can be sent again. `RequestView` shows a requests
`PreparedRequest` that way (its headers are the request's own, so a key or a deadline header
the core sets is sent). requests wraps every urllib3 failure in a few broad classes, so
whether anything reached the server is read from the urllib3 error inside
(`REQUESTS_ERRORS`).
"""

from __future__ import annotations

from typing import Any, Final

import requests
import urllib3.exceptions as u3
from requests import exceptions as rx
from urllib3.util import parse_url

from ._rules import ErrorKinds

__all__ = [
    "REQUESTS_ERRORS",
    "RequestView",
    "UrlView",
    "attempt_timeout",
    "base_timeouts",
    "read_all",
]


class _Matching(type):
    """A metaclass whose classes match exceptions by a test, not by type, so that
    `ErrorKinds` (which `isinstance` checks) can sort requests' wrapped urllib3 errors."""

    def __instancecheck__(cls, instance: object) -> bool:
        test = cls.__dict__.get("test")
        return bool(test(instance)) if test is not None else type.__instancecheck__(cls, instance)


def _cause(exc: BaseException) -> object:
    """The urllib3 error a requests exception wraps (``MaxRetryError``'s reason unwrapped)."""
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, u3.MaxRetryError) and inner.reason is not None:
        return inner.reason
    return inner


def _not_sent(exc: object) -> bool:
    if isinstance(exc, rx.ConnectTimeout | u3.EmptyPoolError | u3.ClosedPoolError):
        return True
    if isinstance(exc, rx.ProxyError):
        return False
    if isinstance(exc, rx.ConnectionError):
        # A refused or unresolvable connection, a connect timeout or a failed TLS handshake
        # (httpx files them all under ConnectError): the request never left.
        return isinstance(
            _cause(exc),
            u3.NewConnectionError | u3.ConnectTimeoutError | u3.SSLError | u3.ClosedPoolError,
        )
    return False


def _read_timeout(exc: object) -> bool:
    if isinstance(exc, rx.ReadTimeout):
        return True
    # A timeout while the body arrives: requests raises it as a ConnectionError.
    return isinstance(exc, rx.ConnectionError) and isinstance(_cause(exc), u3.ReadTimeoutError)


def _timeout(exc: object) -> bool:
    return isinstance(exc, rx.Timeout) or _read_timeout(exc)


class NotSent(Exception, metaclass=_Matching):
    """Matches the requests errors that say nothing reached the server."""

    test = staticmethod(_not_sent)


class ReadTimeout(Exception, metaclass=_Matching):
    """Matches a read timeout, whether requests raised it as a timeout or a connection error."""

    test = staticmethod(_read_timeout)


class AnyTimeout(Exception, metaclass=_Matching):
    """Matches any requests timeout (connect, read, or a read timeout inside a body)."""

    test = staticmethod(_timeout)


REQUESTS_ERRORS: Final = ErrorKinds(
    not_sent=(NotSent,),
    maybe_sent=(
        rx.ConnectionError,
        rx.Timeout,
        rx.ChunkedEncodingError,
        u3.ProtocolError,
        u3.TimeoutError,
    ),
    never_retried=(),
    caller_errors=(
        rx.URLRequired,
        rx.MissingSchema,
        rx.InvalidSchema,
        rx.InvalidURL,
        rx.InvalidHeader,
        rx.UnrewindableBodyError,
    ),
    transport=(rx.ConnectionError, rx.Timeout, rx.ChunkedEncodingError, u3.HTTPError),
    timeout=(AnyTimeout, u3.TimeoutError),
    timeout_phases=((rx.ConnectTimeout, "connect"), (ReadTimeout, "read")),
)
"""The kinds for requests (and the urllib3 errors it lets through unwrapped)."""


class UrlView:
    """The parts of a URL the core reads: scheme, host (lower case, IPv6 without brackets),
    explicit port, and the text (for spans, redacted there)."""

    __slots__ = ("host", "port", "scheme", "text")

    def __init__(self, text: str) -> None:
        parts = parse_url(text)
        self.text = text
        self.scheme = (parts.scheme or "http").lower()
        host = (parts.host or "").lower()
        self.host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self.port: int | None = parts.port

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"UrlView({self.scheme}://{self.host}:{self.port})"


class RequestView:
    """A `PreparedRequest` as the core reads it; ``headers`` is the request's own dict."""

    __slots__ = ("extensions", "headers", "method", "stream", "url")

    def __init__(self, request: requests.PreparedRequest, extensions: dict[str, Any]) -> None:
        self.method = (request.method or "GET").upper()
        self.headers = request.headers
        self.url = UrlView(request.url or "")
        self.extensions = extensions
        self.stream = request.body


def read_all(body: Any) -> bytes:
    """Read a file-like or iterable request body into memory (to send it again)."""
    if hasattr(body, "read"):
        data = body.read()
    else:
        data = b"".join(part.encode() if isinstance(part, str) else part for part in body)
    return data.encode() if isinstance(data, str) else bytes(data)


def base_timeouts(timeout: object) -> dict[str, float | None] | None:
    """requests' ``timeout`` argument as the core's timeout parts (None: none given).

    Example:
        >>> base_timeouts((1.0, 5.0))
        {'connect': 1.0, 'read': 5.0, 'write': 5.0, 'pool': None}
    """
    if timeout is None:
        return None
    if isinstance(timeout, tuple):
        connect, read = timeout
    elif isinstance(timeout, int | float):
        connect = read = timeout
    else:  # a urllib3 Timeout
        connect = getattr(timeout, "connect_timeout", None)
        read = getattr(timeout, "read_timeout", None)
    connect = float(connect) if isinstance(connect, int | float) else None
    read = float(read) if isinstance(read, int | float) else None
    return {"connect": connect, "read": read, "write": read, "pool": None}


def attempt_timeout(view: RequestView, base: object, given: Any) -> Any:
    """The ``timeout`` to hand requests for this attempt: the parts the core clamped, when it
    did (they differ from *base*, the parts `base_timeouts` made), else what was *given*."""
    parts = view.extensions.get("timeout")
    if parts is None or parts is base:
        return given
    return (parts.get("connect"), parts.get("read"))
