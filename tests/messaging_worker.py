"""A consumer process for the messaging tests that kill one (not collected: no test_ prefix).

    python -m tests.messaging_worker AMQP_PORT QUEUE REDIS_PREFIX LOCK_TIMEOUT

It consumes QUEUE through the broker on AMQP_PORT with a Redis dedupe store under
REDIS_PREFIX. The effect of a message is ``HINCRBY <prefix>effects <message_id> 1``. A body
``hold-before`` waits for the key ``<prefix>go:<message_id>`` before its effect, a body
``hold-after`` right after it (setting ``<prefix>holding:<message_id>`` while it waits), so
a test can kill the process at a chosen point. It prints
``ready`` once subscribed and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import aio_pika
import redis
import redis.asyncio

from resilience.integrations.aio_pika import consume
from resilience.messaging import Consumer
from resilience.stores import RedisStore
from tests.helpers import REDIS_PORT, amqp_url

HOLD_LIMIT = 60.0


async def main(port: int, queue: str, prefix: str, lock_timeout: float) -> None:
    """Consume until SIGTERM."""
    effects = redis.asyncio.Redis(port=REDIS_PORT)
    store = RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix, timeout=2.0)

    async def wait_for_go(message_id: str) -> None:
        await effects.set(f"{prefix}holding:{message_id}", 1)
        give_up = time.monotonic() + HOLD_LIMIT
        while not await effects.exists(f"{prefix}go:{message_id}"):
            if time.monotonic() > give_up:
                raise TimeoutError("nobody said go")
            await asyncio.sleep(0.01)

    async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        message_id = message.message_id or ""
        if message.body == b"hold-before":
            await wait_for_go(message_id)
        await effects.hincrby(f"{prefix}effects", message_id, 1)
        if message.body == b"hold-after":
            await wait_for_go(message_id)

    connection = await aio_pika.connect_robust(amqp_url(port), reconnect_interval=0.2)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=10)
    consumer = Consumer("worker", dedupe=store, redelivery=(0.05, 0.1), lock_timeout=lock_timeout)
    subscription = await consume(channel, queue, handle, consumer)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await subscription.stop()
    await connection.close()
    store.close()
    await effects.aclose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])))
