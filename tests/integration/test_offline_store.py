"""The offline store as a real process, on the real RabbitMQ and PostgreSQL of the test's namespace.

The test plays the router and the gateways: it publishes what they would publish and reads the
table, the router's queue and a fake gateway's queue.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import asyncpg
import msgspec
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from proto import env, frames
from proto.envelopes import (
    Acked,
    Batch,
    Batched,
    Delivery,
    DeliveryItem,
    MessageOffline,
    ReplayRequest,
    ReplayTarget,
    Saved,
    SavedUid,
    Target,
    decode_batch,
    decode_delivery,
    decode_saved,
    encode,
)
from proto.mids import MidFactory
from proto.names import (
    EVENT_MESSAGE_OFFLINE,
    HEADER_REJECTED_REASON,
    KEY_ACK,
    KEY_REPLAY,
    KEY_REPLAY_BATCH,
    KEY_REPLAY_MORE,
    Names,
)
from proto.topology import gateway_topology, shared_topology
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration

ORPHAN_TTL_MS = 60_000
EXPIRES_MS = 120_000


@dataclass(frozen=True)
class Row:
    uid: str
    mid: str
    frame: str


class Broker:
    """The test's side of RabbitMQ: confirmed publishes and passive access to queues."""

    def __init__(self, channel: AbstractChannel, names: Names) -> None:
        self.channel = channel
        self.names = names

    async def publish(self, exchange: str, routing_key: str, body: bytes) -> None:
        target = await self.channel.get_exchange(exchange, ensure=False)
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await target.publish(message, routing_key, mandatory=True, timeout=scaled(5))

    async def publish_undeliverable(self, delivery: Delivery) -> None:
        """What a router does for a recipient without a connection."""
        await self.publish(self.names.undeliverable_exchange, "", encode(delivery))

    async def publish_control(
        self, routing_key: str, envelope: Acked | ReplayRequest
    ) -> None:
        await self.publish(self.names.inbound_exchange, routing_key, encode(envelope))

    async def fake_gateway(
        self, stack: Stack, orphan_ttl_ms: int = ORPHAN_TTL_MS
    ) -> tuple[str, AbstractQueue]:
        """Declare a gateway's queue, as a gateway process would, and return its id and queue."""
        gateway_id = f"fake-{uuid.uuid4().hex[:8]}"
        stack.gateway_ids.append(gateway_id)  # teardown deletes its queue
        topology = gateway_topology(self.names, gateway_id, orphan_ttl_ms, EXPIRES_MS)
        (spec,) = topology.queues
        queue = await self.channel.declare_queue(
            spec.name, durable=True, arguments=dict(spec.arguments)
        )
        for binding in topology.bindings:
            await queue.bind(binding.exchange, binding.routing_key)
        return gateway_id, queue

    async def router_queue(self) -> AbstractQueue:
        return await self.channel.get_queue(self.names.router_queue, ensure=True)

    async def declare_shared_topology(self) -> None:
        topology = shared_topology(self.names, "quorum")
        for exchange in topology.exchanges:
            await self.channel.declare_exchange(
                exchange.name,
                exchange.kind,
                durable=True,
                arguments=dict(exchange.arguments),
            )
        for queue_spec in topology.queues:
            queue = await self.channel.declare_queue(
                queue_spec.name, durable=True, arguments=dict(queue_spec.arguments)
            )
            for binding in topology.bindings:
                if binding.queue == queue_spec.name:
                    await queue.bind(binding.exchange, binding.routing_key)


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(env.DEFAULT_AMQP_URL, timeout=scaled(10))
    async with connection:
        yield connection


@pytest.fixture
async def broker(amqp: AbstractConnection, stack: Stack) -> Broker:
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    return Broker(channel, stack.names)


@pytest.fixture
async def pg() -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=scaled(10))
    try:
        yield connection
    finally:
        await connection.close()


def table(names: Names) -> str:
    schema, _, name = names.undelivered_table.partition(".")
    return f'"{schema}"."{name}"'


async def rows_of(pg: asyncpg.Connection, names: Names) -> list[Row]:
    records = await pg.fetch(
        f"SELECT uid, mid, frame FROM {table(names)} ORDER BY uid, mid"
    )
    return [Row(r["uid"], r["mid"], r["frame"]) for r in records]


