"""RabbitMQ through aio-pika: `consume` with a `Consumer`, and `publish` with confirms.

`consume(channel, queue, handle, consumer)` subscribes ``handle`` to a queue the application
declared (its arguments are left alone) and declares only the consumer's own queues:

- ``<queue>.dead``: what could not be handled, with headers saying why;
- ``<queue>.delay.<ms>``: one per redelivery delay, with ``x-message-ttl`` and a dead-letter
  route back to ``<queue>`` through the default exchange; a failed message waits there, not
  in the consumer. They expire (``x-expires``) when no consumer has used them for a while.

Every copy it publishes (to a delay queue or the dead letters) is confirmed by the broker
before the original is acked; a message is acked only after its effect is recorded in the
dedupe store. Pausing cancels the subscription (messages that still arrive are requeued at
once) and resuming subscribes again. Use a robust connection (``aio_pika.connect_robust``):
after a reconnect aio-pika subscribes again on its own, and what was unacked comes back.

`publish(channel, exchange, routing_key, body)` waits for the broker's confirm, sets a
``message_id`` (kept on every attempt, so a repeated publish is deduped by the consumer),
the trace context and the deadline, and tries again on connection trouble.

Set the channel's prefetch (``await channel.set_qos(prefetch_count=N)``): it bounds how
many messages are handled at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import Any, Final

try:
    import aio_pika
    from aio_pika.abc import (
        AbstractChannel,
        AbstractExchange,
        AbstractIncomingMessage,
        AbstractQueue,
    )
    from aio_pika.exceptions import CONNECTION_EXCEPTIONS, PublishError
    from aiormq.abc import DeliveredMessage
except ImportError as exc:
    msg = (
        "resilience.integrations.aio_pika needs aio-pika; "
        "install it with: pip install 'resilience[rabbitmq]'"
    )
    raise ImportError(msg) from exc

from resilience._deadline import check_deadline, remaining
from resilience._errors import ConfigError
from resilience._messaging._handling import Subscription
from resilience._messaging._headers import outgoing_headers
from resilience._messaging._settings import Consumer, Handler
from resilience._messaging._trace import producer_span
from resilience._validate import Clock, Duration, required_duration, required_integer

__all__ = ["consume", "publish"]

SYSTEM: Final = "rabbitmq"
DEFAULT_PUBLISH_TIMEOUT: Final = 10.0
"""Seconds to wait for the broker's confirm of one publish attempt."""
DEFAULT_PUBLISH_ATTEMPTS: Final = 3
SETTLE_TIMEOUT: Final = 10.0
"""Seconds an ack or a reject may wait to be written before the message is left to the broker."""
# A delay queue lives this long (at least) after its last declaration, beyond its own TTL.
EXPIRES_MARGIN_MS: Final = 60_000
_PUBLISH_BACKOFF: Final = 0.1
# Settled tags an ack batcher keeps above its floor before it gives up batching (a channel
# shared with another consumer whose messages it never sees settled).
MAX_SETTLED: Final = 10_000

Message = AbstractIncomingMessage


def _require_channel(channel: object, what: str) -> AbstractChannel:
    if not isinstance(channel, AbstractChannel):
        msg = f"channel must be an aio-pika channel (await connection.channel()), got {channel!r}"
        raise ConfigError(msg)
    if not getattr(channel, "publisher_confirms", True):
        msg = (
            f"{what} needs a channel with publisher confirms, got one opened with "
            f"publisher_confirms=False; open it with await connection.channel()"
        )
        raise ConfigError(msg)
    return channel


