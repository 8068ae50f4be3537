"""The seam between a breaker and a store, typed in both directions.

A breaker hands its store a `BreakerPort` (``store.bind(port)``): the few operations a store
needs to share the breaker's state. The store hands back a `BreakerBinding`: what the breaker
tells the store about its own moves. Neither side sees the other's internals: no store module
imports the breaker, and the breaker calls nothing of the store but its binding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .._public import public

if TYPE_CHECKING:
    from .._breaker._config import BreakerConfig
    from .._breaker._state import CircuitState

__all__ = ["BreakerBinding", "BreakerPort", "BreakerStore", "InMemoryStore"]


class BreakerPort(Protocol):
    """What a breaker lets its store do (for store authors; users never call it).

    Counts are ``(calls, failures, slow calls, failure run)``. Every method takes the
    breaker's lock itself: call them from the store's own threads, never while holding a lock
    the breaker may wait for.

    Example:
        >>> from resilience import CircuitBreaker
        >>> from resilience.stores import BreakerPort
        >>> class Spy:
        ...     def bind(self, port: BreakerPort) -> None:
        ...         print(port.name, port.config.window, port.snapshot())
        ...     def close(self) -> None: ...
        >>> _ = CircuitBreaker("doc-port", store=Spy())
        doc-port 100 (0, 0, 0, 0)
    """

    @property
    def name(self) -> str:
        """The breaker's name: breakers of one name share their state."""
        ...

    @property
    def config(self) -> BreakerConfig:
        """The breaker's settings."""
        ...

    @property
    def state(self) -> CircuitState:
        """The breaker's state as it is now (without moving OPEN on)."""
        ...

    def snapshot(self) -> tuple[int, int, int, int]:
        """This process's own window (all zeros unless CLOSED)."""
        ...

    def adopt_counts(self, remote: tuple[int, int, int, int]) -> None:
        """The other processes' window totals; the breaker trips if the sum says so."""
        ...

    def adopt_state(self, new: CircuitState, remaining: float, reason: str) -> None:
        """The fleet's newer state (OPEN for *remaining* seconds), taken without sharing it."""
        ...

    def judge_locally(self) -> None:
        """The store can no longer judge HALF_OPEN probes: the breaker judges its own."""
        ...


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

    def transition(self, new: CircuitState, manual: bool) -> None:
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

    def bind(self, port: BreakerPort) -> BreakerBinding | None:
        """Link the breaker behind *port* to the store; None means "keep state in the
        breaker"."""
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

    def bind(self, port: BreakerPort) -> None:
        """Nothing to link: the breaker keeps its own state."""
        return None

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "InMemoryStore()"


public("resilience.stores", BreakerBinding, BreakerPort, BreakerStore, InMemoryStore)
