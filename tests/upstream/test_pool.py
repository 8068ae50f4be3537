"""The pool: picks with breaker permits, ejection and return, caps, panic, set changes."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, events
from resilience._upstream._config import Upstream
from resilience._upstream._endpoints import Endpoint
from resilience._upstream._pool import Lease, Pool, parse_endpoints
from resilience.testing import FakeClock

URLS = ["http://10.0.0.1:80", "http://10.0.0.2:80", "http://10.0.0.3:80"]


@pytest.fixture
def seen() -> Iterator[list[events.Event]]:
    """Every upstream event emitted during the test."""
    got: list[events.Event] = []

    def keep(event: events.Event) -> None:
        if event.event.startswith("upstream."):
            got.append(event)

    events.add_listener(keep)
    yield got
    events.remove_listener(keep)


def make_pool(
    clock: FakeClock,
    *,
    urls: list[str] | None = None,
    seed: int = 1,
    prefix: str = "pool",
    **settings: object,
) -> Pool:
    upstream = Upstream("svc", endpoints=urls or URLS, **settings)  # type: ignore[arg-type]

    def breaker(url: str) -> CircuitBreaker:
        return CircuitBreaker(
            f"{prefix}:{url}", consecutive_failures=2, open_duration=10, clock=clock
        )

    return Pool(upstream, breaker=breaker, clock=clock, random=random.Random(seed).random)


def pick(pool: Pool, exclude: tuple[Endpoint, ...] = ()) -> Lease:
    return pool.pick(pool.clock(), exclude)


def fail(pool: Pool, lease: Lease) -> None:
    endpoint, permit = lease
    assert endpoint.breaker is not None
    if permit is not None:
        endpoint.breaker.record_failure(permit)
    pool.finish(endpoint, permit, 0.001, pool.clock(), ok=False)


def succeed(pool: Pool, lease: Lease, rtt: float = 0.01) -> None:
    endpoint, permit = lease
    assert endpoint.breaker is not None
    if permit is not None:
        endpoint.breaker.record_success(permit)
    pool.finish(endpoint, permit, rtt, pool.clock(), ok=True)


def eject(pool: Pool, url: str) -> None:
    """Fail the endpoint *url* until its breaker opens."""
    endpoint = next(e for e in pool.endpoints if e.url == url)
    assert endpoint.breaker is not None
    for _ in range(2):
        permit = endpoint.breaker.acquire()
        endpoint.start()
        fail(pool, (endpoint, permit))


def picks(pool: Pool, n: int, exclude: tuple[Endpoint, ...] = ()) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        lease = pick(pool, exclude)
        counts[lease[0].url] += 1
        succeed(pool, lease)
    return counts


def test_each_endpoint_gets_its_own_breaker(clock: FakeClock) -> None:
    """Endpoints are built from the list, each with a breaker named after its URL."""
    pool = make_pool(clock, prefix="own")
    assert [e.url for e in pool.endpoints] == URLS
    assert [e.breaker.name for e in pool.endpoints if e.breaker] == [f"own:{u}" for u in URLS]


def test_pick_takes_a_permit_and_counts_in_flight(clock: FakeClock) -> None:
    """A lease carries the breaker's permit and counts the attempt in flight until finished."""
    pool = make_pool(clock)
    lease = pick(pool)
    assert lease[1] is not None
    assert lease[0].in_flight == 1
    succeed(pool, lease)
    assert lease[0].in_flight == 0


def test_open_breaker_ejects_and_emits(clock: FakeClock, seen: list[events.Event]) -> None:
    """An endpoint whose breaker opens leaves the rotation, with an EndpointEjected event."""
    pool = make_pool(clock)
    eject(pool, URLS[1])
    counts = picks(pool, 200)
    assert URLS[1] not in counts
    assert seen == [
        events.EndpointEjected(
            name="svc",
            endpoint=URLS[1],
            ejections=1,
            kept_in=False,
            reason="2 consecutive failures",
        )
    ]


