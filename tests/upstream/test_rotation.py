"""The rotation rules: healthy, probing, ejection cap and panic mode (a pure function)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from resilience._upstream._rotation import Health, max_ejected, rotation

UP = Health("closed")


def down(at: float = 0.0) -> Health:
    return Health("open", ejected_at=at)


def probing(free: bool, at: float = 0.0) -> Health:
    return Health("half_open", probe_free=free, ejected_at=at)


def decide(
    health: list[Health], cap: float = 50, panic: float = 50
) -> tuple[tuple[int, ...], frozenset[int], tuple[int, ...], bool]:
    verdict = rotation(health, max_ejection_percent=cap, panic_threshold=panic)
    return verdict.members, verdict.forced, verdict.ejected, verdict.panic


def test_max_ejected_is_floor_and_at_least_one() -> None:
    """floor(n * percent / 100), at least one when the percentage is above 0."""
    assert [max_ejected(n, 50) for n in range(1, 7)] == [1, 1, 1, 2, 2, 3]
    assert max_ejected(3, 100 / 3) == 1
    assert max_ejected(10, 0) == 0
    assert max_ejected(4, 100) == 4


def test_all_healthy_all_in() -> None:
    """Every endpoint healthy: all in rotation, nothing forced or ejected."""
    assert decide([UP, UP, UP]) == ((0, 1, 2), frozenset(), (), False)


def test_one_of_three_open_is_ejected() -> None:
    """One open breaker of three: ejected (the cap is 1), no panic (67 % healthy)."""
    assert decide([UP, down(), UP]) == ((0, 2), frozenset(), (1,), False)


def test_half_open_with_a_free_slot_stays_in_under_its_permit() -> None:
    """HALF_OPEN with a probe slot free is in rotation and not forced (its breaker decides)."""
    assert decide([UP, probing(True), UP]) == ((0, 1, 2), frozenset(), (), False)


def test_half_open_with_slots_taken_counts_as_ejected() -> None:
    """HALF_OPEN with every probe slot taken is out, like an open one."""
    assert decide([UP, probing(False), UP]) == ((0, 2), frozenset(), (1,), False)


def test_cap_keeps_later_ejections_in_and_forced() -> None:
    """Beyond the cap, the most recently ejected endpoints stay in, sent to despite the breaker."""
    health = [UP, UP, UP, down(at=5.0), down(at=1.0), down(at=3.0), UP, UP]
    members, forced, ejected, panic = decide(health, cap=25, panic=0)
    assert ejected == (4, 5)  # the two ejected first (at 1.0 and 3.0)
    assert forced == frozenset({3})
    assert 3 in members
    assert 4 not in members
    assert panic is False


def test_panic_when_healthy_share_below_threshold() -> None:
    """Two of three down: 33 % healthy < 50 %: every endpoint in, the down ones forced."""
    members, forced, ejected, panic = decide([UP, down(), down()])
    assert panic is True
    assert members == (0, 1, 2)
    assert forced == frozenset({1, 2})
    assert ejected == ()


def test_exactly_at_threshold_is_not_panic() -> None:
    """Two of four healthy is 50 %, not below 50 %: no panic, both ejected (cap 2)."""
    assert decide([UP, down(), UP, down(1)]) == ((0, 2), frozenset(), (1, 3), False)


def test_panic_threshold_zero_disables_panic() -> None:
    """panic_threshold=0: a lone endpoint with an open breaker is ejected, leaving none."""
    assert decide([down()], cap=100, panic=0) == ((), frozenset(), (0,), False)


def test_zero_cap_never_ejects() -> None:
    """max_ejection_percent=0: open endpoints stay in the rotation, forced."""
    assert decide([UP, down()], cap=0, panic=0) == ((0, 1), frozenset({1}), (), False)


def test_disabled_breaker_is_healthy() -> None:
    """A DISABLED breaker lets everything through: the endpoint is in and not forced."""
    assert decide([Health("disabled"), down()], panic=0) == ((0,), frozenset(), (1,), False)


def test_forced_open_is_ejected() -> None:
    """FORCED_OPEN is not available: it is ejected like OPEN."""
    assert decide([UP, Health("forced_open"), UP]) == ((0, 2), frozenset(), (1,), False)


def test_empty_set() -> None:
    """No endpoints: an empty rotation."""
    assert decide([]) == ((), frozenset(), (), False)


STATES = st.sampled_from(["closed", "open", "half_open", "forced_open", "disabled"])
HEALTH = st.builds(Health, STATES, st.booleans(), st.floats(0, 100))


@given(
    st.lists(HEALTH, min_size=1, max_size=40),
    st.floats(0, 100),
    st.floats(0, 100),
)
def test_rotation_invariants(health: list[Health], cap: float, threshold: float) -> None:
    """Members and ejected split the set; the cap holds; forced members are not available."""
    verdict = rotation(health, max_ejection_percent=cap, panic_threshold=threshold)
    count = len(health)
    assert sorted(verdict.members + verdict.ejected) == list(range(count))
    assert len(verdict.ejected) <= max_ejected(count, cap)
    assert verdict.forced <= set(verdict.members)
    assert all(not health[i].available for i in verdict.forced)
    assert all(health[i].available for i in verdict.members if i not in verdict.forced)
    healthy = sum(h.healthy for h in health)
    if verdict.panic:
        assert healthy * 100 < threshold * count
        assert verdict.ejected == ()
    if all(h.available for h in health):
        assert verdict.members == tuple(range(count))
