"""Messaging against the real RabbitMQ on 127.0.0.1:5672 and the real Redis.

Every test uses queues of its own (a random name) and deletes them, and its consumer's
delay and dead-letter queues, afterwards. Faults are real: connections cut by a TCP proxy,
traffic frozen, a consumer process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import redis
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import PublishError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from resilience import CircuitBreaker, ConfigError, Policy, deadline, events
from resilience._idempotency._backend import Busy, Done, backend_for
from resilience.integrations.aio_pika import consume, publish
from resilience.messaging import Consumer, ConsumerPaused, Subscription
from resilience.stores import MemoryStore, RedisStore
from tests.helpers import AMQP_PORT, REDIS_PORT, TcpProxy, amqp_url, rabbitmq_up

pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.redis,
    pytest.mark.skipif(not rabbitmq_up(), reason="no RabbitMQ on 127.0.0.1:5672"),
]

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0  # seconds any single wait may take on a loaded 2-core machine before failing
DELAYS = (0.05, 0.1)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit: float = WAIT) -> None:
    """Poll *check* every 20 ms until it is true; fail after *limit* seconds."""
    give_up = time.monotonic() + limit
    while not await check():
        if time.monotonic() > give_up:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Broker:
    """A connection for the test's own use, and every queue name it must delete afterwards."""

    def __init__(self) -> None:
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.names: list[str] = []
        self.connections: list[AbstractRobustConnection] = []

    async def open(self) -> None:
        self.connection = await aio_pika.connect_robust(amqp_url())
        self.channel = await self.connection.channel()

    def name(self) -> str:
        """A fresh queue name; it and the consumer's own queues are deleted at teardown."""
        value = f"test-msg-{uuid.uuid4().hex[:10]}"
        own = [f"{value}.dead"]
        own += [f"{value}.delay.{ms}" for ms in (50, 100, 200, 400, 800, 1600, 3200)]
        self.names += [value, *own]
        return value

    async def queue(self, **arguments: Any) -> str:
        """Declare a fresh work queue the way an application would."""
        name = self.name()
        assert self.channel is not None
        await self.channel.declare_queue(name, durable=True, arguments=arguments or None)
        return name

    async def consuming_channel(
        self, port: int | None = None, prefetch: int = 10
    ) -> AbstractChannel:
        """A robust connection (through *port* if given) and a channel with a prefetch."""
        connection = await aio_pika.connect_robust(
            amqp_url(port) if port else amqp_url(), reconnect_interval=0.1
        )
        self.connections.append(connection)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def count(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) of *queue*, read fresh from the broker."""
        assert self.channel is not None
        channel = await self.channel.get_underlay_channel()
        result = await channel.queue_declare(queue, passive=True)
        assert result.message_count is not None
        assert result.consumer_count is not None
        return result.message_count, result.consumer_count

    async def get(self, queue: str) -> AbstractIncomingMessage | None:
        """One message of *queue*, acked, or None."""
        assert self.channel is not None
        q = await self.channel.get_queue(queue, ensure=False)
        message = await q.get(fail=False, timeout=5)
        if message is not None:
            await message.ack()
        return message

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()
        cleaner = await aio_pika.connect(amqp_url())
        channel = await cleaner.channel()
        for name in self.names:
            await channel.queue_delete(name)
        await cleaner.close()
        if self.connection is not None:
            await self.connection.close()


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    """The broker, and clean-up of the test's queues."""
    value = Broker()
    await value.open()
    yield value
    await value.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    value = f"test-msg:{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis(port=REDIS_PORT, socket_timeout=2)
    keys = list(client.scan_iter(match=f"{value}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def store(prefix: str) -> Iterator[RedisStore]:
    """A RedisStore on the test's prefix."""
    value = RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix, timeout=2.0)
    yield value
    value.close()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A TCP proxy to RabbitMQ that a test can cut and freeze."""
    value = TcpProxy(AMQP_PORT)
    value.start()
    yield value
    value.stop()


def name(prefix: str) -> str:
    """A consumer name of the test's own (breakers and ids stay apart between tests)."""
    return f"c-{prefix.split(':')[1]}"


# -- the basic contract --------------------------------------------------------------------


async def test_each_message_id_is_handled_once_and_acked(
    broker: Broker, store: RedisStore, prefix: str
) -> None:
    """Messages published twice with one id run once; the queue ends empty."""
    queue = await broker.queue()
    channel = await broker.consuming_channel()
    effects: dict[str, int] = {}
    all_done = asyncio.Event()

    async def handle(message: AbstractIncomingMessage) -> None:
        key = message.body.decode()
        effects[key] = effects.get(key, 0) + 1
        if len(effects) == 30:
            all_done.set()

    sub = await consume(channel, queue, handle, Consumer(name(prefix), dedupe=store))
    assert broker.channel is not None
    for i in range(30):
        message_id = await publish(broker.channel, "", queue, f"m{i}".encode())
        await publish(broker.channel, "", queue, f"m{i}".encode(), message_id=message_id)
    await asyncio.wait_for(all_done.wait(), WAIT)
    await eventually(lambda: _true(sub.metrics()["duplicate"] == 30), "the duplicates to be acked")
    await sub.stop()
    assert set(effects.values()) == {1}
    assert await broker.count(queue) == (0, 0)
    assert sub.metrics()["handled"] == 30


async def _true(value: bool) -> bool:
    return value


async def test_a_poison_message_is_dead_lettered_at_once_with_the_headers(
    broker: Broker, prefix: str
) -> None:
    """A poison error sends the message, unchanged, to <queue>.dead with the six headers."""
    queue = await broker.queue()
    channel = await broker.consuming_channel()
    calls: list[bytes] = []

    def handle(message: AbstractIncomingMessage) -> None:
        calls.append(message.body)
        raise ValueError("order 7 has no lines")

    consumer = Consumer(name(prefix), dedupe=MemoryStore(), redelivery=DELAYS, poison=(ValueError,))
    sub = await consume(channel, queue, handle, consumer)
    assert broker.channel is not None
    before = time.time()
    await publish(
        broker.channel,
        "",
        queue,
        aio_pika.Message(b'{"order": 7}', content_type="application/json", app_id="shop"),
        message_id="order-7",
    )
    await eventually(lambda: _true(sub.metrics()["dead_lettered"] == 1), "the dead letter")
    await sub.stop()
    dead = await broker.get(f"{queue}.dead")
    assert dead is not None
    assert calls == [b'{"order": 7}']
    assert dead.body == b'{"order": 7}'
    assert (dead.message_id, dead.content_type, dead.app_id) == (
        "order-7",
        "application/json",
        "shop",
    )
    headers = dead.headers
    assert headers["x-error-type"] == "builtins.ValueError"
    assert headers["x-error-message"] == "order 7 has no lines"
    assert headers["x-attempts"] == 1
    assert headers["x-original-queue"] == queue
    first = datetime.fromisoformat(str(headers["x-first-failure"]))
    last = datetime.fromisoformat(str(headers["x-last-failure"]))
    assert first.utcoffset() is not None
    assert first.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert before - 1 <= first.timestamp() <= last.timestamp() <= time.time() + 1
    assert await broker.count(queue) == (0, 0)


async def test_failures_come_back_through_the_delay_queues_then_die(
    broker: Broker, prefix: str
) -> None:
    """A failing message is tried 1 + len(redelivery) times, each after its delay, then dead."""
    queue = await broker.queue()
    channel = await broker.consuming_channel()
    tries: list[tuple[float, object]] = []

    async def handle(message: AbstractIncomingMessage) -> None:
        tries.append((time.monotonic(), (message.headers or {}).get("x-attempts")))
        raise ConnectionError("the database is away")

    consumer = Consumer(name(prefix), dedupe=MemoryStore(), redelivery=DELAYS)
    sub = await consume(channel, queue, handle, consumer)
    assert broker.channel is not None
    await publish(broker.channel, "", queue, b"doomed")
    await eventually(lambda: _true(sub.metrics()["dead_lettered"] == 1), "the dead letter")
    await sub.stop()
    assert [attempts for _, attempts in tries] == [None, 1, 2]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(tries)]
    assert gaps[0] >= 0.04
    assert gaps[1] >= 0.09
    dead = await broker.get(f"{queue}.dead")
    assert dead is not None
    assert dead.headers["x-attempts"] == 3
    assert dead.headers["x-error-type"] == "builtins.ConnectionError"
    assert sub.metrics()["redelivered"] == 2


