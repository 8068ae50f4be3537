"""Messaging: throughput of a consumer against a bare aio-pika one, and a fault campaign.

Throughput: a queue is filled, then drained by one consumer in this process (prefetch
100, a handler that does nothing): a bare aio-pika consumer acking each message, and
`resilience.integrations.aio_pika.consume` without dedupe, with a `MemoryStore` and with a
`RedisStore`. Rounds are interleaved; the median counts.

Campaign: messages (1 % poison) are published with `publish` and handled by two consumer
processes (bench/_msgworker.py) with Redis dedupe, while the TCP connections of the
publisher and the consumers are cut again and again, a consumer is frozen and killed with
SIGKILL (twice, a new one started each time), and the downstream is down for 1.5 s (its
breaker opens and the consumers pause). Figures: messages lost, effects that ran twice,
messages dead-lettered (only the poison ones should be). The same campaign with bare
aio-pika consumers (ack after the effect, no dedupe) shows what at-least-once does alone.

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and Redis on 127.0.0.1:6379; without them
the rows say n/a. Everything runs on loopback and is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._harness import Better, Case, Row, Settings, Unsupported, log

ROOT = Path(__file__).resolve().parent.parent
AMQP_PORT = 5672
REDIS_PORT = 6379
URL = f"amqp://guest:guest@127.0.0.1:{AMQP_PORT}/"

THROUGHPUT_TITLE = "messaging: consume throughput (no-op handler, prefetch 100)"
CAMPAIGN_TITLE = "messaging: fault campaign (cuts, SIGKILL, downstream outage, 1% poison)"
THROUGHPUT_UNIT = "msg/s"
COUNT_UNIT = "messages"
BARE = "aio-pika (bare, manual ack)"
OURS_REDIS = "resilience (RedisStore dedupe)"
POISON_EVERY = 100
CAMPAIGN_LIMIT = 300.0  # seconds the campaign may take before it is called a failure


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _require_services() -> None:
    if not _listening(AMQP_PORT):
        msg = "no RabbitMQ on 127.0.0.1:5672"
        raise Unsupported(msg)
    if not _listening(REDIS_PORT):
        msg = "no Redis on 127.0.0.1:6379"
        raise Unsupported(msg)


# -- a TCP proxy the campaign can cut and freeze ------------------------------------------


class Proxy:
    """An asyncio TCP proxy to RabbitMQ: ``cut()`` drops live connections, ``freeze()`` holds
    every byte back until ``thaw()``."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.cuts = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", AMQP_PORT)
        except OSError:
            writer.close()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        finally:
            self._writers -= pair
            for w in pair:
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._flowing.wait()
            if writer.is_closing():
                return
            writer.write(data)
            await writer.drain()
        writer.close()

    def cut(self) -> None:
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        self.thaw()
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# -- consumer processes ----------------------------------------------------------------------


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    proxy: Proxy


async def _start_worker(mode: str, proxy: Proxy, queue: str, prefix: str) -> Worker:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._msgworker",
        mode,
        str(proxy.port),
        queue,
        prefix,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        # aio-pika logs every cut connection; the figures say what matters.
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"ready":
        proc.kill()
        msg = f"a consumer process did not start: {line!r}"
        raise RuntimeError(msg)
    return Worker(proc, proxy)


async def _stop_worker(worker: Worker) -> dict[str, int]:
    worker.proc.terminate()
    assert worker.proc.stdout is not None
    try:
        out = await asyncio.wait_for(worker.proc.stdout.read(), 30)
        await asyncio.wait_for(worker.proc.wait(), 10)
    except TimeoutError:
        worker.proc.kill()
        await worker.proc.wait()
        return {}
    try:
        counts: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return counts


async def _kill_worker(worker: Worker) -> None:
    """Freeze its traffic, let what it holds finish, SIGKILL it, drop its connection."""
    worker.proxy.freeze()
    await asyncio.sleep(0.3)
    worker.proc.kill()
    await worker.proc.wait()
    worker.proxy.cut()
    worker.proxy.thaw()


