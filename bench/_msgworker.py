"""A consumer process for the messaging campaign (bench/case_messaging.py).

    python -m bench._msgworker MODE AMQP_PORT QUEUE REDIS_PREFIX

MODE ``resilience`` consumes through `resilience.integrations.aio_pika.consume` with a Redis
dedupe store; MODE ``bare`` is a plain aio-pika consumer that acks after the effect (what
at-least-once gives without dedupe). The effect of a message is ``HINCRBY
<prefix>effects <message_id> 1``; a body ``poison`` raises ValueError before it; while the
key ``<prefix>down`` exists the downstream is "down" and the handler raises ConnectionError.
Prints ``ready`` once subscribed, and its counts as JSON when stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import aio_pika
import redis
import redis.asyncio

from resilience import CircuitBreaker, Policy
from resilience.integrations.aio_pika import consume
from resilience.messaging import Consumer
from resilience.stores import RedisStore

PREFETCH = 50
REDELIVERY = (0.05, 0.2, 1.0, 2.0)


async def main(mode: str, port: int, queue: str, prefix: str) -> None:
    """Consume until SIGTERM, then print the counts."""
    client = redis.asyncio.Redis()
    down = False

    async def watch_downstream() -> None:
        nonlocal down
        while True:
            down = bool(await client.exists(f"{prefix}down"))
            await asyncio.sleep(0.02)

    watcher = asyncio.get_running_loop().create_task(watch_downstream())

    async def effect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if message.body == b"poison":
            raise ValueError("this message can never be handled")
        if down:
            raise ConnectionError("the downstream is down")
        await client.hincrby(f"{prefix}effects", message.message_id or "", 1)

    connection = await aio_pika.connect_robust(
        f"amqp://guest:guest@127.0.0.1:{port}/", reconnect_interval=0.1
    )
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    counts: dict[str, Any] = {}
    if mode == "resilience":
        store = RedisStore(redis.Redis(), prefix=prefix, timeout=2.0)
        breaker = CircuitBreaker(
            f"bench-downstream-{prefix}", consecutive_failures=5, open_duration=0.5
        )
        consumer = Consumer(
            "bench",
            dedupe=store,
            policy=Policy(attempt_timeout=5.0, breaker=breaker),
            redelivery=REDELIVERY,
            poison=(ValueError,),
            lock_timeout=10.0,
        )
        subscription = await consume(channel, queue, effect, consumer)
    else:
        work = await channel.get_queue(queue)
        plain = {"acked": 0, "rejected": 0, "requeued": 0}

        async def bare(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            try:
                await effect(message)
            except ValueError:
                await message.reject(requeue=False)
                plain["rejected"] += 1
            except ConnectionError:
                await asyncio.sleep(0.05)
                await message.reject(requeue=True)
                plain["requeued"] += 1
            else:
                await message.ack()
                plain["acked"] += 1

        await work.consume(bare)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    if mode == "resilience":
        await subscription.stop()
        counts = subscription.metrics()
        store.close()
    else:
        counts = plain
    watcher.cancel()
    await connection.close()
    await client.aclose()
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
