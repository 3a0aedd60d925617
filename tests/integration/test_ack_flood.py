"""A flood of cheap ``ack`` frames beside an innocent login, with real processes.

Acks of mids nobody holds cost the system work (a publish, a DELETE); they must be batched and
bounded, and never stand between another user and their replay.
"""

import asyncio
import json
import time
import uuid

import pytest

from proto import env, frames, metrics
from proto.mids import MidFactory
from proto.names import KEY_ACK, KEY_ACK_BATCH
from tests.integration.test_observability import grows, scrape, value
from tests.support.stack import Stack, free_port
from tests.support.stored import wait_for_rows_stored
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration

FLOOD_FRAMES = 1500
"""Acks of 1,000 unknown mids each: 1.5 million keys to delete."""
REPLAY_BOUND_S = 3.0
"""How long the innocent login may wait for its replay (one is well under a second alone)."""


def flood_frames(count: int) -> list[str]:
    factory = MidFactory(uuid.uuid4().hex[:10])
    now_ms = int(time.time() * 1000)
    return [
        json.dumps(
            {
                "type": "ack",
                "mids": [factory.next_mid(now_ms) for _ in range(frames.MAX_ACK_MIDS)],
            }
        )
        for _ in range(count)
    ]


async def test_ack_flood_is_batched_and_does_not_delay_a_replay(stack: Stack) -> None:
    gateway_port = free_port()
    await asyncio.gather(stack.start_router(), stack.start_store())
    # The flooder's gateway lets it through at full speed: what passes the edge is the point.
    flooded, other = await asyncio.gather(
        stack.start_gateway(
            **{
                env.METRICS_PORT: str(gateway_port),
                env.RATE_LIMIT_PER_S: "100000",
                env.RATE_LIMIT_BURST: "100000",
                env.RATE_LIMIT_BYTES_PER_S: "0",
            }
        ),
        stack.start_gateway(),
    )
    store = stack.stores[0]
    alice = await stack.connect(other, uid="alice")
    stored = await alice.send_message("carol", {"text": "while you were away"})
    await wait_for_rows_stored(store)
    texts = flood_frames(FLOOD_FRAMES)
    before = await scrape(gateway_port)

    mallory = await stack.connect(flooded, uid="mallory")
    for text in texts:
        await mallory.send_raw(text)
    await grows(
        gateway_port,
        metrics.FRAMES_RECEIVED_TOTAL,
        before,
        by=FLOOD_FRAMES,
        frame_type="ack",
    )

    # The innocent login, while the store still has acks to delete.
    started = asyncio.get_running_loop().time()
    carol = await stack.connect(other, uid="carol")
    await carol.expect_message(mid=stored["mid"], within_s=REPLAY_BOUND_S)
    waited_s = asyncio.get_running_loop().time() - started
    print(f"replay waited {waited_s:.3f} s beside {FLOOD_FRAMES} ack frames")
    assert waited_s < scaled(REPLAY_BOUND_S)

    # Every acked mid reached the store (a connection's acks travel gathered, in ``Acked``
    # envelopes of many frames' mids), in far fewer broker messages than frames.
    flooded_mids = FLOOD_FRAMES * frames.MAX_ACK_MIDS

    async def all_acks_handled() -> int | None:
        mids = sum(
            event.get("mids", 0)
            for event in store.events
            if event.get("event") == "undelivered_deleted"
        )
        return mids if mids >= flooded_mids else None

    assert await eventually(all_acks_handled, within_s=60) == flooded_mids
    after = await scrape(gateway_port)
    batches = value(
        after, metrics.GATEWAY_PUBLISHES_TOTAL, routing_key=KEY_ACK_BATCH
    ) - value(before, metrics.GATEWAY_PUBLISHES_TOTAL, routing_key=KEY_ACK_BATCH)
    singles = value(after, metrics.GATEWAY_PUBLISHES_TOTAL, routing_key=KEY_ACK)
    assert singles == 0
    assert 1 <= batches <= FLOOD_FRAMES / 10, batches
    print(f"{FLOOD_FRAMES} ack frames forwarded in {batches:.0f} publishes")
    # The flooder's connection and the services are still there.
    await mallory.send_frame({"type": "ping", "id": "p"})
    await mallory.expect("pong")