def test_probe_success_returns_the_endpoint(clock: FakeClock, seen: list[events.Event]) -> None:
    """After open_duration a probe goes to the ejected endpoint; its success brings it back."""
    pool = make_pool(clock, balancer="round_robin")
    eject(pool, URLS[0])
    clock.advance(10)
    leases = [pick(pool) for _ in range(3)]
    probe = next(lease for lease in leases if lease[0].url == URLS[0])
    assert probe[0].breaker is not None
    assert probe[0].breaker.state is CircuitState.HALF_OPEN
    # While the probe runs, the endpoint is out (its only slot is taken).
    assert URLS[0] not in picks(pool, 30)
    succeed(pool, probe)
    for lease in leases:
        if lease is not probe:
            succeed(pool, lease)
    assert picks(pool, 30)[URLS[0]] == 10
    assert seen[-1] == events.EndpointReturned(name="svc", endpoint=URLS[0], ejected_for=10.0)


def test_failed_probe_ejects_again_and_counts(clock: FakeClock, seen: list[events.Event]) -> None:
    """A failed probe reopens the breaker: a second EndpointEjected with ejections=2."""
    pool = make_pool(clock, balancer="round_robin")
    eject(pool, URLS[2])
    clock.advance(10)
    for _ in range(3):
        lease = pick(pool)
        if lease[0].url == URLS[2]:
            fail(pool, lease)
        else:
            succeed(pool, lease)
    ejections = [e for e in seen if isinstance(e, events.EndpointEjected)]
    assert [e.ejections for e in ejections] == [1, 2]


def test_ejection_cap_keeps_endpoints_in_without_permit(
    clock: FakeClock, seen: list[events.Event]
) -> None:
    """Beyond max_ejection_percent the later ejected endpoint stays in, sent to without permit."""
    urls = [f"http://10.0.1.{i}:80" for i in range(1, 5)]
    pool = make_pool(clock, urls=urls, max_ejection_percent=25, panic_threshold=0)
    eject(pool, urls[0])
    clock.advance(1)
    eject(pool, urls[1])
    forced = Counter[str]()
    for _ in range(400):
        lease = pick(pool)
        if lease[1] is None:
            forced[lease[0].url] += 1
        succeed(pool, lease)
    assert set(forced) == {urls[1]}
    assert urls[0] not in picks(pool, 100)
    kept = [e.kept_in for e in seen if isinstance(e, events.EndpointEjected)]
    assert kept == [False, True]


def test_panic_mode_spreads_over_all(clock: FakeClock) -> None:
    """Two of three ejected (33 % healthy < 50 %): panic, every endpoint gets requests."""
    pool = make_pool(clock, balancer="round_robin")
    eject(pool, URLS[0])
    eject(pool, URLS[1])
    members, forced, panic = pool.rotation()
    assert panic is True
    assert len(members) == 3
    assert {e.url for e in forced} == {URLS[0], URLS[1]}
    assert picks(pool, 30) == {URLS[0]: 10, URLS[1]: 10, URLS[2]: 10}


def test_nothing_left_raises_circuit_open(clock: FakeClock) -> None:
    """With panic off and every endpoint ejected, a pick fails fast with CircuitOpenError."""
    pool = make_pool(clock, urls=URLS[:1], panic_threshold=0)
    eject(pool, URLS[0])
    clock.advance(4)
    with pytest.raises(CircuitOpenError) as caught:
        pick(pool)
    assert caught.value.breaker == f"pool:{URLS[0]}"
    assert caught.value.retry_after == pytest.approx(6.0)


def test_exclude_sends_retries_elsewhere(clock: FakeClock) -> None:
    """Endpoints already tried are avoided while another is in the rotation."""
    pool = make_pool(clock)
    tried = tuple(e for e in pool.endpoints if e.url != URLS[1])
    assert picks(pool, 50, tried) == {URLS[1]: 50}


