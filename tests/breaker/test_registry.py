"""The registry: every live breaker by instance, templates left out, reset for tests."""

from __future__ import annotations

import gc

import httpx

import resilience
from resilience import CircuitBreaker, CircuitState, Policy
from resilience._breaker import _registry
from resilience._breaker._registry import instance_id, mark_template
from resilience._observe import _gauges
from resilience.httpx import ResilientTransport
from resilience.testing import reset_breakers


def named(name: str) -> list[CircuitBreaker]:
    return [b for b in resilience.breakers() if b.name == name]


def test_two_breakers_with_one_name_are_both_listed() -> None:
    """The registry keys by instance: a second breaker of a name does not hide the first."""
    first = CircuitBreaker("registry-dup")
    second = CircuitBreaker("registry-dup")
    assert named("registry-dup") == [first, second]  # in creation order
    assert _registry.get_breaker("registry-dup") is second  # the newest of the name
    assert instance_id(first) != instance_id(second)
    assert instance_id(first) == instance_id(first)


def test_the_listing_is_sorted_by_name() -> None:
    """breakers() comes sorted by name, whatever the creation order."""
    later = CircuitBreaker("registry-sort-b")
    earlier = CircuitBreaker("registry-sort-a")
    listed = [b for b in resilience.breakers() if b.name.startswith("registry-sort-")]
    assert listed == [earlier, later]


def test_collected_breakers_leave_the_listing() -> None:
    """A breaker nobody holds is no longer listed once collected."""
    CircuitBreaker("registry-temp")
    gc.collect()
    assert named("registry-temp") == []


def test_the_registry_stays_bounded_under_churn() -> None:
    """Breakers built and dropped in a loop do not grow the registry's own list for ever."""
    for i in range(5_000):
        CircuitBreaker(f"registry-churn-{i}")
    gc.collect()
    live = len(_registry.every_breaker())
    assert len(_registry._refs) <= 2 * live + 64  # the bound is the point


def test_a_transport_template_is_not_listed_but_its_clones_are() -> None:
    """The policy's breaker only makes per-host breakers: those are listed, it is not."""
    template = CircuitBreaker("registry-tmpl")
    assert named("registry-tmpl") == [template]
    transport = ResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        policy=Policy(breaker=template),
    )
    assert named("registry-tmpl") == []
    with httpx.Client(transport=transport) as client:
        client.get("http://registry.test/")
    clone = transport.breakers["http://registry.test:80"]
    assert named("registry-tmpl:http://registry.test:80") == [clone]


def test_mark_template_passes_none_through() -> None:
    """A policy without a breaker has no template to mark."""
    assert mark_template(None) is None


def test_reset_breakers_resets_every_live_breaker() -> None:
    """reset_breakers() closes every breaker and empties its window, templates included."""
    opened = CircuitBreaker("registry-reset-open", consecutive_failures=1)
    forced = CircuitBreaker("registry-reset-forced")
    template = mark_template(CircuitBreaker("registry-reset-template"))
    try:
        opened.call(lambda: 1 / 0)
    except ZeroDivisionError:
        pass
    forced.force_open()
    template.disable()
    reset_breakers()
    for breaker in (opened, forced, template):
        assert breaker.state is CircuitState.CLOSED
        assert breaker.metrics().calls == 0


def test_gauges_count_breakers_that_share_a_name() -> None:
    """The state gauge counts every listed breaker: two of one name make 2, not 1."""
    first = CircuitBreaker("registry-gauge", consecutive_failures=1)
    second = CircuitBreaker("registry-gauge", consecutive_failures=1)
    second.force_open()
    gauges = _gauges.BreakerGauges(limit=100_000)
    states = {
        attrs["resilience.circuit_breaker.state"]: value
        for value, attrs in gauges.states()
        if attrs["resilience.circuit_breaker.name"] == "registry-gauge"
    }
    assert (states["closed"], states["forced_open"], sum(states.values())) == (1, 1, 2)
    del first, second
