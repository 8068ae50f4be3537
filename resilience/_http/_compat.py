"""The one place our internals import httpx from.

httpx has had no release since 0.28.1 and a maintained fork exists; keeping every import in
this module makes a switch (or supporting both) a change to one file. No httpcore type leaks
out of here.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Final

from httpx import (
    URL,
    AsyncBaseTransport,
    AsyncByteStream,
    AsyncHTTPTransport,
    BaseTransport,
    ByteStream,
    CloseError,
    ConnectError,
    ConnectTimeout,
    Headers,
    HTTPTransport,
    LocalProtocolError,
    NetworkError,
    PoolTimeout,
    ProxyError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    Request,
    Response,
    SyncByteStream,
    TimeoutException,
    TransportError,
    UnsupportedProtocol,
    WriteError,
    WriteTimeout,
)

__all__ = [
    "URL",
    "AsyncBaseTransport",
    "AsyncByteStream",
    "AsyncHTTPTransport",
    "BaseTransport",
    "ByteStream",
    "CloseError",
    "ConnectError",
    "ConnectTimeout",
    "HTTPTransport",
    "Headers",
    "LocalProtocolError",
    "NetworkError",
    "PoolTimeout",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Request",
    "Response",
    "SyncByteStream",
    "TimeoutException",
    "TransportError",
    "UnsupportedProtocol",
    "WriteError",
    "WriteTimeout",
    "url_host",
    "with_origin",
]


def _parse_result_type() -> Any:
    """httpx's internal parsed-URL tuple type, when its layout is the one we know (else None).

    httpx's public ``URL.copy_with`` re-parses and re-validates the whole URL (about 15 µs);
    routing an attempt to an upstream endpoint only swaps scheme, host and port of an
    already valid URL, which the tuple's constructor does in well under a microsecond.
    """
    try:
        reference = URL("http://a:1/p?q")._uri_reference
    except Exception:
        return None
    kind = type(reference)
    fields = getattr(kind, "_fields", None)
    known = ("scheme", "userinfo", "host", "port", "path", "query", "fragment")
    return kind if fields == known else None


_PARSE_RESULT: Final = _parse_result_type()
_new_tuple: Final = tuple.__new__
_new_object: Final = object.__new__


url_host: Final[Callable[[URL], str]] = (
    attrgetter("host") if _PARSE_RESULT is None else attrgetter("_uri_reference.host")
)
"""*url*'s host as parsed (lower-case; IDNA hosts stay in their ``xn--`` form), in one C
call: ``url_host(URL("http://Payments:8080/x"))`` is ``"payments"``."""


def with_origin(url: URL, scheme: str, host: str, port: int | None) -> URL:
    """*url* sent to another origin: same path, query and fragment; new scheme, host, port.

    *port* None means the scheme's default; an IPv6 *host* is given without brackets.

    Example:
        >>> str(with_origin(URL("http://payments/charges?id=7"), "https", "10.0.0.5", 8443))
        'https://10.0.0.5:8443/charges?id=7'
    """
    if _PARSE_RESULT is None:
        return url.copy_with(scheme=scheme, host=host, port=port)
    ref = url._uri_reference
    new: URL = _new_object(URL)
    new._uri_reference = _new_tuple(
        _PARSE_RESULT, (scheme, ref.userinfo, host, port, ref.path, ref.query, ref.fragment)
    )
    return new