def test_exclude_all_retries_the_tried(clock: FakeClock) -> None:
    """If every endpoint was tried, a retry still goes to one of them."""
    pool = make_pool(clock)
    assert sum(picks(pool, 20, tuple(pool.endpoints)).values()) == 20


def test_half_open_slot_race_picks_another(clock: FakeClock) -> None:
    """A breaker that refuses at pick time (probe slot taken) is skipped, not raised."""
    pool = make_pool(clock, balancer="round_robin", panic_threshold=0)
    eject(pool, URLS[0])
    clock.advance(10)
    target = next(e for e in pool.endpoints if e.url == URLS[0])
    assert target.breaker is not None
    pool.rotation()  # decided while the slot is free: in rotation
    slot = target.breaker.acquire()  # someone else takes the only probe slot
    counts = picks(pool, 30)
    assert URLS[0] not in counts
    target.breaker.record_success(slot)


def test_resolver_sets_endpoints_and_keeps_state(
    clock: FakeClock, seen: list[events.Event]
) -> None:
    """A new set keeps the endpoints that stay (same object, same breaker) and adds others."""
    upstream = Upstream("svc", resolver=lambda: URLS[:2], refresh=5)
    pool = Pool(
        upstream,
        breaker=lambda url: CircuitBreaker(f"res:{url}", clock=clock),
        clock=clock,
        random=random.Random(1).random,
    )
    assert not pool.endpoints
    assert pool.claim_refresh(clock())
    pool.resolved(URLS[:2], clock())
    first = pool.endpoints[0]
    lease = pick(pool)
    assert not pool.claim_refresh(clock())  # fresh
    clock.advance(5)
    assert pool.claim_refresh(clock())
    assert not pool.claim_refresh(clock())  # one reader at a time
    pool.resolved([URLS[0], URLS[2]], clock())
    assert [e.url for e in pool.endpoints] == [URLS[0], URLS[2]]
    assert pool.endpoints[0] is first
    # The attempt on a removed endpoint still finishes on its own state.
    pool.finish(*lease, 0.01, clock())
    assert lease[0].in_flight == 0
    assert seen[-1] == events.UpstreamEndpointsChanged(name="svc", added=1, removed=1, endpoints=2)


def test_endpoint_back_while_in_flight_is_the_same(clock: FakeClock) -> None:
    """An endpoint that leaves and returns while an attempt runs keeps its state."""
    upstream = Upstream("svc", resolver=lambda: URLS, refresh=1)
    pool = Pool(
        upstream,
        breaker=lambda url: CircuitBreaker(f"back:{url}", clock=clock),
        clock=clock,
        random=random.Random(1).random,
    )
    pool.resolved(URLS[:1], clock())
    lease = pick(pool)
    pool.resolved(URLS[1:], clock())
    pool.resolved(URLS, clock())
    assert pool.endpoints[0] is lease[0]
    assert pool.endpoints[0].in_flight == 1


def test_failed_read_keeps_the_last_set(clock: FakeClock, seen: list[events.Event]) -> None:
    """A read that raises or returns nothing keeps the set, and says so in an event."""
    upstream = Upstream("svc", resolver=lambda: URLS, refresh=5)
    pool = Pool(
        upstream,
        breaker=lambda url: CircuitBreaker(f"keep:{url}", clock=clock),
        clock=clock,
        random=random.Random(1).random,
    )
    pool.resolved(URLS, clock())
    clock.advance(5)
    assert pool.claim_refresh(clock())
    pool.resolve_failed(OSError("dns down"), clock())
    assert len(pool.endpoints) == 3
    assert not pool.claim_refresh(clock())  # the next read waits another refresh
    clock.advance(5)
    assert pool.claim_refresh(clock())
    pool.resolved([], clock())
    assert len(pool.endpoints) == 3
    assert [e.error for e in seen if isinstance(e, events.UpstreamResolveFailed)] == [
        "OSError",
        "no endpoint URL",
    ]


