"""The gateway's side of rooms, broadcast, kick, presence and group sends, against a fake router.

A real gateway process runs; the test itself consumes the router's queue, so it sees exactly what
the gateway publishes, and it publishes to the gateway's queue the deliveries a router would.
The real router's side is tested end to end in test_groups_rooms.py.

Absence is shown without waiting: a later delivery (or reply) on the same ordered path arrives,
and nothing arrived before it.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import aio_pika
import msgspec
import pytest
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from proto import env, envelopes, frames
from proto.codes import CloseCode, ErrorCode
from proto.envelopes import DeliveryItem, Target
from proto.names import (
    KEY_BATCH,
    KEY_CONN_CLOSED,
    KEY_CONN_OPENED,
    KEY_PRESENCE,
    KEY_ROOM_JOINED,
    KEY_ROOM_LEFT,
    KEY_SEND,
)
from tests.support.clients import Frame, RawClient
from tests.support.stack import Gateway, Stack
from tests.support.timing import scaled
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration

E = TypeVar("E")
PUBLIC_PREFIX = "pub-"
LIVE = ["live-*"]


class FakeRouter:
    """Consumes the router queue like a router; answers ``init`` with ``ready``, nothing else."""

    def __init__(self, deliveries: AbstractExchange) -> None:
        self._deliveries = deliveries
        self.received: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        # Recorded before any await: callbacks start in queue order, so records keep it.
        # A batch is recorded as its envelopes, each with its own routing key.
        key = message.routing_key or ""
        if key == KEY_BATCH:
            batch = envelopes.decode_batch(message.body)
            received = [(item.key, bytes(item.body)) for item in batch.items]
        else:
            received = [(key, message.body)]
        self.received += received
        self._changed.set()
        await message.ack()
        for key, body in received:
            if key == KEY_CONN_OPENED:
                opened = envelopes.decode_conn_opened(body)
                ready = frames.Ready(uid=opened.uid, conn=opened.conn_id)
                await self.deliver(
                    opened.gateway_id,
                    frame_item(ready, Target(opened.uid, opened.conn_id)),
                )

    async def deliver(self, gateway_id: str, *items: DeliveryItem) -> None:
        """Publish a delivery to one gateway's queue, as a router does."""
        body = envelopes.encode(envelopes.Delivery(items=list(items)))
        await self._deliveries.publish(
            aio_pika.Message(body, content_type="application/json"),
            gateway_id,
            mandatory=True,
            timeout=scaled(5),
        )

    async def expect(
        self,
        routing_key: str,
        decode: Callable[[bytes], E],
        match: Callable[[E], bool] = lambda _: True,
        within_s: float = 5.0,
    ) -> E:
        """Return the first envelope with that routing key that matches, waiting for it."""
        async with asyncio.timeout(scaled(within_s)):
            while True:
                for key, body in self.received:
                    if key == routing_key and match(envelope := decode(body)):
                        return envelope
                self._changed.clear()
                await self._changed.wait()

    def count(self, routing_key: str) -> int:
        return sum(1 for key, _ in self.received if key == routing_key)


def frame_item(frame: frames.ServerFrame, *targets: Target) -> DeliveryItem:
    return DeliveryItem(frame=msgspec.Raw(frames.encode(frame)), targets=list(targets))


def message_item(mid: str, room: str = "", broadcast: bool = False) -> DeliveryItem:
    """A room or broadcast message, as a router sends it: one item per gateway, no targets."""
    message = frames.Message(
        mid=mid,
        sender="system",
        body=msgspec.Raw(b'"news"'),
        ts=1,
        room=room or None,
        broadcast=broadcast,
    )
    return DeliveryItem(
        frame=msgspec.Raw(frames.encode(message)),
        targets=[],
        mid=mid,
        room=room,
        broadcast=broadcast,
    )


def marker_item(client: RawClient, mid: str) -> DeliveryItem:
    """A message for one connection, sent after what it must not have received."""
    assert client.uid is not None
    assert client.conn_id is not None
    message = frames.Message(
        mid=mid, sender="system", body=msgspec.Raw(b'"marker"'), ts=1, to=client.uid
    )
    return frame_item(message, Target(client.uid, client.conn_id))


def messages_before(client: RawClient, mid: str) -> list[str]:
    """The mids of the messages the client received before the one with ``mid``."""
    mids = [f["mid"] for f in client.received if f.get("type") == "message"]
    return mids[: mids.index(mid)]


async def reply_to(client: RawClient, frame: Frame) -> Frame:
    await client.send_frame(frame)
    return await client.expect(lambda f: f.get("id") == frame["id"])


