"""One endpoint's live state: where it listens, its breaker, requests in flight, latency.

Latency is Finagle's and Linkerd's *peak EWMA*, made robust to single odd answers: each
answer goes in as the median of it and the two answers before it, so one answer delayed by
the client itself (a pause of its process, a garbage collection, a busy event loop) is not
held against an endpoint for seconds, while a slowed endpoint is noticed on its second slow
answer. A filtered answer above the estimate replaces it at once (the peak); a lower one is
blended in with a weight that grows with the time since the last answer (Finagle's) and is
at least a tenth (`KEEP`), so an endpoint answering often comes back from a peak within a few
dozen answers; the estimate decays towards zero while nothing is observed, so an endpoint
that was slow is tried again later.

What the ``peak_ewma`` balancer compares (`Endpoint.load`) scales the estimate by the
requests in flight now over the requests in flight its answers saw: Finagle's
``latency x (in flight + 1)`` counts the load twice for an endpoint that serves requests
concurrently (its latency was already measured with that many in flight), and sends a slow
idle endpoint traffic whenever several callers keep the fast ones busy.

Time is always passed in (``now``, seconds of the transport's clock): nothing here reads a
clock.
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Final

from .._breaker._breaker import machine_of
from ._config import Address

if TYPE_CHECKING:
    from .._breaker._breaker import CircuitBreaker
    from .._breaker._machine import BreakerMachine
    from .._validate import Clock

__all__ = [
    "DEFAULT_DECAY",
    "KEEP",
    "PENALTY",
    "WARMUP",
    "WIDTH_WEIGHT",
    "Endpoint",
    "decayed",
    "peak_ewma",
]

_exp: Final = math.exp

DEFAULT_DECAY: Final = 10.0
"""Seconds for the latency estimate to fall to 1/e of itself with no new sample
(Finagle's and Linkerd's default decay time)."""

WARMUP: Final = 5
"""Answers that set the estimate directly before the peak rule applies: the first answers
of a new endpoint carry its connection's setup (TCP, TLS) and the server's cold start, and
held as a peak with a 10 s decay they would hide a fast endpoint behind a slow one for tens
of seconds."""

KEEP: Final = 0.9
"""The most weight the estimate keeps against a lower answer: however close together the
answers come, each moves the estimate at least a tenth of the way down."""

WIDTH_WEIGHT: Final = 0.125
"""How much each answer moves the average of the requests in flight its endpoint's answers
saw (an exponential average over about the last eight answers)."""

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
    return cost * min(weight, KEEP) + rtt * (1.0 - min(weight, KEEP))


class Endpoint:
    """The live state of one endpoint of an upstream.

    ``in_flight`` counts attempts sent and not finished: `start` and `finish` keep it in a
    deque, whose ``append`` and ``pop`` are atomic, so threads lose no update without a lock
    (a lock taken twice per attempt would cost more than the rest of the routing). The
    latency estimate is updated without one: two answers ending at once in two threads may
    blend in either order, which an estimate can afford.

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
        "before",
        "breaker",
        "closed",
        "decay",
        "ejected_at",
        "ejections",
        "ewma",
        "forced",
        "host",
        "last",
        "machine",
        "pending",
        "pointed",
        "port",
        "rate",
        "samples",
        "scheme",
        "stamp",
        "timer",
        "unit",
        "url",
        "weight",
        "width",
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
        # Read on every attempt (the request's URL is pointed here): plain slots, no lookups.
        self.scheme = address.scheme  # "http" or "https"
        self.host = address.host  # an IPv6 address without brackets
        self.port = address.port  # None when it is the scheme's default
        # The transport's last request URL pointed here: (its path, the logical URL's
        # parts, the endpoint URL made from them), reused while requests ask for that URL.
        self.pointed: tuple[str, object, object] | None = None
        self.weight = weight
        self.breaker: CircuitBreaker | None = None
        # Its state machine: an attempt takes and records its permit there (`machine_of`).
        self.machine: BreakerMachine | None = None
        # The breaker's clock when it times calls (``slow_call_duration``), else None: an
        # attempt then reads no clock for the breaker (the pool's clock times the latency).
        self.timer: Clock | None = None
        if breaker is not None:
            self.attach(breaker)
        self.decay = decay
        self.rate = 1.0 / decay  # multiplied rather than divided by, per answer
        # One item per attempt in flight: len() is the count.
        self.pending: collections.deque[None] = collections.deque()
        self.ewma = 0.0
        self.stamp = 0.0
        self.samples = 0
        self.last = self.before = 0.0  # the two answers before the next one
        # The requests in flight its answers saw (their own included), averaged, and the
        # estimate per unit of that: what `load` scales by the requests in flight now.
        self.width = 1.0
        self.unit = 0.0
        # When the breaker last left CLOSED (None while it is closed), and how many times in a
        # row it opened since it was last closed: ejection order and the events' numbers.
        self.ejected_at: float | None = None
        self.ejections = 0
        # Set by the pool each time it decides the rotation: the breaker was CLOSED then (so
        # a pick needs no second look at it), and whether it is sent to despite its breaker.
        self.closed = True
        self.forced = False

    def attach(self, breaker: CircuitBreaker) -> None:
        """Make *breaker* this endpoint's, with what each attempt reads of it."""
        self.timer = breaker.clock if breaker.config.timed else None
        self.machine = machine_of(breaker)
        self.breaker = breaker  # last: a pick that sees it finds the rest set

    @property
    def in_flight(self) -> int:
        """Attempts sent to this endpoint and not finished."""
        return len(self.pending)

    def start(self) -> None:
        """An attempt is being sent to this endpoint."""
        self.pending.append(None)

    def finish(self, rtt: float, now: float, ok: bool, width: int = 1) -> None:
        """The attempt that `start` counted ended after *rtt* seconds, at *now*.

        *width* is how many attempts were in flight on this endpoint when it was sent (this
        one included). An answer (*ok*) goes in through the median of the last three
        answers. A failed attempt never lowers the estimate (a refused connection is quick,
        and a fast failure must not look like a fast endpoint) and raises it at once when
        slower.
        """
        self.pending.pop()
        cost = self.ewma
        if ok:
            samples = self.samples
            # The median of this answer and the two before it (the first fills all three).
            if samples:
                a = self.last
                b = self.before
            else:
                a = b = rtt
            self.before = a
            self.last = rtt
            if a > b:
                a, b = b, a  # a swap, no tuple
            sample = a if rtt < a else b if rtt > b else rtt
            seen = self.width
            self.width = seen = seen + (width - seen) * WIDTH_WEIGHT
            if samples < WARMUP:
                # While warming up, the latest (filtered) answer is the estimate; counting
                # stops there (an int past 256 would be a new object per answer).
                self.samples = samples + 1
                cost = sample
            elif sample >= cost:
                cost = sample  # the peak
            else:
                # `peak_ewma`, inlined (this runs after every attempt), in fewer float
                # operations: each makes a new float object.
                gap = self.stamp - now
                keep = _exp(gap * self.rate) if gap < 0.0 else 1.0
                if keep > KEEP:
                    keep = KEEP
                cost = sample + (cost - sample) * keep
        elif rtt > cost:
            seen = self.width
            cost = rtt
        else:
            return
        self.ewma = cost
        self.stamp = now
        self.unit = cost / seen

    def release(self) -> None:
        """An attempt counted by `start` ended with nothing to learn (cancelled)."""
        self.pending.pop()

    def cost(self, now: float) -> float:
        """The latency estimate at *now*, in seconds (0.0 before the first answer)."""
        return decayed(self.ewma, self.stamp, now, self.decay)

    def load(self, now: float) -> float:
        """What the ``peak_ewma`` balancer compares: the latency expected for one more request.

        That is the estimate scaled by the requests in flight now (this one included) over
        those its answers saw on average: an endpoint that answered in 5 ms with four
        requests in flight is expected to take 5 ms with four again, not 25 ms; one measured
        alone gets Finagle's ``latency x (in flight + 1)``. An endpoint never measured is
        free while idle (so it gets measured) and costs `PENALTY` per request while busy.
        """
        pending = len(self.pending)
        cost = self.unit
        if cost == 0.0:
            return PENALTY + pending if pending > 0 else 0.0
        gap = self.stamp - now  # `decayed`, inlined
        if gap < 0.0:
            cost *= _exp(gap * self.rate)
        return cost * (pending + 1)

    def __repr__(self) -> str:
        return f"<Endpoint {self.url} in_flight={self.in_flight}>"