async def test_a_message_that_recovers_is_handled_and_not_dead_lettered(
    broker: Broker, store: RedisStore, prefix: str
) -> None:
    """Failing twice then succeeding: handled on the last try, no dead letter, id done."""
    queue = await broker.queue()
    channel = await broker.consuming_channel()
    tries = 0
    done = asyncio.Event()

    async def handle(message: AbstractIncomingMessage) -> None:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise TimeoutError("slow")
        done.set()

    sub = await consume(
        channel, queue, handle, Consumer(name(prefix), dedupe=store, redelivery=DELAYS)
    )
    assert broker.channel is not None
    message_id = await publish(broker.channel, "", queue, b"x")
    await asyncio.wait_for(done.wait(), WAIT)
    await eventually(lambda: _true(sub.metrics()["handled"] == 1), "the ack")
    await sub.stop()
    assert await broker.count(f"{queue}.dead") == (0, 0)
    claim = backend_for(store).claim(f"message:{name(prefix)}:{message_id}", "", 60.0)
    assert isinstance(claim, Done)


async def test_consume_leaves_the_work_queue_alone_and_declares_expiring_delay_queues(
    broker: Broker, prefix: str
) -> None:
    """The application's queue keeps its arguments; delay queues carry TTL, route and expiry."""
    queue = await broker.queue(**{"x-max-length": 1000, "x-queue-mode": "lazy"})
    channel = await broker.consuming_channel()
    sub = await consume(
        channel, queue, lambda m: None, Consumer(name(prefix), redelivery=(0.05, 2.0))
    )
    await sub.stop()
    # Declaring with different arguments would close the channel (406): these are equal.
    assert broker.channel is not None
    check = await broker.channel.get_underlay_channel()
    for ms in (50, 2000):
        await check.queue_declare(
            f"{queue}.delay.{ms}",
            durable=True,
            arguments={
                "x-message-ttl": ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
                "x-expires": ms + 60_000,
            },
        )
    await check.queue_declare(f"{queue}.dead", durable=True)
    await check.queue_declare(
        queue, durable=True, arguments={"x-max-length": 1000, "x-queue-mode": "lazy"}
    )


