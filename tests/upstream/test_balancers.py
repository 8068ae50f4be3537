"""The balancers: shares, preferences and exclusions, with seeded randomness."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from resilience import ConfigError
from resilience._upstream._balancers import (
    MAX_CYCLE,
    LeastRequest,
    PeakEwma,
    RandomBalancer,
    RoundRobin,
    alias_table,
    make_balancer,
    smooth_cycle,
)
from resilience._upstream._config import address
from resilience._upstream._endpoints import Endpoint


def endpoints(*weights: float) -> list[Endpoint]:
    return [
        Endpoint(address("e", f"http://10.0.0.{i + 1}:80"), w, None) for i, w in enumerate(weights)
    ]


def shares(balancer: object, members: list[Endpoint], n: int, **kw: object) -> Counter[int]:
    counts: Counter[int] = Counter()
    for _ in range(n):
        chosen = balancer.pick(0.0, **kw)  # type: ignore[attr-defined]
        counts[members.index(chosen)] += 1
    return counts


def test_round_robin_visits_each_in_turn() -> None:
    """Equal weights: a plain rotation, each endpoint once per cycle."""
    members = endpoints(1, 1, 1)
    rr = RoundRobin(random.Random(1).random)
    rr.rebuild(members)
    picks = [members.index(rr.pick(0.0)) for _ in range(9)]  # type: ignore[arg-type]
    assert sorted(picks[:3]) == [0, 1, 2]
    assert picks[:3] == picks[3:6] == picks[6:9]


def test_smooth_weighted_cycle_interleaves() -> None:
    """A heavy endpoint's turns are spread out, not bunched, and shares match the weights."""
    cycle = smooth_cycle([5, 1, 1])
    assert Counter(cycle) == {0: 5, 1: 1, 2: 1}
    assert cycle != (0, 0, 0, 0, 0, 1, 2)
    assert max(len(run) for run in "".join(map(str, cycle)).split("1")) <= 3
    assert Counter(smooth_cycle([1.5, 1.0])) == {0: 3, 1: 2}


def test_smooth_cycle_is_bounded() -> None:
    """Huge weight ratios are scaled to a cycle of at most about MAX_CYCLE turns."""
    cycle = smooth_cycle([10_000.0, 1.0, 3.7])
    assert len(cycle) <= MAX_CYCLE + 3
    assert set(cycle) == {0, 1, 2}


def test_round_robin_weighted_shares() -> None:
    """Weighted round robin gives each endpoint its weight's share exactly per cycle."""
    members = endpoints(3, 1)
    rr = RoundRobin(random.Random(2).random)
    rr.rebuild(members)
    assert shares(rr, members, 400) == {0: 300, 1: 100}


def test_alias_table_is_exact() -> None:
    """The alias table's probabilities reproduce the weights."""
    prob, alias = alias_table([1.0, 2.0, 5.0])
    n = len(prob)
    mass = [0.0] * n
    for i in range(n):
        mass[i] += prob[i] / n
        mass[alias[i]] += (1 - prob[i]) / n
    assert mass == pytest.approx([1 / 8, 2 / 8, 5 / 8])


def test_random_weighted_shares() -> None:
    """Weighted random follows the weights (seeded, wide margin)."""
    members = endpoints(1, 3)
    rb = RandomBalancer(random.Random(3).random)
    rb.rebuild(members)
    counts = shares(rb, members, 8000)
    assert 0.70 < counts[1] / 8000 < 0.80


def test_least_request_prefers_fewer_in_flight() -> None:
    """P2C on in-flight: of two endpoints, the one with requests in flight always loses."""
    members = endpoints(1, 1)
    for _ in range(5):
        members[0].start()
    lr = LeastRequest(random.Random(4).random)
    lr.rebuild(members)
    assert shares(lr, members, 200) == {1: 200}


def test_least_request_with_three_spreads_load() -> None:
    """With three endpoints, the busiest is never chosen (it loses every pairing)."""
    members = endpoints(1, 1, 1)
    members[2].start()
    lr = LeastRequest(random.Random(5).random)
    lr.rebuild(members)
    counts = shares(lr, members, 3000)
    assert counts[2] == 0
    assert 1300 < counts[0] < 1700


def test_p2c_draws_two_different_endpoints() -> None:
    """The two candidates always differ: with equal load, picks are uniform over all."""
    members = endpoints(1, 1, 1, 1)
    lr = LeastRequest(random.Random(6).random)
    lr.rebuild(members)
    counts = shares(lr, members, 8000)
    assert all(1700 < counts[i] < 2300 for i in range(4))


def test_least_request_weights_divide_load() -> None:
    """Weighted least_request compares (in flight + 1) / weight."""
    members = endpoints(4, 1)
    members[0].start()
    members[0].start()  # (2+1)/4 = 0.75 < (0+1)/1
    lr = LeastRequest(random.Random(7).random)
    lr.rebuild(members)
    counts = shares(lr, members, 500)
    assert counts[0] == 500