class _Acks:
    """The acks of one AMQP channel, sent together: one ``multiple`` ack covers a run.

    Acking each message on its own costs a frame and a send call per message, about what
    the rest of a no-op handling costs. Acks asked for in the same loop turn (or while the
    previous batch is being written) go out together: one ``basic.ack(multiple=True)`` for
    the longest run of delivery tags, counted from the channel's first, in which every tag
    is acked now or was settled before; single acks for the rest. A tag this consumer never
    settled (still being handled, or another consumer's on a shared channel) ends the run,
    so a ``multiple`` ack never covers a message it does not own. On a channel shared with
    another consumer the run may never move: past `MAX_SETTLED` tags it stops trying.
    """

    __slots__ = ("_busy", "_channel", "_floor", "_pending", "_settled")

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._floor = 0  # every tag up to here is settled
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._settled: set[int] | None = set()  # settled tags above the floor; None: gave up
        self._busy = False

    def settled(self, tag: int) -> None:
        """*tag* was settled some other way (rejected, requeued, or by the handler)."""
        settled = self._settled
        if settled is not None and tag > self._floor:
            settled.add(tag)
            if len(settled) > MAX_SETTLED:
                self._settled = None

    async def ack(self, tag: int) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending[tag] = future
        if not self._busy:
            self._busy = True
            loop.call_soon(self._start, loop)
        await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.create_task(self._flush())

    def _run(self, tags: set[int]) -> int:
        """Move the floor over *tags* and the settled ones; the highest of *tags* passed."""
        settled = self._settled
        if settled is None:
            return 0
        covered = 0
        floor = self._floor
        while floor + 1 in tags or floor + 1 in settled:
            floor += 1
            settled.discard(floor)
            if floor in tags:
                covered = floor
        self._floor = floor
        return covered

    async def _flush(self) -> None:
        while self._pending:
            pending, self._pending = self._pending, {}
            tags = set(pending)
            covered = self._run(tags)
            try:
                # Bounded: on a connection that died with frames still queued, nothing would
                # ever drain; the broker delivers those messages again anyway.
                async with asyncio.timeout(SETTLE_TIMEOUT):
                    if covered:
                        await self._channel.basic_ack(covered, multiple=True, wait=False)
                    for tag in sorted(t for t in tags if t > covered):
                        self.settled(tag)
                        await self._channel.basic_ack(tag, wait=False)
            except (*CONNECTION_EXCEPTIONS, TimeoutError):
                pass  # the channel is gone: the broker delivers the messages again
            finally:
                for future in pending.values():
                    if not future.done():
                        future.set_result(None)
        self._busy = False


