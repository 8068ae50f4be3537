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

from ._idempotency._memory import MemoryStore
from ._stores._protocol import BreakerBinding, BreakerPort, BreakerStore, InMemoryStore
from ._stores._redis_store import RedisStore

__all__ = [
    "BreakerBinding",
    "BreakerPort",
    "BreakerStore",
    "InMemoryStore",
    "MemoryStore",
    "RedisStore",
]
