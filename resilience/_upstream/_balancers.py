"""The balancers: which endpoint of the rotation takes the next attempt, in O(1).

- ``round_robin``: smooth weighted round robin. The cycle is built once per rotation (each
  endpoint's turns spread evenly over it, like nginx's smooth weighted round robin and
  Envoy's EDF scheduler) and a pick is one step along it.
- ``random``: weighted random, by Vose's alias table (two array reads per pick).
- ``least_request``: power of two choices (Mitzenmacher; Envoy's default): draw two
  endpoints, take the one with fewer requests in flight per unit of weight.
- ``peak_ewma``: power of two choices on peak-EWMA latency x (requests in flight + 1)
  (Finagle, Linkerd): slow endpoints get less, busy endpoints get less.

`Balancer.rebuild` runs when the rotation changes (O(n)); `Balancer.pick` runs per attempt
and never takes a lock: it reads the tables the last rebuild swapped in. *exclude* names
endpoints a retry should avoid (those already tried); they are skipped whenever another
endpoint is in the rotation. Chance comes from the injected *random* (a function returning
a float in [0, 1)); time (for latency decay) is passed in as ``now``.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar, Final, NamedTuple, TypeAlias

from .._errors import ConfigError
from ._endpoints import Endpoint

__all__ = [
    "MAX_CYCLE",
    "Balancer",
    "LeastRequest",
    "PeakEwma",
    "RandomBalancer",
    "RoundRobin",
    "alias_table",
    "make_balancer",
    "smooth_cycle",
]

RandomSource = Callable[[], float]
"""A function returning a float in [0, 1), like `random.random`."""

MAX_CYCLE: Final = 4096
"""Longest weighted round-robin cycle; weights are scaled down to fit (each keeps >= 1)."""

_TRIES: Final = 8
"""Draws that may land on an excluded endpoint before a pick scans for an allowed one."""

_exp: Final = math.exp
_floor: Final = math.floor  # an int from a float: cheaper than int(), which is a type call


def alias_table(weights: Sequence[float]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Vose's alias method: (probability, alias) per slot, for O(1) weighted draws.

    Draw slot ``i`` uniformly, keep it with probability ``prob[i]``, else take ``alias[i]``.

    Example:
        >>> alias_table([1.0, 3.0])
        ((0.5, 1.0), (1, 1))
    """
    count = len(weights)
    total = math.fsum(weights)
    scaled = [w * count / total for w in weights]
    prob = [1.0] * count
    alias = list(range(count))
    small = [i for i, s in enumerate(scaled) if s < 1.0]
    large = [i for i, s in enumerate(scaled) if s >= 1.0]
    while small and large:
        less, more = small.pop(), large.pop()
        prob[less] = scaled[less]
        alias[less] = more
        scaled[more] = scaled[more] + scaled[less] - 1.0
        (small if scaled[more] < 1.0 else large).append(more)
    # Whatever is left is 1 up to rounding: keep it.
    return tuple(prob), tuple(alias)


