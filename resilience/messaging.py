"""Messaging: at-least-once delivery made effectively-once.

A broker delivers each message at least once: after a lost ack, a crash or a reconnect, the
same message comes again. A `Consumer` makes the effect happen once per message id: ids
already handled are skipped (and acked), failures come back through the broker after each
``redelivery`` delay and then go to the dead letters, and while the policy's breaker is open
the consumer pauses instead of burning tries.

The broker adapters run it: ``resilience.integrations.aio_pika.consume`` (RabbitMQ) returns
a `Subscription`; ``resilience.integrations.aio_pika.publish`` publishes with confirms, a
``message_id``, the trace context and the deadline.

Example:
    >>> from resilience import CircuitBreaker, Policy
    >>> from resilience.messaging import Consumer
    >>> from resilience.stores import MemoryStore
    >>> orders = Consumer(
    ...     "orders",
    ...     dedupe=MemoryStore(),
    ...     policy=Policy(attempt_timeout=5.0, breaker=CircuitBreaker("doc-messaging-db")),
    ...     redelivery=(1.0, 5.0, 30.0),
    ...     poison=(ValueError,),
    ... )
    >>> orders.max_tries
    4
"""

from __future__ import annotations

from ._messaging._events import (
    ConsumerPaused,
    ConsumerResumed,
    MessageDeadLettered,
    MessageDuplicate,
    MessageRedelivered,
)
from ._messaging._handling import ConsumerTrouble, MissingMessageId, Subscription
from ._messaging._headers import (
    ATTEMPTS,
    DEADLINE,
    ERROR_MESSAGE,
    ERROR_TYPE,
    FIRST_FAILURE,
    LAST_FAILURE,
    ORIGINAL_QUEUE,
)
from ._messaging._port import BrokerPort
from ._messaging._settings import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_REDELIVERY,
    DEFAULT_TTL,
    Consumer,
)
from ._public import public

__all__ = [
    "ATTEMPTS",
    "DEADLINE",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_REDELIVERY",
    "DEFAULT_TTL",
    "ERROR_MESSAGE",
    "ERROR_TYPE",
    "FIRST_FAILURE",
    "LAST_FAILURE",
    "ORIGINAL_QUEUE",
    "BrokerPort",
    "Consumer",
    "ConsumerPaused",
    "ConsumerResumed",
    "ConsumerTrouble",
    "MessageDeadLettered",
    "MessageDuplicate",
    "MessageRedelivered",
    "MissingMessageId",
    "Subscription",
]

public(
    "resilience.messaging",
    BrokerPort,
    Consumer,
    ConsumerPaused,
    ConsumerResumed,
    ConsumerTrouble,
    MessageDeadLettered,
    MessageDuplicate,
    MessageRedelivered,
    MissingMessageId,
    Subscription,
)