# -- faults --------------------------------------------------------------------------------


async def test_an_ack_lost_after_the_effect_makes_the_redelivery_a_no_op(
    broker: Broker, store: RedisStore, prefix: str, proxy: TcpProxy
) -> None:
    """The connection dies after the handler's effect, before the ack: it runs once, acked later."""
    queue = await broker.queue()
    channel = await broker.consuming_channel(proxy.port)
    effects: dict[str, int] = {}

    async def handle(message: AbstractIncomingMessage) -> None:
        key = message.body.decode()
        effects[key] = effects.get(key, 0) + 1
        if effects[key] == 1:
            proxy.cut()  # the handler's effect is done; its ack has no way to the broker

    sub = await consume(channel, queue, handle, Consumer(name(prefix), dedupe=store))
    assert broker.channel is not None
    await publish(broker.channel, "", queue, b"charge-42")
    await eventually(lambda: _true(sub.metrics()["duplicate"] == 1), "the redelivery")
    await sub.stop()
    assert effects == {"charge-42": 1}
    assert await broker.count(queue) == (0, 0)


async def test_connection_cuts_under_load_lose_nothing_and_repeat_nothing(
    broker: Broker, store: RedisStore, prefix: str, proxy: TcpProxy
) -> None:
    """300 messages while the consumer's connection is cut three times: each effect once."""
    queue = await broker.queue()
    channel = await broker.consuming_channel(proxy.port, prefetch=20)
    effects: dict[str, int] = {}
    cuts_at = {50, 150, 250}
    all_done = asyncio.Event()

    async def handle(message: AbstractIncomingMessage) -> None:
        key = message.body.decode()
        effects[key] = effects.get(key, 0) + 1
        if len(effects) in cuts_at and effects[key] == 1:
            cuts_at.discard(len(effects))
            proxy.cut()
        if len(effects) == 300:
            all_done.set()

    sub = await consume(channel, queue, handle, Consumer(name(prefix), dedupe=store))
    assert broker.channel is not None
    for i in range(300):
        await publish(broker.channel, "", queue, f"m{i}".encode())
    await asyncio.wait_for(all_done.wait(), WAIT * 2)

    async def drained() -> bool:
        ready, _ = await broker.count(queue)
        return ready == 0 and sub.in_flight == 0

    await eventually(drained, "the queue to drain")
    await sub.stop()
    assert cuts_at == set()
    assert len(effects) == 300
    assert set(effects.values()) == {1}
    await asyncio.sleep(0)  # the stopped consumer holds nothing: all were acked
    for connection in broker.connections:
        await connection.close()
    broker.connections.clear()
    assert await broker.count(queue) == (0, 0)


