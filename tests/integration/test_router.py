"""The router as a real process, against real RabbitMQ and Redis, in the test's namespace.

The test poses as gateways (it publishes envelopes to the inbound exchange and consumes
fake gateway queues) and as the offline store (it consumes the offline and control
queues), so it sees exactly what the router publishes.

Every router here relays (``SWITCHBOARD_HISTORY=off``): 1:1 and group messages go straight to
their recipients' gateways, or to ``<ns>.offline``. With history on they go to the offline
store's ``<ns>.inbox`` instead, which test_inbox.py follows with real stores and gateways.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as redis
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from proto import env, frames
from proto.codes import CloseCode, ErrorCode
from proto.envelopes import (
    ConnClosed,
    ConnOpened,
    Delivery,
    DeliveryItem,
    Envelope,
    GatewayStopped,
    Heartbeat,
    Outgoing,
    PresenceAsked,
    ReplayRequest,
    ReplayTarget,
    RoomJoined,
    RoomLeft,
    Saved,
    SavedUid,
    Target,
    decode_delivery,
    decode_outgoing,
    decode_replay_request,
    encode,
)
from proto.groups import GroupChanged
from proto.mids import MidFactory
from proto.names import (
    EVENT_USER_OFFLINE,
    EVENT_USER_ONLINE,
    KEY_CONN_CLOSED,
    KEY_CONN_OPENED,
    KEY_GATEWAY_STOPPED,
    KEY_GROUP_CHANGED,
    KEY_HEARTBEAT,
    KEY_PRESENCE,
    KEY_REPLAY,
    KEY_ROOM_JOINED,
    KEY_ROOM_LEFT,
    KEY_SAVED,
    KEY_SEND,
    Names,
)
from proto.topology import gateway_topology
from router.group_redis import MEMBERS_PER_SCRIPT
from tests.support.api import Backend
from tests.support.processes import ServiceProcess
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_history")]

ORPHAN_TTL_MS = 60_000
QUEUE_EXPIRES_MS = 120_000
LONG_GATEWAY_TTL = {env.GATEWAY_TTL_S: "60"}
"""Fake gateways send no heartbeats: most tests keep them alive for the whole test."""
BODY = b'{"text": "hi",  "n": [1, 2.50]}'
MIDS = MidFactory("00c0ffee00")


def next_mid() -> str:
    return MIDS.next_mid(1_700_000_000_000)


@dataclass
class Received:
    """One AMQP message the test consumed, and the Delivery in it."""

    message: AbstractIncomingMessage
    delivery: Delivery

    def items_of(self, frame_type: type[Any]) -> list[DeliveryItem]:
        return [
            i
            for i in self.delivery.items
            if isinstance(frames.decode_server_frame(bytes(i.frame)), frame_type)
        ]


@dataclass
class Watched:
    """A queue the test consumes (auto-ack), with what arrived and is not read yet."""

    queue: AbstractQueue
    unread: asyncio.Queue[AbstractIncomingMessage] = field(
        default_factory=asyncio.Queue
    )

    async def start(self) -> "Watched":
        await self.queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.unread.put_nowait(message)

    async def next_message(self, within_s: float = 5.0) -> AbstractIncomingMessage:
        async with asyncio.timeout(scaled(within_s)):
            return await self.unread.get()

    async def next_delivery(self, within_s: float = 5.0) -> Received:
        message = await self.next_message(within_s)
        return Received(message, decode_delivery(message.body))

    async def expect(
        self,
        frame_type: type[Any],
        match: Callable[[DeliveryItem], bool] = lambda item: True,
    ) -> tuple[Received, DeliveryItem]:
        """Read deliveries until one holds a matching item of this frame type."""
        while True:
            received = await self.next_delivery()
            for item in received.items_of(frame_type):
                if match(item):
                    return received, item


@dataclass
class Bus:
    """The test's own AMQP client."""

    stack: Stack
    connection: AbstractRobustConnection
    channel: AbstractChannel
    inbound: AbstractExchange

    @property
    def names(self) -> Names:
        return self.stack.names

    async def publish(self, routing_key: str, envelope: Envelope | bytes) -> None:
        body = envelope if isinstance(envelope, bytes) else encode(envelope)
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.inbound.publish(message, routing_key, mandatory=True, timeout=5)

    async def fake_gateway(self, gateway_id: str, consume: bool = True) -> Watched:
        """Declare a gateway's queue as a gateway would, and consume it."""
        self.stack.gateway_ids.append(gateway_id)  # removed at teardown
        topology = gateway_topology(
            self.names, gateway_id, ORPHAN_TTL_MS, QUEUE_EXPIRES_MS
        )
        [spec] = topology.queues
        [binding] = topology.bindings
        queue = await self.channel.declare_queue(
            spec.name, durable=True, arguments=dict(spec.arguments)
        )
        await queue.bind(binding.exchange, binding.routing_key)
        watched = Watched(queue)
        return await watched.start() if consume else watched

    async def watch(self, queue_name: str) -> Watched:
        queue = await self.channel.get_queue(queue_name, ensure=True)
        return await Watched(queue).start()

    async def open_connection(
        self, gateway: Watched, uid: str, conn_id: str, gateway_id: str
    ) -> None:
        """Register a connection through the router and wait for its ``ready``."""
        await self.publish(
            KEY_CONN_OPENED,
            ConnOpened(uid=uid, conn_id=conn_id, gateway_id=gateway_id),
        )
        await gateway.expect(
            frames.Ready, lambda i: i.targets == [Target(uid, conn_id)]
        )

    async def send(
        self,
        to: str | None,
        mid: str | None = None,
        client_id: str | None = None,
        sender: str = "alice",
        **addressing: Any,
    ) -> str:
        """Publish an ``Outgoing`` from alice, as her gateway would; return its mid."""
        mid = mid or next_mid()
        outgoing = Outgoing(
            mid=mid,
            sender=sender,
            client_id=client_id or f"c-{mid}",
            to=to,
            body=msgspec.Raw(BODY),
            ts=1_700_000_000_123,
            gateway_id="gw-sender",
            conn_id=f"k-{sender}",
            **addressing,
        )
        await self.publish(KEY_SEND, outgoing)
        return mid


