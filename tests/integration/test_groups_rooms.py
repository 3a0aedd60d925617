"""Groups, rooms, broadcast, kick, presence and backend commands, end to end on two gateways."""

import pytest

from proto.names import EVENT_USER_OFFLINE, EVENT_USER_ONLINE
from tests.support.api import Backend
from tests.support.clients import RawClient
from tests.support.stack import Stack
from tests.support.timing import eventually
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration

LIVE = ["live-*"]


async def send_frame_and_reply(client: RawClient, frame: dict) -> dict:
    """Send a frame with an id and return the one reply carrying that id."""
    await client.send_frame(frame)
    return await client.expect(lambda f: f.get("id") == frame["id"])


# Groups


async def test_group_message_reaches_members_online_and_offline(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    reply = await backend.call(
        "group.add", {"group": "team", "uids": ["ann", "ben", "cat", "dan"]}
    )
    assert reply == {"ok": True}
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    cat_phone = await stack.connect(0, uid="cat")
    cat_laptop = await stack.connect(1, uid="cat")

    sent = await send_frame_and_reply(
        ann, {"type": "send", "id": "g1", "group": "team", "body": {"text": "standup"}}
    )
    assert sent["type"] == "sent", sent
    for member in (ben, cat_phone, cat_laptop):
        message = await member.expect_message(mid=sent["mid"])
        assert (message["from"], message["group"], message["body"]) == (
            "ann",
            "team",
            {"text": "standup"},
        )
        assert "to" not in message
        await member.ack(sent["mid"])
    await ann.expect_nothing("message", for_s=0.5)

    # dan was offline: the message waits for him.
    dan = await stack.connect(1, uid="dan")
    message = await dan.expect_message(mid=sent["mid"])
    assert message["group"] == "team"


async def test_group_send_by_a_non_member_is_refused(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    await backend.call("group.add", {"group": "team", "uids": ["ann", "ben"]})
    ben = await stack.connect(1, uid="ben")
    eve = await stack.connect(0, uid="eve")
    reply = await send_frame_and_reply(
        eve, {"type": "send", "id": "x1", "group": "team", "body": "let me in"}
    )
    assert (reply["type"], reply["code"]) == ("error", "not_member")
    await ben.expect_nothing("message", for_s=0.5)

    # Removed members stop receiving.
    await backend.call("group.add", {"group": "team", "uids": ["eve"]})
    await backend.call("group.remove", {"group": "team", "uids": ["ben"]})
    sent = await send_frame_and_reply(
        eve, {"type": "send", "id": "x2", "group": "team", "body": "hello"}
    )
    assert sent["type"] == "sent"
    await ben.expect_nothing("message", for_s=0.5)


async def test_backend_sends_to_a_uid_and_a_group(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    reply = await backend.call(
        "send", {"to": "ann", "body": {"n": 1}, "from": "billing"}
    )
    message = await ann.expect_message(mid=reply["mid"])
    assert (message["from"], message["to"], message["body"]) == (
        "billing",
        "ann",
        {"n": 1},
    )

    await backend.call("group.add", {"group": "all", "uids": ["ann", "ben"]})
    reply = await backend.call("send", {"group": "all", "body": "news"})
    for member in (ann, ben):
        message = await member.expect_message(mid=reply["mid"])
        assert (message["from"], message["group"]) == ("system", "all")

    # A retried command with the same id is delivered once and answers the same mid.
    first = await backend.call("send", {"to": "ben", "body": 1, "id": "invoice-42"})
    again = await backend.call("send", {"to": "ben", "body": 1, "id": "invoice-42"})
    assert again["mid"] == first["mid"]
    await ben.expect_message(mid=first["mid"])
    await ben.expect_nothing("message", for_s=0.5)


# Rooms


async def test_room_join_needs_the_claim(stack: Stack) -> None:
    await stack.start(gateways=1)
    plain = await stack.connect(0, uid="ann")
    refused = await send_frame_and_reply(
        plain, {"type": "join", "id": "j1", "room": "live-1"}
    )
    assert (refused["type"], refused["code"]) == ("error", "forbidden")

    allowed = await stack.connect(0, token=make_token("ben", rooms=LIVE))
    joined = await send_frame_and_reply(
        allowed, {"type": "join", "id": "j2", "room": "live-1"}
    )
    assert joined == {"type": "joined", "id": "j2", "room": "live-1"}
    other = await send_frame_and_reply(
        allowed, {"type": "join", "id": "j3", "room": "vip-1"}
    )
    assert other["code"] == "forbidden"


async def test_room_messages_reach_the_members_connected_now(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    viewers = [
        await stack.connect(n % 2, token=make_token(f"viewer{n}", rooms=LIVE))
        for n in range(4)
    ]
    outsider = await stack.connect(1, token=make_token("outsider", rooms=LIVE))
    for n, viewer in enumerate(viewers):
        await send_frame_and_reply(
            viewer, {"type": "join", "id": f"j{n}", "room": "live-7"}
        )

    async def counted(expected: int) -> bool | None:
        reply = await backend.call("room.count", {"room": "live-7"})
        return True if reply == {"count": expected} else None

    await eventually(lambda: counted(4))

    sent = await send_frame_and_reply(
        viewers[0], {"type": "send", "id": "r1", "room": "live-7", "body": "gg"}
    )
    assert sent["type"] == "sent"
    for viewer in viewers:
        message = await viewer.expect_message(mid=sent["mid"])
        assert (message["room"], message["from"], message["body"]) == (
            "live-7",
            "viewer0",
            "gg",
        )
    await outsider.expect_nothing("message", for_s=0.5)

    # A room send from a connection that has not joined is refused.
    refused = await send_frame_and_reply(
        outsider, {"type": "send", "id": "r2", "room": "live-7", "body": "hi"}
    )
    assert refused["code"] == "not_member"

    # Leave, close, and a killed gateway all take members out.
    left = await send_frame_and_reply(
        viewers[1], {"type": "leave", "id": "l1", "room": "live-7"}
    )
    assert left == {"type": "left", "id": "l1", "room": "live-7"}
    await viewers[2].close()
    await eventually(lambda: counted(2))
    reply = await backend.call("send", {"room": "live-7", "body": "second"})
    await viewers[0].expect_message(mid=reply["mid"])
    await viewers[3].expect_message(mid=reply["mid"])
    await viewers[1].expect_nothing("message", for_s=0.5)

    await stack.gateways[1].process.kill()  # viewer3 was there
    await eventually(lambda: counted(1), within_s=15)


# Broadcast, kick, presence


async def test_broadcast_reaches_everyone_connected(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    clients = [await stack.connect(n % 2, uid=f"user{n}") for n in range(4)]
    reply = await backend.call("broadcast", {"body": {"notice": "maintenance at 10"}})
    for client in clients:
        message = await client.expect_message(mid=reply["mid"])
        assert (message["broadcast"], message["from"]) == (True, "system")

    refused = await send_frame_and_reply(
        clients[0], {"type": "send", "id": "b1", "broadcast": True, "body": "spam"}
    )
    assert refused["code"] == "forbidden"
    announcer = await stack.connect(1, token=make_token("announcer", broadcast=True))
    sent = await send_frame_and_reply(
        announcer, {"type": "send", "id": "b2", "broadcast": True, "body": "hello all"}
    )
    for client in clients:
        await client.expect_message(mid=sent["mid"])


async def test_kick_closes_every_device_and_clears_presence(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    phone = await stack.connect(0, token=make_token("kim", rooms=LIVE))
    laptop = await stack.connect(1, uid="kim")
    await send_frame_and_reply(phone, {"type": "join", "id": "j", "room": "live-3"})
    bystander = await stack.connect(0, uid="lee")

    reply = await backend.call("kick", {"uid": "kim", "reason": "abuse"})
    assert reply == {"kicked": 2}
    for device in (phone, laptop):
        assert (await device.expect("kicked"))["reason"] == "abuse"
        assert await device.wait_closed() == 4005
    assert await backend.call("presence", {"uids": ["kim", "lee"]}) == {
        "online": ["lee"]
    }

    async def room_emptied() -> bool | None:
        reply = await backend.call("room.count", {"room": "live-3"})
        return True if reply == {"count": 0} else None

    await eventually(room_emptied)
    assert bystander.close_code is None


async def test_presence_follows_connections_closes_and_dead_gateways(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    asker = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    await stack.connect(1, uid="cat")

    reply = await send_frame_and_reply(
        asker, {"type": "presence", "id": "p1", "uids": ["ben", "cat", "dan", "ann"]}
    )
    assert reply == {"type": "presence", "id": "p1", "online": ["ben", "cat", "ann"]}
    connections = await backend.call("connections", {"uid": "ben"})
    assert connections == {
        "connections": [
            {"conn_id": ben.conn_id, "gateway_id": stack.gateways[1].gateway_id}
        ]
    }

    await ben.close()

    async def online(expected: list[str]) -> bool | None:
        reply = await backend.call("presence", {"uids": ["ann", "ben", "cat"]})
        return True if reply["online"] == expected else None

    await eventually(lambda: online(["ann", "cat"]))
    await stack.gateways[1].process.kill()
    await eventually(lambda: online(["ann"]), within_s=15)


# Backend commands: bad input


async def test_bad_commands_get_error_replies_and_the_router_keeps_serving(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=1)
    cases: list[tuple[str, dict[str, object] | bytes, str]] = [
        ("send", b"{not json", "invalid_json"),
        ("send", {"body": 1}, "invalid_field"),
        ("send", {"to": "a", "group": "b", "body": 1}, "invalid_field"),
        ("kick", {"uid": 7}, "invalid_field"),
        ("group.add", {"group": "g", "uids": "ann"}, "invalid_field"),
        ("teleport", {}, "unknown_command"),
    ]
    for command, body, code in cases:
        reply = await backend.call(command, body)
        assert reply["error"]["code"] == code, (command, reply)
        assert reply["error"]["message"]

    # Without reply_to, a bad command is dead-lettered, not redelivered forever.
    await backend.publish("kick", b"[]")
    dead = await backend.channel.get_queue(stack.names.dead_letter_queue, ensure=False)
    message = await eventually(lambda: dead.get(no_ack=True, fail=False))
    assert message.body == b"[]"

    ann = await stack.connect(0, uid="ann")
    reply = await backend.call("send", {"to": "ann", "body": "still serving"})
    await ann.expect_message(mid=reply["mid"])


# Events


async def test_online_and_offline_events_are_debounced(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    events = await backend.events(EVENT_USER_ONLINE, EVENT_USER_OFFLINE)

    first = await stack.connect(0, uid="ann")
    key, event = await backend.next_event(events)
    assert (key, event["uid"]) == (EVENT_USER_ONLINE, "ann")

    # A second device, and a page reload (close, reconnect at once): no event.
    second = await stack.connect(1, uid="ann")
    await first.close()
    reloaded = await stack.connect(0, uid="ann")
    await second.close()
    await reloaded.close()

    key, event = await backend.next_event(events, within_s=10)
    assert (key, event["uid"]) == (EVENT_USER_OFFLINE, "ann")
    with pytest.raises(TimeoutError):
        await backend.next_event(events, within_s=1)


async def test_offline_message_event_for_push_notifications(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=1)
    events = await backend.events("message.offline")
    reply = await backend.call("send", {"to": "far-away", "body": "ping"})
    key, event = await backend.next_event(events)
    assert (key, event["uid"], event["mid"]) == (
        "message.offline",
        "far-away",
        reply["mid"],
    )
