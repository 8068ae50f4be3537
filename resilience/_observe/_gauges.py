"""The seam between the breakers and their gauges: the registry feeds, the OTel sink reads.

Observability never imports the breakers (the dependency points the other way): the
breaker package calls `feed` once with a function that reads its live breakers, and calls
`breaker_added` whenever one is built. When the SDK collects, the observable gauges of
`resilience._observe._otel` ask `BreakerGauges` for their points, which reads every live
breaker once per gauge. This module is cheap to import: it knows nothing of OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from ._labels import (
    BREAKER_NAME,
    BREAKER_OUTCOME,
    BREAKER_STATE,
    MAX_LABEL_VALUES,
    OVERFLOW_LABEL,
    GaugeCap,
)
from ._redact import redact_name

__all__ = [
    "BreakerGauges",
    "BreakerReading",
    "Points",
    "breaker_added",
    "feed",
    "on_breaker_added",
    "readings",
]


class BreakerReading(NamedTuple):
    """What one live breaker reports to the gauges."""

    name: str
    state: str
    calls: int
    failures: int
    failure_rate: float


Points = list[tuple[float, dict[str, str]]]
"""(value, attributes) of each point a gauge reports."""


def _no_breakers() -> Iterable[BreakerReading]:
    return ()


_source: Callable[[], Iterable[BreakerReading]] = _no_breakers
_states: tuple[str, ...] = ()
_hook: Callable[[], object] | None = None


def feed(source: Callable[[], Iterable[BreakerReading]], states: Iterable[str]) -> None:
    """Read the live breakers from *source*; *states* are every state a breaker can be in.

    Called once, by the breaker package, when it is imported.
    """
    global _source, _states
    _states = tuple(states)
    _source = source


def readings() -> list[BreakerReading]:
    """The live breakers' readings, names without credentials (see `redact_name`).

    Example:
        >>> feed(lambda: [BreakerReading("db?token=t", "open", 4, 3, 0.75)], ["open"])
        >>> readings()[0].name
        'db?token=REDACTED'
        >>> feed(_no_breakers, ())
    """
    return [reading._replace(name=redact_name(reading.name)) for reading in _source()]


def on_breaker_added(hook: Callable[[], object]) -> None:
    """Call *hook* whenever a breaker is built (the OTel sink starts its gauges then)."""
    global _hook
    _hook = hook


def breaker_added() -> None:
    """A breaker was built: let the gauges start if OpenTelemetry is in use."""
    hook = _hook
    if hook is not None:
        hook()


class BreakerGauges:
    """The points of the three breaker gauges, at most `MAX_LABEL_VALUES` names each.

    A breaker past the cap is counted in the `OVERFLOW_LABEL` series: the number of breakers
    in each state, the calls of all their windows, and their failure share together.

    Example:
        >>> feed(lambda: [BreakerReading("db", "open", 4, 3, 0.75)], ["closed", "open"])
        >>> [(value, attrs[BREAKER_STATE]) for value, attrs in BreakerGauges().states()]
        [(0, 'closed'), (1, 'open')]
        >>> BreakerGauges().failure_rates()
        [(0.75, {'resilience.circuit_breaker.name': 'db'})]
        >>> feed(_no_breakers, ())
    """

    __slots__ = ("cap",)

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.cap = GaugeCap(limit)

    def _split(self) -> tuple[list[BreakerReading], list[BreakerReading]]:
        """The readings with their own series, and those counted in the overflow series."""
        current = readings()
        admitted = self.cap.admit([reading.name for reading in current])
        own = [reading for reading in current if reading.name in admitted]
        other = [reading for reading in current if reading.name not in admitted]
        return own, other

    def states(self) -> Points:
        """1 for the state each breaker is in, 0 for the others (breakers sharing a name
        add up: the registry lists every breaker, not one per name)."""
        own, other = self._split()
        counts: dict[tuple[str, str], int] = {}
        for reading in own:
            for state in _states:
                key = (reading.name, state)
                counts[key] = counts.get(key, 0) + (state == reading.state)
        points: Points = [
            (count, {BREAKER_NAME: name, BREAKER_STATE: state})
            for (name, state), count in counts.items()
        ]
        if other:
            # The overflow series counts the breakers in each state.
            found = [reading.state for reading in other]
            points.extend(
                (found.count(state), {BREAKER_NAME: OVERFLOW_LABEL, BREAKER_STATE: state})
                for state in _states
            )
        return points

    def window(self) -> Points:
        """Calls in each breaker's window, by outcome (success or failure)."""
        own, other = self._split()
        totals: dict[str, tuple[int, int]] = {}
        for reading in own:
            calls, failures = totals.get(reading.name, (0, 0))
            totals[reading.name] = (calls + reading.calls, failures + reading.failures)
        rows = [(name, calls, failures) for name, (calls, failures) in totals.items()]
        if other:
            calls = sum(reading.calls for reading in other)
            rows.append((OVERFLOW_LABEL, calls, sum(reading.failures for reading in other)))
        points: Points = []
        for name, calls, failures in rows:
            points.append((calls - failures, {BREAKER_NAME: name, BREAKER_OUTCOME: "success"}))
            points.append((failures, {BREAKER_NAME: name, BREAKER_OUTCOME: "failure"}))
        return points

    def failure_rates(self) -> Points:
        """The failure share of each breaker's window."""
        own, other = self._split()
        by_name: dict[str, list[BreakerReading]] = {}
        for reading in own:
            by_name.setdefault(reading.name, []).append(reading)
        points: Points = [
            (_failure_share(group), {BREAKER_NAME: name}) for name, group in by_name.items()
        ]
        if other:
            # The overflow series: the failure share of all their windows together.
            calls = sum(reading.calls for reading in other)
            failures = sum(reading.failures for reading in other)
            points.append((failures / calls if calls else 0.0, {BREAKER_NAME: OVERFLOW_LABEL}))
        return points


def _failure_share(group: list[BreakerReading]) -> float:
    """The failure share of one breaker, or of several sharing a name (their windows summed)."""
    if len(group) == 1:
        return group[0].failure_rate
    calls = sum(reading.calls for reading in group)
    return sum(reading.failures for reading in group) / calls if calls else 0.0
