"""`Pool`: the live side of one `Upstream` inside a transport.

It holds the current endpoint set (each endpoint with its own breaker), the rotation
decided from their breakers (`_rotation.rotation`), and the balancer that picks from it.
Per attempt the transport calls `Pool.pick` (an endpoint, and its breaker permit unless the
endpoint is sent to despite its breaker) and `Pool.finish` or `Pool.release`.

The rotation is recomputed only when something changed: a breaker moved (each endpoint's
breaker reports to the pool through a listener), an OPEN breaker's ``open_duration`` ran
out (the pool knows the earliest such time), a probe slot was taken or given back, or the
endpoint set changed. A pick is otherwise O(1) and takes no lock.

Endpoint sets change without dropping requests: an endpoint that leaves keeps its state
for the attempts still running on it (they hold it), and if it comes back while they run,
it is the same endpoint again.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Final, TypeAlias

from .. import _validate
from .._breaker._breaker import CircuitState
from .._errors import CircuitOpenError
from .._observe._events import (
    CircuitStateChanged,
    EndpointEjected,
    EndpointReturned,
    Event,
    UpstreamEndpointsChanged,
    UpstreamResolveFailed,
    emit,
    error_name,
)
from ._balancers import RandomSource, make_balancer
from ._config import MAX_ENDPOINTS, Address, Upstream, address
from ._endpoints import DEFAULT_DECAY, Endpoint
from ._rotation import Health, rotation

if TYPE_CHECKING:
    from .._breaker._breaker import CircuitBreaker

__all__ = ["Lease", "Pool", "live_pools", "parse_endpoints"]

_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_HALF_OPEN: Final = CircuitState.HALF_OPEN
_EJECTING: Final = frozenset({CircuitState.OPEN.value, CircuitState.FORCED_OPEN.value})
_RETURNING: Final = frozenset({CircuitState.CLOSED.value, CircuitState.DISABLED.value})


Lease: TypeAlias = tuple[Endpoint, int | None]
"""An endpoint chosen for one attempt, and the breaker permit taken for it (a plain tuple:
one is made per attempt). The permit is None when the endpoint is sent to despite its
breaker (kept in the rotation by the ejection cap or panic mode): nothing is recorded then."""


def parse_endpoints(raw: object) -> tuple[tuple[Address, ...], int]:
    """A resolver's answer as endpoint addresses, and how many entries were unusable.

    Entries that are not endpoint URLs are skipped (and counted); repeats are dropped;
    at most `MAX_ENDPOINTS` are kept.

    Example:
        >>> found, bad = parse_endpoints(["http://10.0.0.1:80", "nonsense", "http://10.0.0.1"])
        >>> [a.url for a in found], bad
        (['http://10.0.0.1:80'], 1)
    """
    if isinstance(raw, str | bytes) or not isinstance(raw, Iterable):
        return (), 1
    found: dict[str, Address] = {}
    bad = 0
    for item in raw:
        try:
            parsed = address("resolver result", item)
        except Exception:
            bad += 1
            continue
        if len(found) < MAX_ENDPOINTS:
            found.setdefault(parsed.url, parsed)
    return tuple(found.values()), bad


_live: weakref.WeakSet[Pool] = weakref.WeakSet()
_live_lock: Final = threading.Lock()


def live_pools() -> list[Pool]:
    """Every pool of every live transport, sorted by upstream name (for status pages).

    Held weakly: a dropped transport's upstreams leave the list.
    """
    with _live_lock:
        pools = list(_live)
    return sorted(pools, key=lambda pool: pool.name)


class _Watch:
    """The listener an endpoint's breaker calls: tells the pool, holds neither strongly.

    Weak references keep dropped transports' breakers collectable at once (no cycle
    through the breaker's listeners).
    """

    __slots__ = ("_endpoint", "_pool")

    def __init__(self, pool: Pool, endpoint: Endpoint) -> None:
        self._pool = weakref.ref(pool)
        self._endpoint = weakref.ref(endpoint)

    def __call__(self, event: Event) -> None:
        pool = self._pool()
        endpoint = self._endpoint()
        if pool is not None and endpoint is not None and isinstance(event, CircuitStateChanged):
            pool._breaker_moved(endpoint, event)


class Pool:
    """The endpoints of one upstream in one transport, their rotation and their balancer.

    Args:
        upstream: the settings.
        breaker: makes the breaker of a new endpoint from its URL (``scheme://host:port``);
            the transport names it ``<breaker name>:<endpoint URL>``.
        clock: the transport's monotonic clock.
        random: a function returning a float in [0, 1), for the balancer.
        decay: seconds of the peak-EWMA latency decay.

    Example:
        >>> import random
        >>> from resilience import CircuitBreaker
        >>> from resilience.testing import FakeClock
        >>> clock = FakeClock()
        >>> pool = Pool(Upstream("doc-pool", endpoints=["http://10.0.0.1:80"]),
        ...             breaker=lambda url: CircuitBreaker(f"doc-pool:{url}", clock=clock),
        ...             clock=clock, random=random.Random(1).random)
        >>> endpoint, permit = pool.pick(clock())
        >>> endpoint.url, endpoint.in_flight
        ('http://10.0.0.1:80', 1)
        >>> pool.finish(endpoint, permit, 0.01, clock())
    """

    __slots__ = (
        "__weakref__",
        "_balancer",
        "_breaker",
        "_by_url",
        "_decay",
        "_ejected",
        "_endpoints",
        "_forced",
        "_leaving",
        "_lock",
        "_panic",
        "_refresh",
        "_refreshed_at",
        "_refreshing",
        "check_at",
        "choose",
        "clock",
        "dirty",
        "name",
        "resolver",
        "upstream",
    )

    def __init__(
        self,
        upstream: Upstream,
        *,
        breaker: Callable[[str], CircuitBreaker],
        clock: _validate.Clock,
        random: RandomSource,
        decay: float = DEFAULT_DECAY,
    ) -> None:
        self.upstream = upstream
        self.name = upstream.name
        self.resolver = upstream.resolver
        self._breaker = breaker
        self.clock = clock
        self._decay = decay
        self._balancer = make_balancer(upstream.balancer, random)
        # The balancer's pick, bound once: `lease` calls it on every attempt.
        self.choose = self._balancer.pick
        self._lock = threading.Lock()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._by_url: dict[str, Endpoint] = {}
        self._leaving: weakref.WeakValueDictionary[str, Endpoint] = weakref.WeakValueDictionary()
        self._forced: frozenset[Endpoint] = frozenset()
        self._ejected: tuple[Endpoint, ...] = ()
        self._panic = False
        # When the rotation must be decided again (`rebuild`): as soon as something changed
        # (dirty), else at check_at, when an ejection ends by itself. Read with `choose` by
        # `pick`, and by the transports' `lease`, which inlines `_current` and `take`'s common case.
        self.dirty = True
        self.check_at = math.inf
        self._refresh = _validate.required_duration("refresh", upstream.refresh)
        self._refreshed_at: float | None = None
        self._refreshing = False
        if upstream.addresses:
            self._apply(upstream.addresses)
        with _live_lock:
            _live.add(self)

    # ------------------------------------------------------------------ reading

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoint set."""
        return self._endpoints

    @property
    def balancer(self) -> str:
        """The balancer's name."""
        return self._balancer.name

    @property
    def refreshed_at(self) -> float | None:
        """When the resolver was last read (transport clock), None before the first read."""
        return self._refreshed_at

    def rotation(self) -> tuple[tuple[Endpoint, ...], frozenset[Endpoint], bool]:
        """The rotation as of now: (members, forced members, panic mode)."""
        self._current(self.clock())
        return self._balancer.members, self._forced, self._panic

    # ------------------------------------------------------------------ per attempt

    def pick(self, now: float, exclude: Collection[Endpoint] = ()) -> Lease:
        """Choose an endpoint for one attempt at *now* and take its breaker permit.

        Endpoints in *exclude* (already tried by this request) are avoided whenever another
        is in the rotation. Raises `CircuitOpenError` when no endpoint can take the attempt
        (every one ejected, or its probe slots taken), and `LookupError` when the upstream
        has no endpoints at all (its resolver never answered).
        """
        self._current(now)
        return self.take(now, exclude, self.choose(now, exclude))

    def take(self, now: float, exclude: Collection[Endpoint], chosen: Endpoint | None) -> Lease:
        """Take the permit of the endpoint the balancer has *chosen* (and count the attempt
        in), or pick again when it cannot take the attempt: nothing was chosen, or its
        breaker moved since the rotation was decided. A member sent to despite its breaker
        (forced) takes it without a permit.

        The transports' `lease` inlines its common case: a CLOSED rotation member.
        """
        if chosen is None:
            return self._pick_again(now, exclude, None, None)
        if chosen.forced:
            chosen.start()
            return chosen, None
        machine = chosen.machine
        assert machine is not None
        try:
            permit = machine.acquire()
        except CircuitOpenError as exc:
            return self._pick_again(now, exclude, chosen, exc)
        if not chosen.closed:
            self.dirty = True  # a probe slot taken: the rotation may change
        chosen.start()
        return chosen, permit

    def _pick_again(
        self,
        now: float,
        exclude: Collection[Endpoint],
        refused: Endpoint | None,
        last: CircuitOpenError | None,
    ) -> Lease:
        """The slow path of `pick`: an endpoint's breaker refused (it moved since the rotation
        was decided, or its probe slots are taken), or nothing was left to pick."""
        balancer = self._balancer
        soft = exclude
        refusals: tuple[Endpoint, ...] = () if refused is None else (refused,)
        if refused is not None:
            self.dirty = True
        for _ in range(len(self._endpoints) + 2):
            if refused is None and not refusals and not soft:
                break  # the first pick found nothing, with nothing excluded
            endpoint = balancer.pick(now, (*soft, *refusals))
            refused = None
            if endpoint is None:
                break
            if endpoint in refusals:
                if soft:
                    soft = ()  # the tried endpoints are all that is left: try them again
                    continue
                break
            if endpoint.forced:
                endpoint.start()
                return endpoint, None
            breaker = endpoint.breaker
            assert breaker is not None
            try:
                permit = breaker.acquire()
            except CircuitOpenError as exc:
                self.dirty = True
                refusals = (*refusals, endpoint)
                last = exc
                continue
            if not endpoint.closed:
                self.dirty = True
            endpoint.start()
            return endpoint, permit
        raise self._nothing_to_pick(now, last)

    def finish(
        self, endpoint: Endpoint, permit: int | None, rtt: float, now: float, ok: bool = True
    ) -> None:
        """The attempt on *endpoint* ended at *now* after *rtt* seconds (*ok*: no failure)."""
        endpoint.finish(rtt, now, ok)
        if permit is not None and not endpoint.closed:
            self.dirty = True  # a probe ended: its slot may be free again

    def probe_ended(self) -> None:
        """An attempt holding a probe slot ended: the rotation may change."""
        self.dirty = True

    def release(self, endpoint: Endpoint) -> None:
        """The attempt on *endpoint* was cancelled: count it out, learn nothing from it."""
        endpoint.release()
        self.dirty = True

    def _nothing_to_pick(self, now: float, last: CircuitOpenError | None) -> Exception:
        endpoints = self._endpoints
        if not endpoints:
            return LookupError(f"upstream {self.name!r} has no endpoints yet")
        if last is not None and last.retry_after is not None:
            return last
        soonest: CircuitOpenError | None = last
        for endpoint in endpoints:
            breaker = endpoint.breaker
            if breaker is None:
                continue
            wait = breaker.metrics().retry_after
            if wait is not None and (
                soonest is None or soonest.retry_after is None or wait < soonest.retry_after
            ):
                soonest = CircuitOpenError(breaker.name, wait)
        return soonest if soonest is not None else CircuitOpenError(self.name, None)

    # ------------------------------------------------------------------ the rotation

    def _current(self, now: float) -> None:
        if self.dirty or now >= self.check_at:  # inlined in the transports' `lease`
            self.rebuild(now)

    def rebuild(self, now: float) -> None:
        """Recompute the rotation from the breakers' states (O(n); on change only)."""
        # Cleared first: a breaker that moves while we read the states dirties it again.
        self.dirty = False
        endpoints = self._endpoints
        health: list[Health] = []
        next_check = math.inf
        for endpoint in endpoints:
            item, wake = self._health(endpoint, now)
            health.append(item)
            if wake < next_check:
                next_check = wake
        upstream = self.upstream
        verdict = rotation(
            health,
            max_ejection_percent=upstream.max_ejection_percent,
            panic_threshold=upstream.panic_threshold,
        )
        with self._lock:
            if self._endpoints is not endpoints:
                self.dirty = True  # the set changed meanwhile: the next pick redoes this
                return
            self._forced = frozenset(endpoints[i] for i in verdict.forced)
            self._ejected = tuple(endpoints[i] for i in verdict.ejected)
            for i, endpoint in enumerate(endpoints):
                endpoint.forced = i in verdict.forced
                endpoint.closed = health[i].state == "closed"
            self._panic = verdict.panic
            self.check_at = next_check
            self._balancer.rebuild([endpoints[i] for i in verdict.members])

    @staticmethod
    def _health(endpoint: Endpoint, now: float) -> tuple[Health, float]:
        """The endpoint's `Health`, and when its state may next change by itself."""
        breaker = endpoint.breaker
        if breaker is None:
            return Health("closed"), math.inf
        state = breaker.state  # moves OPEN to HALF_OPEN once open_duration has passed
        if state is _CLOSED:
            return Health("closed"), math.inf
        if endpoint.ejected_at is None:
            endpoint.ejected_at = now  # a breaker found open (a shared store said so)
        probe_free = False
        wake = math.inf
        if state is _HALF_OPEN:
            metrics = breaker.metrics()
            probe_free = metrics.half_open_in_flight < breaker.config.half_open_calls
        elif state is _OPEN:
            retry_after = breaker.metrics().retry_after
            if retry_after is not None:
                wake = now + retry_after
        return Health(state.value, probe_free, endpoint.ejected_at), wake

    def _breaker_moved(self, endpoint: Endpoint, event: CircuitStateChanged) -> None:
        """An endpoint's breaker changed state: redo the rotation, say what happened."""
        self.dirty = True
        new = event.new_state
        if new in _EJECTING:
            now = self.clock()
            if endpoint.ejected_at is None:
                endpoint.ejected_at = now
            endpoint.ejections += 1
            members, _, _ = self.rotation()
            kept_in = endpoint in members
            emit(
                EndpointEjected(
                    name=self.name,
                    endpoint=endpoint.url,
                    ejections=endpoint.ejections,
                    kept_in=kept_in,
                    reason=event.reason,
                )
            )
        elif new in _RETURNING and endpoint.ejected_at is not None:
            out_for = max(0.0, self.clock() - endpoint.ejected_at)
            endpoint.ejected_at = None
            endpoint.ejections = 0
            emit(EndpointReturned(name=self.name, endpoint=endpoint.url, ejected_for=out_for))

    # ------------------------------------------------------------------ the endpoint set

    def claim_refresh(self, now: float) -> bool:
        """Whether the caller should read the resolver now (then it must call `resolved`
        or `resolve_failed`). One reader at a time once a set exists; before that, every
        request reads (none can be sent without a set)."""
        if self.upstream.resolver is None:
            return False
        at = self._refreshed_at
        if at is not None and now - at < self._refresh:
            return False
        with self._lock:
            if self._refreshing and self._endpoints:
                return False
            self._refreshing = True
            return True

    def resolved(self, raw: object, now: float) -> None:
        """Take a resolver's answer read at *now*; one without a usable URL keeps the set."""
        found, bad = parse_endpoints(raw)
        if not found:
            error = "no endpoint URL" if not bad else f"{bad} unusable entries and no URL"
            self._read_failed(error, now)
            return
        with self._lock:
            self._refreshing = False
            self._refreshed_at = now
        self._apply(found)

    def abandon_refresh(self) -> None:
        """The read claimed by `claim_refresh` was interrupted: let the next request read."""
        with self._lock:
            self._refreshing = False

    def resolve_failed(self, exc: BaseException, now: float) -> None:
        """The resolver raised *exc* at *now*: keep the set (if any) until the next read."""
        self._read_failed(error_name(exc), now)

    def _read_failed(self, error: str, now: float) -> None:
        with self._lock:
            self._refreshing = False
            if self._endpoints:
                # Keep the last set until the next read is due; without one, the next
                # request reads again.
                self._refreshed_at = now
            kept = len(self._endpoints)
        emit(UpstreamResolveFailed(name=self.name, error=error, endpoints=kept))

    def _apply(self, addresses: Sequence[Address]) -> None:
        """Make *addresses* the endpoint set, keeping the state of endpoints that stay."""
        upstream = self.upstream
        created: list[Endpoint] = []
        with self._lock:
            old = self._by_url
            fresh: dict[str, Endpoint] = {}
            for item in addresses:
                endpoint = old.get(item.url) or self._leaving.pop(item.url, None)
                if endpoint is None:
                    endpoint = Endpoint(item, upstream.weight(item.url), None, decay=self._decay)
                    created.append(endpoint)
                fresh[item.url] = endpoint
            removed = [e for url, e in old.items() if url not in fresh]
            for endpoint in removed:
                # Running attempts hold it; should it come back meanwhile, it is the same.
                self._leaving[endpoint.url] = endpoint
        # Breakers are built outside our lock (building one registers it, another lock).
        for endpoint in created:
            breaker = self._breaker(endpoint.url)
            breaker.add_listener(_Watch(self, endpoint))
            endpoint.attach(breaker)
        with self._lock:
            self._by_url = fresh
            self._endpoints = tuple(fresh.values())
            self.dirty = True
        if old and (created or removed):
            emit(
                UpstreamEndpointsChanged(
                    name=self.name,
                    added=len(created),
                    removed=len(removed),
                    endpoints=len(fresh),
                )
            )

    def __repr__(self) -> str:
        return f"<Pool {self.name!r} endpoints={len(self._endpoints)} balancer={self.balancer}>"
