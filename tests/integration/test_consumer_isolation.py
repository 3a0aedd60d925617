"""One bad item never costs the others anything: every consumer decodes and checks each item of
a batch on its own, dead-letters the bad one alone with its reason, and handles the rest.

The bad items are published straight to the exchanges, as a faulty or hostile producer would:
the gateways' own checks never see them.
"""

import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import msgspec
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from proto import env, frames
from proto.envelopes import (
    Batch,
    Batched,
    Delivery,
    DeliveryItem,
    Outgoing,
    Target,
    decode_delivery,
    encode,
)
from proto.mids import MidFactory
from proto.names import HEADER_REJECTED_REASON, KEY_BATCH, KEY_SEND, Names
from proto.topology import DELIVERY_LIMIT
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration

DEEP = 2000
"""Nesting levels of a hostile body: deeper than any recursive decoder goes."""

mids = MidFactory("0123456789")


def new_mid() -> str:
    return mids.next_mid(1_700_000_000_000)


def deep_body() -> bytes:
    return b"[" * DEEP + b"]" * DEEP


def message_item(to: str, mid: str, body: bytes = b'{"text":"hi"}') -> DeliveryItem:
    """What a router puts in an offline delivery for a recipient without a connection."""
    frame = frames.encode(
        frames.Message(mid=mid, sender="alice", to=to, body=msgspec.Raw(body), ts=1)
    )
    return DeliveryItem(
        frame=msgspec.Raw(frame), targets=[Target(to, "")], mid=mid, durable=True
    )


def outgoing(to: str, mid: str, body: bytes, gateway_id: str) -> bytes:
    return encode(
        Outgoing(
            mid=mid,
            sender="alice",
            client_id=uuid.uuid4().hex,
            body=msgspec.Raw(body),
            ts=1,
            gateway_id=gateway_id,
            conn_id="c-alice",
            to=to,
        )
    )


@pytest.fixture
async def channel() -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(env.DEFAULT_AMQP_URL, timeout=scaled(10))
    async with connection:
        yield await connection.channel(publisher_confirms=True, on_return_raises=True)


async def publish(
    channel: AbstractChannel, exchange: str, routing_key: str, body: bytes
) -> None:
    target = await channel.get_exchange(exchange, ensure=False)
    message = aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    await target.publish(message, routing_key, mandatory=True, timeout=scaled(5))


async def dead_letters(
    channel: AbstractChannel, names: Names, count: int
) -> list[AbstractIncomingMessage]:
    """Take ``count`` messages from the dead-letter queue, then check that no more wait."""
    queue = await channel.declare_queue(names.dead_letter_queue, passive=True)
    taken: list[AbstractIncomingMessage] = []
    for _ in range(count):
        taken.append(
            await eventually(lambda: queue.get(no_ack=True, fail=False), within_s=10)
        )
    assert await queue.get(no_ack=True, fail=False) is None
    return taken


def reason_of(message: AbstractIncomingMessage) -> str:
    reason = message.headers.get(HEADER_REJECTED_REASON)
    return reason.decode() if isinstance(reason, bytes) else str(reason)


async def test_one_bad_uid_in_an_offline_delivery_costs_carol_nothing(
    stack: Stack, channel: AbstractChannel
) -> None:
    await stack.start(gateways=2)
    names = stack.names
    good, bad = new_mid(), new_mid()
    # The router puts every offline item of a batch into one delivery: carol's beside a uid
    # that PostgreSQL text cannot hold.
    delivery = Delivery(items=[message_item("carol", good), message_item("x\0y", bad)])
    await publish(channel, names.undeliverable_exchange, "", encode(delivery))

    carol = await stack.connect(1, uid="carol")
    message = await carol.expect_message(mid=good, within_s=10)
    assert message["to"] == "carol"
    await carol.ack(good)

    (rejected,) = await dead_letters(channel, names, 1)
    (item,) = decode_delivery(rejected.body).items
    assert item.mid == bad
    assert [target.uid for target in item.targets] == ["x\0y"]
    assert "NUL" in reason_of(rejected)
    (store,) = stack.stores
    line = await store.wait_for_event("envelope_rejected", item=1)
    assert "NUL" in line["reason"]
    assert store.is_running


