"""Live, read-only views of a transport's upstreams, for code and status pages.

``transport.upstreams["payments"].endpoints`` lists the endpoints as they are now; each
attribute of a view is read when asked, so a view kept around stays current.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .._breaker._breaker import CircuitState
from ._pool import live_pools

if TYPE_CHECKING:
    from .._breaker._breaker import CircuitBreaker
    from ._endpoints import Endpoint
    from ._pool import Pool

__all__ = ["EndpointView", "UpstreamMap", "UpstreamView", "all_upstreams"]


class EndpointView:
    """One endpoint of an upstream, live.

    Attributes:
        url: ``scheme://host:port``.
        healthy: True while its breaker is CLOSED.
        in_rotation: whether the balancer may pick it now.
        in_flight: attempts sent to it and not finished.
        ewma_latency: peak-EWMA latency in seconds, decayed to now (0.0 before any answer).
        breaker: its `CircuitBreaker`.
        weight: its weight.
    """

    __slots__ = ("_endpoint", "_pool")

    def __init__(self, pool: Pool, endpoint: Endpoint) -> None:
        self._pool = pool
        self._endpoint = endpoint

    @property
    def url(self) -> str:
        """``scheme://host:port``."""
        return self._endpoint.url

    @property
    def breaker(self) -> CircuitBreaker:
        """The endpoint's own breaker."""
        breaker = self._endpoint.breaker
        assert breaker is not None  # set before the endpoint joins the set
        return breaker

    @property
    def state(self) -> CircuitState:
        """Its breaker's state."""
        return self.breaker.state

    @property
    def healthy(self) -> bool:
        """True while its breaker is CLOSED."""
        return self.breaker.state is CircuitState.CLOSED

    @property
    def in_rotation(self) -> bool:
        """Whether the balancer may pick it now (healthy, probing, or kept in)."""
        members, _, _ = self._pool.rotation()
        return self._endpoint in members

    @property
    def in_flight(self) -> int:
        """Attempts sent to it and not finished."""
        return self._endpoint.in_flight

    @property
    def ewma_latency(self) -> float:
        """Peak-EWMA latency in seconds, decayed to now (0.0 before any answer)."""
        return self._endpoint.cost(self._pool.clock())

    @property
    def weight(self) -> float:
        """Its weight (1.0 unless the upstream's ``weights`` says otherwise)."""
        return self._endpoint.weight

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for status pages."""
        return {
            "url": self.url,
            "healthy": self.healthy,
            "state": self.state.value,
            "in_rotation": self.in_rotation,
            "in_flight": self.in_flight,
            "ewma_latency": self.ewma_latency,
            "weight": self.weight,
            "breaker": self.breaker.name,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EndpointView) and other._endpoint is self._endpoint

    def __hash__(self) -> int:
        return hash(self._endpoint)

    def __repr__(self) -> str:
        return (
            f"<Endpoint {self.url} {self.state.value} in_flight={self.in_flight} "
            f"ewma_latency={self.ewma_latency * 1000:.1f}ms>"
        )


class UpstreamView:
    """One upstream of a transport, live: its endpoints, balancer and panic mode.

    Example (``transport.upstreams["doc-view"]`` gives the same view):
        >>> import random, time
        >>> from resilience import CircuitBreaker
        >>> from resilience._upstream._config import Upstream
        >>> from resilience._upstream._pool import Pool
        >>> pool = Pool(Upstream("doc-view", endpoints=["http://127.0.0.1:8001"]),
        ...             breaker=lambda url: CircuitBreaker(f"doc-view:{url}"),
        ...             clock=time.monotonic, random=random.random)
        >>> view = UpstreamView(pool)
        >>> [(e.url, e.healthy, e.in_flight) for e in view.endpoints]
        [('http://127.0.0.1:8001', True, 0)]
    """

    __slots__ = ("_pool",)

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @property
    def name(self) -> str:
        """The logical host."""
        return self._pool.name

    @property
    def balancer(self) -> str:
        """The balancer's name."""
        return self._pool.balancer

    @property
    def endpoints(self) -> tuple[EndpointView, ...]:
        """The endpoints now, in the order the list or the resolver gave them."""
        pool = self._pool
        return tuple(EndpointView(pool, e) for e in pool.endpoints)

    @property
    def panic(self) -> bool:
        """True while too few endpoints are healthy and requests go to all of them."""
        _, _, panic = self._pool.rotation()
        return panic

    @property
    def refreshed_at(self) -> float | None:
        """When the resolver was last read (the transport's clock), None if never."""
        return self._pool.refreshed_at

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for status pages."""
        return {
            "name": self.name,
            "balancer": self.balancer,
            "panic": self.panic,
            "endpoints": [e.as_dict() for e in self.endpoints],
        }

    def __repr__(self) -> str:
        return f"<Upstream {self.name!r} {self.balancer} endpoints={list(self.endpoints)!r}>"


class UpstreamMap(Mapping[str, UpstreamView]):
    """A transport's upstreams by name (live views).

    Example:
        >>> dict(UpstreamMap({}))
        {}
    """

    __slots__ = ("_pools",)

    def __init__(self, pools: Mapping[str, Pool]) -> None:
        self._pools = pools

    def __getitem__(self, name: str) -> UpstreamView:
        return UpstreamView(self._pools[str(name).lower()])

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

    def __repr__(self) -> str:
        return f"UpstreamMap({list(self._pools)!r})"


def all_upstreams() -> list[UpstreamView]:
    """A live view of every upstream of every live transport, by name (status pages).

    Two transports with an upstream of the same name are both listed.

    Example:
        >>> all(isinstance(view, UpstreamView) for view in all_upstreams())
        True
    """
    return [UpstreamView(pool) for pool in live_pools()]
