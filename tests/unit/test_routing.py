"""routing.py: envelopes + their typed answers in, publishes out. No event loop, no network.

What the answers are made of (the requests, the retry rule, the group's sender) is tested in
test_lookups.py."""

import json
from typing import Any

import msgspec
import pytest

from proto import envelopes, frames
from proto.codes import CloseCode, ErrorCode
from proto.envelopes import (
    ApiBroadcast,
    ApiConnections,
    ApiKick,
    ApiPresence,
    ApiRoomCount,
    ApiSend,
    ConnClosed,
    ConnOpened,
    Delivery,
    DeliveryItem,
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
)
from proto.names import EVENT_USER_ONLINE, KEY_REPLAY, Names
from router import routing
from router.answers import (
    EVERYONE,
    NOT_MEMBER,
    PRESENCE_FORBIDDEN,
    Answer,
    Answers,
    Recipients,
    Retried,
)
from router.inbound import Call, Refused, ReplyTo
from router.limits import Throttled
from router.publications import Publication
from router.requests import (
    MarkKnown,
    RemoveConnection,
)
from router.results import (
    Connections,
    HeartbeatRecorded,
    Opened,
    PresenceEntry,
    RoomCounts,
)
from router.routing import Plan

NAMES = Names("tunit")
NOW_MS = 1_700_000_000_000
TTL_MS = 15_000
LIVE_MS = NOW_MS - 1_000
DEAD_MS = NOW_MS - TTL_MS - 1
DEBOUNCE_MS = 2_000


def outgoing(
    mid: str = "m1",
    to: str | None = "bob",
    client_id: str = "c1",
    **addressing: Any,
) -> Outgoing:
    return Outgoing(
        mid=mid,
        sender="alice",
        client_id=client_id,
        to=to,
        body=msgspec.Raw(b'{"text": "hi",  "n": [1, 2.50]}'),
        ts=NOW_MS - 5,
        gateway_id="gw-sender",
        conn_id="k-sender",
        **addressing,
    )


def held(*connections: tuple[str, str]) -> tuple[PresenceEntry, ...]:
    """Connections from (conn_id, gateway_id) pairs."""
    return tuple(PresenceEntry(c, g) for c, g in connections)


def sent_to(*connections: tuple[str, str], uid: str = "bob") -> Recipients:
    """The answer about a message to a uid that holds these (conn_id, gateway_id)."""
    return Recipients(((uid, held(*connections)),))


def route(
    batch: list[routing.Inbound],
    answers: list[Answer],
    last_seen_ms: dict[str, int] | None = None,
    throttles: dict[int, Throttled] | None = None,
) -> Plan:
    return routing.route_batch(
        NAMES,
        batch,
        Answers(tuple(answers), throttles or {}),
        last_seen_ms=last_seen_ms or {},
        now_ms=NOW_MS,
        gateway_ttl_ms=TTL_MS,
        debounce_ms=DEBOUNCE_MS,
    )


def delivery_of(publish: Publication) -> Delivery:
    return envelopes.decode_delivery(publish.body)


def by_routing_key(plan: Plan) -> dict[str, Publication]:
    return {p.routing_key: p for p in plan.deliveries}


# Messages


def test_one_delivery_per_gateway_with_its_targets() -> None:
    plan = route([outgoing()], [sent_to(("k1", "gw1"), ("k2", "gw1"), ("k3", "gw2"))])

    assert [p.routing_key for p in plan.deliveries] == ["gw1", "gw2"]
    gw1, gw2 = plan.deliveries
    assert gw1.exchange == gw2.exchange == NAMES.deliveries_exchange
    assert gw1.mid == gw2.mid == "m1"
    [item1] = delivery_of(gw1).items
    [item2] = delivery_of(gw2).items
    assert item1.targets == [Target("bob", "k1"), Target("bob", "k2")]
    assert item2.targets == [Target("bob", "k3")]
    assert item1.mid == item2.mid == "m1"
    assert item1.durable
    assert item2.durable
    assert plan.replays == ()
    assert plan.duplicates == ()