async def count_rows(pg: asyncpg.Connection, names: Names) -> int:
    count: int = await pg.fetchval(f"SELECT count(*) FROM {table(names)}")
    return count


async def insert_rows(pg: asyncpg.Connection, names: Names, rows: list[Row]) -> None:
    """Put rows in the table directly, as if the store had kept them earlier."""
    await pg.copy_records_to_table(
        names.undelivered_table.partition(".")[2],
        schema_name=names.schema,
        columns=["uid", "mid", "frame"],
        records=[(row.uid, row.mid, row.frame) for row in rows],
    )


mids = MidFactory("0123456789")
clock_ms = 1_700_000_000_000


def new_mids(count: int) -> list[str]:
    return [mids.next_mid(clock_ms) for _ in range(count)]


def message_frame(mid: str, to: str, body: bytes = b'{"text": "hi"}') -> bytes:
    message = frames.Message(
        mid=mid, sender="alice", to=to, body=msgspec.Raw(body), ts=1
    )
    return frames.encode(message)


def durable_item(
    mid: str, *targets: tuple[str, str], frame: bytes | None = None
) -> DeliveryItem:
    return DeliveryItem(
        frame=msgspec.Raw(
            frame if frame is not None else message_frame(mid, targets[0][0])
        ),
        targets=[Target(uid, conn_id) for uid, conn_id in targets],
        mid=mid,
        durable=True,
    )


async def next_envelope(queue: AbstractQueue, within_s: float = 5.0) -> bytes:
    message = await eventually(lambda: queue.get(no_ack=True, fail=False), within_s)
    return message.body


async def receive_items(
    queue: AbstractQueue, count: int, within_s: float = 5.0
) -> list[DeliveryItem]:
    """Read deliveries from a gateway queue until ``count`` items have arrived."""
    items: list[DeliveryItem] = []
    async with asyncio.timeout(scaled(within_s)):
        while len(items) < count:
            items.extend(decode_delivery(await next_envelope(queue, within_s)).items)
    return items


async def wait_for_rows(
    pg: asyncpg.Connection, names: Names, count: int, within_s: float = 5.0
) -> None:
    async def probe() -> bool | None:
        return True if await count_rows(pg, names) == count else None

    await eventually(probe, within_s)


# Schema and lifecycle


UNDELIVERED_COLUMNS = [
    ("uid", "text", "NO"),
    ("mid", "text", "NO"),
    ("frame", "text", "NO"),
    ("stored_at", "timestamp with time zone", "NO"),
]
"""The undelivered table's columns with history off."""
UNDELIVERED_COLUMNS_WITH_HISTORY = [
    ("uid", "text", "NO"),
    ("mid", "text", "NO"),
    # A row of a message kept in the history has no frame of its own: it is in messages.
    ("frame", "text", "YES"),
    ("stored_at", "timestamp with time zone", "NO"),
    ("seq", "bigint", "YES"),
]


@pytest.mark.parametrize(
    ("history", "expected"),
    [("off", UNDELIVERED_COLUMNS), ("on", UNDELIVERED_COLUMNS_WITH_HISTORY)],
)
async def test_schema_and_table_are_created_on_start(
    stack: Stack, pg: asyncpg.Connection, history: str, expected: list[tuple[str, ...]]
) -> None:
    names = stack.names
    assert await pg.fetchval("SELECT to_regclass($1)", names.undelivered_table) is None

    await stack.start_store(**{env.HISTORY: history})

    columns = await pg.fetch(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        names.schema,
        names.undelivered_table.partition(".")[2],
    )
    assert [
        (c["column_name"], c["data_type"], c["is_nullable"]) for c in columns
    ] == expected
    key = await pg.fetch(
        "SELECT a.attname FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY a.attnum",
        names.undelivered_table,
    )
    assert [k["attname"] for k in key] == ["uid", "mid"]


async def test_two_stores_starting_at_once_both_serve(
    stack: Stack, pg: asyncpg.Connection
) -> None:
    first, second = await asyncio.gather(stack.start_store(), stack.start_store())
    assert first.is_running
    assert second.is_running
    assert await count_rows(pg, stack.names) == 0


async def test_sigterm_stops_the_store_with_exit_code_0(stack: Stack) -> None:
    store = await stack.start_store()
    assert await store.stop() == 0
    await store.wait_for_event("service_stopped")


