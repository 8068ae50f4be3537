"""`Consumer`: what a message consumer does with each message, validated once.

A `Consumer` holds settings and shared objects only (the dedupe store, the policy with its
live breaker); the running side is a `Subscription`, made by a broker adapter such as
``resilience.integrations.aio_pika.consume``. One `Consumer` may serve several queues: its
name scopes the message ids it remembers, so two consumers with different names handle the
same message independently.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from .._errors import ConfigError
from .._policy import Policy
from .._validate import (
    Clock,
    Duration,
    duration,
    exception_filter,
    required_duration,
    required_name,
)
from .._validate import clock as check_clock

if TYPE_CHECKING:
    from .._idempotency._backend import IdempotencyBackend

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_REDELIVERY",
    "DEFAULT_TTL",
    "Consumer",
    "Handler",
    "KeyFunction",
]

DEFAULT_REDELIVERY: Final = (1.0, 5.0, 30.0)
"""Seconds before each redelivery: three more tries after the first, then the dead letters."""

DEFAULT_TTL: Final = 86_400.0
"""How long a handled message id is remembered (a day): duplicates later than that run again."""

DEFAULT_LOCK_TIMEOUT: Final = 60.0
"""A message id claimed longer ago than this (its consumer died) may be taken over."""

# RabbitMQ's x-message-ttl is an unsigned 32-bit number of milliseconds.
MAX_DELAY: Final = (2**32 - 1) / 1000.0

Handler: TypeAlias = Callable[[Any], Awaitable[object]] | Callable[[Any], object]
"""``handle(message)``: sync or async; it gets the broker's own message and must not settle it."""

KeyFunction: TypeAlias = Callable[[Any], str | None]
"""``key(message) -> str``: the message's id when it is not the ``message_id`` property."""

AsyncSleep: TypeAlias = Callable[[float], Awaitable[object]]


