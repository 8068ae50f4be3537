"""Requests that a client above the transport is already retrying (an SDK's retry loop).

The OpenAI and Anthropic SDKs (Stainless-generated) retry on their own: each of their
attempts is a new request, built again from the call's options, that reaches the transport
as if it were a new call. Without this module a transport under such an SDK multiplies the
attempts (three of ours for each of the SDK's three: nine) and, with
``idempotency_keys=True``, gives each SDK attempt a fresh key, so a server that
deduplicates by key runs the call once per SDK attempt.

Those SDKs say which attempt a request is: ``x-stainless-retry-count`` is ``0`` on the first
and counts up on each of their retries. An SDK retry is matched to the call it repeats (the
last request this transport began in the same thread or task, with the same method and
URL) and joins it: it carries the call's key, and shares the call's attempts (the SDK's
retry is always sent, but our own retries stop once the call has used the transport's
attempts). A request without the header is a call of its own, as before.

The state is a context variable: one thread or asyncio task runs one call at a time, and
tasks started inside it get a copy, so concurrent calls never see each other's state.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final

__all__ = ["RETRY_COUNT_HEADERS", "Logical", "join", "join_request"]

RETRY_COUNT_HEADERS: Final = ("x-stainless-retry-count",)
"""Headers by which a client says which of its own attempts a request is (0: the first)."""


class Logical:
    """One call as a retrying SDK sees it, across its attempts.

    ``key``: the ``Idempotency-Key`` the transport gave it (None: none given);
    ``sent``: attempts the transport has sent for it, the SDK's retries included.
    """

    __slots__ = ("key", "owner", "sent", "target")

    def __init__(self, owner: object, target: tuple[str, str]) -> None:
        self.owner = owner
        self.target = target
        self.key: str | None = None
        self.sent = 0

    def key_for(self, new_key: Callable[[], str]) -> str:
        """The call's key: the one its first attempt got, or a new one (kept for the next)."""
        key = self.key
        if key is None:
            key = self.key = new_key()
        return key

    def attempts(self, planned: int) -> int:
        """Attempts for this request: *planned* less those the call has already used, and
        at least one (the SDK's retry is sent; our own retries are what is held back).

        Example:
            >>> call = Logical("core", ("POST", "https://api.example/v1/x"))
            >>> call.attempts(3), (setattr(call, "sent", 3), call.attempts(3))[1]
            (3, 1)
        """
        left = planned - self.sent
        return left if left > 1 else 1

    def __repr__(self) -> str:
        return f"Logical(target={self.target!r}, key={self.key!r}, sent={self.sent})"


_CURRENT: ContextVar[Logical | None] = ContextVar("resilience_http_logical", default=None)


def join(owner: object, method: str, url: str, retry_count: str) -> tuple[Logical, bool]:
    """The call a request belongs to, and whether the request is a retry of it.

    *retry_count* is the value of a `RETRY_COUNT_HEADERS` header. ``0`` (or a value that is
    not a count) starts a new call. A higher count joins the last call *owner* began in
    this context, when its method and URL match; otherwise it starts a new call too (its
    first attempt went elsewhere). *owner* is a token of the transport's own, not the
    transport: the context keeps the last call, and must not keep a dropped transport (and
    its breakers) alive.

    Example:
        >>> first, again = join("core", "POST", "https://api.example/v1/x", "0")
        >>> first.key = "k"
        >>> retry, again = join("core", "POST", "https://api.example/v1/x", "1")
        >>> retry is first, again, retry.key
        (True, True, 'k')
    """
    target = (method, url)
    if retry_count != "0" and retry_count.isascii() and retry_count.isdigit():
        last = _CURRENT.get()
        if last is not None and last.owner is owner and last.target == target:
            return last, True
    logical = Logical(owner, target)
    _CURRENT.set(logical)
    return logical, False


def join_request(owner: object, request: Any) -> Logical | None:
    """The call *request* belongs to, when it carries an SDK's retry count (else None).

    *request* has ``method``, ``url`` and ``headers`` (a case-insensitive mapping), as
    every request the core plans does.
    """
    headers = request.headers
    for name in RETRY_COUNT_HEADERS:
        # `in` first: httpx's headers.get() costs four times more when the header is absent,
        # which is every request that no SDK sends.
        if name in headers:
            return join(owner, request.method, str(request.url), headers[name])[0]
    return None
