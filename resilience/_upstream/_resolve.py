"""Reading an upstream's resolver: `dns`, and the sync and async refresh drivers.

A resolver is any function returning endpoint URLs; an ``async def`` one is awaited by the
async transport (the sync transport refuses it when built). `dns` reads A and AAAA records
with `socket.getaddrinfo` (sync) or the event loop's ``getaddrinfo`` (async, which runs it
in the loop's executor). The drivers read only when the pool says a read is due
(`Pool.claim_refresh`), and hand the answer or the failure back to the pool, which keeps
the last good set when a read fails.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Sequence
from typing import Any, Final

from .. import _validate
from .._errors import ConfigError
from .._public import public
from ._config import is_async_only
from ._pool import Pool

__all__ = ["DnsResolver", "arefresh", "dns", "refresh"]

_SCHEMES: Final = ("http", "https")


class DnsResolver:
    """Endpoint URLs from DNS: one per address (A and AAAA) of *host*, on *port*.

    Calling it resolves with `socket.getaddrinfo`; `aresolve` does the same through the
    running event loop, so the async transport never blocks its loop on DNS.

    Example:
        >>> resolve = dns("localhost", 8001)
        >>> resolve
        dns('localhost', 8001, scheme='http')
        >>> "http://127.0.0.1:8001" in resolve()
        True
    """

    __slots__ = ("host", "port", "scheme")

    def __init__(self, host: str, port: int, scheme: str) -> None:
        self.host = host
        self.port = port
        self.scheme = scheme

    def __call__(self) -> list[str]:
        """The URLs, read now (blocking)."""
        return self._urls(socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM))

    async def aresolve(self) -> list[str]:
        """The URLs, read through the running event loop."""
        loop = asyncio.get_running_loop()
        return self._urls(await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM))

    def _urls(self, infos: Sequence[tuple[Any, ...]]) -> list[str]:
        urls: dict[str, None] = {}
        for info in infos:
            sockaddr = info[4]
            assert isinstance(sockaddr, tuple)
            ip = str(sockaddr[0]).partition("%")[0]  # drop an IPv6 zone (fe80::1%eth0)
            host = f"[{ip}]" if ":" in ip else ip
            urls[f"{self.scheme}://{host}:{self.port}"] = None
        return list(urls)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DnsResolver) and (self.host, self.port, self.scheme) == (
            other.host,
            other.port,
            other.scheme,
        )

    def __hash__(self) -> int:
        return hash((self.host, self.port, self.scheme))

    def __repr__(self) -> str:
        return f"dns({self.host!r}, {self.port!r}, scheme={self.scheme!r})"


def dns(host: str, port: int, *, scheme: str = "http") -> DnsResolver:
    """A resolver reading *host*'s A and AAAA records: ``scheme://address:port`` each.

    Give it to `Upstream` as ``resolver=``; it is read again every ``refresh`` seconds, and
    a failed lookup keeps the last set.

    Example:
        >>> from resilience.httpx import Upstream, dns
        >>> Upstream("payments", resolver=dns("payments.internal", 8001), refresh=10).resolver
        dns('payments.internal', 8001, scheme='http')
    """
    given: object = host  # checked as an object: callers may pass anything
    if not isinstance(given, str) or not given or any(c in given for c in "/:@ ?#"):
        msg = (
            "host must be a DNS name such as 'payments.internal' (no scheme, port or path), "
            f"got {_validate.show(host)}"
        )
        raise ConfigError(msg)
    port = _validate.required_integer("port", port, maximum=65_535)
    if scheme not in _SCHEMES:
        msg = f"scheme must be 'http' or 'https', got {_validate.show(scheme)}"
        raise ConfigError(msg)
    return DnsResolver(host, port, scheme)


def refresh(pool: Pool) -> None:
    """Re-read *pool*'s resolver if a read is due (the sync transport, before a pick)."""
    resolver = pool.resolver
    if resolver is None:
        return  # a fixed list of endpoints
    now = pool.clock()
    if not pool.claim_refresh(now):
        return
    try:
        raw = resolver()
        if inspect.isawaitable(raw):
            close = getattr(raw, "close", None)
            if close is not None:
                close()  # never awaited: close it so no warning is printed
            msg = (
                f"upstream {pool.name!r}: the resolver returned an awaitable; "
                "use AsyncResilientTransport for an async resolver"
            )
            raise TypeError(msg)
    except Exception as exc:
        pool.resolve_failed(exc, now)
        return
    except BaseException:
        pool.abandon_refresh()
        raise
    pool.resolved(raw, now)


async def arefresh(pool: Pool) -> None:
    """Re-read *pool*'s resolver if a read is due (the async transport, before a pick).

    An ``async def`` resolver (or one with an ``aresolve`` method, like `dns`) is awaited;
    a plain function runs in a worker thread, so it cannot block the event loop.
    """
    resolver = pool.resolver
    if resolver is None:
        return
    now = pool.clock()
    if not pool.claim_refresh(now):
        return
    try:
        aresolve = getattr(resolver, "aresolve", None)
        if aresolve is not None:
            raw: object = await aresolve()
        elif is_async_only(resolver):
            raw = await resolver()  # type: ignore[misc]  # an async def: its call is awaitable
        else:
            raw = await asyncio.to_thread(resolver)
            if inspect.isawaitable(raw):
                raw = await raw
    except Exception as exc:
        pool.resolve_failed(exc, now)
        return
    except BaseException:
        pool.abandon_refresh()  # cancelled while reading: the next request reads
        raise
    pool.resolved(raw, now)


public("resilience.httpx", dns)
