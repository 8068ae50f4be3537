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
    from ._breaker._breaker import BreakerConfig, BreakerMetrics, CircuitBreaker, CircuitState
    from ._breaker._registry import breakers
    from ._bulkhead import Bulkhead, bulkhead
    from ._deadline import deadline, remaining
    from ._fallback import Fallback, fallback
    from ._idempotency._backend import IdempotencyConflict
    from ._policy import Policy
    from ._retry._budget import RetryBudget
    from ._retry._retry import Retry, retry
    from ._timeout import Timeout, timeout

__all__ = [
    "BreakerConfig",
    "BreakerMetrics",
    "Bulkhead",
    "BulkheadFull",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "ConfigError",
    "DeadlineExceeded",
    "Fallback",
    "IdempotencyConflict",
    "Policy",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "Timeout",
    "__version__",
    "backoff",
    "breakers",
    "bulkhead",
    "deadline",
    "fallback",
    "remaining",
    "retry",
    "timeout",
]

# Where each public name lives; imported on first use so `import resilience` stays cheap
# (a breaker loads neither the retry engine nor asyncio).
_LAZY = {
    "BreakerConfig": "._breaker._breaker",
    "BreakerMetrics": "._breaker._breaker",
    "CircuitBreaker": "._breaker._breaker",
    "CircuitState": "._breaker._breaker",
    "breakers": "._breaker._registry",
    "RetryBudget": "._retry._budget",
    "Bulkhead": "._bulkhead",
    "bulkhead": "._bulkhead",
    "deadline": "._deadline",
    "remaining": "._deadline",
    "Fallback": "._fallback",
    "fallback": "._fallback",
    "IdempotencyConflict": "._idempotency._backend",
    "Policy": "._policy",
    "Retry": "._retry._retry",
    "retry": "._retry._retry",
    "Timeout": "._timeout",
    "timeout": "._timeout",
}
# Loaded names, kept out of globals(): doctest collects the examples of names it finds in
# this module's namespace, and which lazy names are loaded depends on what ran before, so
# they would be collected twice or not at all. Their examples run in their own modules.
_loaded: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    try:
        return _loaded[name]
    except KeyError:
        pass
    if name == "backoff":
        return importlib.import_module(".backoff", __name__)
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'resilience' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module, __name__), name)
    _loaded[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
