"""gateway.hub: acks leave in the order they were taken, whatever their awaits.

A multiple ack that overtook an ack of one delivery it covers would acknowledge that delivery
twice, which RabbitMQ answers by closing the channel. Each ack awaits the broker connection's
writer, so without an order two rounds of acks would interleave.
"""

import asyncio

from gateway.hub import _ack_all

Sent = list[tuple[int, bool]]


class Delivered:
    """What ``_ack_all`` uses of an incoming message: its ack, which yields as aiormq's does
    (the frame is queued, then the writer's drain is awaited)."""

    def __init__(self, tag: int, sent: Sent) -> None:
        self.tag = tag
        self.sent = sent

    async def ack(self, multiple: bool = False) -> None:
        self.sent.append((self.tag, multiple))
        for _ in range(3):
            await asyncio.sleep(0)


async def test_a_later_round_of_acks_waits_for_the_round_before_it() -> None:
    sent: Sent = []
    first = asyncio.create_task(
        _ack_all([(Delivered(3, sent), True), (Delivered(5, sent), False)], None)  # type: ignore[list-item]
    )
    second = asyncio.create_task(_ack_all([(Delivered(6, sent), True)], first))  # type: ignore[list-item]
    await asyncio.gather(first, second)
    assert sent == [(3, True), (5, False), (6, True)]