def test_message_frame_is_the_client_frame_with_the_body_as_sent() -> None:
    plan = route([outgoing()], [sent_to(("k1", "gw1"))])

    [item] = delivery_of(plan.deliveries[0]).items
    frame = frames.decode_server_frame(bytes(item.frame))
    assert frame == frames.Message(
        mid="m1",
        sender="alice",
        to="bob",
        body=msgspec.Raw(b'{"text": "hi",  "n": [1, 2.50]}'),
        ts=NOW_MS - 5,
    )
    # byte for byte: the body's spacing and number spelling survive
    assert b'"body":{"text": "hi",  "n": [1, 2.50]}' in bytes(item.frame)
    assert b'"from":"alice"' in bytes(item.frame)


def test_items_for_one_gateway_are_coalesced_into_one_delivery() -> None:
    batch: list[routing.Inbound] = [
        outgoing("m1", to="bob", client_id="c1"),
        outgoing("m2", to="carol", client_id="c2"),
        outgoing("m3", to="bob", client_id="c3"),
    ]
    answers: list[Answer] = [
        sent_to(("k1", "gw1")),
        sent_to(("k9", "gw1"), ("k8", "gw2"), uid="carol"),
        sent_to(("k1", "gw1")),
    ]
    plan = route(batch, answers)

    gw1, gw2 = by_routing_key(plan)["gw1"], by_routing_key(plan)["gw2"]
    assert len(plan.deliveries) == 2
    assert [(i.mid, i.targets) for i in delivery_of(gw1).items] == [
        ("m1", [Target("bob", "k1")]),
        ("m2", [Target("carol", "k9")]),
        ("m3", [Target("bob", "k1")]),
    ]
    assert gw1.mid == ""  # several messages: no single message_id
    assert [i.mid for i in delivery_of(gw2).items] == ["m2"]
    assert gw2.mid == "m2"


def test_offline_recipient_goes_to_the_undeliverable_exchange() -> None:
    batch: list[routing.Inbound] = [outgoing("m1", to="carol"), outgoing("m2", "dave")]
    plan = route(batch, [sent_to(uid="carol"), sent_to(uid="dave")])

    [publish] = plan.deliveries
    assert publish.exchange == NAMES.undeliverable_exchange
    assert publish.routing_key == ""
    items = delivery_of(publish).items
    assert [(i.mid, i.targets, i.durable) for i in items] == [
        ("m1", [Target("carol", "")], True),
        ("m2", [Target("dave", "")], True),
    ]


def test_message_items_name_the_sending_connection() -> None:
    plan = route(
        [outgoing("m1", to="carol", client_id="c9"), outgoing("m2", to="bob")],
        [sent_to(uid="carol"), sent_to(("k1", "gw-live"))],
        last_seen_ms={"gw-live": LIVE_MS},
    )

    origins = {
        item.mid: item.origin
        for publish in plan.deliveries
        for item in delivery_of(publish).items
    }
    assert origins == {
        "m1": envelopes.Origin("alice", "gw-sender", "k-sender", "c9"),
        "m2": envelopes.Origin("alice", "gw-sender", "k-sender", "c1"),
    }


def test_connections_on_dead_gateways_are_skipped() -> None:
    plan = route(
        [outgoing()],
        [sent_to(("k1", "gw-dead"), ("k2", "gw-live"), ("k3", "gw-new"))],
        last_seen_ms={"gw-dead": DEAD_MS, "gw-live": LIVE_MS},
    )

    assert [p.routing_key for p in plan.deliveries] == ["gw-live", "gw-new"]


def test_recipient_only_on_dead_gateways_is_offline() -> None:
    plan = route(
        [outgoing()], [sent_to(("k1", "gw-dead"))], last_seen_ms={"gw-dead": DEAD_MS}
    )

    [publish] = plan.deliveries
    assert publish.exchange == NAMES.undeliverable_exchange
    assert delivery_of(publish).items[0].targets == [Target("bob", "")]