def test_failed_first_read_lets_the_next_request_read(clock: FakeClock) -> None:
    """Without any set, a failed read is retried by the very next request."""
    upstream = Upstream("svc", resolver=lambda: URLS, refresh=60)
    pool = Pool(
        upstream,
        breaker=lambda url: CircuitBreaker(f"first:{url}", clock=clock),
        clock=clock,
        random=random.Random(1).random,
    )
    assert pool.claim_refresh(clock())
    pool.resolve_failed(OSError(), clock())
    with pytest.raises(LookupError, match="no endpoints"):
        pick(pool)
    assert pool.claim_refresh(clock())


def test_abandoned_read_frees_the_claim(clock: FakeClock) -> None:
    """A read interrupted (cancelled) lets the next request read."""
    upstream = Upstream("svc", resolver=lambda: URLS, refresh=5)
    pool = Pool(
        upstream,
        breaker=lambda url: CircuitBreaker(f"abandon:{url}", clock=clock),
        clock=clock,
        random=random.Random(1).random,
    )
    pool.resolved(URLS, clock())
    clock.advance(5)
    assert pool.claim_refresh(clock())
    pool.abandon_refresh()
    assert pool.claim_refresh(clock())


def test_static_endpoints_never_refresh(clock: FakeClock) -> None:
    """An upstream with a fixed list never asks for a read."""
    pool = make_pool(clock)
    clock.advance(1000)
    assert not pool.claim_refresh(clock())


def test_parse_endpoints_skips_bad_entries() -> None:
    """Unusable entries are counted and skipped; a non-list answer is unusable."""
    found, bad = parse_endpoints(["http://10.0.0.1", 5, "ftp://x", "http://10.0.0.2:81"])
    assert [a.url for a in found] == ["http://10.0.0.1:80", "http://10.0.0.2:81"]
    assert bad == 2
    assert parse_endpoints("http://10.0.0.1") == ((), 1)
    assert parse_endpoints(None) == ((), 1)


def test_dropped_pool_frees_its_breakers(clock: FakeClock) -> None:
    """The breakers' listeners hold the pool weakly: dropping it leaves nothing behind."""
    import gc
    import weakref

    from resilience._breaker._registry import get_breaker

    pool = make_pool(clock, prefix="dropped")
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None
    assert get_breaker(f"dropped:{URLS[0]}") is None


def test_release_counts_out_without_learning(clock: FakeClock) -> None:
    """release() ends a cancelled attempt: in-flight back to 0, latency untouched."""
    pool = make_pool(clock)
    lease = pick(pool)
    pool.release(lease[0])
    assert lease[0].in_flight == 0
    assert lease[0].cost(clock()) == 0.0


def pool_with(clock: FakeClock, factory: Callable[[str], CircuitBreaker]) -> Pool:
    return Pool(Upstream("svc", endpoints=URLS), breaker=factory, clock=clock, random=random.random)


def test_forced_open_endpoint_is_ejected(clock: FakeClock) -> None:
    """An operator's force_open() on an endpoint's breaker takes it out of the rotation."""
    pool = pool_with(clock, lambda url: CircuitBreaker(f"forced:{url}", clock=clock))
    breaker = pool.endpoints[0].breaker
    assert breaker is not None
    breaker.force_open()
    assert URLS[0] not in picks(pool, 60)
    breaker.reset()
    assert URLS[0] in picks(pool, 60)


def test_live_pools_lists_every_upstream_weakly(clock: FakeClock) -> None:
    """all_upstreams() shows each live pool (for status pages) and forgets dropped ones."""
    import gc

    from resilience._upstream._view import all_upstreams

    pool = make_pool(clock, prefix="listed")
    assert any(view.name == "svc" and view.endpoints for view in all_upstreams())
    names_before = [v.name for v in all_upstreams()]
    del pool
    gc.collect()
    assert len([v.name for v in all_upstreams()]) == len(names_before) - 1
