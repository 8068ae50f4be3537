"""The aio-pika adapter's ack batching, against a fake AMQP channel (no broker needed)."""

from __future__ import annotations

import asyncio

import pytest
from aiormq.exceptions import ChannelInvalidStateError

from resilience.integrations import aio_pika as adapter


class FakeChannel:
    """Records basic.ack frames as (tag, multiple)."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []
        self.closed = False
        self.stuck = False
        self.waited = False

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        if self.closed:
            raise ChannelInvalidStateError("closed")
        self.waited |= wait
        if self.stuck:
            await asyncio.Event().wait()  # a dead connection's writer: nothing ever drains
        self.acks.append((delivery_tag, multiple))


async def test_acks_of_one_loop_turn_go_as_one_multiple_ack() -> None:
    """Tags 1..50 acked together cost one basic.ack(50, multiple=True)."""
    channel = FakeChannel()
    acks = adapter._Acks(channel)
    await asyncio.gather(*(acks.ack(tag) for tag in range(1, 51)))
    assert channel.acks == [(50, True)]


async def test_a_tag_still_in_hand_ends_the_run() -> None:
    """Tag 3 is being handled: 1-2 go as a run, 4-5 one by one; later 3 closes the gap."""
    channel = FakeChannel()
    acks = adapter._Acks(channel)
    await asyncio.gather(*(acks.ack(tag) for tag in (1, 2, 4, 5)))
    assert channel.acks == [(2, True), (4, False), (5, False)]
    await asyncio.gather(acks.ack(3), acks.ack(6))
    assert channel.acks[3:] == [(6, True)]  # 3 and 6; 4 and 5 were settled before


async def test_rejected_tags_do_not_stop_the_run() -> None:
    """A tag settled another way (requeued, rejected) is passed over by the run."""
    channel = FakeChannel()
    acks = adapter._Acks(channel)
    acks.settled(2)
    await asyncio.gather(acks.ack(1), acks.ack(3))
    assert channel.acks == [(3, True)]


async def test_a_foreign_tag_is_never_covered() -> None:
    """On a shared channel, another consumer's unsettled tag 1 keeps every ack single."""
    channel = FakeChannel()
    acks = adapter._Acks(channel)
    await asyncio.gather(*(acks.ack(tag) for tag in (2, 3, 4)))
    assert channel.acks == [(2, False), (3, False), (4, False)]


async def test_batching_gives_up_on_a_run_that_never_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_SETTLED tags above a gap, it stops keeping them (no unbounded growth)."""
    monkeypatch.setattr(adapter, "MAX_SETTLED", 3)
    channel = FakeChannel()
    acks = adapter._Acks(channel)
    for tag in range(2, 7):
        await acks.ack(tag)
    assert acks._settled is None
    await asyncio.gather(acks.ack(1), acks.ack(7))
    assert channel.acks[-2:] == [(1, False), (7, False)]


async def test_a_closed_channel_releases_the_waiters() -> None:
    """Acks on a channel that closed meanwhile return (the broker redelivers those messages)."""
    channel = FakeChannel()
    channel.closed = True
    acks = adapter._Acks(channel)
    await asyncio.wait_for(asyncio.gather(acks.ack(1), acks.ack(2)), 5)
    assert channel.acks == []


async def test_acks_do_not_wait_for_the_socket_and_never_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Acks are queued without waiting for a drain, and a stuck channel releases the waiters."""
    monkeypatch.setattr(adapter, "SETTLE_TIMEOUT", 0.05)
    channel = FakeChannel()
    acks = adapter._Acks(channel)
    await acks.ack(1)
    assert not channel.waited
    channel.stuck = True
    await asyncio.wait_for(asyncio.gather(acks.ack(2), acks.ack(3)), 5)
    assert channel.acks == [(1, True)]