class Workers:
    """Consumer processes (tests/messaging_worker.py) that a test can kill."""

    def __init__(self, port: int, queue: str, prefix: str) -> None:
        self.args = [str(port), queue, prefix]
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, lock_timeout: float = 60.0) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.messaging_worker", *self.args, str(lock_timeout)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until subscribed (or the process died)
        assert line.strip() == "ready", f"worker did not start: {line!r}"
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def workers(proxy: TcpProxy, prefix: str) -> Iterator[Callable[[str], Workers]]:
    """Start worker processes on a queue; every one is killed at teardown."""
    made: list[Workers] = []

    def make(queue: str) -> Workers:
        value = Workers(proxy.port, queue, prefix)
        made.append(value)
        return value

    yield make
    for value in made:
        value.close()


async def test_a_consumer_killed_after_recording_its_effect_does_not_run_it_again(
    broker: Broker,
    prefix: str,
    proxy: TcpProxy,
    workers: Callable[[str], Workers],
) -> None:
    """SIGKILL after the effect is recorded, before the ack reaches the broker: no second run."""
    queue = await broker.queue()
    pool = workers(queue)
    first = await asyncio.to_thread(pool.start)
    client = redis.Redis(port=REDIS_PORT, socket_timeout=2)
    backend = backend_for(RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix))
    assert broker.channel is not None
    message_id = await publish(broker.channel, "", queue, b"hold-after")
    await eventually(
        lambda: _true(client.hget(f"{prefix}effects", message_id) == b"1"), "the effect"
    )
    proxy.freeze()  # whatever the worker sends from now on (its ack) is held back
    client.set(f"{prefix}go:{message_id}", 1)
    key = f"message:worker:{message_id}"
    await eventually(lambda: _true(isinstance(backend.claim(key, "", 60.0), Done)), "the record")
    first.send_signal(signal.SIGKILL)
    await asyncio.to_thread(first.wait, 10)
    proxy.cut()  # the broker sees the dead connection and puts the unacked message back
    proxy.thaw()
    second = await asyncio.to_thread(pool.start)
    await eventually(lambda: _count_is(broker, queue, 0), "the redelivery to be taken")
    second.send_signal(signal.SIGTERM)  # a clean stop: anything unacked would go back
    assert await asyncio.to_thread(second.wait, 20) == 0
    assert await broker.count(queue) == (0, 0)
    assert client.hget(f"{prefix}effects", message_id) == b"1"
    client.close()


async def _count_is(broker: Broker, queue: str, ready: int) -> bool:
    return (await broker.count(queue))[0] == ready


async def test_a_consumer_killed_before_its_effect_leaves_the_message_to_another(
    broker: Broker,
    prefix: str,
    proxy: TcpProxy,
    workers: Callable[[str], Workers],
) -> None:
    """SIGKILL while the handler waits before its effect: a new process runs it, once."""
    queue = await broker.queue()
    pool = workers(queue)
    first = await asyncio.to_thread(pool.start, 1.0)
    client = redis.Redis(port=REDIS_PORT, socket_timeout=2)
    backend = backend_for(RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix))
    assert broker.channel is not None
    message_id = await publish(broker.channel, "", queue, b"hold-before")
    key = f"message:worker:{message_id}"
    await eventually(lambda: _true(bool(client.exists(f"{prefix}holding:{message_id}"))), "hold")
    assert isinstance(backend.claim(key, "", 60.0), Busy)  # claimed by the worker
    first.send_signal(signal.SIGKILL)
    await asyncio.to_thread(first.wait, 10)
    proxy.cut()
    client.set(f"{prefix}go:{message_id}", 1)
    second = await asyncio.to_thread(pool.start, 1.0)
    # The dead worker's claim holds for its lock_timeout (1 s); the message waits it out.
    await eventually(
        lambda: _true(client.hget(f"{prefix}effects", message_id) == b"1"), "the effect"
    )
    await eventually(lambda: _true(isinstance(backend.claim(key, "", 60.0), Done)), "the record")
    second.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(second.wait, 20) == 0
    assert await broker.count(queue) == (0, 0)
    assert client.hget(f"{prefix}effects", message_id) == b"1"
    client.close()