class _Port:
    """`BrokerPort` for aio-pika: settles, republishes and (un)subscribes one queue."""

    system = SYSTEM

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, consumer: Consumer) -> None:
        self._channel = channel
        self._queue = queue
        self._name = queue.name
        self._consumer = consumer
        self._dead = f"{queue.name}.dead"
        self._declared: dict[str, float] = {}
        self._channels: weakref.WeakKeyDictionary[Any, _Acks] = weakref.WeakKeyDictionary()
        self._tag: str | None = None
        self._subscription: Subscription[Message] | None = None

    def bind(self, subscription: Subscription[Message]) -> None:
        self._subscription = subscription

    # -- reading a message ------------------------------------------------------------------

    def message_id(self, message: Message) -> str | None:
        return message.message_id

    def headers(self, message: Message) -> Mapping[str, Any]:
        return message.headers or {}

    # -- settling ---------------------------------------------------------------------------

    def _acks(self, message: Message) -> _Acks | None:
        """The ack batcher of the channel that delivered *message* (None: it is closed)."""
        try:
            channel = message.channel
        except CONNECTION_EXCEPTIONS:
            return None
        acks = self._channels.get(channel)
        if acks is None:
            # A robust connection opens a new channel after a reconnect; tags restart.
            acks = self._channels[channel] = _Acks(channel)
        return acks

    async def ack(self, message: Message) -> None:
        acks = self._acks(message)
        tag = message.delivery_tag
        if acks is None or tag is None:
            return  # the channel is gone: the broker delivers the message again
        if message.processed:
            acks.settled(tag)  # the handler settled it, against the rules: do not ack twice
            return
        await acks.ack(tag)

    async def requeue(self, message: Message) -> None:
        await self._reject(message, requeue=True)

    async def reject(self, message: Message) -> None:
        await self._reject(message, requeue=False)

    async def _reject(self, message: Message, *, requeue: bool) -> None:
        acks = self._acks(message)
        tag = message.delivery_tag
        if acks is None or tag is None:
            return
        try:
            if not message.processed:
                await asyncio.wait_for(message.reject(requeue=requeue), SETTLE_TIMEOUT)
        except (*CONNECTION_EXCEPTIONS, TimeoutError):
            return
        acks.settled(tag)

    async def redeliver(self, message: Message, delay: float, headers: dict[str, Any]) -> None:
        if not await self._copy(message, await self._delay_queue(delay), headers, delay):
            return
        await self.ack(message)

    async def dead_letter(self, message: Message, headers: dict[str, Any]) -> None:
        if not await self._copy(message, self._dead, headers, None):
            return
        await self.ack(message)

    async def _copy(
        self, message: Message, queue: str, headers: dict[str, Any], delay: float | None
    ) -> bool:
        """Publish a copy of *message* to *queue*; False when its own channel is gone."""
        try:
            message.channel  # noqa: B018  # raises once the delivering channel is closed
        except CONNECTION_EXCEPTIONS:
            # The broker requeued the original when its channel closed: a copy would be
            # a second one.
            return False
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=message.delivery_mode,
            priority=message.priority,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
        )
        returned = await self._publish(copy, queue)
        if returned is None:
            return True
        # Returned: the queue is gone (deleted by hand, or a delay queue expired).
        if delay is None:
            await self._declare_dead()
        else:
            self._declared.pop(queue, None)
            await self._delay_queue(delay)
        returned = await self._publish(copy, queue)
        if returned is None:
            return True
        # Still returned after declaring it again: refused on purpose (a policy, a limit).
        raise PublishError(returned, returned.delivery)

    async def _publish(self, copy: aio_pika.Message, queue: str) -> DeliveredMessage | None:
        """Publish through the default exchange; the message if the broker returned it."""
        async with asyncio.timeout(DEFAULT_PUBLISH_TIMEOUT):  # a robust channel may wait
            result = await self._channel.default_exchange.publish(
                copy, routing_key=queue, mandatory=True
            )
        return result if isinstance(result, DeliveredMessage) else None

    # -- the consumer's own queues ------------------------------------------------------------

    async def declare(self) -> None:
        """Declare the dead letters and every delay queue up front (fail early on rights)."""
        if self._consumer.dead_letter:
            await self._declare_dead()
        for delay in sorted(set(self._consumer.redelivery)):
            await self._delay_queue(delay)

    async def _declare_dead(self) -> None:
        async with asyncio.timeout(DEFAULT_PUBLISH_TIMEOUT):
            channel = await self._channel.get_underlay_channel()
            await channel.queue_declare(self._dead, durable=True)

    async def _delay_queue(self, delay: float) -> str:
        ms = round(delay * 1000)
        name = f"{self._name}.delay.{ms}"
        margin = max(ms, EXPIRES_MARGIN_MS)
        now = time.monotonic()
        declared = self._declared.get(name)
        # Publishing does not count as using a queue, declaring does: declare again well
        # before x-expires could delete the queue with messages still waiting in it.
        if declared is None or now - declared > margin / 2000:
            async with asyncio.timeout(DEFAULT_PUBLISH_TIMEOUT):
                channel = await self._channel.get_underlay_channel()
                await channel.queue_declare(
                    name,
                    durable=True,
                    arguments={
                        "x-message-ttl": ms,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": self._name,
                        "x-expires": ms + margin,
                    },
                )
            self._declared[name] = now
        return name

    # -- subscribing ------------------------------------------------------------------------

    async def _on_message(self, message: Message) -> None:
        assert self._subscription is not None
        self._subscription.deliver(message)

    async def pause(self) -> None:
        tag, self._tag = self._tag, None
        if tag is None:
            return
        try:
            await asyncio.wait_for(self._queue.cancel(tag), DEFAULT_PUBLISH_TIMEOUT)
        except (*CONNECTION_EXCEPTIONS, TimeoutError):
            pass  # the channel is gone, and with it the subscription

    async def resume(self) -> None:
        if self._tag is not None:
            return
        # Our own tag, known before the broker answers: if the answer does not come in
        # time, the subscription may exist all the same, and pause() can still cancel it.
        self._tag = f"resilience.{uuid.uuid4().hex}"
        await asyncio.wait_for(
            self._queue.consume(self._on_message, consumer_tag=self._tag),
            DEFAULT_PUBLISH_TIMEOUT,
        )


def _require_consumer(consumer: object) -> None:
    if not isinstance(consumer, Consumer):
        msg = f"consumer must be a resilience.messaging.Consumer, got {consumer!r}"
        raise ConfigError(msg)


async def _work_queue(channel: AbstractChannel, queue: object) -> AbstractQueue:
    """The application's queue, as it declared it (a passive declaration checks it exists)."""
    if isinstance(queue, AbstractQueue):
        return queue
    if not isinstance(queue, str) or not queue:
        msg = f"queue must be a queue's name or an aio-pika queue, got {queue!r}"
        raise ConfigError(msg)
    return await channel.get_queue(queue, ensure=True)