# Client retries


def test_retry_with_another_mid_is_dropped() -> None:
    plan = route([outgoing("m2", client_id="c7")], [Retried("m1")])

    assert plan.deliveries == ()
    assert plan.duplicates == (routing.Duplicate("m2", "c7", "m1"),)


def test_a_mid_redelivered_within_one_batch_is_routed_once() -> None:
    # The second copy found its client id claimed by its own mid: a redelivery, routed
    # (test_lookups.py), but this batch routed that mid already.
    answers: list[Answer] = [sent_to(("k1", "gw1")), sent_to(("k1", "gw1"))]
    plan = route([outgoing("m1"), outgoing("m1")], answers)

    [publish] = plan.deliveries
    assert [i.mid for i in delivery_of(publish).items] == ["m1"]
    assert plan.duplicates == ()
    [answer] = plan.replies  # answered once
    assert len(delivery_of(answer).items) == 1


# Connections


def test_opened_connection_gets_ready_then_a_replay_request() -> None:
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    plan = route([opened], [Opened(False, False, False)])

    [ready] = plan.deliveries
    assert (ready.exchange, ready.routing_key) == (NAMES.deliveries_exchange, "gw1")
    [item] = delivery_of(ready).items
    assert frames.decode_server_frame(bytes(item.frame)) == frames.Ready(
        uid="bob", conn="k1"
    )
    assert item.targets == [Target("bob", "k1")]
    assert (item.mid, item.durable) == ("", False)
    # replays are a later stage than deliveries: published once those are confirmed
    [replay] = plan.replays
    assert (replay.exchange, replay.routing_key) == (
        NAMES.inbound_exchange,
        KEY_REPLAY,
    )
    assert envelopes.decode_replay_request(replay.body) == ReplayRequest(
        uid="bob", targets=[ReplayTarget("gw1", "k1")], from_mid=""
    )


def test_ready_precedes_a_message_routed_in_the_same_batch() -> None:
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    answers: list[Answer] = [Opened(True, False, False), sent_to(("k1", "gw1"))]
    plan = route([opened, outgoing("m1")], answers)

    [publish] = plan.deliveries
    items = delivery_of(publish).items
    frame_types = [frames.decode_server_frame(bytes(i.frame)) for i in items]
    assert [type(f) for f in frame_types] == [frames.Ready, frames.Message]


def test_stopped_gateway_is_swept_and_other_envelopes_publish_nothing() -> None:
    batch: list[routing.Inbound] = [
        ConnClosed(uid="bob", conn_id="k1", gateway_id="gw1"),
        Heartbeat(gateway_id="gw2", connections=3),
        GatewayStopped(gateway_id="gw1"),
    ]
    plan = route(batch, [None, HeartbeatRecorded(was_known=True), None])

    assert plan == Plan(sweeps=("gw1",))


# Offline store


def test_saved_rows_are_replayed_to_uids_online_now() -> None:
    saved = Saved(
        uids=[SavedUid("bob", "m5"), SavedUid("carol", "m6"), SavedUid("dave", "m7")]
    )
    answer = Connections(
        (
            ("bob", held(("k1", "gw1"), ("k2", "gw-dead"))),
            ("carol", ()),
            ("dave", held(("k3", "gw-dead"))),
        )
    )
    plan = route([saved], [answer], last_seen_ms={"gw-dead": DEAD_MS})

    assert plan.deliveries == ()
    [replay] = plan.replays
    assert replay.routing_key == KEY_REPLAY
    assert envelopes.decode_replay_request(replay.body) == ReplayRequest(
        uid="bob", targets=[ReplayTarget("gw1", "k1")], from_mid="m5"
    )


def test_saved_replays_every_live_connection_of_a_uid() -> None:
    saved = Saved(uids=[SavedUid("bob", "m5")])
    answer = Connections((("bob", held(("k1", "gw1"), ("k2", "gw2"))),))
    plan = route([saved], [answer])

    [replay] = plan.replays
    assert envelopes.decode_replay_request(replay.body).targets == [
        ReplayTarget("gw1", "k1"),
        ReplayTarget("gw2", "k2"),
    ]


