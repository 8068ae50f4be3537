"""Where state lives: breakers' state, and idempotency records, in the process or in Redis.

A store is passed as ``CircuitBreaker(..., store=...)``. `InMemoryStore` keeps everything in
the breaker itself (what you get without ``store=``). `RedisStore` shares a breaker's state
with every process that uses the same name and Redis: one window for the whole fleet, trips
and manual control seen everywhere, fleet-wide HALF_OPEN probes; `RedisStore.retry_budget`
gives a `RetryBudget` counted over the fleet. Calls never wait for Redis.

Idempotency records (`resilience.idempotency`) go to a `MemoryStore` (this process only,
bounded and expiring) or to a `RedisStore` (shared by every worker).

Example:
    >>> from resilience import CircuitBreaker
    >>> from resilience.stores import InMemoryStore
    >>> CircuitBreaker("stores-doc", store=InMemoryStore()).state
    <CircuitState.CLOSED: 'closed'>
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._idempotency._memory import MemoryStore
from ._stores._redis_store import RedisStore

if TYPE_CHECKING:
    from ._breaker._breaker import CircuitBreaker

__all__ = ["BreakerBinding", "BreakerStore", "InMemoryStore", "MemoryStore", "RedisStore"]


class BreakerBinding(Protocol):
    """What a store gives a breaker to report to (for store authors; users never call it).

    The breaker calls `transition` and `probe_done` with its lock held: they must only queue
    work. `take_probe` and `settle` are called outside the lock, in HALF_OPEN only, and may
    do I/O.
    """

    @property
    def shared(self) -> bool:
        """True while the fleet decides; False while the breaker runs on local state."""
        ...

    def transition(self, new: str, manual: bool) -> None:
        """The breaker moved to state *new* (``manual``: force_open, disable or reset)."""
        ...

    def take_probe(self) -> bool:
        """Take one of the fleet's HALF_OPEN probe slots; False if none is left."""
        ...

    def probe_done(self, outcome: int) -> bool:
        """A probe finished; True if the store judges the probes (the breaker then waits)."""
        ...

    def settle(self) -> None:
        """After `probe_done` returned True, outside the lock: deliver the verdict now if
        this outcome decided it (may do I/O, bounded), so the caller's next call sees it."""
        ...

    def probe_released(self) -> None:
        """A probe ended with no outcome; give its slot back."""
        ...


@runtime_checkable
class BreakerStore(Protocol):
    """Anything that can hold breakers' state: `InMemoryStore`, `RedisStore`.

    Example:
        >>> from resilience.stores import BreakerStore, InMemoryStore
        >>> isinstance(InMemoryStore(), BreakerStore)
        True
    """

    def bind(self, breaker: CircuitBreaker) -> BreakerBinding | None:
        """Link *breaker* to the store; None means "keep state in the breaker"."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


class InMemoryStore:
    """State lives in each breaker, per process: the default, with no cost at all.

    Example:
        >>> from resilience import CircuitBreaker
        >>> from resilience.stores import InMemoryStore
        >>> breaker = CircuitBreaker("in-memory-doc", store=InMemoryStore())
        >>> breaker.call(len, "abc")
        3
    """

    __slots__ = ()

    def bind(self, breaker: CircuitBreaker) -> None:
        """Nothing to link: the breaker keeps its own state."""
        return None

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "InMemoryStore()"
