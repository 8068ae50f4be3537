"""A breaker's states, the snapshot of its numbers, and the tally of a HALF_OPEN round."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "CLOSED",
    "DISABLED",
    "FIRST_PROBE_PERMIT",
    "FORCED_OPEN",
    "HALF_OPEN",
    "OPEN",
    "BreakerMetrics",
    "CircuitState",
    "ProbeRound",
]


class CircuitState(enum.StrEnum):
    """The states of a `CircuitBreaker` (a `str` enum: ``CircuitState.OPEN == "open"``).

    Example:
        >>> CircuitState.HALF_OPEN.value
        'half_open'
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


# Module constants: `is` against a global is the cheapest state test on the hot paths.
CLOSED: Final = CircuitState.CLOSED
OPEN: Final = CircuitState.OPEN
HALF_OPEN: Final = CircuitState.HALF_OPEN
FORCED_OPEN: Final = CircuitState.FORCED_OPEN
DISABLED: Final = CircuitState.DISABLED


# HALF_OPEN probes get permits of their own, -2, -3, ...: never a generation (those count up
# from 0), so a probe's outcome counts only while its slot is still listed as in flight.
# Drawn from one process-wide counter (atomic), so no two probes ever share a permit, even
# across rounds: a late outcome from an earlier round can never pass for a current probe's.
FIRST_PROBE_PERMIT: Final = -2


class ProbeRound:
    """A HALF_OPEN round: the probes in flight and the tally of the finished ones.

    Also kept, frozen, while OPEN after the round failed: its numbers are what `metrics`
    shows until the next round (the window was emptied for the probes).
    """

    __slots__ = ("done", "failures", "in_flight", "run", "slow")

    def __init__(self) -> None:
        # Probes in flight: permit -> when it was taken (oldest first).
        self.in_flight: dict[int, float] = {}
        self.done = 0
        self.failures = 0
        self.slow = 0
        self.run = 0

    def numbers(self) -> tuple[int, int, int]:
        """(calls, failures, slow calls) of the finished probes."""
        return self.done, self.failures, self.slow


@dataclass(frozen=True, slots=True)
class BreakerMetrics(Mapping[str, Any]):
    """A snapshot of a breaker's state and window, readable as attributes or as a mapping.

    Example:
        >>> from resilience import CircuitBreaker
        >>> m = CircuitBreaker("doc-metrics").metrics()
        >>> m.state, m["calls"], dict(m)["failure_rate"]
        (<CircuitState.CLOSED: 'closed'>, 0, 0.0)
    """

    name: str
    state: CircuitState
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    consecutive_failures: int
    half_open_in_flight: int
    retry_after: float | None

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (the state as its string)."""
        data = dict(self)
        data["state"] = self.state.value
        return data
