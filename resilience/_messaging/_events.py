"""The consumer's events: pauses, redeliveries, dead letters, duplicates.

Like every event of the library they carry names, numbers and exception type names only:
never a message body, a header or an exception's message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from .._observe._events import Event

__all__ = [
    "ConsumerPaused",
    "ConsumerResumed",
    "MessageDeadLettered",
    "MessageDuplicate",
    "MessageRedelivered",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerPaused(Event):
    """The consumer stopped taking messages for ``seconds`` (``reason``: breaker or store).

    Example:
        >>> ConsumerPaused(name="orders", queue="orders", seconds=5.0, reason="breaker").event
        'consumer.paused'
    """

    event: ClassVar[str] = "consumer.paused"
    level: ClassVar[int] = logging.WARNING
    name: str
    queue: str
    seconds: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerResumed(Event):
    """The consumer takes messages again.

    Example:
        >>> ConsumerResumed(name="orders", queue="orders").event
        'consumer.resumed'
    """

    event: ClassVar[str] = "consumer.resumed"
    level: ClassVar[int] = logging.INFO
    name: str
    queue: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRedelivered(Event):
    """Try number ``attempt`` failed with ``error``; the message comes back after ``delay``.

    Example:
        >>> MessageRedelivered(name="o", queue="o", attempt=1, delay=1.0, error="OSError").event
        'consumer.redelivered'
    """

    event: ClassVar[str] = "consumer.redelivered"
    level: ClassVar[int] = logging.INFO
    name: str
    queue: str
    attempt: int
    delay: float
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDeadLettered(Event):
    """The message was given up after ``attempts`` tries (``reason``: poison, expired...).

    Example:
        >>> MessageDeadLettered(
        ...     name="o", queue="o", attempts=4, reason="exhausted", error="OSError"
        ... ).event
        'consumer.dead_lettered'
    """

    event: ClassVar[str] = "consumer.dead_lettered"
    level: ClassVar[int] = logging.WARNING
    name: str
    queue: str
    attempts: int
    reason: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDuplicate(Event):
    """A message whose id was already handled was acked without running.

    Example:
        >>> MessageDuplicate(name="orders", queue="orders").event
        'consumer.duplicate'
    """

    event: ClassVar[str] = "consumer.duplicate"
    level: ClassVar[int] = logging.DEBUG
    name: str
    queue: str
