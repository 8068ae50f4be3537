"""One endpoint's live state: where it listens, its breaker, requests in flight, latency.

Latency is Finagle's and Linkerd's *peak EWMA*: a new sample above the current cost replaces
it at once (a slowing endpoint is noticed on its first slow answer), a lower one is blended
in with a weight that grows with the time since the last sample, and the cost decays towards
zero while nothing is observed, so an endpoint that was slow is tried again later. Time is
always passed in (``now``, seconds of the transport's clock): nothing here reads a clock.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Final

from ._config import Address

if TYPE_CHECKING:
    from .._breaker._breaker import CircuitBreaker

__all__ = ["DEFAULT_DECAY", "PENALTY", "WARMUP", "Endpoint", "decayed", "peak_ewma"]

_exp: Final = math.exp

DEFAULT_DECAY: Final = 10.0
"""Seconds for the latency estimate to fall to 1/e of itself with no new sample
(Finagle's and Linkerd's default decay time)."""

WARMUP: Final = 5
"""Answers that set the estimate directly before the peak rule applies: the first answers
of a new endpoint carry its connection's setup (TCP, TLS) and the server's cold start, and
held as a peak with a 10 s decay they would hide a fast endpoint behind a slow one for tens
of seconds."""

PENALTY: Final = 1e9
"""The load of an endpoint with requests in flight and no latency measured yet: it is
avoided until its first answer says what it costs (Finagle's penalty)."""


def decayed(cost: float, stamp: float, now: float, decay: float) -> float:
    """*cost* measured at *stamp*, decayed to *now*.

    Example:
        >>> round(decayed(1.0, 0.0, 10.0, 10.0), 4)
        0.3679
    """
    elapsed = now - stamp
    if elapsed <= 0.0:
        return cost
    return cost * math.exp(-elapsed / decay)


def peak_ewma(cost: float, stamp: float, rtt: float, now: float, decay: float) -> float:
    """The cost after observing *rtt* at *now*: the peak, or a time-weighted average.

    Example:
        >>> peak_ewma(0.010, 0.0, 0.100, 1.0, 10.0)   # slower: taken at once
        0.1
        >>> round(peak_ewma(0.100, 0.0, 0.010, 10.0, 10.0), 4)   # faster: blended in
        0.0431
    """
    if rtt >= cost:
        return rtt
    elapsed = now - stamp
    weight = math.exp(-elapsed / decay) if elapsed > 0.0 else 1.0
    return cost * weight + rtt * (1.0 - weight)


class Endpoint:
    """The live state of one endpoint of an upstream.

    ``in_flight`` counts attempts sent and not finished; `start` and `finish` keep it, under
    the endpoint's own lock (the counts must not lose updates between threads), and
    `finish` feeds the latency estimate.

    Example:
        >>> from resilience._upstream._config import address
        >>> e = Endpoint(address("endpoints[0]", "http://127.0.0.1:8001"), 1.0, None)
        >>> e.start(); e.in_flight
        1
        >>> e.finish(0.020, 1.0, True); e.in_flight, e.cost(1.0)
        (0, 0.02)
    """

    __slots__ = (
        "__weakref__",
        "address",
        "breaker",
        "closed",
        "decay",
        "ejected_at",
        "ejections",
        "ewma",
        "forced",
        "in_flight",
        "lock",
        "samples",
        "stamp",
        "url",
        "weight",
    )

    def __init__(
        self,
        address: Address,
        weight: float,
        breaker: CircuitBreaker | None,
        *,
        decay: float = DEFAULT_DECAY,
    ) -> None:
        self.address = address
        self.url = address.url
        self.weight = weight
        self.breaker = breaker
        self.decay = decay
        self.in_flight = 0
        self.ewma = 0.0
        self.stamp = 0.0
        self.samples = 0
        self.lock = threading.Lock()
        # When the breaker last left CLOSED (None while it is closed), and how many times in a
        # row it opened since it was last closed: ejection order and the events' numbers.
        self.ejected_at: float | None = None
        self.ejections = 0
        # Set by the pool each time it decides the rotation: the breaker was CLOSED then (so
        # a pick needs no second look at it), and whether it is sent to despite its breaker.
        self.closed = True
        self.forced = False

    @property
    def scheme(self) -> str:
        """``http`` or ``https``."""
        return self.address.scheme

    @property
    def host(self) -> str:
        """The host (an IPv6 address without brackets)."""
        return self.address.host

    @property
    def port(self) -> int | None:
        """The port, None when it is the scheme's default."""
        return self.address.port

    def start(self) -> None:
        """An attempt is being sent to this endpoint."""
        with self.lock:
            self.in_flight += 1

    def finish(self, rtt: float, now: float, ok: bool) -> None:
        """The attempt that `start` counted ended after *rtt* seconds, at *now*.

        A failed attempt (*ok* False) never lowers the estimate: a refused connection is
        quick, and a fast failure must not look like a fast endpoint.
        """
        with self.lock:
            self.in_flight -= 1
            cost = self.ewma
            if rtt >= cost or (ok and self.samples < WARMUP):
                # `peak_ewma`, inlined (this runs after every attempt); while warming up,
                # the latest answer is the estimate.
                self.ewma = rtt
                self.stamp = now
                if ok:
                    self.samples += 1
            elif ok:
                elapsed = now - self.stamp
                if elapsed > 0.0:
                    weight = _exp(-elapsed / self.decay)
                    self.ewma = cost * weight + rtt * (1.0 - weight)
                    self.stamp = now

    def release(self) -> None:
        """An attempt counted by `start` ended with nothing to learn (cancelled)."""
        with self.lock:
            self.in_flight -= 1

    def cost(self, now: float) -> float:
        """The latency estimate at *now*, in seconds (0.0 before the first answer)."""
        return decayed(self.ewma, self.stamp, now, self.decay)

    def load(self, now: float) -> float:
        """Peak EWMA x (requests in flight + 1): what the ``peak_ewma`` balancer compares.

        An endpoint never measured is free while idle (so it gets measured) and costs
        `PENALTY` per request while busy.
        """
        pending = self.in_flight
        cost = self.ewma
        if cost == 0.0:
            return PENALTY + pending if pending > 0 else 0.0
        elapsed = now - self.stamp  # `decayed`, inlined: this runs twice per pick
        if elapsed > 0.0:
            cost *= _exp(-elapsed / self.decay)
        return cost * (pending + 1)

    def __repr__(self) -> str:
        return f"<Endpoint {self.url} in_flight={self.in_flight}>"
