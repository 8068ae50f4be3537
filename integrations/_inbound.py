"""What a request says about itself: the caller's deadline budget and the body's length.

The formats are `resilience._propagation`'s (shared with the httpx transports, which write
the outbound header); here they are read from a request as each server protocol holds it:
raw ASGI header pairs, a WSGI environ, or a framework's headers mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from resilience._propagation import DEADLINE_HEADERS, header_budget, header_integer

__all__ = [
    "DeadlineHeaders",
    "asgi_header_budget",
    "content_length",
    "environ_budget",
    "request_budget",
]

_LENGTH_MAX_DIGITS: Final = 19  # a Content-Length beyond a 64-bit integer is not plausible
_KINDS: Final = dict(DEADLINE_HEADERS)
_DEADLINE_TAG: Final = "deadline"
_LENGTH_TAG: Final = "length"
_CHUNKED_TAG: Final = "chunked"


def content_length(value: str | bytes | None) -> int | None:
    """A ``Content-Length`` value as bytes; None when absent or malformed.

    Example:
        >>> content_length("120"), content_length(b"0"), content_length("-1"), content_length(None)
        (120, 0, None, None)
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return header_integer(value.strip(), _LENGTH_MAX_DIGITS)


class DeadlineHeaders:
    """Reads the caller's budget from the inbound deadline headers an app honours.

    The shortest valid value wins. A malformed value is ignored, never an error; so is a
    budget longer than any wait can be (beyond `LONGEST_WAIT`): it counts as no budget.

    Example:
        >>> DeadlineHeaders(["grpc-timeout"]).mapping({"grpc-timeout": "250m"})
        0.25
        >>> DeadlineHeaders(["grpc-timeout"]).mapping({"connect-timeout-ms": "100"}) is None
        True
    """

    __slots__ = ("_asgi", "_asgi_tags", "_environ", "_kinds")

    def __init__(self, names: Iterable[str] = _KINDS) -> None:
        self._kinds = tuple((name, _KINDS[name]) for name in names)
        self._asgi = frozenset(name.encode("latin-1") for name, _ in self._kinds)
        # One dict lookup per header finds deadline and body headers alike.
        self._asgi_tags = {
            **dict.fromkeys(self._asgi, _DEADLINE_TAG),
            b"content-length": _LENGTH_TAG,
            b"transfer-encoding": _CHUNKED_TAG,
        }
        self._environ = tuple(
            ("HTTP_" + name.upper().replace("-", "_"), name) for name, _ in self._kinds
        )

    def __bool__(self) -> bool:
        return bool(self._kinds)

    def mapping(self, get_header: Mapping[str, str | bytes] | Any) -> float | None:
        """The budget from anything with ``.get(name)`` on lower-case names, or None."""
        return header_budget(get_header, self._kinds)

    def asgi(self, headers: Iterable[tuple[bytes, bytes]]) -> float | None:
        """The budget from raw ASGI headers (lower-case byte names), without building a dict."""
        names = self._asgi
        if not names:
            return None
        found: dict[str, bytes] | None = None
        for name, value in headers:
            if name in names:
                if found is None:
                    found = {}
                found[name.decode("latin-1")] = value
        return None if found is None else header_budget(found, self._kinds)

    def asgi_and_body(
        self, headers: Iterable[tuple[bytes, bytes]], http_version: str = "1.1"
    ) -> tuple[float | None, int]:
        """`asgi`, and the body's declared length, in one pass over the headers.

        The length is 0 for no body, -1 for one of unknown length (chunked; or HTTP/2 and 3,
        where a body may come without a length).

        Example:
            >>> DeadlineHeaders().asgi_and_body([(b"content-length", b"12")])
            (None, 12)
        """
        found: dict[str, bytes] | None = None
        length = 0 if http_version < "2" else -1
        chunked = False
        tags = self._asgi_tags
        for name, value in headers:
            tag = tags.get(name)
            if tag is None:
                continue
            if tag is _DEADLINE_TAG:
                if found is None:
                    found = {}
                found[name.decode("latin-1")] = value
            elif tag is _LENGTH_TAG:
                declared = content_length(value)
                length = -1 if declared is None else declared
            else:
                chunked = True
        budget = None if found is None else header_budget(found, self._kinds)
        return budget, -1 if chunked else length

    def environ(self, environ: Mapping[str, Any]) -> float | None:
        """The budget from a WSGI environ (headers live under ``HTTP_*`` keys)."""
        found: dict[str, str] | None = None
        for key, header in self._environ:
            value = environ.get(key)
            if isinstance(value, str):
                if found is None:
                    found = {}
                found[header] = value
        return None if found is None else header_budget(found, self._kinds)


_ALL_HEADERS: Final = DeadlineHeaders()


def asgi_header_budget(headers: Iterable[tuple[bytes, bytes]]) -> float | None:
    """`inbound_budget` for raw ASGI headers (lower-case byte names), without building a dict."""
    return _ALL_HEADERS.asgi(headers)


def environ_budget(environ: Mapping[str, Any]) -> float | None:
    """`inbound_budget` for a WSGI environ (headers live under ``HTTP_*`` keys)."""
    return _ALL_HEADERS.environ(environ)


def request_budget(timeout: float | None, inbound: float | None) -> float | None:
    """The deadline for one request: the server's timeout, shortened by the caller's budget.

    Example:
        >>> request_budget(2.0, 0.5), request_budget(2.0, 30.0), request_budget(None, 0.5)
        (0.5, 2.0, 0.5)
    """
    if inbound is None:
        return timeout
    if timeout is None or inbound < timeout:
        return inbound
    return timeout