async def test_a_dead_downstream_pauses_the_consumer_and_costs_no_dead_letters(
    broker: Broker, store: RedisStore, prefix: str
) -> None:
    """Breaker open -> paused with no subscription and no message held; then it drains."""
    queue = await broker.queue()
    channel = await broker.consuming_channel(prefetch=1)
    # Open long enough for the test to look at the paused consumer on a loaded machine.
    breaker = CircuitBreaker(f"{name(prefix)}-db", consecutive_failures=1, open_duration=1.5)
    consumer = Consumer(
        name(prefix), dedupe=store, policy=Policy(breaker=breaker), redelivery=(0.05, 0.1, 0.2)
    )
    down = True
    pauses: list[ConsumerPaused] = []
    paused_twice = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_event(event: object) -> None:
        nonlocal down
        if isinstance(event, ConsumerPaused) and event.name == consumer.name:
            pauses.append(event)
            if len(pauses) == 2:
                down = False  # the downstream comes back while the consumer is paused
                loop.call_soon(paused_twice.set)

    effects: dict[str, int] = {}
    failures = 0
    all_done = asyncio.Event()

    async def handle(message: AbstractIncomingMessage) -> None:
        nonlocal failures
        if down:
            failures += 1
            raise ConnectionError("the database is away")
        key = message.body.decode()
        effects[key] = effects.get(key, 0) + 1
        if len(effects) == 20:
            all_done.set()

    events.add_listener(on_event)
    try:
        assert broker.channel is not None
        for i in range(20):
            await publish(broker.channel, "", queue, f"m{i}".encode())
        sub: Subscription[AbstractIncomingMessage] = await consume(channel, queue, handle, consumer)
        await asyncio.wait_for(paused_twice.wait(), WAIT)
        assert sub.paused
        # Paused means unsubscribed and holding nothing: all 20 messages are ready in the
        # queue (the two failed ones back from their short delay), none unacked with us.
        await eventually(lambda: _counts_are(broker, queue, (20, 0)), "an idle queue")
        assert sub.paused
        assert effects == {}
        await asyncio.wait_for(all_done.wait(), WAIT)
        await sub.stop()
    finally:
        events.remove_listener(on_event)
    assert failures == 2  # the failure that opened the breaker, and one failed probe
    assert pauses[0].reason == "breaker"
    assert set(effects.values()) == {1}
    assert await broker.count(f"{queue}.dead") == (0, 0)
    assert sub.metrics()["dead_lettered"] == 0


async def test_stop_lets_the_message_in_hand_finish(broker: Broker, prefix: str) -> None:
    """stop() returns only after the running handler ends; later messages stay queued."""
    queue = await broker.queue()
    channel = await broker.consuming_channel()
    started = asyncio.Event()
    release = asyncio.Event()

    async def handle(message: AbstractIncomingMessage) -> None:
        started.set()
        await release.wait()

    sub = await consume(channel, queue, handle, Consumer(name(prefix), dedupe=MemoryStore()))
    assert broker.channel is not None
    await publish(broker.channel, "", queue, b"first")
    await asyncio.wait_for(started.wait(), WAIT)
    stopping = asyncio.ensure_future(sub.stop())
    await eventually(lambda: _consumers_are(broker, queue, 0), "the unsubscription")
    assert not stopping.done()
    await publish(broker.channel, "", queue, b"second")
    release.set()
    await asyncio.wait_for(stopping, WAIT)
    assert sub.metrics()["handled"] == 1
    assert await broker.count(queue) == (1, 0)


async def _counts_are(broker: Broker, queue: str, counts: tuple[int, int]) -> bool:
    return await broker.count(queue) == counts


async def _consumers_are(broker: Broker, queue: str, consumers: int) -> bool:
    return (await broker.count(queue))[1] == consumers


async def test_batched_acks_never_ack_another_consumers_message_on_a_shared_channel(
    broker: Broker, prefix: str
) -> None:
    """The application's unacked message on the same channel stays unacked."""
    mine, theirs = await broker.queue(), await broker.queue()
    channel = await broker.consuming_channel(prefetch=20)
    held: list[AbstractIncomingMessage] = []
    got_theirs = asyncio.Event()

    async def keep(message: AbstractIncomingMessage) -> None:
        held.append(message)  # the application acks it later, or never
        got_theirs.set()

    assert broker.channel is not None
    await publish(broker.channel, "", theirs, b"theirs")
    await (await channel.get_queue(theirs)).consume(keep)
    await asyncio.wait_for(got_theirs.wait(), WAIT)  # delivery tag 1 on the shared channel
    sub = await consume(channel, mine, lambda m: None, Consumer(name(prefix)))
    for i in range(10):
        await publish(broker.channel, "", mine, f"m{i}".encode())
    await eventually(lambda: _true(sub.metrics()["handled"] == 10), "my messages")
    await sub.stop()
    for connection in broker.connections:
        await connection.close()  # unacked messages go back to their queue
    broker.connections.clear()
    assert await broker.count(mine) == (0, 0)
    assert await broker.count(theirs) == (1, 0)