def test_answers_must_match_the_batch() -> None:
    with pytest.raises(ValueError, match="one answer per envelope"):
        route([outgoing()], [])


@pytest.mark.parametrize(
    ("envelope", "answer"),
    [
        (ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1"), None),
        (Heartbeat(gateway_id="gw1", connections=1), Opened(True, False, False)),
        (Saved(uids=[]), sent_to()),
    ],
)
def test_an_answer_of_another_envelope_is_an_error(
    envelope: routing.Inbound, answer: Answer
) -> None:
    with pytest.raises(ValueError, match="no routing for"):
        route([envelope], [answer])


# Groups, rooms, broadcast

REPLY_TO = ReplyTo("amq.gen-reply", "corr-1")


def frame_of(item: DeliveryItem) -> frames.AnyServerFrame:
    return frames.decode_server_frame(bytes(item.frame))


def items_by_gateway(
    publishes: tuple[Publication, ...],
) -> dict[str, list[DeliveryItem]]:
    return {p.routing_key: delivery_of(p).items for p in publishes}


def group_members(members: dict[str, tuple[tuple[str, str], ...]]) -> Recipients:
    """A group message's answer: each member's (conn_id, gateway_id) connections."""
    return Recipients(tuple((uid, held(*pairs)) for uid, pairs in members.items()))


def test_group_message_is_one_item_per_gateway_and_one_for_the_offline_store() -> None:
    answer = group_members(
        {
            "bob": (("k1", "gw1"), ("k2", "gw2")),
            "carol": (("k3", "gw1"),),
            "dave": (),
            "erin": (("k4", "gw-dead"),),
        }
    )
    plan = route(
        [outgoing(to=None, group="team")], [answer], last_seen_ms={"gw-dead": DEAD_MS}
    )

    assert [(p.exchange, p.routing_key) for p in plan.deliveries] == [
        (NAMES.deliveries_exchange, "gw1"),
        (NAMES.deliveries_exchange, "gw2"),
        (NAMES.undeliverable_exchange, ""),
    ]
    [gw1], [gw2], [stored] = (delivery_of(p).items for p in plan.deliveries)
    assert gw1.targets == [Target("bob", "k1"), Target("carol", "k3")]
    assert gw2.targets == [Target("bob", "k2")]
    assert stored.targets == [Target("dave", ""), Target("erin", "")]
    for item in (gw1, gw2, stored):
        assert (item.mid, item.durable) == ("m1", True)
        assert item.frame == gw1.frame  # encoded once
    frame = frame_of(gw1)
    assert isinstance(frame, frames.Message)
    assert (frame.group, frame.to, frame.sender) == ("team", None, "alice")
    assert b'"to"' not in bytes(gw1.frame)


def test_group_sender_is_answered_by_the_router_after_the_deliveries() -> None:
    members = group_members({"bob": (("k1", "gw1"),)})
    plan = route([outgoing(to=None, group="team", client_id="c9")], [members])

    [answer] = plan.replies
    assert (answer.exchange, answer.routing_key) == (
        NAMES.deliveries_exchange,
        "gw-sender",
    )
    [item] = delivery_of(answer).items
    assert frame_of(item) == frames.Sent(id="c9", mid="m1")
    assert item.targets == [Target("alice", "k-sender")]
    assert not item.durable


def test_group_message_from_a_non_member_is_refused_and_routes_nothing() -> None:
    plan = route([outgoing(to=None, group="team", client_id="c9")], [NOT_MEMBER])

    assert plan.deliveries == ()
    [answer] = plan.replies
    [item] = delivery_of(answer).items
    frame = frame_of(item)
    assert isinstance(frame, frames.Error)
    assert (frame.code, frame.id) == (ErrorCode.NOT_MEMBER, "c9")
    assert item.targets == [Target("alice", "k-sender")]


def test_group_retry_is_answered_with_the_first_mid_and_routes_nothing() -> None:
    plan = route(
        [outgoing("m2", to=None, group="team", client_id="c9")], [Retried("m0")]
    )

    assert plan.deliveries == ()
    [answer] = plan.replies
    assert frame_of(delivery_of(answer).items[0]) == frames.Sent(id="c9", mid="m0")
    assert plan.duplicates == (routing.Duplicate("m2", "c9", "m0"),)


def test_a_sender_is_answered_by_the_router_after_the_deliveries() -> None:
    plan = route([outgoing(client_id="c9")], [sent_to(("k1", "gw1"))])

    assert len(plan.deliveries) == 1
    [answer] = plan.replies
    assert (answer.exchange, answer.routing_key) == (
        NAMES.deliveries_exchange,
        "gw-sender",
    )
    [item] = delivery_of(answer).items
    assert frame_of(item) == frames.Sent(id="c9", mid="m1")
    assert item.targets == [Target("alice", "k-sender")]
    assert not item.durable


def test_a_retry_is_answered_with_the_first_mid_and_routes_nothing() -> None:
    # The first frame with id c9 got m0; the retry came with m2, on any connection.
    plan = route([outgoing("m2", client_id="c9")], [Retried("m0")])

    assert plan.deliveries == ()
    [answer] = plan.replies
    assert frame_of(delivery_of(answer).items[0]) == frames.Sent(id="c9", mid="m0")
    assert plan.duplicates == (routing.Duplicate("m2", "c9", "m0"),)


def test_a_redelivered_frame_is_routed_and_answered_again_with_its_mid() -> None:
    # Its client id carries its own mid: test_lookups.py shows it answered as a message
    # to route, not as a retry.
    plan = route([outgoing("m0", client_id="c9")], [sent_to(("k1", "gw1"))])

    [delivery] = plan.deliveries
    assert [item.mid for item in delivery_of(delivery).items] == ["m0"]
    [answer] = plan.replies
    assert frame_of(delivery_of(answer).items[0]) == frames.Sent(id="c9", mid="m0")


def test_room_message_is_one_item_per_gateway_in_the_room() -> None:
    counts = RoomCounts({"gw2": 40, "gw1": 3, "gw-empty": 0, "gw-dead": 9})
    plan = route(
        [outgoing(to=None, room="live-1")], [counts], last_seen_ms={"gw-dead": DEAD_MS}
    )

    items = items_by_gateway(plan.deliveries)
    assert list(items) == ["gw1", "gw2"]
    for [item] in items.values():
        assert (item.targets, item.room, item.mid, item.durable) == (
            [],
            "live-1",
            "m1",
            False,
        )
        frame = frame_of(item)
        assert isinstance(frame, frames.Message)
        assert (frame.room, frame.to) == ("live-1", None)
    [answer] = plan.replies  # the router answers `sent`, once routed
    assert frame_of(delivery_of(answer).items[0]) == frames.Sent(id="c1", mid="m1")


def test_broadcast_is_one_item_per_live_gateway() -> None:
    plan = route(
        [outgoing(to=None, broadcast=True)],
        [EVERYONE],
        last_seen_ms={"gw1": LIVE_MS, "gw2": NOW_MS, "gw-dead": DEAD_MS},
    )

    items = items_by_gateway(plan.deliveries)
    assert list(items) == ["gw1", "gw2"]
    for [item] in items.values():
        assert (item.targets, item.broadcast, item.mid, item.durable) == (
            [],
            True,
            "m1",
            False,
        )
        frame = frame_of(item)
        assert isinstance(frame, frames.Message)
        assert frame.broadcast


def test_room_joins_and_leaves_publish_nothing() -> None:
    batch: list[routing.Inbound] = [
        RoomJoined(uid="bob", conn_id="k1", gateway_id="gw1", room="r"),
        RoomLeft(uid="bob", conn_id="k1", gateway_id="gw1", room="r"),
        ConnClosed(uid="bob", conn_id="k1", gateway_id="gw1", rooms=["r", "s"]),
    ]
    assert route(batch, [None] * 3) == Plan()


# Presence queries


def test_presence_query_is_answered_to_the_asking_connection() -> None:
    asked = PresenceAsked(
        uid="alice",
        conn_id="k0",
        gateway_id="gw1",
        client_id="p1",
        uids=["carol", "bob", "dave", "carol", "erin"],
    )
    answer = Connections(  # the distinct uids it may see, in order
        (
            ("carol", held(("k1", "gw2"))),
            ("bob", ()),
            ("dave", held(("k2", "gw-dead"))),
            ("erin", held(("k3", "gw-dead"), ("k4", "gw1"))),
        )
    )
    plan = route([asked], [answer], last_seen_ms={"gw-dead": DEAD_MS})

    [publish] = plan.deliveries
    assert publish.routing_key == "gw1"
    [item] = delivery_of(publish).items
    assert frame_of(item) == frames.PresenceResult(id="p1", online=["carol", "erin"])
    assert (item.targets, item.durable) == ([Target("alice", "k0")], False)


def test_a_forbidden_presence_query_is_answered_forbidden() -> None:
    asked = PresenceAsked(
        uid="alice", conn_id="k0", gateway_id="gw1", client_id="p1", uids=["bob"]
    )
    plan = route([asked], [PRESENCE_FORBIDDEN])

    [publish] = plan.deliveries
    [item] = delivery_of(publish).items
    frame = frame_of(item)
    assert isinstance(frame, frames.Error)
    assert (frame.code, frame.id) == (ErrorCode.FORBIDDEN, "p1")
    assert item.targets == [Target("alice", "k0")]


# Backend commands


def call(command: envelopes.Command, name: str, mid: str = "") -> Call:
    return Call(name, command, REPLY_TO, mid, NOW_MS if mid else 0)


def reply_of(plan: Plan) -> dict[str, Any]:
    [publish] = plan.replies
    assert (publish.exchange, publish.routing_key) == ("", REPLY_TO.queue)
    assert publish.correlation_id == REPLY_TO.correlation_id
    assert not publish.mandatory
    reply: dict[str, Any] = json.loads(publish.body)
    return reply


def test_refused_command_gets_an_error_reply() -> None:
    refused = Refused(ErrorCode.UNKNOWN_COMMAND, "no such command", REPLY_TO)
    plan = route([refused], [None])

    assert plan.deliveries == ()
    assert reply_of(plan) == {
        "error": {"code": "unknown_command", "message": "no such command"}
    }


def test_api_send_to_a_uid_is_routed_as_its_sender_and_replied_after() -> None:
    send = ApiSend(to="bob", body=msgspec.Raw(b'{"n":1}'), sender="billing")
    plan = route([call(send, "send", mid="m5")], [sent_to(("k1", "gw1"))])

    [publish] = plan.deliveries
    [item] = delivery_of(publish).items
    assert (item.mid, item.targets, item.durable) == ("m5", [Target("bob", "k1")], True)
    assert frame_of(item) == frames.Message(
        mid="m5", sender="billing", body=msgspec.Raw(b'{"n":1}'), ts=NOW_MS, to="bob"
    )
    assert reply_of(plan) == {"mid": "m5"}


def test_api_send_to_a_group_needs_no_membership_and_answers_no_frame() -> None:
    send = ApiSend(group="all", body=msgspec.Raw(b"1"))
    answer = group_members({"bob": (("k1", "gw1"),), "carol": ()})
    plan = route([call(send, "send", mid="m5")], [answer])

    items = items_by_gateway(plan.deliveries)
    assert items["gw1"][0].targets == [Target("bob", "k1")]
    assert items[""][0].targets == [Target("carol", "")]
    assert reply_of(plan) == {"mid": "m5"}  # the only reply: no `sent` frame


def test_api_send_retry_replies_the_first_mid_and_routes_nothing() -> None:
    send = ApiSend(to="bob", body=msgspec.Raw(b"1"), id="invoice-42")
    plan = route([call(send, "send", mid="m6")], [Retried("m5")])

    assert plan.deliveries == ()
    assert reply_of(plan) == {"mid": "m5"}


def test_api_send_to_a_room_and_api_broadcast() -> None:
    to_room = ApiSend(room="live", body=msgspec.Raw(b"1"))
    broadcast = ApiBroadcast(body=msgspec.Raw(b"2"), sender="ops")
    plan = route(
        [call(to_room, "send", mid="m5"), call(broadcast, "broadcast", mid="m6")],
        [RoomCounts({"gw1": 1}), EVERYONE],
        last_seen_ms={"gw1": LIVE_MS, "gw2": LIVE_MS},
    )

    items = items_by_gateway(plan.deliveries)
    assert [(i.mid, i.room, i.broadcast) for i in items["gw1"]] == [
        ("m5", "live", False),
        ("m6", "", True),
    ]
    assert [(i.mid, i.broadcast) for i in items["gw2"]] == [("m6", True)]
    assert [json.loads(p.body) for p in plan.replies] == [{"mid": "m5"}, {"mid": "m6"}]


def test_kick_closes_every_live_connection_per_gateway() -> None:
    kim = held(("k1", "gw1"), ("k2", "gw2"), ("k3", "gw1"), ("k4", "gw-dead"))
    plan = route(
        [call(ApiKick(uid="kim", reason="abuse"), "kick")],
        [Connections((("kim", kim),))],
        last_seen_ms={"gw-dead": DEAD_MS},
    )

    items = items_by_gateway(plan.deliveries)
    assert list(items) == ["gw1", "gw2"]
    [gw1], [gw2] = items.values()
    assert gw1.targets == [Target("kim", "k1"), Target("kim", "k3")]
    assert gw2.targets == [Target("kim", "k2")]
    for item in (gw1, gw2):
        assert frame_of(item) == frames.Kicked(reason="abuse")
        assert (item.close_code, item.durable, item.mid) == (
            int(CloseCode.KICKED),
            False,
            "",
        )
    assert reply_of(plan) == {"kicked": 3}
    # every connection leaves presence, those on dead gateways too, once the kicks are
    # queued; a uid left without one goes offline after the debounce
    assert plan.removals == tuple(
        RemoveConnection("kim", c.conn_id, c.gateway_id, NOW_MS + DEBOUNCE_MS)
        for c in kim
    )


def test_query_commands_reply_from_live_gateways_only() -> None:
    live = {"gw-dead": DEAD_MS}
    presence = route(
        [call(ApiPresence(uids=["b", "a", "b", "c"]), "presence")],
        [
            Connections(
                (("b", held(("k1", "gw1"))), ("a", ()), ("c", held(("k2", "gw-dead"))))
            )
        ],
        last_seen_ms=live,
    )
    assert reply_of(presence) == {"online": ["b"]}

    connections = route(
        [call(ApiConnections(uid="b"), "connections")],
        [Connections((("b", held(("k1", "gw1"), ("k2", "gw-dead"))),))],
        last_seen_ms=live,
    )
    assert reply_of(connections) == {
        "connections": [{"conn_id": "k1", "gateway_id": "gw1"}]
    }

    count = route(
        [call(ApiRoomCount(room="r"), "room.count")],
        [RoomCounts({"gw1": 3, "gw2": 4, "gw-dead": 5, "gw-odd": -1})],
        last_seen_ms=live,
    )
    assert reply_of(count) == {"count": 7}


def test_command_without_reply_to_gets_no_reply() -> None:
    kick = Call("kick", ApiKick(uid="kim"), None)
    plan = route([kick], [Connections((("kim", held(("k1", "gw1"))),))])

    assert plan.replies == ()
    assert len(plan.deliveries) == 1


# Presence events (debounced)


def opened(uid: str = "bob") -> ConnOpened:
    return ConnOpened(uid=uid, conn_id="k1", gateway_id="gw1")


def test_first_connection_publishes_user_online() -> None:
    plan = route([opened()], [Opened(True, False, False)])

    [event] = plan.events
    assert (event.exchange, event.routing_key) == (
        NAMES.events_exchange,
        EVENT_USER_ONLINE,
    )
    assert not event.mandatory  # nobody may be bound
    assert json.loads(event.body) == {"uid": "bob", "ts": NOW_MS}


@pytest.mark.parametrize(
    "answer",
    [
        Opened(
            is_first_connection=True, has_flapped=True, is_over_connection_limit=False
        ),
        Opened(
            is_first_connection=False, has_flapped=False, is_over_connection_limit=False
        ),
    ],
    ids=["a reload", "a second device"],
)
def test_reloads_and_second_devices_publish_no_event(answer: Opened) -> None:
    assert route([opened()], [answer]).events == ()


# Re-announcement: a gateway whose presence the routers lost


def test_heartbeat_of_an_unknown_gateway_with_connections_asks_it_to_reannounce() -> (
    None
):
    heartbeat = Heartbeat(gateway_id="gw1", connections=2)
    plan = route([heartbeat], [HeartbeatRecorded(was_known=False)])
    (publish,) = plan.deliveries
    assert publish.routing_key == "gw1"
    (item,) = envelopes.decode_delivery(publish.body).items
    assert item.reannounce
    assert item.targets == []


def test_heartbeat_of_a_known_gateway_asks_nothing() -> None:
    known = HeartbeatRecorded(was_known=True)
    plan = route([Heartbeat(gateway_id="gw1", connections=2)], [known])
    assert plan.deliveries == ()
    assert plan.known == ()


@pytest.mark.parametrize("connections", [0, 2])
def test_an_unknown_gateway_is_recorded_as_known_only_after_the_confirms(
    connections: int,
) -> None:
    heartbeat = Heartbeat(gateway_id="gw1", connections=connections)
    plan = route([heartbeat], [HeartbeatRecorded(was_known=False)])
    assert plan.known == (MarkKnown("gw1"),)
    assert len(plan.deliveries) == (1 if connections else 0)


def test_reannounced_connection_gets_a_replay_but_no_ready_and_no_online_event() -> (
    None
):
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1", reannounce=True)
    plan = route([opened], [Opened(True, False, False)])
    assert plan.deliveries == ()
    assert plan.events == ()
    (replay,) = plan.replays
    request = envelopes.decode_replay_request(replay.body)
    assert request.uid == "bob"
    assert request.targets == [ReplayTarget("gw1", "k1")]
    assert request.from_mid == ""


def test_a_connection_over_the_uid_limit_gets_an_error_and_a_close_only() -> None:
    opened = ConnOpened(uid="bob", conn_id="k9", gateway_id="gw1")
    plan = route([opened], [Opened(False, False, True)])

    [delivery] = plan.deliveries
    [item] = delivery_of(delivery).items
    frame = frames.decode_server_frame(bytes(item.frame))
    assert isinstance(frame, frames.Error)
    assert frame.code == ErrorCode.TOO_MANY_CONNECTIONS
    assert item.targets == [Target("bob", "k9")]
    assert (item.close_code, item.durable) == (CloseCode.TOO_MANY_CONNECTIONS, False)
    assert (plan.replays, plan.events) == ((), ())


# The rate per uid across gateways (what it costs and when it throttles: test_abuse_limits.py)


def test_a_throttle_goes_out_before_the_envelope_it_was_found_on() -> None:
    batch: list[routing.Inbound] = [outgoing("m1"), outgoing("m2", client_id="c2")]
    plan = route(
        batch,
        [sent_to(("k1", "gw1")), sent_to(("k1", "gw1"))],
        last_seen_ms={"gw1": LIVE_MS},
        throttles={1: Throttled("alice", 700)},
    )

    [gw1] = plan.deliveries
    items = delivery_of(gw1).items
    assert [(i.mid, i.throttle_uid) for i in items] == [
        ("m1", ""),
        ("", "alice"),
        ("m2", ""),
    ]
    assert plan.throttled == (Throttled("alice", 700),)