@pytest.fixture
async def redis_client() -> AsyncIterator["redis.Redis"]:
    client = redis.Redis.from_url(env.DEFAULT_REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


async def open_bus(stack: Stack) -> Bus:
    connection = await aio_pika.connect_robust(env.DEFAULT_AMQP_URL, timeout=10)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    inbound = await channel.get_exchange(stack.names.inbound_exchange, ensure=True)
    return Bus(stack, connection, channel, inbound)


@pytest.fixture
async def router(stack: Stack) -> ServiceProcess:
    return await stack.start_router(**LONG_GATEWAY_TTL)


@pytest.fixture
async def bus(stack: Stack, router: ServiceProcess) -> AsyncIterator[Bus]:
    """The test's AMQP client, once the router has declared the topology."""
    bus = await open_bus(stack)
    yield bus
    await bus.connection.close()


async def test_opened_records_presence_then_ready_then_replay(
    bus: Bus, redis_client: "redis.Redis"
) -> None:
    names = bus.names
    gateway = await bus.fake_gateway("gw1", consume=False)
    control = await bus.watch(names.store_control_queue)

    await bus.publish(
        KEY_CONN_OPENED, ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    )

    replay_message = await control.next_message()
    assert replay_message.routing_key == KEY_REPLAY
    assert decode_replay_request(replay_message.body) == ReplayRequest(
        uid="bob", targets=[ReplayTarget("gw1", "k1")], from_mid=""
    )
    # The replay request was published only after `ready` was confirmed: it is queued.
    ready_message = await gateway.queue.get(no_ack=True, fail=False, timeout=5)
    assert ready_message is not None, "ready was not queued before the replay request"
    [item] = decode_delivery(ready_message.body).items
    assert frames.decode_server_frame(bytes(item.frame)) == frames.Ready(
        uid="bob", conn="k1"
    )
    assert item.targets == [Target("bob", "k1")]
    assert await redis_client.hgetall(names.presence_key("bob")) == {"k1": "gw1"}
    assert await redis_client.hgetall(names.gateway_key("gw1")) == {"k1": "bob"}
    assert await redis_client.zscore(names.gateways_key, "gw1") is not None


async def test_replay_waits_until_ready_is_queued(
    bus: Bus, router: ServiceProcess
) -> None:
    names = bus.names
    # A gateway queue that refuses every message: the broker nacks the `ready`.
    bus.stack.gateway_ids.append("gw1")
    refusing = await bus.channel.declare_queue(
        names.gateway_queue("gw1"),
        durable=True,
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    await refusing.bind(names.deliveries_exchange, "gw1")
    control = await bus.channel.get_queue(names.store_control_queue, ensure=True)
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")

    await bus.publish(KEY_CONN_OPENED, opened)

    await router.wait_for_event("batch_failed")
    assert await control.get(no_ack=True, fail=False, timeout=5) is None
    # Once the gateway's queue takes messages, the requeued batch goes through.
    await refusing.delete()
    gateway = await bus.fake_gateway("gw1")
    await gateway.expect(frames.Ready)
    watched = await Watched(control).start()
    replay = decode_replay_request((await watched.next_message()).body)
    assert replay.targets == [ReplayTarget("gw1", "k1")]


async def test_send_is_routed_to_every_gateway_of_the_recipient(bus: Bus) -> None:
    gw1 = await bus.fake_gateway("gw1")
    gw2 = await bus.fake_gateway("gw2")
    await bus.open_connection(gw1, "bob", "k1", "gw1")
    await bus.open_connection(gw1, "bob", "k2", "gw1")
    await bus.open_connection(gw2, "bob", "k3", "gw2")

    mid = await bus.send("bob")

    received1, item1 = await gw1.expect(frames.Message)
    received2, item2 = await gw2.expect(frames.Message)
    assert item1.targets == [Target("bob", "k1"), Target("bob", "k2")]
    assert item2.targets == [Target("bob", "k3")]
    for received, item in ((received1, item1), (received2, item2)):
        assert (item.mid, item.durable) == (mid, True)
        assert received.message.message_id == mid
        assert received.message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert received.message.content_type == "application/json"
        frame = frames.decode_server_frame(bytes(item.frame))
        assert isinstance(frame, frames.Message)
        assert (frame.mid, frame.sender, frame.to) == (mid, "alice", "bob")
        assert bytes(frame.body) == BODY  # byte for byte


async def test_offline_recipient_goes_to_the_offline_queue(bus: Bus) -> None:
    offline = await bus.watch(bus.names.offline_queue)

    mid = await bus.send("carol")

    received = await offline.next_delivery()
    [item] = received.delivery.items
    assert (item.mid, item.targets, item.durable) == (mid, [Target("carol", "")], True)
    assert received.message.message_id == mid
    frame = frames.decode_server_frame(bytes(item.frame))
    assert isinstance(frame, frames.Message)
    assert bytes(frame.body) == BODY


async def test_saved_rows_are_replayed_to_uids_online_now(bus: Bus) -> None:
    gw1 = await bus.fake_gateway("gw1")
    control = await bus.watch(bus.names.store_control_queue)
    await bus.open_connection(gw1, "bob", "k1", "gw1")
    opened_replay = decode_replay_request((await control.next_message()).body)
    assert opened_replay.uid == "bob"

    saved = Saved(uids=[SavedUid("carol", "m6"), SavedUid("bob", "m5")])
    await bus.publish(KEY_SAVED, saved)
    await bus.open_connection(gw1, "dave", "k2", "gw1")  # marks the end

    replays = [decode_replay_request((await control.next_message()).body)]
    while replays[-1].uid != "dave":
        replays.append(decode_replay_request((await control.next_message()).body))
    assert replays == [
        ReplayRequest(uid="bob", targets=[ReplayTarget("gw1", "k1")], from_mid="m5"),
        ReplayRequest(uid="dave", targets=[ReplayTarget("gw1", "k2")], from_mid=""),
    ]


async def test_client_retry_is_dropped_but_a_redelivery_is_routed(
    bus: Bus, router: ServiceProcess
) -> None:
    gw1 = await bus.fake_gateway("gw1")
    await bus.open_connection(gw1, "bob", "k1", "gw1")
    first, retry, other = next_mid(), next_mid(), next_mid()
    await bus.send("bob", first, client_id="c7")
    _, item = await gw1.expect(frames.Message)
    assert item.mid == first

    await bus.send("bob", retry, client_id="c7")  # the client retried: new mid, same id
    await bus.send("bob", first, client_id="c7")  # a router crashed: same mid again
    await bus.send("bob", other, client_id="c8")  # marks the end

    routed: list[str] = []
    while other not in routed:
        received = await gw1.next_delivery()
        routed += [i.mid for i in received.items_of(frames.Message)]
    assert routed == [first, other]
    dropped = await router.wait_for_event("duplicate_dropped", mid=retry)
    assert dropped["client_id"] == "c7"


async def test_closed_connection_leaves_presence(
    bus: Bus, redis_client: "redis.Redis"
) -> None:
    names = bus.names
    gw1 = await bus.fake_gateway("gw1")
    offline = await bus.watch(names.offline_queue)
    await bus.open_connection(gw1, "bob", "k1", "gw1")
    await bus.open_connection(gw1, "bob", "k2", "gw1")

    await bus.publish(
        KEY_CONN_CLOSED, ConnClosed(uid="bob", conn_id="k1", gateway_id="gw1")
    )

    async def k1_gone() -> bool | None:
        return (
            True
            if await redis_client.hgetall(names.presence_key("bob")) == {"k2": "gw1"}
            else None
        )

    await eventually(k1_gone)
    assert await redis_client.hgetall(names.gateway_key("gw1")) == {"k2": "bob"}
    await bus.publish(
        KEY_CONN_CLOSED, ConnClosed(uid="bob", conn_id="k2", gateway_id="gw1")
    )
    mid = await bus.send("bob")
    received = await offline.next_delivery()
    assert [(i.mid, i.targets) for i in received.delivery.items] == [
        (mid, [Target("bob", "")])
    ]


async def test_gateway_without_heartbeats_is_swept(
    stack: Stack, redis_client: "redis.Redis"
) -> None:
    router = await stack.start_router(**{env.GATEWAY_TTL_S: "2"})
    bus = await open_bus(stack)
    try:
        names = bus.names
        gateway = await bus.fake_gateway("gw-dead")
        offline = await bus.watch(names.offline_queue)
        await bus.open_connection(gateway, "bob", "k1", "gw-dead")
        await bus.open_connection(gateway, "carol", "k2", "gw-dead")

        swept = await router.wait_for_event("gateway_swept", gateway_id="gw-dead")

        assert swept["connections"] == 2
        assert (
            await redis_client.exists(
                names.presence_key("bob"),
                names.presence_key("carol"),
                names.gateway_key("gw-dead"),
            )
            == 0
        )
        assert await redis_client.zscore(names.gateways_key, "gw-dead") is None
        mid = await bus.send("bob")
        received = await offline.next_delivery()
        assert [(i.mid, i.targets) for i in received.delivery.items] == [
            (mid, [Target("bob", "")])
        ]
    finally:
        await bus.connection.close()


async def test_stopped_gateway_is_swept_at_once(
    bus: Bus, router: ServiceProcess, redis_client: "redis.Redis"
) -> None:
    names = bus.names
    gw1 = await bus.fake_gateway("gw1")
    await bus.open_connection(gw1, "bob", "k1", "gw1")

    await bus.publish(KEY_GATEWAY_STOPPED, GatewayStopped(gateway_id="gw1"))

    swept = await router.wait_for_event("gateway_swept", gateway_id="gw1")
    assert swept["connections"] == 1
    assert await redis_client.hgetall(names.presence_key("bob")) == {}
    assert await redis_client.zscore(names.gateways_key, "gw1") is None


async def test_a_reannounce_request_whose_batch_failed_is_asked_again(
    bus: Bus, router: ServiceProcess, redis_client: "redis.Redis"
) -> None:
    """The router asks a gateway it has no record of to announce its connections again. When
    the batch that asked fails, its redelivery must ask again: nothing may record the gateway
    as known before the request is confirmed."""
    names = bus.names
    bus.stack.gateway_ids.append("gw-back")
    topology = gateway_topology(names, "gw-back", ORPHAN_TTL_MS, QUEUE_EXPIRES_MS)
    [spec] = topology.queues
    [binding] = topology.bindings
    # A queue that refuses every message: the broker nacks the request, the batch fails.
    refusing = await bus.channel.declare_queue(
        f"{spec.name}.refusing",
        durable=True,
        arguments={**spec.arguments, "x-max-length": 0, "x-overflow": "reject-publish"},
    )
    await refusing.bind(binding.exchange, binding.routing_key)
    try:
        await bus.publish(KEY_HEARTBEAT, Heartbeat(gateway_id="gw-back", connections=2))
        await router.wait_for_event("batch_failed")
        assert await redis_client.exists(names.gateway_known_key("gw-back")) == 0
        # Bound before the refusing queue leaves, so that the request always has a queue.
        gateway = await bus.fake_gateway("gw-back")
        await refusing.unbind(binding.exchange, binding.routing_key)
        received = await gateway.next_delivery(within_s=15)
    finally:
        await refusing.delete(if_unused=False, if_empty=False)
    assert [item.reannounce for item in received.delivery.items] == [True]
    await eventually(
        lambda: _known(redis_client, names.gateway_known_key("gw-back")), 5
    )


async def _known(client: "redis.Redis", key: str) -> bool | None:
    return True if await client.exists(key) else None


async def test_malformed_envelopes_are_rejected_and_the_router_keeps_serving(
    bus: Bus, router: ServiceProcess
) -> None:
    gw1 = await bus.fake_gateway("gw1")

    await bus.publish(KEY_SEND, b"{not json")
    await bus.publish(
        KEY_CONN_OPENED, b'{"uid": 7, "conn_id": "k1", "gateway_id": "gw1"}'
    )
    await bus.publish("api.kick", b'{"uid": 7}')  # a command without reply_to
    await bus.open_connection(gw1, "bob", "k1", "gw1")  # served after them

    rejected = await router.wait_for_event("envelope_rejected", routing_key=KEY_SEND)
    assert rejected["reason"]
    invalid = await router.wait_for_event(
        "envelope_rejected", routing_key=KEY_CONN_OPENED
    )
    assert "$.uid" in invalid["reason"]
    await router.wait_for_event("command_rejected", routing_key="api.kick")
    # rejected without requeue: each was seen once, and nothing waits in the queue
    assert router.count_events("envelope_rejected") == 2
    declared = await bus.channel.declare_queue(bus.names.router_queue, passive=True)
    assert declared.declaration_result.message_count == 0


async def test_sigterm_while_busy_exits_0_and_loses_nothing(
    stack: Stack, bus: Bus, router: ServiceProcess
) -> None:
    assert await router.stop() == 0
    mids = {next_mid() for _ in range(3000)}
    await asyncio.gather(*(bus.send("carol", mid) for mid in mids))  # a backlog
    busy = await stack.start_router(**LONG_GATEWAY_TTL)

    assert await busy.stop() == 0  # while it works through the backlog

    # Each mid was routed (confirmed) or is back in the queue for the next router;
    # a mid may be in both (routed, but not acknowledged in time).
    seen: set[str] = set()
    stored = await bus.watch(bus.names.offline_queue)
    waiting = await bus.watch(bus.names.router_queue)

    async def every_mid_seen() -> bool | None:
        while not stored.unread.empty():
            delivery = decode_delivery(stored.unread.get_nowait().body)
            # Items without a mid are the senders' receipts: their gateway has no queue.
            seen.update(item.mid for item in delivery.items if item.mid)
        while not waiting.unread.empty():
            seen.add(decode_outgoing(waiting.unread.get_nowait().body).mid)
        return True if seen >= mids else None

    await eventually(every_mid_seen, within_s=20)
    assert seen == mids


# Groups, rooms, broadcast, presence queries


def frame_of(item: DeliveryItem) -> frames.AnyServerFrame:
    return frames.decode_server_frame(bytes(item.frame))


async def change_group(
    backend: Backend,
    redis_client: "redis.Redis",
    group: str,
    uids: list[str],
    version: int,
    is_added: bool = True,
) -> dict[str, Any]:
    """Pose as the offline store: a committed change of ``group`` (``GroupChanged``, with the
    backend's reply_to), and Redis marked as holding every member (no rebuild is answered
    here); return what the router answered the backend."""
    names = backend.names
    await redis_client.set(names.groups_loaded_key, "1")
    changed = GroupChanged(group=group, uids=uids, is_added=is_added, version=version)
    return await backend.call_key(KEY_GROUP_CHANGED, encode(changed))


async def test_group_message_fans_out_and_the_router_answers_the_sender(
    bus: Bus, backend: Backend, redis_client: "redis.Redis"
) -> None:
    members = ["alice", "bob", "carol", "dave"]
    reply = await change_group(backend, redis_client, "team", members, version=1)
    assert reply == {"ok": True}
    sender_gateway = await bus.fake_gateway("gw-sender")
    gw1 = await bus.fake_gateway("gw1")
    gw2 = await bus.fake_gateway("gw2")
    offline = await bus.watch(bus.names.offline_queue)
    await bus.open_connection(sender_gateway, "alice", "k-alice", "gw-sender")
    await bus.open_connection(gw1, "bob", "k1", "gw1")
    await bus.open_connection(gw1, "carol", "k2", "gw1")
    await bus.open_connection(gw2, "carol", "k3", "gw2")

    mid = await bus.send(None, client_id="g1", group="team")

    _, item1 = await gw1.expect(frames.Message)
    _, item2 = await gw2.expect(frames.Message)
    assert item1.targets == [Target("bob", "k1"), Target("carol", "k2")]
    assert item2.targets == [Target("carol", "k3")]
    stored = await offline.next_delivery()
    assert [(i.mid, i.targets) for i in stored.delivery.items] == [
        (mid, [Target("dave", "")])
    ]
    for item in (item1, item2):
        frame = frame_of(item)
        assert isinstance(frame, frames.Message)
        assert (frame.mid, frame.group, frame.to, item.durable) == (
            mid,
            "team",
            None,
            True,
        )
    _, sent = await sender_gateway.expect(frames.Sent)
    assert frame_of(sent) == frames.Sent(id="g1", mid=mid)
    assert sent.targets == [Target("alice", "k-alice")]

    # A retry with the same client_id: answered with the first mid, routed again never.
    await bus.send(None, client_id="g1", group="team")
    _, again = await sender_gateway.expect(frames.Sent)
    assert frame_of(again) == frames.Sent(id="g1", mid=mid)

    # A non-member is refused, and nothing is routed.
    await bus.send(None, client_id="x1", sender="eve", group="team")
    _, refused = await sender_gateway.expect(frames.Error)
    error = frame_of(refused)
    assert isinstance(error, frames.Error)
    assert (error.code, error.id) == (ErrorCode.NOT_MEMBER, "x1")
    assert refused.targets == [Target("eve", "k-eve")]
    marker = await bus.send("bob")
    _, item = await gw1.expect(frames.Message)
    assert item.mid == marker  # nothing from the retry or from eve came before it


async def test_a_change_of_thousands_of_members_is_written_whole_on_both_sides(
    bus: Bus, backend: Backend, redis_client: "redis.Redis"
) -> None:
    names = backend.names
    members = [f"u{n:05}" for n in range(2 * MEMBERS_PER_SCRIPT + 500)]
    several = (members[0], members[MEMBERS_PER_SCRIPT], members[-1])

    reply = await change_group(backend, redis_client, "big", members, version=2)

    assert reply == {"ok": True}
    assert await redis_client.smembers(names.group_key("big")) == set(members)
    for uid in several:
        assert await redis_client.smembers(names.member_of_key(uid)) == {"big"}
        assert await redis_client.hget(names.member_of_version_key(uid), "big") == "2"

    # An older change, applied late, loses on both sides to the one applied before it.
    late = await change_group(
        backend, redis_client, "big", members, version=1, is_added=False
    )
    assert late == {"ok": True}
    assert await redis_client.scard(names.group_key("big")) == len(members)
    for uid in several:
        assert await redis_client.smembers(names.member_of_key(uid)) == {"big"}

    # A newer one removes every member from both sides.
    await change_group(backend, redis_client, "big", members, version=3, is_added=False)
    assert await redis_client.scard(names.group_key("big")) == 0
    for uid in several:
        assert await redis_client.smembers(names.member_of_key(uid)) == set()
        assert await redis_client.hget(names.member_of_version_key(uid), "big") == "3"


async def test_room_counts_and_messages_across_gateways_and_after_a_sweep(
    bus: Bus, backend: Backend, router: ServiceProcess, redis_client: "redis.Redis"
) -> None:
    names = bus.names
    gw1 = await bus.fake_gateway("gw1")
    gw2 = await bus.fake_gateway("gw2")
    await bus.open_connection(gw1, "bob", "k1", "gw1")
    await bus.open_connection(gw1, "carol", "k2", "gw1")
    await bus.open_connection(gw2, "dave", "k3", "gw2")
    for uid, conn_id, gateway_id in (
        ("bob", "k1", "gw1"),
        ("carol", "k2", "gw1"),
        ("dave", "k3", "gw2"),
    ):
        joined = RoomJoined(
            uid=uid, conn_id=conn_id, gateway_id=gateway_id, room="live"
        )
        await bus.publish(KEY_ROOM_JOINED, joined)

    async def counted(expected: int) -> bool | None:
        reply = await backend.call("room.count", {"room": "live"})
        return True if reply == {"count": expected} else None

    await eventually(lambda: counted(3))
    assert await redis_client.hgetall(names.room_key("live")) == {
        "gw1": "2",
        "gw2": "1",
    }
    # A join handled twice (its batch redelivered) counts once. The command travels behind
    # it in the router's queue, so its reply sees it.
    await bus.publish(KEY_ROOM_JOINED, joined)
    assert await backend.call("room.count", {"room": "live"}) == {"count": 3}

    mid = await bus.send(None, room="live")
    for gateway in (gw1, gw2):
        received, item = await gateway.expect(frames.Message)
        assert len(received.delivery.items) == 1  # one per gateway, whatever the size
        assert (item.mid, item.room, item.targets, item.durable) == (
            mid,
            "live",
            [],
            False,
        )

    # A leave and a close (with its rooms) take gw1 out of the room; a leave handled twice
    # takes out one connection only.
    left = RoomLeft(uid="carol", conn_id="k2", gateway_id="gw1", room="live")
    await bus.publish(KEY_ROOM_LEFT, left)
    await bus.publish(KEY_ROOM_LEFT, left)
    assert await backend.call("room.count", {"room": "live"}) == {"count": 2}
    await bus.publish(
        KEY_CONN_CLOSED,
        ConnClosed(uid="bob", conn_id="k1", gateway_id="gw1", rooms=["live"]),
    )
    await eventually(lambda: counted(1))
    assert await redis_client.hgetall(names.room_key("live")) == {"gw2": "1"}
    assert await redis_client.smembers(names.gateway_rooms_key("gw1")) == set()
    assert await redis_client.exists(names.room_members_key("live", "gw1")) == 0
    second = await bus.send(None, room="live")
    _, item = await gw2.expect(frames.Message)
    assert item.mid == second
    marker = await bus.send("carol")
    _, item = await gw1.expect(frames.Message)
    assert item.mid == marker  # the room message did not go to gw1

    # A swept gateway leaves every room it was in.
    await bus.publish(KEY_GATEWAY_STOPPED, GatewayStopped(gateway_id="gw2"))
    swept = await router.wait_for_event("gateway_swept", gateway_id="gw2")
    assert swept["rooms"] == 1
    assert await backend.call("room.count", {"room": "live"}) == {"count": 0}
    assert (
        await redis_client.exists(
            names.room_key("live"),
            names.gateway_rooms_key("gw2"),
            names.room_members_key("live", "gw2"),
        )
        == 0
    )


async def test_broadcast_reaches_every_live_gateway(bus: Bus, backend: Backend) -> None:
    gw1 = await bus.fake_gateway("gw1")
    gw2 = await bus.fake_gateway("gw2")
    await bus.open_connection(gw1, "bob", "k1", "gw1")
    await bus.open_connection(gw2, "carol", "k2", "gw2")

    mid = await bus.send(None, broadcast=True)
    reply = await backend.call("broadcast", {"body": {"notice": 1}, "from": "ops"})

    for gateway in (gw1, gw2):
        # one delivery, or two if they fell in two batches
        items: dict[str, DeliveryItem] = {}
        while len(items) < 2:
            received = await gateway.next_delivery()
            items |= {i.mid: i for i in received.items_of(frames.Message)}
        assert set(items) == {mid, reply["mid"]}
        for item in items.values():
            assert (item.broadcast, item.targets, item.durable) == (True, [], False)
        frame = frame_of(items[reply["mid"]])
        assert isinstance(frame, frames.Message)
        assert (frame.sender, frame.broadcast, bytes(frame.body)) == (
            "ops",
            True,
            b'{"notice": 1}',
        )


async def test_presence_query_is_answered_to_the_asking_connection(bus: Bus) -> None:
    gw1 = await bus.fake_gateway("gw1")
    gw2 = await bus.fake_gateway("gw2")
    await bus.open_connection(gw1, "alice", "k0", "gw1")
    await bus.open_connection(gw2, "bob", "k1", "gw2")

    asked = PresenceAsked(
        uid="alice",
        conn_id="k0",
        gateway_id="gw1",
        client_id="p1",
        uids=["bob", "carol", "bob", "alice"],
    )
    await bus.publish(KEY_PRESENCE, asked)

    _, item = await gw1.expect(frames.PresenceResult)
    assert frame_of(item) == frames.PresenceResult(id="p1", online=["bob", "alice"])
    assert (item.targets, item.durable) == ([Target("alice", "k0")], False)


# Backend commands


async def test_api_send_is_routed_then_replied_and_retries_are_idempotent(
    bus: Bus, backend: Backend
) -> None:
    gw1 = await bus.fake_gateway("gw1", consume=False)
    await bus.publish(
        KEY_CONN_OPENED, ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    )

    reply = await backend.call("send", {"to": "bob", "body": [1], "from": "billing"})

    # The reply came after the delivery was confirmed: it is in the queue already.
    items: list[DeliveryItem] = []
    while not any(i.mid for i in items):
        message = await gw1.queue.get(no_ack=True, fail=False, timeout=5)
        assert message is not None, "replied before the delivery was queued"
        items += decode_delivery(message.body).items
    item = items[-1]
    assert (item.mid, item.targets) == (reply["mid"], [Target("bob", "k1")])
    frame = frame_of(item)
    assert isinstance(frame, frames.Message)
    assert (frame.sender, frame.to, bytes(frame.body)) == ("billing", "bob", b"[1]")
    await gw1.start()

    first = await backend.call("send", {"to": "bob", "body": 2, "id": "invoice-42"})
    again = await backend.call("send", {"to": "bob", "body": 2, "id": "invoice-42"})
    assert first["mid"] == again["mid"]
    assert first["mid"] > reply["mid"]
    marker = await backend.call("send", {"to": "bob", "body": 3})
    routed: list[str] = []
    while marker["mid"] not in routed:
        routed += [i.mid for i in (await gw1.next_delivery()).items_of(frames.Message)]
    assert routed == [first["mid"], marker["mid"]]


async def test_api_group_membership_presence_and_connections(
    bus: Bus, backend: Backend, redis_client: "redis.Redis"
) -> None:
    names = bus.names
    gw1 = await bus.fake_gateway("gw1")
    gw2 = await bus.fake_gateway("gw2")
    offline = await bus.watch(names.offline_queue)
    await bus.open_connection(gw1, "bob", "k1", "gw1")
    await bus.open_connection(gw2, "bob", "k2", "gw2")

    assert await change_group(backend, redis_client, "g", ["bob", "carol"], 1) == {
        "ok": True
    }
    assert await change_group(backend, redis_client, "g", ["carol"], 2, False) == {
        "ok": True
    }
    assert await redis_client.smembers(names.group_key("g")) == {"bob"}
    assert await backend.call("presence", {"uids": ["carol", "bob", "bob"]}) == {
        "online": ["bob"]
    }
    connections = await backend.call("connections", {"uid": "bob"})
    assert sorted(connections["connections"], key=lambda c: c["conn_id"]) == [
        {"conn_id": "k1", "gateway_id": "gw1"},
        {"conn_id": "k2", "gateway_id": "gw2"},
    ]

    # A backend's group message: no membership needed, replied after the deliveries.
    await change_group(backend, redis_client, "g", ["dave"], 3)
    reply = await backend.call("send", {"group": "g", "body": "news"})
    for gateway in (gw1, gw2):
        _, item = await gateway.expect(frames.Message)
        assert item.mid == reply["mid"]
    stored = await offline.next_delivery()
    assert [(i.mid, i.targets) for i in stored.delivery.items] == [
        (reply["mid"], [Target("dave", "")])
    ]


async def test_kick_closes_every_connection_and_clears_presence_at_once(
    bus: Bus, backend: Backend, redis_client: "redis.Redis"
) -> None:
    names = bus.names
    gw1 = await bus.fake_gateway("gw1")
    gw2 = await bus.fake_gateway("gw2")
    await bus.open_connection(gw1, "kim", "k1", "gw1")
    await bus.open_connection(gw1, "kim", "k2", "gw1")
    await bus.open_connection(gw2, "kim", "k3", "gw2")
    await bus.open_connection(gw1, "lee", "k4", "gw1")

    reply = await backend.call("kick", {"uid": "kim", "reason": "abuse"})

    assert reply == {"kicked": 3}
    assert await redis_client.exists(names.presence_key("kim")) == 0
    assert await redis_client.hgetall(names.gateway_key("gw1")) == {"k4": "lee"}
    assert await redis_client.hgetall(names.gateway_key("gw2")) == {}
    for gateway, targets in (
        (gw1, [Target("kim", "k1"), Target("kim", "k2")]),
        (gw2, [Target("kim", "k3")]),
    ):
        _, item = await gateway.expect(frames.Kicked)
        assert frame_of(item) == frames.Kicked(reason="abuse")
        assert (item.targets, item.close_code) == (targets, int(CloseCode.KICKED))
    assert await backend.call("presence", {"uids": ["kim", "lee"]}) == {
        "online": ["lee"]
    }


async def test_bad_commands_get_error_replies_or_are_dead_lettered(
    bus: Bus, backend: Backend, router: ServiceProcess
) -> None:
    dead = await bus.watch(bus.names.dead_letter_queue)
    cases: list[tuple[str, bytes, str, str]] = [
        ("send", b"{not json", ErrorCode.INVALID_JSON, ""),
        ("send", b'{"body": 1}', ErrorCode.INVALID_FIELD, "$"),
        ("send", b'{"to": "a", "room": "b", "body": 1}', ErrorCode.INVALID_FIELD, "$"),
        ("kick", b'{"uid": 7}', ErrorCode.INVALID_FIELD, "$.uid"),
        ("teleport", b"{}", ErrorCode.UNKNOWN_COMMAND, ""),
    ]
    for command, body, code, path in cases:
        reply = await backend.call(command, body)
        assert reply["error"]["code"] == code, (command, reply)
        assert path in reply["error"]["message"]

    await backend.publish("kick", b"[]")  # no reply_to: nobody to tell

    message = await dead.next_message()
    assert message.body == b"[]"
    assert message.routing_key == "api.kick"
    await router.wait_for_event(
        "command_rejected", routing_key="api.kick", replied=False
    )
    assert await backend.call("presence", {"uids": ["nobody"]}) == {"online": []}


# Presence events


async def test_online_and_offline_events_are_debounced(
    stack: Stack, redis_client: "redis.Redis"
) -> None:
    router = await stack.start_router(
        **LONG_GATEWAY_TTL, **{env.PRESENCE_DEBOUNCE_S: "2"}
    )
    bus = await open_bus(stack)
    try:
        names = bus.names
        events_queue = await bus.channel.declare_queue(exclusive=True)
        for key in (EVENT_USER_ONLINE, EVENT_USER_OFFLINE):
            await events_queue.bind(names.events_exchange, key)
        events = await Watched(events_queue).start()
        gw1 = await bus.fake_gateway("gw1")
        gw2 = await bus.fake_gateway("gw2")

        async def next_event() -> tuple[str, str]:
            message = await events.next_message(within_s=10)
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            body = msgspec.json.decode(message.body)
            assert body["ts"] > 1_700_000_000_000
            return message.routing_key or "", body["uid"]

        await bus.open_connection(gw1, "bob", "k1", "gw1")
        assert await next_event() == (EVENT_USER_ONLINE, "bob")

        # A second device, then a page reload: close both, reconnect at once.
        await bus.open_connection(gw2, "bob", "k2", "gw2")
        for conn_id, gateway_id in (("k1", "gw1"), ("k2", "gw2")):
            closed = ConnClosed(uid="bob", conn_id=conn_id, gateway_id=gateway_id)
            await bus.publish(KEY_CONN_CLOSED, closed)
        await bus.open_connection(gw1, "bob", "k3", "gw1")
        assert await redis_client.exists(names.offline_due_key("bob")) == 0  # a flap
        await bus.publish(
            KEY_CONN_CLOSED, ConnClosed(uid="bob", conn_id="k3", gateway_id="gw1")
        )
        assert await next_event() == (EVENT_USER_OFFLINE, "bob")

        # A swept gateway takes its users offline too.
        await bus.open_connection(gw2, "carol", "k4", "gw2")
        assert await next_event() == (EVENT_USER_ONLINE, "carol")
        await bus.publish(KEY_GATEWAY_STOPPED, GatewayStopped(gateway_id="gw2"))
        assert await next_event() == (EVENT_USER_OFFLINE, "carol")
        await router.wait_for_event("user_offline_published", uid="carol")
        assert router.count_events("user_offline_published") == 2  # nothing else

        async def is_empty() -> bool | None:
            # Entries are dropped once announced, the flap's once it fell due.
            return await redis_client.zcard(names.going_offline_key) == 0 or None

        await eventually(is_empty)
        assert (
            await redis_client.exists(*map(names.offline_due_key, ("bob", "carol")))
            == 0
        )
    finally:
        await bus.connection.close()
