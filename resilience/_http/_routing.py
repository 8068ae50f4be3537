"""Routing requests for an upstream's logical host to its endpoints (the transports' side).

`Routes` holds a transport's upstreams (`resilience._upstream._pool.Pool`, one per
`Upstream`) by logical host. A request whose URL host is an upstream's name gets a `Route`;
per attempt the route picks an endpoint (never one this request already tried while another
is in the rotation), points the request's URL at it (path and query kept, the ``Host``
header untouched, as Envoy does), and afterwards records the attempt's latency and puts the
logical URL back, so ``response.request.url`` is the URL the caller asked for. The attempt's
span is opened while the URL names the endpoint, so it shows ``server.address`` and
``server.port`` of the endpoint that answered.

Reading a resolver is I/O: the drivers do it (`resilience._upstream._resolve.refresh`, or
``arefresh``) before each attempt, when it is due.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

from .. import _validate
from .._breaker._state import CLOSED
from .._errors import ConfigError
from .._upstream._config import Upstream, is_async_only
from .._upstream._endpoints import Endpoint
from .._upstream._pool import Lease, Pool
from .._upstream._view import UpstreamMap
from ._compat import (
    _PARSE_RESULT,
    URL,
    ConnectError,
    Request,
    _new_object,
    _new_tuple,
    url_host,
    with_origin,
)

if TYPE_CHECKING:
    from .._breaker._breaker import CircuitBreaker

__all__ = ["Route", "Routes", "check_upstreams", "lease", "upstream_map"]

_SNI: Final = "sni_hostname"


class Route:
    """One request's way through an upstream: the logical URL, the endpoints tried.

    Made by `lease` (a request's first attempt on the drivers' quick path) or
    `Routes.route`; it has no ``__init__``: calling the bare class is the cheapest way to
    make an object, and a route is made per request.
    """

    __slots__ = ("endpoint", "logical", "permit", "pool", "started", "tried", "width")

    pool: Pool
    logical: URL
    tried: tuple[Endpoint, ...]  # every endpoint picked so far, the current one last
    endpoint: Endpoint | None  # the current attempt's, None once it ended
    permit: int | None  # its breaker permit; None when sent despite its breaker
    started: float  # when it was sent (the pool's clock)
    width: int  # attempts in flight on its endpoint then, this one included

    def pick(self, request: Request) -> Lease:
        """Choose the next attempt's endpoint (`lease`): never one tried already while
        another is in the rotation."""
        lease(self.pool, request, self)
        endpoint = self.endpoint
        assert endpoint is not None
        return endpoint, self.permit

    def end(self, request: Request, ok: bool) -> None:
        """The attempt ended (*ok*: not a failure): learn its latency, restore the URL."""
        endpoint = self.endpoint
        if endpoint is not None:
            self.endpoint = None
            pool = self.pool
            clock = pool.clock
            now = clock()
            endpoint.finish(now - self.started, now, ok, self.width)
            if not endpoint.closed and self.permit is not None:  # a probe ended
                pool.probe_ended()
        request.url = self.logical

    def release(self, request: Request) -> None:
        """The attempt was cancelled: count it out without learning, restore the URL."""
        endpoint = self.endpoint
        if endpoint is not None:
            self.endpoint = None
            self.pool.release(endpoint)
        request.url = self.logical


def lease(pool: Pool, request: Request, route: Route | None = None) -> Route:
    """Choose an attempt's endpoint, take its permit, point *request*'s URL at it.

    The first attempt of a request passes no *route* and gets a new one; later attempts
    pass theirs and avoid the endpoints it tried. `Pool.pick`'s common case is inlined:
    this runs on every attempt.

    Raises `CircuitOpenError` when no endpoint can take it, and `httpx.ConnectError` when
    the upstream has no endpoints at all (its resolver never answered).
    """
    clock = pool.clock  # an attribute read, then a call: `pool.clock()` is not specialized
    now = clock()
    if route is None:
        route = Route()
        route.pool = pool
        route.logical = logical = request.url
        tried: tuple[Endpoint, ...] = ()
    else:
        logical = route.logical
        tried = route.tried
    # `Pool.pick`, with `Pool._current` inlined, and `Pool.take` for a CLOSED rotation
    # member (the breaker's permit is its generation).
    if pool.dirty or now >= pool.check_at:
        pool.rebuild(now)
    choose = pool.choose
    endpoint = choose(now, tried)
    machine = None if endpoint is None or not endpoint.closed else endpoint.machine
    if machine is not None and machine.state is CLOSED:
        endpoint.pending.append(None)  # type: ignore[union-attr]  # endpoint.start(), inlined
        permit: int | None = machine.gen
    else:
        try:
            endpoint, permit = pool.take(now, tried, endpoint)
        except LookupError as exc:
            msg = f"{exc}: its resolver has not returned any endpoint URL"
            raise ConnectError(msg, request=request) from exc
    assert endpoint is not None
    route.endpoint = endpoint
    route.permit = permit
    route.started = now
    route.width = len(endpoint.pending)  # this attempt included
    route.tried = (*tried, endpoint) if tried else (endpoint,)
    scheme = endpoint.scheme
    if _PARSE_RESULT is None:
        request.url = with_origin(logical, scheme, endpoint.host, endpoint.port)
    else:
        ref = logical._uri_reference
        path = ref[4]
        last = endpoint.pointed
        if last is not None and last[0] == path and last[1] == ref:
            # The same URL as the last request sent here (a service's fixed paths): its
            # endpoint URL again, immutable like every httpx URL. The path is compared
            # first: it is what differs when the URL does.
            request.url = last[2]  # type: ignore[assignment]  # an URL, set below
        else:
            # `with_origin`, inlined, its fields read by index (cheaper than by name).
            url = request.url = _new_object(URL)
            url._uri_reference = _new_tuple(
                _PARSE_RESULT,
                (scheme, ref[1], endpoint.host, endpoint.port, path, ref[5], ref[6]),
            )
            endpoint.pointed = (path, ref, url)
    if scheme == "https" and _SNI not in request.extensions:
        # TLS checks the certificate against the name the caller asked for (the Host
        # header's), not against the endpoint's address: Envoy's auto_sni.
        request.extensions = {**request.extensions, _SNI: logical.host}
    return route


class Routes:
    """A transport's upstreams by logical host.

    Endpoint breakers come from *breaker* (the transport's per-host breaker factory: the
    policy breaker's `clone`, or the default breaker), named ``<base>:<endpoint URL>``.
    """

    __slots__ = ("pools",)

    def __init__(
        self,
        upstreams: Iterable[object],
        *,
        base: str,
        breaker: Callable[[str], CircuitBreaker],
        clock: _validate.Clock,
        is_async: bool,
    ) -> None:
        pools: dict[str, Pool] = {}
        for upstream in upstreams:
            if not isinstance(upstream, Upstream):
                msg = (
                    "upstreams must be a list of resilience.httpx.Upstream, "
                    f"got an item {_validate.show(upstream)}"
                )
                raise ConfigError(msg)
            if upstream.name in pools:
                msg = f"upstreams has two upstreams named {upstream.name!r}; names must differ"
                raise ConfigError(msg)
            if not is_async and upstream.resolver is not None and is_async_only(upstream.resolver):
                msg = (
                    f"upstream {upstream.name!r} has an async resolver, which "
                    "ResilientTransport cannot await; use AsyncResilientTransport, or a "
                    "plain function"
                )
                raise ConfigError(msg)
            pools[upstream.name] = Pool(
                upstream,
                breaker=_Namer(base, breaker),
                clock=clock,
                random=random.random,
            )
        self.pools: Mapping[str, Pool] = pools

    def route(self, request: Request) -> Route | None:
        """The route for *request*, or None when its host is no upstream's name."""
        pool = self.pools.get(url_host(request.url))
        if pool is None:
            return None
        route = Route()
        route.pool = pool
        route.logical = request.url
        route.tried = ()
        route.endpoint = None
        return route


class _Namer:
    """Builds an endpoint's breaker named ``<base>:<endpoint URL>`` (no cycle to the pool)."""

    __slots__ = ("_base", "_factory")

    def __init__(self, base: str, factory: Callable[[str], CircuitBreaker]) -> None:
        self._base = base
        self._factory = factory

    def __call__(self, url: str) -> CircuitBreaker:
        return self._factory(f"{self._base}:{url}")


def check_upstreams(value: object) -> tuple[object, ...]:
    """A transport's ``upstreams`` argument as a tuple (a list, tuple, or one `Upstream`)."""
    if isinstance(value, Upstream):
        return (value,)
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        msg = f"upstreams must be a list of resilience.httpx.Upstream, got {_validate.show(value)}"
        raise ConfigError(msg)
    return tuple(value)


def upstream_map(routes: Routes | None) -> UpstreamMap:
    """The live view of a transport's upstreams (empty without any)."""
    return UpstreamMap({} if routes is None else routes.pools)