@pytest.fixture
async def gateway(stack: Stack) -> Gateway:
    return await stack.start_gateway(**{env.PUBLIC_ROOM_PREFIX: PUBLIC_PREFIX})


@pytest.fixture
async def router(stack: Stack, gateway: Gateway) -> AsyncIterator[FakeRouter]:
    connection = await aio_pika.connect(env.DEFAULT_AMQP_URL, timeout=scaled(10))
    async with connection:
        publishing = await connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        consuming = await connection.channel()
        deliveries = await publishing.get_exchange(
            stack.names.deliveries_exchange, ensure=False
        )
        fake = FakeRouter(deliveries)
        queue = await consuming.get_queue(stack.names.router_queue, ensure=False)
        await queue.consume(fake.on_message)
        yield fake


async def test_join_is_published_once_and_answered(
    stack: Stack, gateway: Gateway, router: FakeRouter
) -> None:
    viewer = await stack.connect(0, token=make_token("ann", rooms=LIVE))
    joined = await reply_to(viewer, {"type": "join", "id": "j1", "room": "live-1"})
    assert joined == {"type": "joined", "id": "j1", "room": "live-1"}
    room_joined = await router.expect(KEY_ROOM_JOINED, envelopes.decode_room_joined)
    assert (
        room_joined.uid,
        room_joined.conn_id,
        room_joined.gateway_id,
        room_joined.room,
    ) == ("ann", viewer.conn_id, gateway.gateway_id, "live-1")

    # Joining again is answered without a second publish: the presence query published
    # after it reaches the router, and no RoomJoined came before it.
    again = await reply_to(viewer, {"type": "join", "id": "j2", "room": "live-1"})
    assert again == {"type": "joined", "id": "j2", "room": "live-1"}
    await viewer.send_frame({"type": "presence", "id": "p1", "uids": ["bob"]})
    await router.expect(KEY_PRESENCE, envelopes.decode_presence_asked)
    assert router.count(KEY_ROOM_JOINED) == 1

    refused = await reply_to(viewer, {"type": "join", "id": "j3", "room": "vip-1"})
    assert (refused["type"], refused["code"]) == ("error", ErrorCode.FORBIDDEN)

    # Public rooms need no claim; other rooms do.
    plain = await stack.connect(0, uid="ben")
    lobby = f"{PUBLIC_PREFIX}lobby"
    joined = await reply_to(plain, {"type": "join", "id": "j4", "room": lobby})
    assert joined == {"type": "joined", "id": "j4", "room": lobby}
    refused = await reply_to(plain, {"type": "join", "id": "j5", "room": "live-1"})
    assert refused["code"] == ErrorCode.FORBIDDEN
    await router.expect(
        KEY_ROOM_JOINED,
        envelopes.decode_room_joined,
        lambda joined: joined.conn_id == plain.conn_id and joined.room == lobby,
    )


async def test_room_delivery_reaches_exactly_the_joined_connections(
    stack: Stack, gateway: Gateway, router: FakeRouter
) -> None:
    member = await stack.connect(0, token=make_token("ann", rooms=LIVE))
    other = await stack.connect(0, token=make_token("ann", rooms=LIVE))
    leaver = await stack.connect(0, token=make_token("cat", rooms=LIVE))
    outsider = await stack.connect(0, uid="dan")
    await reply_to(member, {"type": "join", "id": "j1", "room": "live-1"})
    await reply_to(other, {"type": "join", "id": "j1", "room": "live-2"})
    await reply_to(leaver, {"type": "join", "id": "j1", "room": "live-1"})
    left = await reply_to(leaver, {"type": "leave", "id": "l1", "room": "live-1"})
    assert left == {"type": "left", "id": "l1", "room": "live-1"}
    room_left = await router.expect(KEY_ROOM_LEFT, envelopes.decode_room_left)
    assert (room_left.conn_id, room_left.room) == (leaver.conn_id, "live-1")

    await router.deliver(gateway.gateway_id, message_item("m-room", room="live-1"))
    message = await member.expect_message(mid="m-room")
    assert (message["room"], message["body"]) == ("live-1", "news")
    # Not acknowledged, and not handed to the offline store for it.
    for client in (other, leaver, outsider):
        await router.deliver(gateway.gateway_id, marker_item(client, "m-marker"))
        await client.expect_message(mid="m-marker")
        assert messages_before(client, "m-marker") == []

    # A member sends to its room: published, and answered by the router (this fake
    # answers nothing), so that a retry learns the first mid.
    await member.send_frame(
        {"type": "send", "id": "s1", "room": "live-1", "body": "hi"}
    )
    outgoing = await router.expect(KEY_SEND, envelopes.decode_outgoing)
    assert (outgoing.client_id, outgoing.room, outgoing.to, outgoing.sender) == (
        "s1",
        "live-1",
        None,
        "ann",
    )
    refused = await reply_to(
        leaver, {"type": "send", "id": "s2", "room": "live-1", "body": "hi"}
    )
    assert refused["code"] == ErrorCode.NOT_MEMBER


