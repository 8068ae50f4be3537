"""The one place our internals import httpx from.

httpx has had no release since 0.28.1 and a maintained fork exists; keeping every import in
this module makes a switch (or supporting both) a change to one file. No httpcore type leaks
out of here.
"""

from __future__ import annotations

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
]
