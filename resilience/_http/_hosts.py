"""Per-host breakers: one `CircuitBreaker` per ``scheme://host:port``, bounded, and a view.

`HostBreakers` makes each host's breaker on first use (from a template, or with the
defaults) and keeps at most ``max_hosts`` of them, least recently used first out. A
`BreakerMap` is the live, read-only view a transport hands out as ``transport.breakers``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from .._breaker._breaker import CircuitBreaker, machine_of
from .._breaker._machine import BreakerMachine
from .._validate import Clock
from ._compat import URL
from ._rules import UrlParts, authority

__all__ = [
    "DEFAULT_BREAKER_NAME",
    "DEFAULT_HOST_BREAKER",
    "DEFAULT_MAX_HOSTS",
    "BreakerMap",
    "HostBreakers",
]

DEFAULT_MAX_HOSTS: Final = 1024
"""Per-host breakers kept per transport; the least recently used one goes first."""

DEFAULT_BREAKER_NAME: Final = "http"
"""Base name of per-host breakers when no policy breaker gives one."""

DEFAULT_HOST_BREAKER: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "window": 200,
        "minimum_calls": 150,
        "failure_rate": 0.5,
        "consecutive_failures": 15,
        "half_open_calls": 5,
        "open_duration": 30.0,
    }
)
"""`CircuitBreaker` settings of the per-host breakers of a transport with no policy.

Chosen by simulation (``python -m bench --only defaults``, docs/choosing-settings.md): a
host failing 35 % of calls at random is left alone, one failing every call is cut after 15
(both triggers: whichever comes first), one failing 60 % is cut within about 200 calls, and
five probes judged by the rate decide when it is back.
"""


class BreakerMap(Mapping[str, "CircuitBreaker"]):
    """A live, read-only view of a transport's per-host breakers, keyed ``scheme://host:port``.

    Lookups also accept a URL, ``scheme://host`` (the default port is filled in), or
    ``host:port`` / ``host`` when only one scheme was used with it. Hosts seen after the
    view was taken show up in it too.

    Example:
        >>> from resilience.httpx import ResilientTransport
        >>> ResilientTransport().breakers
        BreakerMap({})
    """

    __slots__ = ("_hosts",)

    def __init__(self, hosts: HostBreakers | None) -> None:
        self._hosts = hosts

    def _items(self) -> dict[str, CircuitBreaker]:
        return {} if self._hosts is None else self._hosts.by_authority()

    @staticmethod
    def _key(items: Mapping[str, CircuitBreaker], key: object) -> object:
        if isinstance(key, URL):
            return authority(key)
        if not isinstance(key, str):
            # httpx2's, yarl's and the adapters' URLs have the parts a breaker is keyed by.
            if all(hasattr(key, part) for part in ("scheme", "host", "port")):
                return authority(key)  # type: ignore[arg-type]  # a UrlParts, checked above
            return key
        if key in items:
            return key
        if "://" in key:
            try:
                return authority(URL(key))
            except Exception:
                return key
        # "host:port" or "host": accept it when exactly one authority matches.
        matches = [
            name
            for name in items
            if name.partition("://")[2] == key or name.partition("://")[2].rpartition(":")[0] == key
        ]
        return matches[0] if len(matches) == 1 else key

    def __getitem__(self, key: str) -> CircuitBreaker:
        items = self._items()
        return items[self._key(items, key)]  # type: ignore[index]  # normalised str or miss

    def __contains__(self, key: object) -> bool:
        items = self._items()
        return self._key(items, key) in items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return f"BreakerMap({ {k: b.state.value for k, b in self._items().items()}!r})"


HostEntry: TypeAlias = tuple[str, CircuitBreaker, Clock | None, BreakerMachine]
"""A host's authority, its breaker, the breaker's clock when it times calls, and the
breaker's state machine (the quick path takes and records permits on it)."""


class HostBreakers:
    """One breaker per ``scheme://host:port``, at most *max_hosts* of them (LRU).

    Breakers are made from a template (`CircuitBreaker.clone`) or, without one, with the
    `CircuitBreaker` defaults, named ``<base>:<scheme://host:port>``.
    """

    __slots__ = ("_base", "_by_key", "_factory", "_last", "_lock", "_max")

    def __init__(self, base: str, factory: Callable[[str], CircuitBreaker], max_hosts: int) -> None:
        self._base = base
        self._factory = factory
        self._max = max_hosts
        self._lock = threading.Lock()
        # (scheme, host, port) -> (authority, breaker, timer, machine); a tuple key avoids
        # formatting a string per request on the happy path.
        self._by_key: OrderedDict[tuple[str, str, int | None], HostEntry] = OrderedDict()
        # The host looked up last, (scheme, host, port, entry): most clients call one host
        # over and over, and comparing three parts is cheaper than hashing a new key.
        self._last: tuple[Any, ...] = (None, None, None, None)

    def get(self, url: UrlParts) -> CircuitBreaker:
        """The breaker for *url*'s host, made on first use."""
        return self.entry(url)[1]

    def entry(self, url: UrlParts) -> HostEntry:
        """(authority, breaker, timer, machine) for *url*'s host, made on first use; *timer*
        is the breaker's clock when it times calls (``slow_call_duration``), else None: then
        an attempt needs no clock reading at all."""
        # httpx's URL keeps its parsed parts in a named tuple: reading them there skips three
        # properties (and the IDNA decoding of the host); other URLs answer by name.
        ref = getattr(url, "_uri_reference", url)
        host = ref.host
        last = self._last
        if host == last[1] and ref.port == last[2] and ref.scheme == last[0]:
            # Every other lookup ends in `_entry`, which moves its host to the end of the LRU
            # order and makes it the last: the last host is at the end already.
            entry: HostEntry = last[3]
            return entry
        return self._entry(url, (ref.scheme, host, ref.port))

    def _entry(self, url: UrlParts, key: tuple[str, str, int | None]) -> HostEntry:
        by_key = self._by_key
        entry = by_key.get(key)
        if entry is None:
            # Built outside the lock: building registers the breaker (another lock).
            name = authority(url)
            breaker = self._factory(f"{self._base}:{name}")
            entry = (
                name,
                breaker,
                breaker.clock if breaker.config.timed else None,
                machine_of(breaker),
            )
        with self._lock:
            found = by_key.get(key)
            if found is not None:  # known already, or another thread won the race
                entry = found
                by_key.move_to_end(key)
            else:
                by_key[key] = entry
                if len(by_key) > self._max:
                    by_key.popitem(last=False)
            self._last = (*key, entry)
        return entry

    def by_authority(self) -> dict[str, CircuitBreaker]:
        """The breakers by authority, as they are now (a copy)."""
        with self._lock:
            return {entry[0]: entry[1] for entry in self._by_key.values()}


# --------------------------------------------------------------------------- the core