def _message(body: object) -> aio_pika.Message:
    if isinstance(body, aio_pika.Message):
        return body
    if isinstance(body, bytes | bytearray):
        return aio_pika.Message(bytes(body), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    msg = f"body must be bytes or an aio_pika.Message, got {type(body).__name__}"
    raise ConfigError(msg)


async def consume(
    channel: AbstractChannel,
    queue: str | AbstractQueue,
    handle: Handler,
    consumer: Consumer,
) -> Subscription[AbstractIncomingMessage]:
    """Handle every message of *queue* with *handle*, as *consumer* says; returns at once.

    *queue* is a queue the application declared (a name, or the `aio_pika` queue object).
    ``handle(message)`` (sync or async) gets the `aio_pika.abc.AbstractIncomingMessage` and
    must not settle it. The channel must have publisher confirms (the default).

    Example:
        ```python
        connection = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1/")
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=32)
        await channel.declare_queue("orders", durable=True)
        subscription = await consume(channel, "orders", handle, orders)
        ...
        await subscription.stop()
        ```
    """
    channel = _require_channel(channel, "consume")
    _require_consumer(consumer)
    work = await _work_queue(channel, queue)
    port = _Port(channel, work, consumer)
    subscription: Subscription[Message] = Subscription(consumer, handle, port, work.name)
    port.bind(subscription)
    await port.declare()
    await port.resume()
    return subscription


async def publish(
    channel: AbstractChannel,
    exchange: str | AbstractExchange,
    routing_key: str,
    body: bytes | aio_pika.Message,
    *,
    message_id: str | None = None,
    headers: Mapping[str, Any] | None = None,
    mandatory: bool = True,
    attempts: int = DEFAULT_PUBLISH_ATTEMPTS,
    confirm_timeout: Duration = DEFAULT_PUBLISH_TIMEOUT,
    wall_clock: Clock = time.time,
) -> str:
    """Publish *body* and wait for the broker's confirm; returns the ``message_id``.

    *body* is bytes (sent persistent) or an `aio_pika.Message` whose properties are kept.
    The message gets a ``message_id`` (a new one unless given), the current trace context,
    and inside `resilience.deadline` the deadline (``x-deadline``). Connection trouble and
    a missing confirm are tried again up to *attempts* times with the same ``message_id``,
    so a consumer with dedupe sees one message however many copies arrive; each attempt waits
    up to ``confirm_timeout`` seconds for the confirm (less when the deadline is nearer).
    ``mandatory``:
    a message no queue takes raises `aio_pika.exceptions.PublishError` (never retried).

    Example:
        ```python
        message_id = await publish(channel, "", "orders", b'{"order": 42}')
        ```
    """
    channel = _require_channel(channel, "publish")
    tries = required_integer("attempts", attempts)
    per_try = required_duration("confirm_timeout", confirm_timeout)
    message = _message(body)
    message.message_id = message_id or message.message_id or uuid.uuid4().hex
    assert message.message_id is not None
    destination = routing_key if _exchange_name(exchange) == "" else _exchange_name(exchange)
    with producer_span(SYSTEM, destination, message.message_id):
        message.headers = outgoing_headers(
            {**(message.headers or {}), **(headers or {})}, wall_clock()
        )
        for attempt in range(1, tries + 1):
            try:
                left = check_deadline("publishing")
                wait = per_try if left is None else min(per_try, left)
                target = await _exchange(channel, exchange)
                result = await target.publish(
                    message, routing_key=routing_key, mandatory=mandatory, timeout=wait
                )
            except PublishError:
                raise
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
                if attempt == tries:
                    exc.add_note(f"publish gave up after {tries} attempts")
                    raise
                await _before_next(channel, attempt)
                continue
            if isinstance(result, DeliveredMessage):
                raise PublishError(result, result.delivery)
            return message.message_id
    raise AssertionError("unreachable")  # pragma: no cover


def _exchange_name(exchange: str | AbstractExchange) -> str:
    return exchange if isinstance(exchange, str) else exchange.name


async def _exchange(channel: AbstractChannel, exchange: str | AbstractExchange) -> AbstractExchange:
    if not isinstance(exchange, str):
        return exchange
    if exchange == "":
        # Looked up on every attempt: a robust channel has a new one after a reconnect.
        return channel.default_exchange
    return await channel.get_exchange(exchange, ensure=False)


async def _before_next(channel: AbstractChannel, attempt: int) -> None:
    """Wait before the next publish attempt: a short backoff, and a robust channel's return."""
    wait = _PUBLISH_BACKOFF * 2 ** (attempt - 1)
    left = remaining()
    if left is not None:
        wait = min(wait, left)
    ready = getattr(channel, "ready", None)
    if ready is not None:
        try:
            await asyncio.wait_for(ready(), DEFAULT_PUBLISH_TIMEOUT if left is None else left)
        except (*CONNECTION_EXCEPTIONS, TimeoutError):
            pass
    await asyncio.sleep(wait)
