"""Effects that happen once: the server side of ``Idempotency-Key``, and functions that run once.

- `Idempotency`: settings for the integrations (``add_resilience(app, idempotency=keys)``,
  ``Resilience(app, idempotency=keys)``): a request retried with the same
  ``Idempotency-Key`` gets the first response replayed instead of doing the work again.
- `idempotent`: the same for a function or a job: once per key, the result stored.
- `IdempotencyConflict`: the key is being run elsewhere right now (HTTP: 409).
- `StoreUnavailable`: the store cannot be reached; nothing was run (HTTP: 503).

Records live in a `resilience.stores.MemoryStore` (one process) or a
`resilience.stores.RedisStore` (every worker). The client half is
``ResilientTransport(idempotency_keys=True)``, which sends the keys and retries with them.

Example:
    >>> from resilience.idempotency import Idempotency, idempotent
    >>> from resilience.stores import MemoryStore
    >>> keys = Idempotency(store=MemoryStore(), ttl=86_400)
    >>> @idempotent(key=lambda n: n, store=MemoryStore())
    ... def charge(n: int) -> int:
    ...     return n * 100
    >>> charge(3)
    300
"""

from __future__ import annotations

from ._idempotency._backend import IdempotencyConflict, StoreUnavailable
from ._idempotency._decorator import idempotent
from ._idempotency._http import Idempotency

__all__ = ["Idempotency", "IdempotencyConflict", "StoreUnavailable", "idempotent"]
