"""A retry budget counted over the fleet: the budget, and its link to a `RedisStore`.

Each process counts its own calls and retries (no Redis call per call or retry); its binding
publishes them and reads the other processes' totals, which the budget adds when it decides.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import _validate
from .._retry._budget import RetryBudget
from ._bindings import Published
from ._records import BadRecord, budget_window

if TYPE_CHECKING:
    from ._redis_store import RedisStore

__all__ = ["BudgetBinding", "SharedRetryBudget"]


class SharedRetryBudget(RetryBudget):
    """A `RetryBudget` that adds the other processes' calls and retries (see
    `RedisStore.retry_budget`); counting stays local and lock-cheap."""

    __slots__ = ("__weakref__", "_remote", "name")

    def __init__(
        self,
        name: str,
        *,
        ratio: float,
        min_per_second: float,
        ttl: _validate.Duration,
        clock: _validate.Clock,
    ) -> None:
        super().__init__(ratio, min_per_second, ttl, clock=clock)
        self.name = name
        self._remote = (0, 0)

    def _totals(self, epoch: int) -> tuple[int, int]:
        calls, retries = super()._totals(epoch)
        remote = self._remote
        return calls + remote[0], retries + remote[1]

    def local_totals(self) -> tuple[int, int]:
        """This process's own calls and retries inside the ttl."""
        now = self._clock()
        with self._lock:
            epoch, _ = self._slot(now)
            return RetryBudget._totals(self, epoch)

    def __repr__(self) -> str:
        return f"<SharedRetryBudget {self.name!r} available={self.available()}>"


class BudgetBinding(Published):
    """A shared retry budget's link to its store: publishes and reads "calls:retries"."""

    __slots__ = ("_budget_ref", "name")

    def __init__(self, store: RedisStore, budget: SharedRetryBudget) -> None:
        super().__init__(store, f"{store.prefix}{{budget:{budget.name}}}", 2 * budget.ttl)
        self.name = f"budget:{budget.name}"
        self._budget_ref: Callable[[], SharedRetryBudget | None] = weakref.ref(budget)

    @property
    def budget(self) -> SharedRetryBudget | None:
        """The budget, or None once it was garbage-collected."""
        return self._budget_ref()

    def snapshot(self, now: float, refresh: float) -> str:
        """This process's "calls:retries:version" (or '')."""
        budget = self.budget
        if budget is None:
            return ""
        calls, retries = budget.local_totals()
        return self._publish(f"{calls}:{retries}", not (calls or retries), now, refresh)

    def read(self, fields: dict[bytes, bytes], now: float) -> list[bytes]:
        """Give the budget the other processes' totals; return the fields of dead ones."""
        values, dead = self._others(fields, now)
        calls = retries = 0
        for value in values:
            try:
                peer_calls, peer_retries = budget_window(value)
            except BadRecord as bad:
                self.store._report(self.name, bad.what)
                continue
            calls += peer_calls
            retries += peer_retries
        budget = self.budget
        if budget is not None:
            budget._remote = (calls, retries)
        return dead

    def go_local(self) -> None:
        """Redis lost: count this process only."""
        budget = self.budget
        if budget is not None:
            budget._remote = (0, 0)