def _delays(value: object) -> tuple[float, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        msg = (
            f"redelivery must be a sequence of delays in seconds, e.g. (1.0, 5.0, 30.0), "
            f"or () for none, got {value!r}"
        )
        raise ConfigError(msg)
    delays = []
    for index, item in enumerate(value):
        seconds = duration(f"redelivery[{index}]", item, allow_zero=True)
        assert seconds is not None
        if seconds > MAX_DELAY:
            msg = f"redelivery[{index}] must be at most {MAX_DELAY:g} seconds, got {item!r}"
            raise ConfigError(msg)
        delays.append(seconds)
    return tuple(delays)


def _policy(value: object) -> Policy | None:
    if value is not None and not isinstance(value, Policy):
        msg = f"policy must be a resilience.Policy, got {value!r}"
        raise ConfigError(msg)
    return value


def _flag(setting: str, value: object) -> bool:
    if not isinstance(value, bool):
        msg = f"{setting} must be True or False, got {value!r}"
        raise ConfigError(msg)
    return value


def _key(value: object) -> KeyFunction | None:
    if value is not None and not callable(value):
        msg = f"key must be a function taking the message and returning its id, got {value!r}"
        raise ConfigError(msg)
    return value


def _asleep(value: object) -> AsyncSleep:
    if not callable(value):
        msg = f"asleep must be an async sleep function like asyncio.sleep, got {value!r}"
        raise ConfigError(msg)
    return value


def _policy_bound(policy: Policy | None) -> float | None:
    """The longest a handling can take under *policy* (None: nothing bounds it)."""
    if policy is None:
        return None
    bounds = [s for s in (policy.timeout, policy.attempt_timeout) if s is not None]
    return min(bounds) if bounds else None


def is_async(fn: object) -> bool:
    """True for ``async def`` functions and objects whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004  # the method itself, not callable()
    )


class Consumer:
    """How a queue's messages are handled: dedupe, policy, redelivery, dead letters.

    Each message runs ``handle(message)`` once per message id: an id already handled
    (remembered in ``dedupe``, under this consumer's name) is acked without running again.
    ``handle`` runs through ``policy`` (its breaker, timeouts, bulkhead and fallback; a
    ``Retry`` in it is not used, because redelivery through the broker replaces it). A
    failure is redelivered after each delay of ``redelivery``, then dead-lettered; an
    exception listed in ``poison`` is dead-lettered at once. While the policy's breaker is
    open the consumer pauses, and the rejected message goes back to the queue without
    counting as a try.

    Args:
        name: scopes the remembered message ids; also names the consumer in events and logs.
        dedupe: where handled ids are kept: a ``resilience.stores.MemoryStore`` (this process
            only) or ``RedisStore`` (every consumer process), or None (no dedupe: a message
            delivered twice runs twice).
        policy: a `resilience.Policy` each handling runs through, or None.
        redelivery: seconds before each redelivery (through the broker, the consumer does
            not hold the message meanwhile); a message is tried at most
            ``1 + len(redelivery)`` times.
        dead_letter: True sends what could not be handled to the queue ``<queue>.dead`` with
            headers saying why; False rejects it (the queue's own dead-letter exchange, if
            the application declared one, gets it).
        poison: exception types (or a predicate) that mean "this message can never be
            handled": dead-lettered at once, without redelivery.
        key: ``key(message) -> str``: the message id, when it is not ``message_id``.
        ttl: seconds a handled id is remembered.
        lock_timeout: seconds after which an id claimed by a consumer that never finished
            (it crashed) may be claimed again; longer than any handling can take.
        wall_clock: ``time.time``: failure times and message deadlines are wall-clock times.
        asleep: the async sleep used to wait before resuming after a pause.

    Example:
        >>> from resilience import CircuitBreaker, Policy
        >>> from resilience.messaging import Consumer
        >>> orders = Consumer(
        ...     "orders",
        ...     policy=Policy(attempt_timeout=5.0, breaker=CircuitBreaker("doc-orders-db")),
        ...     redelivery=(1.0, 5.0, 30.0),
        ...     poison=(ValueError,),
        ... )
        >>> orders.max_tries
        4
    """

    __slots__ = (
        "_asleep",
        "_backend",
        "_dead_letter",
        "_dedupe",
        "_key",
        "_lock_timeout",
        "_name",
        "_poison",
        "_poison_setting",
        "_policy",
        "_redelivery",
        "_ttl",
        "_wall_clock",
    )

    def __init__(
        self,
        name: str,
        *,
        dedupe: object | None = None,
        policy: Policy | None = None,
        redelivery: Sequence[Duration] = DEFAULT_REDELIVERY,
        dead_letter: bool = True,
        poison: type[BaseException]
        | tuple[type[BaseException], ...]
        | Callable[[BaseException], bool] = (),
        key: KeyFunction | None = None,
        ttl: Duration = DEFAULT_TTL,
        lock_timeout: Duration = DEFAULT_LOCK_TIMEOUT,
        wall_clock: Clock = time.time,
        asleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        self._name = required_name("name", name)
        self._policy = _policy(policy)
        self._redelivery = _delays(redelivery)
        self._dead_letter = _flag("dead_letter", dead_letter)
        self._poison_setting = poison
        self._poison = exception_filter("poison", poison)
        self._key = _key(key)
        self._ttl = required_duration("ttl", ttl)
        self._lock_timeout = required_duration("lock_timeout", lock_timeout)
        bound = _policy_bound(policy)
        if bound is not None and bound >= self._lock_timeout:
            msg = (
                f"lock_timeout must be longer than the policy's timeout ({bound:g} s), "
                f"or another consumer could take over a message still being handled; "
                f"got {self._lock_timeout:g}"
            )
            raise ConfigError(msg)
        self._wall_clock = check_clock("wall_clock", wall_clock)
        self._asleep = _asleep(asleep)
        self._dedupe = dedupe
        self._backend = None if dedupe is None else _backend(dedupe)

    # -- the settings ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name that scopes this consumer's message ids."""
        return self._name

    @property
    def dedupe(self) -> object | None:
        """The store handled ids are kept in, or None."""
        return self._dedupe

    @property
    def policy(self) -> Policy | None:
        """The policy each handling runs through, or None."""
        return self._policy

    @property
    def redelivery(self) -> tuple[float, ...]:
        """Seconds before each redelivery."""
        return self._redelivery

    @property
    def max_tries(self) -> int:
        """The most times one message is tried: ``1 + len(redelivery)``."""
        return 1 + len(self._redelivery)

    @property
    def dead_letter(self) -> bool:
        """Whether failed messages go to ``<queue>.dead``."""
        return self._dead_letter

    @property
    def key(self) -> KeyFunction | None:
        """The function giving a message's id, or None (``message_id`` is used)."""
        return self._key

    @property
    def ttl(self) -> float:
        """Seconds a handled id is remembered."""
        return self._ttl

    @property
    def lock_timeout(self) -> float:
        """Seconds before an unfinished claim may be taken over."""
        return self._lock_timeout

    @property
    def wall_clock(self) -> Clock:
        """The wall clock (``time.time``)."""
        return self._wall_clock

    @property
    def asleep(self) -> AsyncSleep:
        """The async sleep."""
        return self._asleep

    @property
    def backend(self) -> IdempotencyBackend | None:
        """The idempotency backend behind ``dedupe`` (internal: used by the handling core)."""
        return self._backend

    def is_poison(self, exc: BaseException) -> bool:
        """Whether *exc* means the message can never be handled."""
        return self._poison(exc)

    def scoped(self, message_id: str) -> str:
        """The dedupe key of *message_id*: scoped by this consumer's name.

        Example:
            >>> from resilience.messaging import Consumer
            >>> Consumer("orders").scoped("42")
            'message:orders:42'
        """
        return f"message:{self._name}:{message_id}"

    def __repr__(self) -> str:
        parts = [repr(self._name)]
        if self._dedupe is not None:
            parts.append(f"dedupe={self._dedupe!r}")
        if self._policy is not None:
            parts.append(f"policy={self._policy!r}")
        parts.append(f"redelivery={self._redelivery!r}")
        parts.append(f"dead_letter={self._dead_letter!r}")
        if self._poison_setting != ():
            parts.append(f"poison={self._poison_setting!r}")
        if self._key is not None:
            parts.append(f"key={self._key!r}")
        return f"Consumer({', '.join(parts)})"


def _backend(dedupe: object) -> IdempotencyBackend:
    from .._idempotency._backend import backend_for

    try:
        return backend_for(dedupe)
    except ConfigError:
        msg = (
            f"dedupe must be a resilience.stores.MemoryStore or RedisStore (or an "
            f"idempotency backend), got {dedupe!r}"
        )
        raise ConfigError(msg) from None
