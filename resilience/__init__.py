"""Circuit breakers, retries, deadlines, bulkheads and fallbacks for sync and async Python.

Example:
    >>> from resilience import CircuitBreaker
    >>> breaker = CircuitBreaker("doc-init", consecutive_failures=3)
    >>> @breaker
    ... def ping() -> str:
    ...     return "pong"
    >>> ping()
    'pong'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    BulkheadFull,
    CircuitOpenError,
    ConfigError,
    DeadlineExceeded,
    ResilienceError,
)
from ._version import __version__

if TYPE_CHECKING:
    from . import backoff
    from ._breaker import CircuitBreaker, CircuitState
    from ._budget import RetryBudget
    from ._bulkhead import Bulkhead, bulkhead
    from ._deadline import deadline, remaining
    from ._fallback import fallback
    from ._idempotency._backend import IdempotencyConflict
    from ._policy import Policy
    from ._retry import Retry, retry
    from ._timeout import timeout

__all__ = [
    "Bulkhead",
    "BulkheadFull",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "ConfigError",
    "DeadlineExceeded",
    "IdempotencyConflict",
    "Policy",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "__version__",
    "backoff",
    "bulkhead",
    "deadline",
    "fallback",
    "remaining",
    "retry",
    "timeout",
]

# Where each public name lives; imported on first use so `import resilience` stays cheap.
_LAZY = {
    "CircuitBreaker": "._breaker",
    "CircuitState": "._breaker",
    "RetryBudget": "._budget",
    "Bulkhead": "._bulkhead",
    "bulkhead": "._bulkhead",
    "deadline": "._deadline",
    "remaining": "._deadline",
    "fallback": "._fallback",
    "IdempotencyConflict": "._idempotency._backend",
    "Policy": "._policy",
    "Retry": "._retry",
    "retry": "._retry",
    "timeout": "._timeout",
}


def __getattr__(name: str) -> Any:
    if name == "backoff":
        return importlib.import_module(".backoff", __name__)
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'resilience' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
