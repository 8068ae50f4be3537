"""`Upstream`: the settings of one logical host served by several endpoints, validated.

An upstream names a logical host (``payments``): requests to ``http://payments/...`` are
sent to one of its endpoints, chosen by a balancer among those whose breaker lets them in.
The endpoints are a fixed list or come from a resolver re-read every ``refresh`` seconds.
Everything here is checked when the object is built; nothing here does I/O.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from types import MappingProxyType
from typing import Final, NamedTuple, TypeAlias
from urllib.parse import urlsplit

from .. import _validate
from .._errors import ConfigError
from .._public import public

__all__ = [
    "BALANCERS",
    "DEFAULT_BALANCER",
    "DEFAULT_MAX_EJECTION_PERCENT",
    "DEFAULT_PANIC_THRESHOLD",
    "DEFAULT_REFRESH",
    "MAX_ENDPOINTS",
    "MAX_WEIGHT",
    "Address",
    "Resolver",
    "Upstream",
    "address",
    "is_async_only",
]

BALANCERS: Final = ("round_robin", "least_request", "peak_ewma", "random")
"""The balancer names `Upstream` takes."""

DEFAULT_BALANCER: Final = "least_request"
"""Power of two choices on requests in flight: Envoy's default, cheap and load-aware."""

DEFAULT_REFRESH: Final = 30.0
"""Seconds between two reads of a resolver."""

DEFAULT_MAX_EJECTION_PERCENT: Final = 50
"""At most this share of the endpoints is ever out of the rotation."""

DEFAULT_PANIC_THRESHOLD: Final = 50
"""Below this share of healthy endpoints, requests go to all of them (Envoy's panic mode)."""

MAX_ENDPOINTS: Final = 1024
"""Endpoints kept per upstream; a resolver returning more keeps the first ones."""