def _integer_weights(weights: Sequence[float]) -> list[int]:
    """Weights as small integers with the same ratios (to 1 %), summing to <= `MAX_CYCLE`."""
    least = min(weights)
    ratios = [w / least for w in weights]
    if all(abs(r - round(r)) < 1e-6 for r in ratios):
        units = [round(r) for r in ratios]
    else:
        units = [max(1, round(r * 100)) for r in ratios]
    divisor = math.gcd(*units)
    units = [u // divisor for u in units]
    total = sum(units)
    if total > MAX_CYCLE:
        units = [max(1, round(u * MAX_CYCLE / total)) for u in units]
    return units


def smooth_cycle(weights: Sequence[float]) -> tuple[int, ...]:
    """The round-robin cycle for *weights*: indices, each endpoint's turns spread evenly.

    Endpoint ``i`` with integer weight ``w`` gets turns at ``(k + 0.5) / w`` for ``k < w``
    (Sainte-Laguë's divisors), so a heavy endpoint's turns are interleaved with the others'
    instead of coming in a burst.

    Example:
        >>> smooth_cycle([5, 1, 1])
        (0, 0, 0, 1, 2, 0, 0)
        >>> smooth_cycle([1, 1, 1])
        (0, 1, 2)
    """
    if len(set(weights)) <= 1:
        return tuple(range(len(weights)))
    units = _integer_weights(weights)
    turns = [((k + 0.5) / w, i) for i, w in enumerate(units) for k in range(w)]
    turns.sort()
    return tuple(i for _, i in turns)


class _Table(NamedTuple):
    """One rotation as a balancer sees it, swapped in whole so picks never see a mix."""

    members: tuple[Endpoint, ...]
    weighted: bool
    prob: tuple[float, ...]
    alias: tuple[int, ...]


_EMPTY: Final = _Table((), False, (), ())

_Flat: TypeAlias = tuple[tuple[Any, ...], float]
"""What one uniform draw picks from while the weights are equal, then its last item again;
and how many items (without that repeat) as a float. For power-of-two-choices balancers
the ordered pairs of two different members (one draw picks both; up to `PAIRS_UP_TO`
members), for the others the members. Drawing ``items[floor(random() * count)]`` needs no
bounds check: a random() of 1.0 (from a sloppy source) lands on the repeat."""

_NOTHING_FLAT: Final[_Flat] = ((), 0.0)

PAIRS_UP_TO: Final = 64
"""Largest rotation whose pairs are listed for P2C (64 x 63 pairs); for a larger one the
index of the second endpoint comes from the fraction the first draw leaves over."""


class Balancer(abc.ABC):
    """Picks an endpoint of the rotation; `rebuild` when the rotation changes."""

    name: ClassVar[str]
    paired: ClassVar[bool] = False
    """Whether picks draw two endpoints at once (the rotation then lists its pairs)."""
    drawn: ClassVar[bool] = True
    """Whether picks draw at random (from `_Flat` while the weights are equal)."""

    __slots__ = ("_flat", "_random", "_table")

    def __init__(self, random: RandomSource) -> None:
        self._random = random
        self._table = _EMPTY
        # Read by the picks on every attempt: a slot, not a field of the table (a NamedTuple
        # field is a slower read).
        self._flat = _NOTHING_FLAT

    @property
    def members(self) -> tuple[Endpoint, ...]:
        """The endpoints of the rotation, as the last `rebuild` gave them."""
        return self._table.members

    def rebuild(self, members: Sequence[Endpoint]) -> None:
        """Take the new rotation (O(n), or O(n²) for the pairs of a small paired one); picks
        already running keep the old one."""
        members = tuple(members)
        weights = [m.weight for m in members]
        if len(set(weights)) > 1:
            prob, alias = alias_table(weights)
            self._table = _Table(members, True, prob, alias)
            self._flat = _NOTHING_FLAT
            return
        self._table = _Table(members, False, (), ())
        items: tuple[Any, ...] = members if self.drawn else ()
        if self.paired:
            few = 1 < len(members) <= PAIRS_UP_TO
            items = tuple((a, b) for a in members for b in members if a is not b) if few else ()
        self._flat = ((*items, items[-1]), float(len(items))) if items else _NOTHING_FLAT

    @abc.abstractmethod
    def pick(self, now: float, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """An endpoint for the next attempt (None when the rotation is empty).

        Endpoints in *exclude* are chosen only when no other endpoint is in the rotation.
        """

    # ------------------------------------------------------------------ draws

    def _draw(self, table: _Table) -> Endpoint:
        """One endpoint, at random in proportion to the weights (O(1))."""
        members = table.members
        count = len(members)
        spot = self._random() * count
        index = _floor(spot)
        if index >= count:  # a random() of 1.0 from a sloppy source
            index = count - 1
        # The fraction left over is a second uniform draw: no second call needed.
        if table.weighted and spot - index >= table.prob[index]:
            index = table.alias[index]
        return members[index]

    def _draw_allowed(self, table: _Table, exclude: Collection[Endpoint]) -> Endpoint | None:
        """`_draw`, skipping *exclude*; None when every member is excluded."""
        for _ in range(_TRIES):
            candidate = self._draw(table)
            if candidate not in exclude:
                return candidate
        allowed = tuple(m for m in table.members if m not in exclude)
        if not allowed:
            return None
        return allowed[min(int(self._random() * len(allowed)), len(allowed) - 1)]


class _PowerOfTwo(Balancer):
    """Draw two different endpoints, keep the one `_better` prefers.

    The subclasses inline the common case (equal weights, nothing excluded): a pick runs
    on every attempt, and a method call per comparison would double its cost.
    """

    paired: ClassVar[bool] = True
    __slots__ = ()

    @abc.abstractmethod
    def _better(self, a: Endpoint, b: Endpoint, now: float) -> Endpoint:
        """The less loaded of *a* and *b* (*a* on a tie: the draw already was random)."""

    def _pick_general(
        self, table: _Table, now: float, exclude: Collection[Endpoint]
    ) -> Endpoint | None:
        """Weighted draws, or draws that avoid *exclude* while others are left."""
        members = table.members
        if len(members) <= 1:
            return members[0] if members else None
        if exclude:
            first = self._draw_allowed(table, exclude)
            if first is None:
                return self._pick_general(table, now, ())  # only excluded ones are left
            second = self._draw_allowed(table, (*exclude, first))
        elif not table.weighted:
            # More members than `PAIRS_UP_TO`: one draw still picks both, as from the pairs.
            count = len(members)
            spot = self._random() * count
            i = int(spot)
            if i >= count:  # a random() of 1.0 from a sloppy source
                i = count - 1
            j = int((spot - i) * (count - 1))  # the fraction left over: a second draw
            if j >= i:
                j = j + 1 if j + 1 < count else i - 1  # uniform over the others
            first, second = members[i], members[j]
        else:
            first = self._draw(table)
            second = self._draw_allowed(table, (first,))
        return first if second is None else self._better(first, second, now)


class LeastRequest(_PowerOfTwo):
    """Power of two choices on requests in flight (per unit of weight)."""

    name: ClassVar[str] = "least_request"
    __slots__ = ()

    def pick(self, now: float, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """Of two endpoints drawn at random, the one with fewer requests in flight."""
        pairs, count = self._flat
        if exclude or not pairs:
            return self._pick_general(self._table, now, exclude)
        random = self._random  # read, then called: `self._random()` is not specialized
        a: Endpoint
        b: Endpoint
        a, b = pairs[_floor(random() * count)]  # one draw picks both
        return b if len(b.pending) < len(a.pending) else a

    def _better(self, a: Endpoint, b: Endpoint, now: float) -> Endpoint:
        if a.weight == b.weight:
            return b if b.in_flight < a.in_flight else a
        return b if (b.in_flight + 1) / b.weight < (a.in_flight + 1) / a.weight else a


class PeakEwma(_PowerOfTwo):
    """Power of two choices on peak-EWMA latency x (requests in flight + 1)."""

    name: ClassVar[str] = "peak_ewma"
    __slots__ = ()

    def pick(self, now: float, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """Of two endpoints drawn at random, the one with the lower latency x load."""
        pairs, count = self._flat
        if exclude or not pairs:
            return self._pick_general(self._table, now, exclude)
        random = self._random
        a: Endpoint
        b: Endpoint
        a, b = pairs[_floor(random() * count)]  # as in LeastRequest.pick
        # Endpoint.load for both, inlined (this runs on every attempt). Both estimates decay
        # alike, so comparing them needs only the decay between their stamps, and that only
        # when the older estimate is the higher: decay can only lower it.
        cost_a = a.unit
        cost_b = b.unit
        if not cost_a or not cost_b:  # one has no estimate yet
            return b if b.load(now) < a.load(now) else a
        cost_a *= len(a.pending) + 1
        cost_b *= len(b.pending) + 1
        gap = a.stamp - b.stamp
        if gap >= 0.0:  # b's estimate is the older one
            if cost_b < cost_a:
                return b
            return b if cost_b * _exp(-gap * a.rate) < cost_a else a
        if cost_a <= cost_b:
            return a
        # Decay the older estimate by the gap: exp of a negative number never overflows.
        return b if cost_b < cost_a * _exp(gap * a.rate) else a

    def _better(self, a: Endpoint, b: Endpoint, now: float) -> Endpoint:
        return b if b.load(now) / b.weight < a.load(now) / a.weight else a


class RandomBalancer(Balancer):
    """Weighted random."""

    name: ClassVar[str] = "random"
    __slots__ = ()

    def pick(self, now: float, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """An endpoint at random, in proportion to the weights."""
        members, count = self._flat
        if members and not exclude:
            random = self._random  # `_draw`, inlined for equal weights
            chosen: Endpoint = members[_floor(random() * count)]
            return chosen
        table = self._table
        members = table.members
        if not members:
            return None
        if exclude:
            allowed = self._draw_allowed(table, exclude)
            if allowed is not None:
                return allowed
        return self._draw(table)


class RoundRobin(Balancer):
    """Smooth weighted round robin over a precomputed cycle."""

    name: ClassVar[str] = "round_robin"
    drawn: ClassVar[bool] = False  # a step along its cycle
    __slots__ = ("_counter", "_cycle")

    def __init__(self, random: RandomSource) -> None:
        super().__init__(random)
        self._cycle: tuple[Endpoint, ...] = ()
        # Start at a random turn, so that many clients do not all begin with the first
        # endpoint; next() on itertools.count is atomic, so threads share it without a lock.
        self._counter = itertools.count(int(random() * 1_000_003))

    def rebuild(self, members: Sequence[Endpoint]) -> None:
        """Take the new rotation and build its cycle."""
        members = tuple(members)
        order = smooth_cycle([m.weight for m in members]) if members else ()
        super().rebuild(members)
        self._cycle = tuple(members[i] for i in order)

    def pick(self, now: float, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The next endpoint of the cycle (skipping *exclude* while others are left)."""
        cycle = self._cycle
        length = len(cycle)
        if not length:
            return None
        turn = next(self._counter)
        chosen = cycle[turn % length]
        if not exclude or chosen not in exclude:
            return chosen
        for step in range(1, min(length, _TRIES * 8)):
            candidate = cycle[(turn + step) % length]
            if candidate not in exclude:
                return candidate
        allowed = self._draw_allowed(self._table, exclude)
        return chosen if allowed is None else allowed


_BALANCERS: Final[dict[str, type[Balancer]]] = {
    cls.name: cls for cls in (RoundRobin, LeastRequest, PeakEwma, RandomBalancer)
}


def make_balancer(name: str, random: RandomSource) -> Balancer:
    """A new balancer by its `Upstream` name.

    Example:
        >>> import random
        >>> make_balancer("peak_ewma", random.Random(1).random).name
        'peak_ewma'
    """
    try:
        cls = _BALANCERS[name]
    except KeyError:
        msg = f"balancer must be one of {sorted(_BALANCERS)}, got {name!r}"
        raise ConfigError(msg) from None
    return cls(random)