async def test_deep_bodies_are_dead_lettered_alone_and_every_service_keeps_serving(
    stack: Stack, channel: AbstractChannel
) -> None:
    await stack.start(gateways=2)
    names = stack.names
    erin = await stack.connect(0, uid="erin")
    gateway_id = stack.gateways[0].gateway_id
    assert erin.conn_id is not None

    # The router: a batch with a deep message beside an innocent one, and a deep one alone.
    deep_mid, routed_mid = new_mid(), new_mid()
    batch = Batch(
        items=[
            Batched(KEY_SEND, msgspec.Raw(outgoing("erin", deep_mid, deep_body(), ""))),
            Batched(KEY_SEND, msgspec.Raw(outgoing("erin", routed_mid, b"1", ""))),
        ]
    )
    await publish(channel, names.inbound_exchange, KEY_BATCH, encode(batch))
    await publish(
        channel,
        names.inbound_exchange,
        KEY_SEND,
        outgoing("erin", new_mid(), deep_body(), ""),
    )
    await erin.expect_message(mid=routed_mid, within_s=10)
    await erin.ack(routed_mid)

    # A gateway: one delivery with a deep frame beside an innocent one, for erin's connection.
    pushed_mid = new_mid()
    for_erin = [Target("erin", erin.conn_id)]
    deep_item = message_item("erin", new_mid(), deep_body())
    delivery = Delivery(
        items=[
            DeliveryItem(frame=deep_item.frame, targets=for_erin, mid=deep_item.mid),
            DeliveryItem(
                frame=message_item("erin", pushed_mid).frame,
                targets=for_erin,
                mid=pushed_mid,
            ),
        ]
    )
    await publish(channel, names.deliveries_exchange, gateway_id, encode(delivery))
    await erin.expect_message(mid=pushed_mid, within_s=10)

    # The offline store: the same, for a uid without a connection.
    stored_mid = new_mid()
    delivery = Delivery(
        items=[
            message_item("frank", new_mid(), deep_body()),
            message_item("frank", stored_mid),
        ]
    )
    await publish(channel, names.undeliverable_exchange, "", encode(delivery))
    frank = await stack.connect(1, uid="frank")
    await frank.expect_message(mid=stored_mid, within_s=10)

    # The batch's deep item, the gateway's and the store's, each alone with its reason; the
    # lone deep message rejected whole (the broker's x-death header says so).
    rejected = await dead_letters(channel, names, 4)
    alone = [m for m in rejected if HEADER_REJECTED_REASON in (m.headers or {})]
    assert len(alone) == 3
    assert all("deep" in reason_of(message) for message in alone)
    for process in stack.processes:
        assert process.is_running, process.name
    await erin.expect_nothing("message", for_s=0.5)


async def test_a_batch_failing_beyond_the_delivery_limit_is_stored_once_postgresql_recovers(
    stack: Stack, channel: AbstractChannel
) -> None:
    names = stack.names
    store = await stack.start_store(
        **{env.QUERY_TIMEOUT_S: "0.2", env.RETRY_BACKOFF_MAX_S: "0.05"}
    )
    schema, _, name = names.undelivered_table.partition(".")
    pg = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=scaled(10))
    try:
        # PostgreSQL refuses this namespace's writes (and this namespace's only): every
        # insert waits for the lock until the store's statement deadline.
        locked = pg.transaction()
        await locked.start()
        await pg.execute(f'LOCK TABLE "{schema}"."{name}" IN ACCESS EXCLUSIVE MODE')
        mid = new_mid()
        delivery = Delivery(items=[message_item("carol", mid)])
        await publish(channel, names.undeliverable_exchange, "", encode(delivery))
        dead_letter = await channel.declare_queue(names.dead_letter_queue, passive=True)

        async def failed_enough() -> bool | None:
            if store.count_events("batch_failed") > DELIVERY_LIMIT + 5:
                return True
            # A message that the broker dead-lettered meanwhile ends the wait early.
            declared = await channel.declare_queue(dead_letter.name, passive=True)
            return True if declared.declaration_result.message_count else None

        await eventually(failed_enough, within_s=60)
        await locked.rollback()

        async def stored() -> bool | None:
            count = await pg.fetchval(
                f'SELECT count(*) FROM "{schema}"."{name}" WHERE mid = $1', mid
            )
            return True if count == 1 else None

        await eventually(stored, within_s=20)
        assert store.count_events("batch_failed") > DELIVERY_LIMIT
        assert await dead_letter.get(no_ack=True, fail=False) is None
    finally:
        await pg.close()