async def test_sigterm_under_load_loses_nothing(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    names = stack.names
    await broker.declare_shared_topology()
    all_mids = new_mids(3000)
    await asyncio.gather(
        *(
            broker.publish_undeliverable(
                Delivery(items=[durable_item(mid, ("bob", ""))])
            )
            for mid in all_mids
        )
    )
    first = await stack.start_store()
    assert await first.stop() == 0  # in the middle of the backlog, or just after it

    # Whatever the first store had not committed went back to the queue.
    await stack.start_store()
    await wait_for_rows(pg, names, len(all_mids), within_s=15)
    assert sorted(row.mid for row in await rows_of(pg, names)) == all_mids


# Keeping undelivered messages


async def test_durable_frames_are_stored_and_announced(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    await stack.start_store()
    names = stack.names
    m1, m2, m3, m4 = new_mids(4)
    frame_bob = message_frame(m1, "bob")
    ready = frames.encode(frames.Ready(uid="bob", conn="c1"))
    delivery = Delivery(
        items=[
            durable_item(
                m1, ("bob", "c1"), ("bob", "c2"), ("carol", ""), frame=frame_bob
            ),
            DeliveryItem(frame=msgspec.Raw(ready), targets=[Target("bob", "c1")]),
            DeliveryItem(
                frame=msgspec.Raw(message_frame(m2, "bob")),
                targets=[Target("bob", "c1")],
                mid=m2,
                durable=False,
            ),
            DeliveryItem(
                frame=msgspec.Raw(message_frame(m3, "bob")),
                targets=[Target("bob", "c1")],
                mid=m3,
                durable=True,
                stored=True,
            ),
            durable_item(m4, ("carol", "c9")),
        ]
    )
    await broker.publish_undeliverable(delivery)

    saved = decode_saved(await next_envelope(await broker.router_queue()))
    assert saved == Saved(uids=[SavedUid("bob", m1), SavedUid("carol", m1)])
    assert await rows_of(pg, names) == [
        Row("bob", m1, frame_bob.decode()),
        Row("carol", m1, frame_bob.decode()),
        Row("carol", m4, message_frame(m4, "carol").decode()),
    ]


async def test_the_same_message_stored_twice_gives_one_row(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    store = await stack.start_store()
    (mid,) = new_mids(1)
    delivery = Delivery(items=[durable_item(mid, ("bob", "c1"))])
    router_queue = await broker.router_queue()

    await broker.publish_undeliverable(delivery)
    await wait_for_rows(pg, stack.names, 1)
    assert decode_saved(await next_envelope(router_queue)).uids == [
        SavedUid("bob", mid)
    ]
    await eventually(lambda: _at_least(store.count_events("undelivered_stored"), 1))

    await broker.publish_undeliverable(delivery)
    await eventually(lambda: _at_least(store.count_events("undelivered_stored"), 2))
    assert [(row.uid, row.mid) for row in await rows_of(pg, stack.names)] == [
        ("bob", mid)
    ]
    # Nothing new was committed, so nothing is announced.
    assert await router_queue.get(no_ack=True, fail=False) is None


async def _at_least(seen: int, expected: int) -> bool | None:
    return True if seen >= expected else None


async def test_deliveries_dead_lettered_by_a_gateway_queue_are_stored(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    await stack.start_store()
    # A gateway that died: nobody consumes its queue, whose messages expire at once.
    gateway_id, _ = await broker.fake_gateway(stack, orphan_ttl_ms=1)
    (mid,) = new_mids(1)
    delivery = Delivery(items=[durable_item(mid, ("bob", "c1"))])
    await broker.publish(stack.names.deliveries_exchange, gateway_id, encode(delivery))

    await wait_for_rows(pg, stack.names, 1)
    assert [(r.uid, r.mid) for r in await rows_of(pg, stack.names)] == [("bob", mid)]


async def test_deliveries_for_a_gateway_without_queue_are_stored(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    await stack.start_store()
    (mid,) = new_mids(1)
    delivery = Delivery(items=[durable_item(mid, ("bob", "c1"))])
    # The deliveries exchange's alternate exchange leads to the offline queue.
    await broker.publish(stack.names.deliveries_exchange, "gone", encode(delivery))

    await wait_for_rows(pg, stack.names, 1)
    assert [(r.uid, r.mid) for r in await rows_of(pg, stack.names)] == [("bob", mid)]


async def test_malformed_bodies_are_rejected_and_the_store_keeps_serving(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    store = await stack.start_store()
    names = stack.names
    await broker.publish(names.undeliverable_exchange, "", b"not json")
    await broker.publish(
        names.undeliverable_exchange, "", b'{"items": [{"targets": 1}]}'
    )
    await broker.publish(names.inbound_exchange, KEY_ACK, b'{"uid": "bob"}')
    await broker.publish(names.inbound_exchange, KEY_REPLAY, b"[1, 2]")

    (mid,) = new_mids(1)
    await broker.publish_undeliverable(
        Delivery(items=[durable_item(mid, ("bob", "c1"))])
    )
    await wait_for_rows(pg, names, 1)
    await eventually(lambda: _at_least(store.count_events("envelope_rejected"), 4))
    gateway_id, gateway_queue = await broker.fake_gateway(stack)
    await broker.publish_control(
        KEY_REPLAY, ReplayRequest(uid="bob", targets=[ReplayTarget(gateway_id, "c1")])
    )
    (item,) = await receive_items(gateway_queue, 1)
    assert item.mid == mid

    # Rejected for good: neither requeued nor waiting in the store's queues.
    for queue_name in (names.offline_queue, names.store_control_queue):
        queue = await broker.channel.declare_queue(queue_name, passive=True)
        assert queue.declaration_result.message_count == 0
    assert store.count_events("envelope_rejected") == 4
    assert store.is_running


# Acknowledgements


async def test_acked_rows_are_deleted(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    store = await stack.start_store()
    names = stack.names
    m1, m2, m3 = new_mids(3)
    await broker.publish_undeliverable(
        Delivery(
            items=[
                durable_item(mid, ("bob", "c1"), ("carol", "c2"))
                for mid in (m1, m2, m3)
            ]
        )
    )
    await wait_for_rows(pg, names, 6)

    await broker.publish_control(KEY_ACK, Acked(uid="bob", mids=[m1, m3, "not-there"]))
    await broker.publish_control(KEY_ACK, Acked(uid="carol", mids=[m2]))

    async def remaining() -> list[tuple[str, str]] | None:
        keys = [(row.uid, row.mid) for row in await rows_of(pg, names)]
        return keys if len(keys) == 3 else None

    assert await eventually(remaining) == [("bob", m2), ("carol", m1), ("carol", m3)]

    # The store logs a deletion after its commit, so the line may trail the rows.
    async def logged_deletions() -> int | None:
        deleted = [e for e in store.events if e.get("event") == "undelivered_deleted"]
        count = sum(e["count"] for e in deleted)
        return count if count >= 3 else None

    assert await eventually(logged_deletions) == 3


# Replay


async def test_replay_pushes_rows_from_from_mid_in_order_to_each_gateway(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    store = await stack.start_store()
    names = stack.names
    m1, m2, m3, m4 = new_mids(4)
    other = new_mids(1)[0]
    # Inserted out of order: the replay sorts by mid.
    rows = [
        Row("bob", mid, message_frame(mid, "bob").decode()) for mid in (m3, m1, m4, m2)
    ]
    # Whitespace and key order that a re-encoding would not keep.
    odd_frame = '{"type":"message", "mid":"' + other + '","body":{"b":1,"a":2}}'
    rows.append(Row("bob", other, odd_frame))
    rows.append(Row("carol", m2, message_frame(m2, "carol").decode()))
    await insert_rows(pg, names, rows)
    gw1, queue1 = await broker.fake_gateway(stack)
    gw2, queue2 = await broker.fake_gateway(stack)

    request = ReplayRequest(
        uid="bob",
        targets=[
            ReplayTarget(gw1, "c1"),
            ReplayTarget(gw2, "c3"),
            ReplayTarget(gw1, "c2"),
        ],
        from_mid=m2,
    )
    await broker.publish_control(KEY_REPLAY, request)

    frames_by_mid = {row.mid: row.frame.encode() for row in rows if row.uid == "bob"}
    for queue, targets in (
        (queue1, [Target("bob", "c1"), Target("bob", "c2")]),
        (queue2, [Target("bob", "c3")]),
    ):
        items = await receive_items(queue, 4)
        assert [item.mid for item in items] == [m2, m3, m4, other]
        for item in items:
            assert item.targets == targets
            assert item.stored
            assert item.durable
            assert bytes(item.frame) == frames_by_mid[item.mid]
    finished = await store.wait_for_event("replay_finished", uid="bob")
    assert finished["rows"] == 4
    # Replaying leaves the rows until the client acknowledges them.
    assert await count_rows(pg, names) == len(rows)


async def test_logins_replayed_together_share_messages_and_keep_their_order(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    """A storm's whole windows (every row from the first) go in shared messages; a window
    from a later row goes alone, and the gateway's queue keeps the requests' order."""
    store = await stack.start_store()
    uids = [f"u{n:02d}" for n in range(20)]
    mids = new_mids(len(uids))
    rows = [
        Row(uid, mid, message_frame(mid, uid).decode())
        for uid, mid in zip(uids, mids, strict=True)
    ]
    await insert_rows(pg, stack.names, rows)
    gateway_id, queue = await broker.fake_gateway(stack)

    store.pause()  # the requests queue up, to be served in one batch
    try:
        for n, (uid, mid) in enumerate(zip(uids, mids, strict=True)):
            await broker.publish_control(
                KEY_REPLAY,
                ReplayRequest(
                    uid=uid,
                    targets=[ReplayTarget(gateway_id, f"c{n}")],
                    from_mid=mid if uid == "u10" else "",  # a saved row's replay
                ),
            )
    finally:
        store.resume()

    items: list[DeliveryItem] = []
    messages = 0
    while len(items) < len(uids):
        items.extend(decode_delivery(await next_envelope(queue)).items)
        messages += 1
    assert [(item.targets[0].uid, item.mid) for item in items] == list(
        zip(uids, mids, strict=True)
    )
    assert all(item.stored for item in items)
    assert [bytes(item.frame) for item in items] == [r.frame.encode() for r in rows]
    # u10's window alone, and the windows before and after it shared (more if the store
    # took the requests in more than one batch).
    assert 3 <= messages < len(uids), messages


async def test_a_bad_request_in_a_routers_replay_batch_costs_the_others_nothing(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    """A ``router.replays`` batch: its good requests are replayed, a bad one is dead-lettered
    alone, with its reason."""
    await stack.start_store()
    ann_mid, bob_mid = new_mids(2)
    rows = [
        Row("ann", ann_mid, message_frame(ann_mid, "ann").decode()),
        Row("bob", bob_mid, message_frame(bob_mid, "bob").decode()),
    ]
    await insert_rows(pg, stack.names, rows)
    gateway_id, queue = await broker.fake_gateway(stack)

    def request(uid: str) -> Batched:
        replay = ReplayRequest(uid=uid, targets=[ReplayTarget(gateway_id, f"c-{uid}")])
        return Batched(KEY_REPLAY, msgspec.Raw(encode(replay)))

    batch = Batch(items=[request("ann"), request("x\0y"), request("bob")])
    await broker.publish(stack.names.inbound_exchange, KEY_REPLAY_BATCH, encode(batch))

    items = await receive_items(queue, 2)
    assert [(item.targets[0].uid, item.mid) for item in items] == [
        ("ann", ann_mid),
        ("bob", bob_mid),
    ]
    dead = await broker.channel.declare_queue(
        stack.names.dead_letter_queue, passive=True
    )
    rejected = await eventually(lambda: dead.get(no_ack=True, fail=False))
    assert rejected.routing_key == KEY_REPLAY_BATCH
    (item,) = decode_batch(rejected.body).items
    assert (item.key, bytes(item.body)) == (KEY_REPLAY, bytes(request("x\0y").body))
    assert rejected.headers[HEADER_REJECTED_REASON]
    assert await dead.get(no_ack=True, fail=False) is None


async def test_a_replay_request_gets_one_window_and_where_the_next_starts(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    await stack.start_store(**{env.REPLAY_PAGE: "500"})
    names = stack.names
    all_mids = new_mids(2000)
    await insert_rows(
        pg,
        names,
        [Row("bob", mid, message_frame(mid, "bob").decode()) for mid in all_mids],
    )
    gateway_id, queue = await broker.fake_gateway(stack)
    target = [ReplayTarget(gateway_id, "c1")]

    # No limit of its own (a router's request): one page.
    await broker.publish_control(KEY_REPLAY, ReplayRequest(uid="bob", targets=target))
    first = decode_delivery(await next_envelope(queue))
    assert [item.mid for item in first.items] == all_mids[:500]
    assert first.next_mid == all_mids[500]

    # A gateway asks for the next window, as large as its connection can take.
    await broker.publish_control(
        KEY_REPLAY_MORE,
        ReplayRequest(uid="bob", targets=target, from_mid=first.next_mid, limit=100),
    )
    second = decode_delivery(await next_envelope(queue))
    assert [item.mid for item in second.items] == all_mids[500:600]
    assert second.next_mid == all_mids[600]

    # A limit above the page gets a page; the last window says nothing remains.
    await broker.publish_control(
        KEY_REPLAY_MORE,
        ReplayRequest(uid="bob", targets=target, from_mid=all_mids[1600], limit=900),
    )
    last = decode_delivery(await next_envelope(queue))
    assert [item.mid for item in last.items] == all_mids[1600:]
    assert last.next_mid == ""
    assert await queue.get(no_ack=True, fail=False) is None


async def test_replay_of_10000_rows_window_by_window_arrives_completely_in_order(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    await stack.start_store()
    names = stack.names
    all_mids = new_mids(10_000)
    await insert_rows(
        pg,
        names,
        [Row("bob", mid, message_frame(mid, "bob").decode()) for mid in all_mids],
    )
    gateway_id, queue = await broker.fake_gateway(stack)
    target = [ReplayTarget(gateway_id, "c1")]

    items: list[DeliveryItem] = []
    request = ReplayRequest(uid="bob", targets=target)
    async with asyncio.timeout(scaled(30)):
        while True:
            await broker.publish_control(KEY_REPLAY_MORE, request)
            window = decode_delivery(await next_envelope(queue))
            items.extend(window.items)
            if not window.next_mid:
                break
            request = ReplayRequest(uid="bob", targets=target, from_mid=window.next_mid)
    assert [item.mid for item in items] == all_mids


async def test_replay_of_a_uid_without_rows_sends_nothing(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    store = await stack.start_store()
    gateway_id, queue = await broker.fake_gateway(stack)
    await broker.publish_control(
        KEY_REPLAY,
        ReplayRequest(uid="nobody", targets=[ReplayTarget(gateway_id, "c1")]),
    )
    finished = await store.wait_for_event("replay_finished", uid="nobody")
    assert finished["rows"] == 0
    assert await queue.get(no_ack=True, fail=False) is None


# A large backlog


async def test_a_backlog_of_10000_rows_is_stored_completely(
    stack: Stack, broker: Broker, pg: asyncpg.Connection
) -> None:
    names = stack.names
    await broker.declare_shared_topology()
    # Deliveries of five messages each, like a gateway handing over what a closed
    # connection left unacknowledged; all queued before the store starts.
    all_mids = new_mids(10_000)
    deliveries = [
        Delivery(
            items=[durable_item(mid, (f"u{n % 50}", "")) for mid in all_mids[n : n + 5]]
        )
        for n in range(0, len(all_mids), 5)
    ]
    for start in range(0, len(deliveries), 500):
        await asyncio.gather(
            *(broker.publish_undeliverable(d) for d in deliveries[start : start + 500])
        )

    await stack.start_store()
    await wait_for_rows(pg, names, len(all_mids), within_s=30)
    assert sorted(row.mid for row in await rows_of(pg, names)) == all_mids


async def test_stored_messages_are_announced_on_the_events_exchange(
    stack: Stack, broker: Broker
) -> None:
    await stack.start_store()
    names = stack.names
    # A backend's queue for message.offline (exclusive: it goes away with the channel).
    events = await broker.channel.declare_queue(exclusive=True)
    await events.bind(names.events_exchange, EVENT_MESSAGE_OFFLINE)
    (m1,) = new_mids(1)
    await broker.publish_undeliverable(
        Delivery(items=[durable_item(m1, ("bob", "c1"), ("carol", ""))])
    )

    received = [
        msgspec.json.decode(await next_envelope(events), type=MessageOffline)
        for _ in range(2)
    ]
    assert sorted((event.uid, event.mid) for event in received) == [
        ("bob", m1),
        ("carol", m1),
    ]
    assert all(event.ts > 0 for event in received)
    assert await events.get(no_ack=True, fail=False) is None
