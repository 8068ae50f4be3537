"""Which endpoints are in the rotation: a pure function of their breakers' states.

The rules (Envoy's outlier detection and panic threshold, with a breaker per endpoint):

- An endpoint is *healthy* while its breaker is CLOSED (or DISABLED: always let through).
- It is *available* when healthy, or HALF_OPEN with a probe slot free: it can take a
  request under its breaker's permit.
- Panic: when the healthy share is below ``panic_threshold`` percent, every endpoint is in
  the rotation; those not available are sent to despite their breaker (*forced*).
- Otherwise at most `max_ejected` endpoints are out of the rotation, the ones ejected
  first; any others that are not available are kept in, forced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["Health", "Rotation", "max_ejected", "rotation"]

_CLOSED: Final = "closed"
_DISABLED: Final = "disabled"
_HALF_OPEN: Final = "half_open"


@dataclass(frozen=True, slots=True)
class Health:
    """What the rotation needs to know about one endpoint.

    *state* is its breaker's state (a `CircuitState` value); *probe_free* whether a
    HALF_OPEN breaker has a probe slot free; *ejected_at* when it left CLOSED (orders the
    ejections: the first ejected stay out).
    """

    state: str
    probe_free: bool = False
    ejected_at: float = 0.0

    @property
    def healthy(self) -> bool:
        """CLOSED, or DISABLED (a disabled breaker lets every call through)."""
        return self.state == _CLOSED or self.state == _DISABLED

    @property
    def available(self) -> bool:
        """Healthy, or HALF_OPEN with a probe slot free."""
        return self.healthy or (self.state == _HALF_OPEN and self.probe_free)


@dataclass(frozen=True, slots=True)
class Rotation:
    """The verdict: indices of the endpoints in the rotation, and how to send to them.

    *members* are in rotation (in input order); *forced* are members sent to despite
    their breaker (no permit taken); *ejected* are out; *panic* says panic mode is on.
    """

    members: tuple[int, ...]
    forced: frozenset[int]
    ejected: tuple[int, ...]
    panic: bool


def max_ejected(count: int, percent: float) -> int:
    """How many of *count* endpoints may be out of the rotation at once.

    ``floor(count * percent / 100)``, and at least one when *percent* is above 0 (so that
    one bad endpoint of three can leave at the default 50 %).

    Example:
        >>> max_ejected(3, 50), max_ejected(4, 50), max_ejected(10, 10), max_ejected(5, 0)
        (1, 2, 1, 0)
    """
    if percent <= 0.0 or count <= 0:
        return 0
    # The small epsilon keeps 3 x 33.333... / 100 from landing just under 1.
    return max(1, min(count, math.floor(count * percent / 100.0 + 1e-9)))


def rotation(
    health: Sequence[Health], *, max_ejection_percent: float, panic_threshold: float
) -> Rotation:
    """Decide the rotation from each endpoint's *health*.

    Example:
        >>> up, down = Health("closed"), Health("open", ejected_at=1.0)
        >>> rotation([up, down, up], max_ejection_percent=50, panic_threshold=50)
        Rotation(members=(0, 2), forced=frozenset(), ejected=(1,), panic=False)
        >>> rotation([up, down, down], max_ejection_percent=50, panic_threshold=50).panic
        True
    """
    count = len(health)
    if count == 0:
        return Rotation((), frozenset(), (), False)
    healthy = sum(1 for h in health if h.healthy)
    unavailable = [i for i, h in enumerate(health) if not h.available]
    if not unavailable:
        return Rotation(tuple(range(count)), frozenset(), (), False)
    if panic_threshold > 0.0 and healthy * 100.0 < panic_threshold * count:
        return Rotation(tuple(range(count)), frozenset(unavailable), (), True)
    cap = max_ejected(count, max_ejection_percent)
    # The first ejected stay out; later ones are kept in once the cap is reached.
    unavailable.sort(key=lambda i: health[i].ejected_at)
    ejected = frozenset(unavailable[:cap])
    kept = frozenset(unavailable[cap:])
    members = tuple(i for i in range(count) if i not in ejected)
    return Rotation(members, kept, tuple(sorted(ejected)), False)
