"""Metric label names and values, and the caps that keep each instrument's series bounded.

Labels are names given in code (breaker, bulkhead, retry names), states, reasons and
exception type names; never URLs. Names can still grow with the hosts a transport calls
(its per-host breakers are named ``<name>:<authority>``), so each instrument reports at most
`MAX_LABEL_VALUES` distinct names (and the HTTP duration histogram as many server
addresses); the rest are counted together under `OVERFLOW_LABEL`.
"""

from __future__ import annotations

import threading
from typing import Final

__all__ = [
    "BREAKER_NAME",
    "BREAKER_NEW_STATE",
    "BREAKER_OLD_STATE",
    "BREAKER_OUTCOME",
    "BREAKER_STATE",
    "BULKHEAD_NAME",
    "ERROR_TYPE",
    "FALLBACK_NAME",
    "MAX_LABEL_VALUES",
    "OVERFLOW_LABEL",
    "REJECTION_REASON",
    "RETRY_NAME",
    "GaugeCap",
    "LabelCap",
    "error_type",
]

# Our own attributes (no semantic convention exists for resilience yet: semconv issue #2355).
BREAKER_NAME: Final = "resilience.circuit_breaker.name"
BREAKER_STATE: Final = "resilience.circuit_breaker.state"
BREAKER_OLD_STATE: Final = "resilience.circuit_breaker.old_state"
BREAKER_NEW_STATE: Final = "resilience.circuit_breaker.new_state"
BREAKER_OUTCOME: Final = "resilience.circuit_breaker.outcome"
RETRY_NAME: Final = "resilience.retry.name"
BULKHEAD_NAME: Final = "resilience.bulkhead.name"
FALLBACK_NAME: Final = "resilience.fallback.name"
REJECTION_REASON: Final = "resilience.rejection.reason"
ERROR_TYPE: Final = "error.type"
"""The semantic conventions' name for an error's type, on spans and metrics alike."""


def error_type(exc: BaseException) -> str:
    """The ``error.type`` of *exc*: its fully qualified class name (``httpx.ConnectError``).

    Example:
        >>> error_type(TimeoutError())
        'TimeoutError'
        >>> from resilience import DeadlineExceeded
        >>> error_type(DeadlineExceeded())
        'resilience.DeadlineExceeded'
    """
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    # Other libraries' private modules too: name the class where users import it from.
    public = [part for part in module.split(".") if not part.startswith("_")]
    return ".".join((*public, cls.__qualname__))


MAX_LABEL_VALUES: Final = 250
"""Distinct names (breaker, retry, bulkhead, fallback) or server addresses one instrument
reports. A process that calls many hosts gets one per-host breaker each; past this many,
new names share the one series `OVERFLOW_LABEL`, so memory in the SDK and series in the
backend stay bounded, and the first names keep their own series. 250: a name has up to
five series (the state gauge: one per state), and the OpenTelemetry SDK merges everything
past 2,000 series of an instrument into one, losing every name's own figures."""

OVERFLOW_LABEL: Final = "_other"
"""The name (or ``server.address``) of the series counting every name past the cap."""


class LabelCap:
    """Lets through at most *limit* distinct values of a label; later ones become
    `OVERFLOW_LABEL`. A value seen before costs one set lookup, without the lock.

    Example:
        >>> cap = LabelCap(limit=1)
        >>> cap("x"), cap("y"), cap("x")
        ('x', '_other', 'x')
    """

    __slots__ = ("_lock", "_seen", "limit")

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if value not in self._seen:
                if len(self._seen) >= self.limit:
                    return OVERFLOW_LABEL
                self._seen.add(value)
        return value


class GaugeCap:
    """`LabelCap` for the breaker gauges, which report live breakers only: a name keeps
    its series while its breaker lives, and a slot freed by a breaker gone is reused.

    Example:
        >>> cap = GaugeCap(limit=2)
        >>> sorted(cap.admit(["a", "b", "c"])), sorted(cap.admit(["c", "b"]))
        (['a', 'b'], ['b', 'c'])
    """

    __slots__ = ("_lock", "_seen", "limit")

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, names: list[str]) -> set[str]:
        """The names of *names* (the live breakers) that get their own series."""
        with self._lock:
            kept = self._seen.intersection(names)
            for name in names:
                if len(kept) >= self.limit:
                    break
                kept.add(name)
            self._seen = kept
            return kept
