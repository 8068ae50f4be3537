"""Fleet writes waiting for a store thread: one frozen operation per kind, and their queue.

A breaker tells its binding about a move with its own lock held, so the binding may only
queue the write; the store's sync thread (or, for a probe's caller, the probe lane) runs it.
The `Outbox` is owned by the store and lent to its bindings, with the lock that serialises
applying fleet state (`Outbox.apply_lock`).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._bindings import RedisBinding

__all__ = ["RELEASED", "Op", "Outbox", "ProbeOutcome", "Transition"]

# Ops queued at most: beyond it Redis has been gone for long, and local state rules.
_QUEUE_LIMIT: Final = 10_000
RELEASED: Final = -1
"""`ProbeOutcome.outcome` of a probe that ended with no outcome: its slot is given back."""


@dataclass(frozen=True, slots=True, eq=False)
class Transition:
    """Write this process's move of a breaker to the fleet state."""

    binding: RedisBinding
    #: The state written: "open", "closed", "forced_open" or "disabled".
    new: str
    #: The fleet epoch the move was decided in; '' for an operator's move (unconditional).
    expected: str
    done: threading.Event = field(default_factory=threading.Event, repr=False)


@dataclass(frozen=True, slots=True, eq=False)
class ProbeOutcome:
    """Report a HALF_OPEN probe's outcome to the fleet's tally (which may decide the round)."""

    binding: RedisBinding
    #: The fleet epoch of the OPEN state the probe belongs to.
    epoch: int
    #: The outcome bits (FAILURE | SLOW), or `RELEASED`.
    outcome: int
    done: threading.Event = field(default_factory=threading.Event, repr=False)


Op = Transition | ProbeOutcome


class Outbox:
    """The queue of fleet writes, bounded, safe from any thread.

    Probe outcomes are also listed per binding until they have run, so that a probe's caller
    can wait for its own (`claim_outcomes`).
    """

    __slots__ = ("_lock", "_pending", "_queue", "_wake", "apply_lock")

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake  # set on every put: the sync thread runs the queue at once
        self._queue: collections.deque[Op] = collections.deque()
        self._lock = threading.Lock()
        self._pending: dict[RedisBinding, list[ProbeOutcome]] = {}
        #: Held while fleet state is applied to a breaker: one source of truth at a time.
        self.apply_lock = threading.RLock()

    def __bool__(self) -> bool:
        return bool(self._queue)

    def put(self, op: Op) -> None:
        """Queue *op* (dropped if the queue is full: local state rules meanwhile)."""
        with self._lock:
            if len(self._queue) >= _QUEUE_LIMIT:
                return
            self._queue.append(op)
            if isinstance(op, ProbeOutcome):
                self._pending.setdefault(op.binding, []).append(op)
        self._wake.set()

    def drop_transitions(self, binding: RedisBinding) -> None:
        """Forget *binding*'s queued transitions not yet taken by a thread."""
        with self._lock:
            for op in [
                o for o in self._queue if o.binding is binding and isinstance(o, Transition)
            ]:
                self._queue.remove(op)

    def take(self) -> Op | None:
        """The oldest op, now the caller's to run (then `finish` or `requeue` it)."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def finish(self, op: Op) -> None:
        """*op* has run (or never will): release its waiters."""
        if isinstance(op, ProbeOutcome):
            with self._lock:
                pending = self._pending.get(op.binding)
                if pending is not None and op in pending:
                    pending.remove(op)
                    if not pending:
                        del self._pending[op.binding]
        op.done.set()

    def requeue(self, ops: list[Op]) -> None:
        """Put *ops* back at the head of the queue (Redis failed; replayed on rejoin)."""
        with self._lock:
            for op in reversed(ops):
                self._queue.appendleft(op)

    def claim_outcomes(
        self, binding: RedisBinding
    ) -> tuple[list[ProbeOutcome], list[ProbeOutcome]]:
        """*binding*'s probe outcomes not run yet, and those of them taken off the queue now
        (for the caller to run: the others are running in a thread already)."""
        with self._lock:
            pending = list(self._pending.get(binding, ()))
            mine = [op for op in pending if op in self._queue]
            for op in mine:
                self._queue.remove(op)
        return pending, mine
