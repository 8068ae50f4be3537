"""One request's state across its attempts (`Call`), the small pieces each attempt reads,
and the checks of the callables a transport is given.

Split from `._core` so that the core holds the logic and this module the data around it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context

from .. import _validate
from .._breaker._breaker import CircuitBreaker
from .._errors import ConfigError
from .._observe._otel_gate import inject_context
from .._retry._budget import RetryBudget
from .._retry._retry import Retry
from .._retry._shape import check_arity
from ..backoff import TenacityWait
from ._outer import Logical
from ._routing import Route
from ._rules import Expiry, RequestLike

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = [
    "Call",
    "check_inner",
    "check_sleep",
    "current_otel_context",
    "inject_trace_context",
    "retry_plan",
]


def inject_trace_context(headers: Any) -> None:
    """Put the current W3C trace context (``traceparent``...) into *headers*.

    Costs about 0.1 µs when the OpenTelemetry context is empty (no span, no baggage: the
    case without an SDK), where the propagators would have nothing to write.
    """
    if current_otel_context():
        inject_context(headers)


def _context_getter() -> Callable[[], object]:
    """`opentelemetry.context.get_current`, or straight its context variable's ``get`` (the
    default runtime context keeps the context in one): a C call instead of two Python ones."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if isinstance(variable, contextvars.ContextVar):
        return variable.get
    return otel_context.get_current  # pragma: no cover - another runtime context


current_otel_context: Final = _context_getter()
"""The current OpenTelemetry context (empty when there is no span and no baggage)."""


class Call:
    """The state of one logical request across its attempts (one per `handle_request`).

    Unslotted, with its defaults on the class: a new call then writes two attributes, not
    sixteen (most requests never set the rest).
    """

    attempt: int = 0
    breaker: CircuitBreaker | None = None
    route: Route | None = None
    """Set when the request's host is an upstream's name: its endpoints are picked per
    attempt."""
    expiry: Expiry | None = None
    """The deadline active for the attempt (read again by the drivers while the answer
    arrives)."""
    cut: tuple[str, ...] = ()
    """The timeout parts the deadline shortened below the transport's own."""
    retry: Retry | None = None
    max_attempts: int = 1
    idempotent: bool = False
    must_read: bool = False
    scope: float | None = None
    permit: int = 0
    started: float = 0.0
    timer: _validate.Clock | None = None
    """The breaker's clock while it times calls (``slow_call_duration``), else None."""
    state: RetryCallState | None = None
    """The tenacity state when the retry's backoff is a tenacity wait."""
    logical: Logical | None = None
    """The call an SDK above us is retrying, when it says so (`._outer`)."""

    def __init__(self, request: RequestLike) -> None:
        self.request = request
        self.base_extensions = request.extensions


def retry_plan(retry: Retry) -> tuple[int, float | None, RetryBudget | None, bool]:
    """What a request reads of *retry* (immutable): attempts as set, total timeout, budget,
    and whether its backoff is a tenacity wait. The core keeps its own retry's plan."""
    return retry.attempts, retry.timeout, retry.budget, type(retry.backoff) is TenacityWait


def check_sleep(value: object) -> Any:
    """A transport's ``sleep``: a function taking the seconds to wait."""
    if not callable(value):
        msg = f"sleep must be a function taking seconds, got {value!r}"
        raise ConfigError(msg)
    return check_arity("sleep", value, args=1, takes="the seconds", fix="")


def check_inner(inner: Any, method: str) -> Any:
    """A transport's ``inner``: it must have *method* (``handle_request`` or the async one)."""
    # The common slip is handing a sync transport to the async twin (or the reverse).
    if not callable(getattr(inner, method, None)):
        msg = f"inner must be an httpx transport with {method}(), got {inner!r}"
        raise ConfigError(msg)
    return inner