MAX_WEIGHT: Final = 10_000.0
"""Largest endpoint weight."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# A logical host as it appears in a URL: letters, digits, '-', '_' and dots between labels.
_HOST_NAME: Final = re.compile(
    r"[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?)*"
)

Resolver: TypeAlias = Callable[[], Iterable[str] | Awaitable[Iterable[str]]]
"""A function (sync or async) returning the endpoint URLs, e.g. `resilience.httpx.dns`."""


class Address(NamedTuple):
    """Where an endpoint listens: scheme, host, port, and its key ``scheme://host:port``.

    *port* is None when it is the scheme's default, as httpx spells such URLs.
    """

    url: str
    scheme: str
    host: str
    port: int | None


def address(setting: str, value: object) -> Address:
    """Check one endpoint URL (``http://10.0.0.5:8001``) and normalise it.

    Endpoints are origins: an ``http`` or ``https`` scheme, a host and an optional port;
    a path, query, fragment or credentials would be silently dropped when routing, so
    they are refused.

    Example:
        >>> address("endpoints[0]", "HTTP://127.0.0.1:8001/")
        Address(url='http://127.0.0.1:8001', scheme='http', host='127.0.0.1', port=8001)
        >>> address("endpoints[0]", "https://[::1]").url
        'https://[::1]:443'
    """
    text = value if isinstance(value, str) else None
    if text is None and hasattr(value, "scheme") and hasattr(value, "host"):
        text = str(value)  # an httpx.URL
    problem = ""
    parts = None
    if text is None:
        problem = "a URL string"
    else:
        try:
            parts = urlsplit(text.strip())
            port = parts.port
        except ValueError as exc:
            problem = f"a valid URL ({exc})"
        else:
            if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
                problem = "an http:// or https:// URL with a host"
            elif parts.username is not None or parts.password is not None:
                problem = "a URL without credentials (send them in headers)"
            elif parts.path not in ("", "/") or parts.query or parts.fragment:
                problem = "an origin without path or query (the request's path is kept)"
    if problem or parts is None:
        msg = (
            f"{setting} must be {problem}, like 'http://10.0.0.5:8001', got {_validate.show(value)}"
        )
        raise ConfigError(msg)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    default = _DEFAULT_PORTS[scheme]
    number = port if port is not None else default
    shown = f"[{host}]" if ":" in host else host
    return Address(
        f"{scheme}://{shown}:{number}", scheme, host, None if number == default else number
    )


def is_async_only(resolver: object) -> bool:
    """Whether *resolver* can only be awaited (an ``async def``, without a sync ``__call__``).

    Example:
        >>> async def endpoints() -> list[str]:
        ...     return []
        >>> is_async_only(endpoints), is_async_only(lambda: [])
        (True, False)
    """
    if inspect.iscoroutinefunction(resolver):
        return True
    call = getattr(type(resolver), "__call__", None)  # noqa: B004  # the class's, not the instance's
    return call is not None and inspect.iscoroutinefunction(call)


def _name(value: object) -> str:
    if isinstance(value, str):
        lowered = value.lower()
        if _HOST_NAME.fullmatch(lowered):
            return lowered
    msg = (
        "name must be the host of the URLs the upstream serves, such as 'payments' for "
        f"http://payments/charges (letters, digits, '-', '_' and dots), got {_validate.show(value)}"
    )
    raise ConfigError(msg)


def _percent(setting: str, value: object) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not (0 <= value <= 100)  # NaN fails too
    ):
        msg = f"{setting} must be a percentage in [0, 100], got {_validate.show(value)}"
        raise ConfigError(msg)
    return float(value)


def _balancer(value: object) -> str:
    if isinstance(value, str) and value in BALANCERS:
        return value
    close = difflib.get_close_matches(value, BALANCERS, n=1) if isinstance(value, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    msg = (
        f"balancer must be one of {', '.join(repr(b) for b in BALANCERS)}, "
        f"got {_validate.show(value)}{hint}"
    )
    raise ConfigError(msg)


def _weights(value: object, known: Sequence[Address] | None) -> Mapping[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        msg = (
            "weights must be a dict {endpoint URL: weight}, like {'http://10.0.0.5:8001': 3}, "
            f"got {_validate.show(value)}"
        )
        raise ConfigError(msg)
    by_url: dict[str, float] = {}
    for key, weight in value.items():
        url = address(f"weights key {_validate.show(key)}", key).url
        by_url[url] = _validate.number(f"weights[{key!r}]", weight, minimum=0.0, maximum=MAX_WEIGHT)
        if not by_url[url] > 0.0:
            msg = f"weights[{key!r}] must be above 0 (remove the endpoint instead), got {weight!r}"
            raise ConfigError(msg)
    if known is not None:
        urls = {a.url for a in known}
        unknown = sorted(set(by_url) - urls)
        if unknown:
            msg = (
                f"weights names endpoints that are not in endpoints: {unknown}; "
                f"the endpoints are {sorted(urls)}"
            )
            raise ConfigError(msg)
    return MappingProxyType(by_url)


@dataclass(frozen=True, slots=True)
class Upstream:
    """A logical host whose requests are spread over endpoints, each with its own breaker.

    Give it to `resilience.httpx.ResilientTransport` (or the async twin) as
    ``upstreams=[...]``: a request whose URL host is *name* goes to one of the endpoints
    (same path and query, same ``Host`` header), chosen by the *balancer* among the
    endpoints in the rotation. An endpoint whose breaker is not closed leaves the rotation
    (it is ejected) until a probe succeeds, within *max_ejection_percent* and
    *panic_threshold*.

    Args:
        name: the logical host, e.g. ``"payments"`` for ``http://payments/charges``.
        endpoints: the endpoint URLs (``http://10.0.0.5:8001``); or
        resolver: a function (sync or async) returning them, re-read every *refresh*
            seconds (`resilience.httpx.dns` reads DNS); a read that raises or returns
            nothing keeps the last set.
        refresh: seconds between two reads of the resolver.
        balancer: ``"least_request"`` (power of two choices on requests in flight),
            ``"peak_ewma"`` (power of two choices on peak-EWMA latency x requests in
            flight), ``"round_robin"`` (smooth weighted) or ``"random"`` (weighted).
        weights: ``{endpoint URL: weight}`` (default 1); ``round_robin`` and ``random``
            share requests in proportion, the power-of-two balancers draw their two
            candidates in proportion.
        max_ejection_percent: never eject more than this share of the endpoints
            (``floor(n * percent / 100)``, at least one when above 0); the others stay in
            the rotation and are sent to despite their breaker.
        panic_threshold: below this percentage of healthy endpoints, requests are spread
            over all endpoints, healthy or not (0 turns panic mode off).

    Example:
        >>> from resilience.httpx import Upstream
        >>> payments = Upstream("payments", endpoints=["http://127.0.0.1:8001",
        ...                                             "http://127.0.0.1:8002"])
        >>> payments.balancer, payments.endpoints
        ('least_request', ('http://127.0.0.1:8001', 'http://127.0.0.1:8002'))
    """

    name: str
    _: KW_ONLY
    endpoints: Sequence[str] | None = None
    resolver: Resolver | None = None
    refresh: _validate.Duration = DEFAULT_REFRESH
    balancer: str = DEFAULT_BALANCER
    weights: Mapping[str, float] | None = field(default=None, hash=False)
    max_ejection_percent: float = DEFAULT_MAX_EJECTION_PERCENT
    panic_threshold: float = DEFAULT_PANIC_THRESHOLD
    addresses: tuple[Address, ...] = field(init=False, repr=False, compare=False)
    """The static endpoints, normalised (empty with a resolver)."""

    def __post_init__(self) -> None:
        setter = object.__setattr__
        setter(self, "name", _name(self.name))
        endpoints, resolver = self.endpoints, self.resolver
        if (endpoints is None) == (resolver is None):
            msg = (
                "give exactly one of endpoints (a list of URLs) and resolver (a function "
                f"returning them), got endpoints={_validate.show(endpoints)} and "
                f"resolver={_validate.show(resolver)}"
            )
            raise ConfigError(msg)
        addresses: tuple[Address, ...] = ()
        if endpoints is not None:
            if isinstance(endpoints, str | bytes) or not isinstance(endpoints, Iterable):
                msg = (
                    "endpoints must be a list of URLs, like ['http://10.0.0.5:8001'], "
                    f"got {_validate.show(endpoints)}"
                )
                raise ConfigError(msg)
            addresses = _unique(address(f"endpoints[{i}]", url) for i, url in enumerate(endpoints))
            if not addresses:
                msg = "endpoints must name at least one URL, got an empty list"
                raise ConfigError(msg)
            if len(addresses) > MAX_ENDPOINTS:
                msg = f"endpoints must hold at most {MAX_ENDPOINTS} URLs, got {len(addresses)}"
                raise ConfigError(msg)
            setter(self, "endpoints", tuple(a.url for a in addresses))
        elif not callable(resolver) or isinstance(resolver, type):
            msg = (
                "resolver must be a function (sync or async) returning endpoint URLs, "
                f"such as resilience.httpx.dns('payments.internal', 8001), got {resolver!r}"
            )
            raise ConfigError(msg)
        setter(self, "addresses", addresses)
        setter(self, "refresh", _validate.required_duration("refresh", self.refresh))
        setter(self, "balancer", _balancer(self.balancer))
        setter(self, "weights", _weights(self.weights, addresses if endpoints else None))
        setter(
            self,
            "max_ejection_percent",
            _percent("max_ejection_percent", self.max_ejection_percent),
        )
        setter(self, "panic_threshold", _percent("panic_threshold", self.panic_threshold))

    def weight(self, url: str) -> float:
        """The weight of the endpoint *url* (normalised form), 1.0 unless *weights* says.

        Example:
            >>> Upstream("w", endpoints=["http://a:1"], weights={"http://a:1": 3}).weight(
            ...     "http://a:1")
            3.0
        """
        weights = self.weights
        return 1.0 if weights is None else weights.get(url, 1.0)


def _unique(addresses: Iterable[Address]) -> tuple[Address, ...]:
    """*addresses* without repeats, in their first order."""
    seen: dict[str, Address] = {}
    for item in addresses:
        seen.setdefault(item.url, item)
    return tuple(seen.values())


public("resilience.httpx", Upstream)
