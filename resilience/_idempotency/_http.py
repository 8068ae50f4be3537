"""HTTP idempotency without a framework: the `Idempotency` settings, and every decision the
ASGI and WSGI adapters share (per the IETF Idempotency-Key draft and Stripe's practice).

An adapter drives one keyed request like this::

    key = settings.key_of(raw_header)                    # an HttpAnswer (400) or a str
    scoped, fp = scoped_key(method, route, key), fingerprint(method, path, body)
    answer = answer_for(settings.backend.claim(scoped, fp, lock), fp)   # or 503 on failure
    # None: run the handler, feeding its response to a Recorder; then
    # complete(scoped, token, recorder.value(), ttl) before its last byte goes out,
    # or release(scoped, token) when there is nothing to keep (5xx, error, too large).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import string
from collections.abc import Iterable
from typing import Final

from .. import _validate
from .._errors import ConfigError
from .._public import public
from ._backend import Busy, ClaimResult, Done, IdempotencyBackend, StoreUnavailable, backend_for
from ._memory import MemoryStore

__all__ = [
    "DEFAULT_HEADER",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_MAX_BODY",
    "DEFAULT_METHODS",
    "DEFAULT_TTL",
    "MAX_KEY_LENGTH",
    "REPLAYED_HEADER",
    "REPLAYED_HEADERS",
    "HttpAnswer",
    "Idempotency",
    "Recorder",
    "answer_for",
    "decode_response",
    "encode_response",
    "fingerprint",
    "scoped_key",
    "store_unavailable",
]

DEFAULT_TTL: Final = 86_400.0
"""How long a finished response is kept: 24 hours, as Stripe does."""
DEFAULT_METHODS: Final = ("POST", "PATCH")
DEFAULT_HEADER: Final = "Idempotency-Key"
DEFAULT_LOCK_TIMEOUT: Final = 60.0
DEFAULT_MAX_BODY: Final = 1 << 20
MAX_KEY_LENGTH: Final = 255
REPLAYED_HEADER: Final = "idempotent-replayed"

# Response headers kept and replayed: those that describe the body (and where a created
# resource lives). Cookies, caching and per-connection headers are not the request's result.
REPLAYED_HEADERS: Final = frozenset(
    {
        "content-type",
        "content-encoding",
        "content-language",
        "content-disposition",
        "content-location",
        "location",
    }
)

# The characters of an HTTP field name (RFC 9110 "token").
_TOKEN_CHARS: Final = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)


@dataclasses.dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A response the middleware sends itself: status, headers (lower-case names), body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _json_answer(status: int, error: str, detail: str, *extra: tuple[str, str]) -> HttpAnswer:
    body = json.dumps({"error": error, "detail": detail}).encode()
    headers = (("content-type", "application/json"), ("content-length", str(len(body))), *extra)
    return HttpAnswer(status, headers, body)


def _retry_after(seconds: float) -> str:
    # Whole seconds, rounded up and at least 1 (Retry-After takes no fractions).
    return str(max(1, math.ceil(seconds)))


def _check_methods(value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        msg = (
            f"methods must be a tuple of HTTP method names such as ('POST', 'PATCH'), got {value!r}"
        )
        raise ConfigError(msg)
    methods = tuple(value)
    if not methods or not all(isinstance(m, str) and m.isalpha() for m in methods):
        msg = f"methods must be a non-empty tuple of HTTP method names, got {value!r}"
        raise ConfigError(msg)
    return frozenset(m.upper() for m in methods)


@dataclasses.dataclass(frozen=True, slots=True, init=False)
class Idempotency:
    """Server-side ``Idempotency-Key`` handling: a retried request does its work once.

    Pass it to an integration: ``add_resilience(app, idempotency=keys)`` (FastAPI,
    Starlette) or ``Resilience(app, idempotency=keys)`` (Flask). For a request whose method
    is in ``methods`` and that carries the header, the first request runs and its response
    (status, body, content headers) is kept for ``ttl`` seconds; a repeat with the same
    method, path and body gets that response again with ``Idempotent-Replayed: true``; the
    same key while the first still runs gets 409 with ``Retry-After``; the same key with a
    different request gets 422; a key longer than 255 characters gets 400 (and so does a
    missing key when ``required``). 5xx answers and exceptions are not kept: the key is
    released, so a retry runs again. If the store cannot be reached the answer is 503 and
    nothing runs.

    Args:
        store: where records live: `resilience.stores.MemoryStore` (this process) or
            `resilience.stores.RedisStore` (every worker). Default: a new `MemoryStore`.
        ttl: seconds a finished response is kept.
        methods: the HTTP methods it applies to; other methods pass untouched.
        required: True answers 400 to a request of those methods without the header.
        header: the request header that carries the key.
        lock_timeout: seconds after which a request still running is presumed dead and its
            key may be taken over (make it longer than your slowest handler).
        max_body: responses larger than this many bytes are not kept (the key is released).

    Example:
        >>> from resilience.idempotency import Idempotency
        >>> from resilience.stores import MemoryStore
        >>> keys = Idempotency(store=MemoryStore(), ttl=3600, required=True)
        >>> keys.methods
        ('PATCH', 'POST')
    """

    store: object
    ttl: float
    methods: tuple[str, ...]
    required: bool
    header: str
    lock_timeout: float
    max_body: int
    # Derived once, read per request: the backend, the header's lower-case name, the methods.
    backend: IdempotencyBackend = dataclasses.field(repr=False, compare=False)
    header_key: str = dataclasses.field(repr=False, compare=False)
    method_set: frozenset[str] = dataclasses.field(repr=False, compare=False)

    def __init__(
        self,
        *,
        store: object = None,
        ttl: _validate.Duration = DEFAULT_TTL,
        methods: Iterable[str] = DEFAULT_METHODS,
        required: bool = False,
        header: str = DEFAULT_HEADER,
        lock_timeout: _validate.Duration = DEFAULT_LOCK_TIMEOUT,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        set_ = object.__setattr__
        store = MemoryStore() if store is None else store
        set_(self, "backend", backend_for(store))
        set_(self, "store", store)
        set_(self, "ttl", _validate.required_duration("ttl", ttl))
        set_(self, "lock_timeout", _validate.required_duration("lock_timeout", lock_timeout))
        method_set = _check_methods(methods)
        set_(self, "methods", tuple(sorted(method_set)))
        set_(self, "method_set", method_set)
        flag: object = required
        if not isinstance(flag, bool):
            msg = f"required must be True or False, got {flag!r}"
            raise ConfigError(msg)
        set_(self, "required", flag)
        name: object = header
        if not isinstance(name, str) or not name or not _TOKEN_CHARS.issuperset(name):
            msg = f"header must be an HTTP header name such as 'Idempotency-Key', got {name!r}"
            raise ConfigError(msg)
        set_(self, "header", name)
        set_(self, "header_key", name.lower())
        set_(self, "max_body", _validate.required_integer("max_body", max_body, minimum=0))

    def key_of(self, raw: str | None) -> str | HttpAnswer | None:
        """The key a request sent, or the 400 answer for a bad or missing one.

        None: no key, and none is required (the request runs as usual).

        Example:
            >>> keys = Idempotency()
            >>> keys.key_of('"order-1"'), keys.key_of(None)
            ('"order-1"', None)
            >>> keys.key_of("x" * 256).status
            400
        """
        if raw is None:
            return _KEY_MISSING if self.required else None
        if not raw or len(raw) > MAX_KEY_LENGTH:
            return _KEY_INVALID
        return raw


_KEY_MISSING: Final = _json_answer(
    400, "idempotency_key_missing", "This request needs an Idempotency-Key header."
)
_KEY_INVALID: Final = _json_answer(
    400, "idempotency_key_invalid", "An Idempotency-Key must be 1 to 255 characters long."
)
_MISMATCH: Final = _json_answer(
    422,
    "idempotency_key_reused",
    "This Idempotency-Key was already used for a different request (method, path or body).",
)


def scoped_key(method: str, route: str, key: str) -> str:
    """The key as stored: scoped to the method and the route (template where known).

    Example:
        >>> scoped_key("POST", "/orders/{id}", "abc")
        'POST /orders/{id} abc'
    """
    return f"{method} {route} {key}"


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same": method, path and a hash of the body.

    Example:
        >>> fingerprint("POST", "/a", b"{}") == fingerprint("POST", "/a", b"{}")
        True
        >>> fingerprint("POST", "/a", b"{}") == fingerprint("POST", "/b", b"{}")
        False
    """
    digest = hashlib.sha256(body).hexdigest()
    return f"{method} {path} {digest}"