# -- the campaign --------------------------------------------------------------------------


@dataclass
class Outcome:
    published: int
    poison: set[str]
    lost: int = 0
    twice: int = 0
    dead_poison: int = 0
    dead_other: int = 0
    seconds: float = 0.0
    cuts: int = 0
    kills: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""


async def _progress(client: Any, prefix: str) -> int:
    return int(await client.hlen(f"{prefix}effects"))


async def _until(check: Callable[[], Awaitable[bool]], limit: float) -> bool:
    give_up = time.monotonic() + limit
    while time.monotonic() < give_up:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def _campaign(mode: str, count: int, seed: int) -> Outcome:
    import aio_pika
    import redis.asyncio

    from resilience.integrations.aio_pika import publish

    rng = random.Random(seed)
    queue = f"bench-msg-{uuid.uuid4().hex[:8]}"
    prefix = f"bench-msg:{uuid.uuid4().hex[:8]}:"
    client = redis.asyncio.Redis(port=REDIS_PORT)
    admin = await aio_pika.connect(URL)
    admin_channel = await admin.channel()
    await admin_channel.declare_queue(queue, durable=True)
    proxies = [Proxy() for _ in range(3)]  # the publisher's, then one per consumer slot
    for proxy in proxies:
        await proxy.start()
    workers: list[Worker] = []
    ids = [uuid.uuid4().hex for _ in range(count)]
    poison = {ids[i] for i in range(POISON_EVERY // 2, count, POISON_EVERY)}
    outcome = Outcome(published=count, poison=poison)
    started = time.monotonic()
    try:
        workers = [await _start_worker(mode, p, queue, prefix) for p in proxies[1:]]
        publisher = await aio_pika.connect_robust(
            f"amqp://guest:guest@127.0.0.1:{proxies[0].port}/", reconnect_interval=0.1
        )
        channel = await publisher.channel()
        semaphore = asyncio.Semaphore(32)

        async def send(message_id: str) -> None:
            body = b"poison" if message_id in poison else b"work"
            async with semaphore:
                await publish(channel, "", queue, body, message_id=message_id, attempts=20)

        publishing = asyncio.ensure_future(asyncio.gather(*(send(i) for i in ids)))
        wanted = count - len(poison)
        # The faults, at points of progress (distinct messages whose effect ran).
        plan: list[tuple[float, str]] = [(f, "cut") for f in (0.05, 0.15, 0.25, 0.45, 0.6, 0.7)]
        plan += [(0.2, "kill"), (0.35, "outage"), (0.55, "kill")]
        plan.sort()
        for share, fault in plan:
            if not await _until(_at_least(client, prefix, share * wanted), CAMPAIGN_LIMIT / 2):
                break
            if fault == "cut":
                rng.choice(proxies).cut()
            elif fault == "kill":
                slot = rng.randrange(len(workers))
                await _kill_worker(workers[slot])
                outcome.kills += 1
                workers[slot] = await _start_worker(mode, workers[slot].proxy, queue, prefix)
            else:
                await client.set(f"{prefix}down", 1)
                await asyncio.sleep(1.5)
                await client.delete(f"{prefix}down")
        await asyncio.wait_for(publishing, CAMPAIGN_LIMIT)
        await publisher.close()

        async def settled() -> bool:
            ready = (await admin_channel.declare_queue(queue, passive=True)).declaration_result
            dead = await _count(admin_channel, f"{queue}.dead") if mode == "resilience" else 0
            return (
                await _progress(client, prefix) >= wanted
                and ready.message_count == 0
                and dead >= (len(poison) if mode == "resilience" else 0)
            )

        if not await _until(settled, CAMPAIGN_LIMIT):
            outcome.note = "did not settle in time; "
        await asyncio.sleep(0.5)  # the last acks and any late redelivery
        for worker in workers:
            for key, value in (await _stop_worker(worker)).items():
                outcome.counts[key] = outcome.counts.get(key, 0) + value
        workers = []
        outcome.seconds = time.monotonic() - started
        raw: dict[Any, Any] = await client.hgetall(f"{prefix}effects")
        effects = {bytes(key).decode(): int(value) for key, value in raw.items()}
        outcome.lost = sum(1 for i in ids if i not in poison and effects.get(i, 0) == 0)
        outcome.twice = sum(1 for n in effects.values() if n > 1)
        if mode == "resilience":
            dead_ids = await _drain(admin_channel, f"{queue}.dead")
            outcome.dead_poison = sum(1 for i in set(dead_ids) if i in poison)
            outcome.dead_other = sum(1 for i in set(dead_ids) if i not in poison)
        outcome.cuts = sum(p.cuts for p in proxies)
    finally:
        for worker in workers:
            worker.proc.kill()
            await worker.proc.wait()
        for proxy in proxies:
            await proxy.close()
        for suffix in ("", ".dead", *(f".delay.{ms}" for ms in _DELAY_MS)):
            await admin_channel.queue_delete(queue + suffix)
        await admin.close()
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    return outcome


# Every delay queue the workers may declare: their redeliveries and the deferral steps.
_DELAY_MS = (50, 200, 1000, 2000, *(100 * 2**k for k in range(11)))


def _at_least(client: Any, prefix: str, target: float) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await _progress(client, prefix) >= target

    return check


async def _count(channel: Any, queue: str) -> int:
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except Exception:
        return 0
    return int(declared.declaration_result.message_count or 0)


async def _drain(channel: Any, queue: str) -> list[str]:
    target = await channel.get_queue(queue, ensure=False)
    ids = []
    while (message := await target.get(fail=False, timeout=5)) is not None:
        ids.append(message.message_id or "")
        await message.ack()
    return ids


def _campaign_rows(mode: str, outcome: Outcome) -> list[Row]:
    role: Any = "us" if mode == "resilience" else "baseline"
    library = OURS_REDIS if mode == "resilience" else BARE
    variant = f"{outcome.published:,} messages, 2 consumers"
    faults = f"{outcome.cuts} cuts, {outcome.kills} SIGKILLs, 1 outage, {outcome.seconds:.0f} s"
    skipped = f"{outcome.counts.get('duplicate', 0)} redeliveries skipped as duplicates"
    figures: list[tuple[str, int, Better, str]] = [
        ("lost", outcome.lost, "lower", faults),
        ("effects run twice", outcome.twice, "lower", skipped if mode == "resilience" else ""),
    ]
    if mode == "resilience":
        poison = f"of {len(outcome.poison)} poison messages"
        figures += [
            ("dead-lettered, not poison", outcome.dead_other, "lower", ""),
            ("dead-lettered, poison", outcome.dead_poison, "higher", poison),
        ]
    return [
        Row(
            case=f"{CAMPAIGN_TITLE}: {what}",
            variant=variant,
            library=library,
            role=role,
            value=float(value),
            unit=COUNT_UNIT,
            better=better,
            note=outcome.note + note,
        )
        for what, value, better, note in figures
    ]


# -- throughput ----------------------------------------------------------------------------


async def _fill(channel: Any, queue: str, count: int) -> None:
    import aio_pika

    await channel.declare_queue(queue)
    for _ in range(count):
        message = aio_pika.Message(b"x" * 100, message_id=uuid.uuid4().hex)
        await channel.default_exchange.publish(message, routing_key=queue, mandatory=False)


async def _drain_once(kind: str, connection: Any, count: int) -> tuple[float, float]:
    """Fill a queue, drain it with *kind*; (messages per second, CPU µs per message)."""
    import redis

    from resilience.integrations.aio_pika import consume
    from resilience.messaging import Consumer
    from resilience.stores import MemoryStore, RedisStore

    filler = await connection.channel(publisher_confirms=False)
    queue = f"bench-tput-{uuid.uuid4().hex[:8]}"
    await _fill(filler, queue, count)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=100)
    done = asyncio.Event()
    seen = 0
    store: Any = None
    prefix = f"bench-tput:{uuid.uuid4().hex[:8]}:"
    if kind == "redis":
        store = RedisStore(redis.Redis(port=REDIS_PORT), prefix=prefix, timeout=2.0)
    elif kind == "memory":
        store = MemoryStore()

    async def handle(message: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    async def bare(message: Any) -> None:
        await handle(message)
        await message.ack()

    subscription = None
    wall, cpu = time.perf_counter(), time.process_time()
    if kind == "bare":
        await (await channel.get_queue(queue)).consume(bare)
    else:
        consumer = Consumer("bench-tput", dedupe=store)
        subscription = await consume(channel, queue, handle, consumer)
    await asyncio.wait_for(done.wait(), CAMPAIGN_LIMIT)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if subscription is not None:
        await subscription.stop()
    await asyncio.sleep(0.2)  # the last acks
    await channel.close()
    for suffix in ("", ".dead", ".delay.1000", ".delay.5000", ".delay.30000"):
        await filler.queue_delete(queue + suffix)
    await filler.close()
    if isinstance(store, RedisStore):
        client = redis.Redis(port=REDIS_PORT)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
        store.close()
    return count / wall, cpu / count * 1e6


THROUGHPUT_CONTENDERS = (
    ("bare", BARE, "baseline"),
    ("redis", OURS_REDIS, "us"),
    ("memory", "resilience (MemoryStore dedupe)", "us"),
    ("none", "resilience (no dedupe)", "us"),
)


async def _throughput(count: int, rounds: int, seed: int) -> list[Row]:
    import aio_pika

    connection = await aio_pika.connect_robust(URL)
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k, _, _ in THROUGHPUT_CONTENDERS}
    order = [k for k, _, _ in THROUGHPUT_CONTENDERS]
    rng = random.Random(seed)
    try:
        for _ in range(rounds):
            rng.shuffle(order)
            for kind in order:
                samples[kind].append(await _drain_once(kind, connection, count))
    finally:
        await connection.close()
    bare = statistics.median(rate for rate, _ in samples["bare"])
    rows = []
    for kind, library, role in THROUGHPUT_CONTENDERS:
        rate = statistics.median(r for r, _ in samples[kind])
        cpu = statistics.median(c for _, c in samples[kind])
        share = "" if kind == "bare" else f"{100 * rate / bare:.0f} % of bare; "
        rows.append(
            Row(
                case=THROUGHPUT_TITLE,
                variant=f"{count:,} messages",
                library=library,
                role=role,  # type: ignore[arg-type]
                value=rate,
                unit=THROUGHPUT_UNIT,
                better="higher",
                note=f"{share}{cpu:.0f} µs CPU/msg in the consumer process",
            )
        )
    return rows


@contextlib.contextmanager
def _quiet_broker_logs() -> Iterator[None]:
    """aio-pika and aiormq warn about every connection the campaign cuts: not news here."""
    loggers = [logging.getLogger(name) for name in ("aio_pika", "aiormq")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run(settings: Settings) -> list[Row]:
    """Throughput, then the campaign with our consumers (and, in a full run, bare ones)."""
    try:
        _require_services()
    except Unsupported as exc:
        return [
            Row(
                case=THROUGHPUT_TITLE,
                variant="-",
                library=OURS_REDIS,
                role="us",
                value=None,
                unit=THROUGHPUT_UNIT,
                better="higher",
                note=f"n/a: {exc}",
            )
        ]
    rows = asyncio.run(
        _throughput(settings.scale(10_000, 2_000), settings.scale(3, 1), settings.seed)
    )
    count = settings.scale(10_000, 500)
    modes = ("resilience",) if settings.quick else ("resilience", "bare")
    for mode in modes:
        log(f"[bench] messaging campaign, {mode} consumers, {count} messages ...")
        with _quiet_broker_logs():
            outcome = asyncio.run(_campaign(mode, count, settings.seed))
        rows += _campaign_rows(mode, outcome)
    return rows


CASES = [Case("messaging", THROUGHPUT_TITLE.split(":")[0], run)]