# -- publish ---------------------------------------------------------------------------------


async def test_publish_sets_an_id_the_trace_context_and_the_deadline(broker: Broker) -> None:
    """The published message carries a message_id, traceparent and x-deadline, persistent."""
    queue = await broker.queue()
    assert broker.channel is not None
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("checkout") as span:
        async with deadline(5.0):
            message_id = await publish(broker.channel, "", queue, b"x", headers={"tenant": "a"})
    message = await broker.get(queue)
    assert message is not None
    assert message.message_id == message_id
    assert len(message_id) == 32
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    headers = message.headers
    assert headers["tenant"] == "a"
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert str(headers["traceparent"]).split("-")[1] == trace_id
    left = int(str(headers["x-deadline"])) / 1000 - time.time()
    assert 3.0 < left <= 5.0


async def test_publish_refuses_what_cannot_be_confirmed_or_routed(broker: Broker) -> None:
    """No confirms -> ConfigError; nothing takes the message -> PublishError (no retry)."""
    assert broker.connection is not None
    plain = await broker.connection.channel(publisher_confirms=False)
    with pytest.raises(ConfigError, match="publisher confirms"):
        await publish(plain, "", "anything", b"x")
    with pytest.raises(ConfigError, match="publisher confirms"):
        await consume(plain, "anything", lambda m: None, Consumer("x"))
    await plain.close()
    assert broker.channel is not None
    with pytest.raises(PublishError):
        await publish(broker.channel, "", f"nobody-{uuid.uuid4().hex}", b"x")
    with pytest.raises(ConfigError, match="body"):
        await publish(broker.channel, "", "q", "text")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="attempts"):
        await publish(broker.channel, "", "q", b"x", attempts=0)


async def test_publish_goes_through_a_cut_connection(broker: Broker, proxy: TcpProxy) -> None:
    """A publish right after the connection dropped waits for the reconnect and is confirmed."""
    queue = await broker.queue()
    channel = await broker.consuming_channel(proxy.port)
    proxy.cut()
    message_id = await publish(channel, "", queue, b"x")
    message = await broker.get(queue)
    assert message is not None
    assert message.message_id == message_id


async def test_spans_link_the_consumer_to_the_publisher(broker: Broker, prefix: str) -> None:
    """With an SDK, publish makes a PRODUCER span and the handling a CONSUMER span in its trace."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    events.set_tracer_provider(provider)
    try:
        queue = await broker.queue()
        channel = await broker.consuming_channel()
        done = asyncio.Event()
        sub = await consume(channel, queue, lambda m: done.set(), Consumer(name(prefix)))
        assert broker.channel is not None
        message_id = await publish(broker.channel, "", queue, b"x")
        await asyncio.wait_for(done.wait(), WAIT)
        await eventually(lambda: _true(sub.metrics()["handled"] == 1), "the ack")
        await sub.stop()
    finally:
        events.set_tracer_provider(None)
    spans = {span.kind: span for span in exporter.get_finished_spans()}
    producer, consumer = spans[SpanKind.PRODUCER], spans[SpanKind.CONSUMER]
    assert producer.name == f"publish {queue}"
    assert consumer.name == f"process {queue}"
    assert consumer.context is not None
    assert producer.context is not None
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.system"] == "rabbitmq"
    assert consumer.attributes["messaging.message.id"] == message_id


async def test_consume_checks_its_arguments(broker: Broker) -> None:
    """A wrong consumer, queue or channel is a ConfigError before anything is declared."""
    assert broker.channel is not None
    with pytest.raises(ConfigError, match="consumer"):
        await consume(broker.channel, "q", print, "orders")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="queue"):
        await consume(broker.channel, 42, print, Consumer("x"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="channel"):
        await consume("channel", "q", print, Consumer("x"))  # type: ignore[arg-type]


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without aio-pika, importing the adapter says which extra to install."""
    monkeypatch.setitem(sys.modules, "aio_pika", None)
    monkeypatch.delitem(sys.modules, "resilience.integrations.aio_pika")
    with pytest.raises(ImportError, match=r"pip install 'resilience\[rabbitmq\]'"):
        importlib.import_module("resilience.integrations.aio_pika")
