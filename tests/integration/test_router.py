"""The router as a real process, against real RabbitMQ and Redis, in the test's namespace.

The test poses as gateways (it publishes envelopes to the inbound exchange and consumes
fake gateway queues) and as the offline store (it consumes the offline and control
queues), so it sees exactly what the router publishes.
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
from proto import names as keys
from proto.envelopes import (
    ConnClosed,
    ConnOpened,
    Delivery,
    DeliveryItem,
    Envelope,
    GatewayStopped,
    Outgoing,
    ReplayRequest,
    ReplayTarget,
    Saved,
    SavedUid,
    Target,
    decode_delivery,
    decode_outgoing,
    decode_replay_request,
    encode,
)
from proto.mids import MidFactory
from proto.names import Names
from proto.topology import gateway_topology
from tests.support.processes import ServiceProcess
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration

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
            keys.KEY_CONN_OPENED,
            ConnOpened(uid=uid, conn_id=conn_id, gateway_id=gateway_id),
        )
        await gateway.expect(
            frames.Ready, lambda i: i.targets == [Target(uid, conn_id)]
        )

    async def send(
        self, to: str, mid: str | None = None, client_id: str | None = None
    ) -> str:
        """Publish an ``Outgoing`` from alice, as her gateway would; return its mid."""
        mid = mid or next_mid()
        outgoing = Outgoing(
            mid=mid,
            sender="alice",
            client_id=client_id or f"c-{mid}",
            to=to,
            body=msgspec.Raw(BODY),
            ts=1_700_000_000_123,
            gateway_id="gw-sender",
            conn_id="k-sender",
        )
        await self.publish(keys.KEY_SEND, outgoing)
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
        keys.KEY_CONN_OPENED, ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    )

    replay_message = await control.next_message()
    assert replay_message.routing_key == keys.KEY_REPLAY
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

    await bus.publish(keys.KEY_CONN_OPENED, opened)

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
    await bus.publish(keys.KEY_SAVED, saved)
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
        keys.KEY_CONN_CLOSED, ConnClosed(uid="bob", conn_id="k1", gateway_id="gw1")
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
        keys.KEY_CONN_CLOSED, ConnClosed(uid="bob", conn_id="k2", gateway_id="gw1")
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

    await bus.publish(keys.KEY_GATEWAY_STOPPED, GatewayStopped(gateway_id="gw1"))

    swept = await router.wait_for_event("gateway_swept", gateway_id="gw1")
    assert swept["connections"] == 1
    assert await redis_client.hgetall(names.presence_key("bob")) == {}
    assert await redis_client.zscore(names.gateways_key, "gw1") is None


async def test_malformed_envelopes_are_rejected_and_the_router_keeps_serving(
    bus: Bus, router: ServiceProcess
) -> None:
    gw1 = await bus.fake_gateway("gw1")

    await bus.publish(keys.KEY_SEND, b"{not json")
    await bus.publish(
        keys.KEY_CONN_OPENED, b'{"uid": 7, "conn_id": "k1", "gateway_id": "gw1"}'
    )
    await bus.publish("api.kick", b'{"uid": "bob"}')
    await bus.open_connection(gw1, "bob", "k1", "gw1")  # served after them

    rejected = await router.wait_for_event(
        "envelope_rejected", routing_key=keys.KEY_SEND
    )
    assert rejected["reason"]
    invalid = await router.wait_for_event(
        "envelope_rejected", routing_key=keys.KEY_CONN_OPENED
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
            seen.update(item.mid for item in delivery.items)
        while not waiting.unread.empty():
            seen.add(decode_outgoing(waiting.unread.get_nowait().body).mid)
        return True if seen >= mids else None

    await eventually(every_mid_seen, within_s=20)
    assert seen == mids