async def test_broadcast_delivery_reaches_every_initialized_connection(
    stack: Stack, gateway: Gateway, router: FakeRouter
) -> None:
    clients = [await stack.connect(0, uid=f"user{n}") for n in range(3)]
    anonymous = await stack.connect(0)  # connected, no init yet

    await router.deliver(gateway.gateway_id, message_item("m-all", broadcast=True))
    for client in clients:
        message = await client.expect_message(mid="m-all")
        assert message["broadcast"] is True
    # Every push of one delivery is queued at once: had the connection without init been
    # pushed the broadcast, it would come before the ``ready`` of its later init.
    await anonymous.init(make_token("late"))
    assert [frame["type"] for frame in anonymous.received] == ["ready"]


async def test_kick_closes_after_the_kicked_frame_and_reports_the_rooms(
    stack: Stack, gateway: Gateway, router: FakeRouter
) -> None:
    kim = await stack.connect(0, token=make_token("kim", rooms=LIVE))
    bystander = await stack.connect(0, token=make_token("lee", rooms=LIVE))
    for room in ("live-2", "live-1"):
        await reply_to(kim, {"type": "join", "id": room, "room": room})
    await reply_to(bystander, {"type": "join", "id": "j", "room": "live-1"})
    assert kim.uid is not None
    assert kim.conn_id is not None

    kick = frame_item(frames.Kicked(reason="abuse"), Target(kim.uid, kim.conn_id))
    kick = msgspec.structs.replace(kick, close_code=CloseCode.KICKED)
    await router.deliver(gateway.gateway_id, kick, message_item("m1", room="live-1"))
    assert (await kim.expect("kicked"))["reason"] == "abuse"
    assert await kim.wait_closed() == CloseCode.KICKED
    assert all(frame.get("type") != "message" for frame in kim.received)
    await bystander.expect_message(mid="m1")

    closed = await router.expect(
        KEY_CONN_CLOSED,
        envelopes.decode_conn_closed,
        lambda closed: closed.conn_id == kim.conn_id,
    )
    assert (closed.uid, closed.gateway_id, closed.rooms) == (
        "kim",
        gateway.gateway_id,
        ["live-1", "live-2"],
    )
    assert bystander.close_code is None


async def test_group_send_and_presence_are_answered_by_the_router(
    stack: Stack, gateway: Gateway, router: FakeRouter
) -> None:
    ann = await stack.connect(0, uid="ann")
    assert ann.conn_id is not None
    await ann.send_frame({"type": "send", "id": "g1", "group": "team", "body": 1})
    # Frames of one connection are handled in order: the pong comes after whatever the
    # gateway answered to g1 on the broker's confirm.
    await ann.send_frame({"type": "ping", "id": "after"})
    await ann.expect("pong")
    assert [f for f in ann.received if f.get("id") == "g1"] == []
    outgoing = await router.expect(KEY_SEND, envelopes.decode_outgoing)
    assert (outgoing.group, outgoing.to, outgoing.client_id) == ("team", None, "g1")

    refusal = frames.Error(code=ErrorCode.NOT_MEMBER, message="not a member", id="g1")
    await router.deliver(
        gateway.gateway_id, frame_item(refusal, Target("ann", ann.conn_id))
    )
    assert (await ann.expect(lambda f: f.get("id") == "g1"))["code"] == "not_member"

    await ann.send_frame({"type": "presence", "id": "p1", "uids": ["bob", "ann"]})
    asked = await router.expect(KEY_PRESENCE, envelopes.decode_presence_asked)
    assert (asked.uid, asked.conn_id, asked.client_id, asked.uids) == (
        "ann",
        ann.conn_id,
        "p1",
        ["bob", "ann"],
    )
    result = frames.PresenceResult(id="p1", online=["ann"])
    await router.deliver(
        gateway.gateway_id, frame_item(result, Target("ann", ann.conn_id))
    )
    assert await ann.expect("presence") == {
        "type": "presence",
        "id": "p1",
        "online": ["ann"],
    }