def answer_for(result: ClaimResult, expected: str) -> HttpAnswer | None:
    """What to send for a claim's result; None when this request owns the key and runs.

    Example:
        >>> from resilience._idempotency._backend import Busy
        >>> answer_for(Busy("POST /a x", 0.2), "POST /a x").status
        409
    """
    if isinstance(result, Done):
        if result.fingerprint != expected:
            return _MISMATCH
        return decode_response(result.value, replayed=True)
    if isinstance(result, Busy):
        if result.fingerprint != expected:
            return _MISMATCH
        return _json_answer(
            409,
            "idempotency_conflict",
            "A request with this Idempotency-Key is still in progress; retry later.",
            ("retry-after", _retry_after(result.retry_after)),
        )
    return None


def store_unavailable(exc: StoreUnavailable) -> HttpAnswer:
    """503 with ``Retry-After``: the store cannot say whether this already ran, so it did not.

    Example:
        >>> store_unavailable(StoreUnavailable("MemoryStore")).status
        503
    """
    return _json_answer(
        503,
        "idempotency_store_unavailable",
        "The server cannot check this Idempotency-Key right now; nothing was done. Retry later.",
        ("retry-after", _retry_after(exc.retry_after)),
    )


def encode_response(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """A response as stored, laid out like HTTP/1.1: the status, the kept headers (lower-case
    names), a blank line, the body.

    Example:
        >>> stored = encode_response(201, [("content-type", "text/plain"), ("x-a", "b")], b"ok")
        >>> stored
        b'201\\ncontent-type: text/plain\\n\\nok'
        >>> decode_response(stored).headers
        (('content-type', 'text/plain'), ('content-length', '2'))
    """
    # Header names and values cannot hold a newline (RFC 9110), so the first blank line ends
    # the head whatever the body holds.
    head = "".join(f"{name}: {value}\n" for name, value in headers if name in REPLAYED_HEADERS)
    return f"{status}\n{head}\n".encode("latin-1") + body


def decode_response(value: bytes, *, replayed: bool = False) -> HttpAnswer:
    """The stored response, with ``content-length`` (and ``idempotent-replayed`` if asked)."""
    head, _, body = value.partition(b"\n\n")
    status, *lines = head.decode("latin-1").split("\n")
    headers = [tuple(line.split(": ", 1)) for line in lines]
    headers.append(("content-length", str(len(body))))
    if replayed:
        headers.append((REPLAYED_HEADER, "true"))
    return HttpAnswer(int(status), tuple(headers), body)  # type: ignore[arg-type]


class Recorder:
    """Collects a response as it goes out, up to ``max_body`` bytes.

    `value` is what to store, or None when there is nothing to keep (a 5xx, or a body
    past the limit): the key is then released.

    Example:
        >>> recorder = Recorder(max_body=10)
        >>> recorder.start(201, [("content-type", "text/plain"), ("set-cookie", "s=1")])
        >>> recorder.add(b"done")
        >>> recorder.value()
        b'201\\ncontent-type: text/plain\\n\\ndone'
    """

    __slots__ = ("_chunks", "_head", "_size", "keep", "max_body", "status")

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.status = 0
        self.keep = True
        self._head = ""
        self._chunks: list[bytes] = []
        self._size = 0

    def start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        """The status line and headers (names in any case)."""
        self.status = status
        if status >= 500:
            self.keep = False  # a server error may be transient: let a retry run again
            return
        head = f"{status}\n"
        for name, value in headers:
            low = name.lower()
            if low in REPLAYED_HEADERS:
                head += f"{low}: {value}\n"
        self._head = head

    def add(self, chunk: bytes) -> None:
        """One piece of the body."""
        if not self.keep or not chunk:
            return
        self._size += len(chunk)
        if self._size > self.max_body:
            self.keep = False
            self._chunks = []
            return
        self._chunks.append(chunk)

    def value(self) -> bytes | None:
        """The encoded response to store, or None when it is not to be kept."""
        if not self.keep or not self.status:
            return None
        # The layout of encode_response, built as the response went by.
        return f"{self._head}\n".encode("latin-1") + b"".join(self._chunks)


public("resilience.idempotency", Idempotency)