def test_peak_ewma_avoids_the_slow_endpoint() -> None:
    """peak_ewma never picks an endpoint ten times slower while others are idle."""
    members = endpoints(1, 1, 1)
    for i, latency in enumerate((0.01, 0.01, 0.1)):
        members[i].start()
        members[i].finish(latency, now=0.0, ok=True)
    pe = PeakEwma(random.Random(8).random)
    pe.rebuild(members)
    counts = shares(pe, members, 1000)
    assert counts[2] == 0


def test_peak_ewma_weighs_in_flight() -> None:
    """A fast endpoint with many requests in flight loses to a slower idle one."""
    members = endpoints(1, 1)
    members[0].start()
    members[0].finish(0.01, now=0.0, ok=True)
    members[1].start()
    members[1].finish(0.03, now=0.0, ok=True)
    for _ in range(5):
        members[0].start()  # 0.01 x 6 = 0.06 > 0.03 x 1
    pe = PeakEwma(random.Random(9).random)
    pe.rebuild(members)
    assert shares(pe, members, 100) == {1: 100}


def test_peak_ewma_picks_the_lower_load_of_its_pair() -> None:
    """Of the pair it draws, peak_ewma takes the one whose `Endpoint.load` is lower (the
    first on a tie), whichever estimate is older, higher, decayed or busier."""
    rng = random.Random(5)
    decided_by_decay = 0
    for _ in range(400):
        a, b = endpoints(1, 1)
        for endpoint in (a, b):
            stamp = rng.choice([0.0, 1.0, 5.0, 30.0])
            endpoint.start()
            endpoint.finish(rng.choice([0.01, 0.02, 0.05]), now=stamp, ok=True)
            for _ in range(rng.randrange(3)):
                endpoint.start()
        pe = PeakEwma(lambda: 0.0)  # the first pair of the table: (a, b)
        pe.rebuild([a, b])
        now = 40.0
        expected = b if b.load(now) < a.load(now) else a
        assert pe.pick(now) is expected
        undecayed_a = a.unit * (a.in_flight + 1)
        undecayed_b = b.unit * (b.in_flight + 1)
        decided_by_decay += (undecayed_b < undecayed_a) != (expected is b)
    assert decided_by_decay > 10  # the decay between the stamps changed the verdict


@pytest.mark.parametrize("cls", [RoundRobin, LeastRequest, PeakEwma, RandomBalancer])
def test_exclude_is_avoided_while_others_remain(cls: type) -> None:
    """Excluded endpoints are never picked when another is in the rotation."""
    members = endpoints(1, 1, 1)
    balancer = cls(random.Random(10).random)
    balancer.rebuild(members)
    counts = shares(balancer, members, 300, exclude={members[0], members[2]})
    assert counts == {1: 300}


@pytest.mark.parametrize("cls", [RoundRobin, LeastRequest, PeakEwma, RandomBalancer])
def test_exclude_everything_falls_back_to_the_rotation(cls: type) -> None:
    """When every endpoint is excluded, one is picked anyway (a retry must go somewhere)."""
    members = endpoints(1, 1)
    balancer = cls(random.Random(11).random)
    balancer.rebuild(members)
    assert balancer.pick(0.0, set(members)) in members


@pytest.mark.parametrize("cls", [RoundRobin, LeastRequest, PeakEwma, RandomBalancer])
def test_empty_and_single(cls: type) -> None:
    """An empty rotation gives None; a single endpoint is always it."""
    balancer = cls(random.Random(12).random)
    assert balancer.pick(0.0) is None
    members = endpoints(1)
    balancer.rebuild(members)
    assert {balancer.pick(0.0) for _ in range(10)} == {members[0]}


@pytest.mark.parametrize("cls", [LeastRequest, PeakEwma, RandomBalancer])
def test_picks_cost_at_most_two_random_draws(cls: type) -> None:
    """A pick is O(1): it draws at most two random numbers, whatever the number of endpoints."""
    draws = 0
    source = random.Random(13)

    def counted() -> float:
        nonlocal draws
        draws += 1
        return source.random()

    balancer = cls(counted)
    balancer.rebuild(endpoints(*([1] * 1000)))
    draws = 0
    for _ in range(100):
        balancer.pick(0.0)
    assert draws <= 200


def test_a_sloppy_random_of_one_stays_in_range() -> None:
    """A random source returning 1.0 never indexes past the end, weighted or not."""
    for members in (endpoints(1, 2, 3), endpoints(1, 1, 1), endpoints(1)):
        for cls in (LeastRequest, PeakEwma, RandomBalancer):
            balancer = cls(lambda: 1.0)
            balancer.rebuild(members)
            assert balancer.pick(0.0) in members


def test_make_balancer_by_name() -> None:
    """make_balancer builds each balancer by its Upstream name; others are ConfigErrors."""
    for name in ("round_robin", "least_request", "peak_ewma", "random"):
        assert make_balancer(name, random.random).name == name
    with pytest.raises(ConfigError, match="balancer"):
        make_balancer("fastest", random.random)
