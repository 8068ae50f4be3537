"""The seam between the broker-neutral handling core and one broker's client library.

A broker adapter (``resilience.integrations.aio_pika``) implements `BrokerPort` for its
message type and hands each delivered message to `Subscription.process`; the core decides
and calls back through the port. Nothing in the core imports a broker library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

__all__ = ["BrokerPort", "M"]

M = TypeVar("M")
"""The broker library's message type (aio-pika: ``AbstractIncomingMessage``)."""
_M_contra = TypeVar("_M_contra", contravariant=True)


class BrokerPort(Protocol[_M_contra]):
    """What the handling core needs from a broker, for messages of type ``M``.

    Settling (``ack``, ``requeue``, ``reject``) never raises: when the connection that
    delivered the message is gone, the broker delivers it again anyway, and the dedupe
    store makes that delivery a no-op. ``redeliver`` and ``dead_letter`` publish a copy
    (with publisher confirms) and then ack the original; they raise if the copy could not be
    published, leaving the original unsettled.

    Example:
        ```python
        class MyBrokerPort:            # one per subscription, for the broker's message type
            system = "mybroker"
            def message_id(self, message): return message.id
            def headers(self, message): return message.headers or {}
            async def ack(self, message): ...
            ...                         # requeue, reject, redeliver, dead_letter, pause, resume

        subscription = Subscription(consumer, handle, MyBrokerPort(), "orders")
        # the broker client's callback then calls subscription.deliver(message)
        ```
    """

    system: str
    """The broker's name for telemetry (``messaging.system``), e.g. ``"rabbitmq"``."""

    def message_id(self, message: _M_contra) -> str | None:
        """The message's id as the publisher set it, or None."""
        ...

    def headers(self, message: _M_contra) -> Mapping[str, Any]:
        """The message's headers (empty when it has none)."""
        ...

    async def ack(self, message: _M_contra) -> None:
        """The message is done with: the broker forgets it."""
        ...

    async def requeue(self, message: _M_contra) -> None:
        """Put the message back in its queue now (not a try)."""
        ...

    async def reject(self, message: _M_contra) -> None:
        """Drop the message (the queue's own dead-letter exchange, if any, gets it)."""
        ...

    async def redeliver(self, message: _M_contra, delay: float, headers: dict[str, Any]) -> None:
        """Deliver a copy with *headers* to the queue again after *delay* seconds; ack it."""
        ...

    async def dead_letter(self, message: _M_contra, headers: dict[str, Any]) -> None:
        """Put a copy with *headers* in the dead letters; ack the original."""
        ...

    async def pause(self) -> None:
        """Stop taking messages (messages already delivered still come to the core)."""
        ...

    async def resume(self) -> None:
        """Take messages again."""
        ...
