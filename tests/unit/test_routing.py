"""routing.py: envelopes + presence lookups in, publishes out. No event loop, no network."""

import json
from typing import Any

import msgspec
import pytest

from proto import envelopes, frames
from proto import names as keys
from proto.codes import CloseCode, ErrorCode
from proto.envelopes import (
    ApiBroadcast,
    ApiConnections,
    ApiGroupMembers,
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
from proto.errors import BadEnvelope
from proto.names import Names
from router import routing
from router.routing import (
    NO_LOOKUP,
    Call,
    Connection,
    Lookup,
    Plan,
    Publish,
    Refused,
    ReplyTo,
)

NAMES = Names("tunit")
NOW_MS = 1_700_000_000_000
TTL_MS = 15_000
LIVE_MS = NOW_MS - 1_000
DEAD_MS = NOW_MS - TTL_MS - 1


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


def sent_to(*connections: tuple[str, str], claimed_mid: str | None = None) -> Lookup:
    """The lookup of an Outgoing whose recipient holds these (conn_id, gateway_id)."""
    return Lookup((tuple(Connection(c, g) for c, g in connections),), claimed_mid)


def route(
    batch: list[routing.Inbound],
    lookups: list[Lookup],
    last_seen_ms: dict[str, int] | None = None,
) -> Plan:
    return routing.route_batch(
        NAMES,
        batch,
        lookups,
        last_seen_ms=last_seen_ms or {},
        now_ms=NOW_MS,
        gateway_ttl_ms=TTL_MS,
    )


def delivery_of(publish: Publish) -> Delivery:
    return envelopes.decode_delivery(publish.body)


def by_routing_key(plan: Plan) -> dict[str, Publish]:
    return {p.routing_key: p for p in plan.deliveries}


# Decoding


def test_decode_inbound_by_routing_key() -> None:
    body = envelopes.encode(outgoing())
    assert routing.decode_inbound(keys.KEY_SEND, body) == outgoing()
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    assert (
        routing.decode_inbound(keys.KEY_CONN_OPENED, envelopes.encode(opened)) == opened
    )


@pytest.mark.parametrize(
    ("routing_key", "body"),
    [
        (keys.KEY_SEND, b"not json"),
        (keys.KEY_SEND, b'{"mid": "m1"}'),
        (keys.KEY_CONN_OPENED, b'{"uid": 1, "conn_id": "k", "gateway_id": "g"}'),
        (keys.KEY_ACK, b'{"uid": "bob", "mids": []}'),
        ("gateway.unknown", b"{}"),
    ],
)
def test_decode_inbound_rejects_bad_envelopes(routing_key: str, body: bytes) -> None:
    with pytest.raises(BadEnvelope):
        routing.decode_inbound(routing_key, body)


def test_bad_envelope_reason_names_the_field_not_the_value() -> None:
    body = b'{"uid": 12345, "conn_id": "k", "gateway_id": "g"}'
    with pytest.raises(BadEnvelope) as caught:
        routing.decode_inbound(keys.KEY_CONN_OPENED, body)
    assert "$.uid" in caught.value.reason
    assert "12345" not in caught.value.reason


def test_decode_batch_keeps_order_and_drops_only_bad_items() -> None:
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    body = envelopes.encode(
        envelopes.Batch(
            items=[
                envelopes.Batched(
                    keys.KEY_CONN_OPENED, msgspec.Raw(envelopes.encode(opened))
                ),
                envelopes.Batched(keys.KEY_SEND, msgspec.Raw(b'{"mid": "m1"}')),
                envelopes.Batched(keys.KEY_SAVED, msgspec.Raw(b'{"uids": []}')),
                envelopes.Batched(
                    keys.KEY_SEND, msgspec.Raw(envelopes.encode(outgoing()))
                ),
            ]
        )
    )
    decoded, refused = routing.decode_batch(body)
    assert decoded == [opened, outgoing()]
    assert [item.index for item in refused] == [1, 2]
    assert "may not be batched" in refused[1].reason
    # Each refused item alone, as a batch of one, to be dead-lettered.
    (alone,) = envelopes.decode_batch(refused[1].body).items
    assert alone.key == keys.KEY_SAVED


def test_an_item_too_deep_for_any_decoder_is_refused_alone() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    body = (
        b'{"items": [["gateway.send", {"body": ' + deep + b"}], "
        b'["gateway.heartbeat", {"gateway_id": "gw1", "connections": 5}]]}'
    )
    decoded, refused = routing.decode_batch(body)
    assert decoded == [Heartbeat(gateway_id="gw1", connections=5)]
    (item,) = refused
    assert (item.index, item.reason) == (0, "nested too deeply")


def test_a_lone_envelope_too_deep_is_a_bad_envelope() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(BadEnvelope, match="deep"):
        routing.decode_inbound(keys.KEY_SEND, b'{"x": ' + deep + b"}")


def test_deliveries_are_split_to_fit_the_message_size_limit() -> None:
    names = Names("t")
    items = [
        routing.message_item(msgspec.Raw(b'"' + b"x" * 1000 + b'"'), [], f"m{i}")
        for i in range(10)
    ]
    publishes = routing.delivery_publishes(
        names.deliveries_exchange, "gw1", items, 3000
    )
    assert len(publishes) > 1
    assert all(len(p.body) <= 3000 for p in publishes)
    carried = [i for p in publishes for i in envelopes.decode_delivery(p.body).items]
    assert [i.mid for i in carried] == [f"m{i}" for i in range(10)]
    for publish in publishes:
        mids = [i.mid for i in envelopes.decode_delivery(publish.body).items]
        assert publish.mid == (mids[0] if len(mids) == 1 else "")


def test_a_batch_is_a_list_of_key_and_body_pairs() -> None:
    body = (
        b'{"items": [["gateway.heartbeat", {"gateway_id": "gw1", "connections": 5}]]}'
    )
    decoded, refused = routing.decode_batch(body)
    assert decoded == [Heartbeat(gateway_id="gw1", connections=5)]
    assert refused == []


@pytest.mark.parametrize("body", [b"not json", b'{"items": 3}', b"[]"])
def test_decode_batch_rejects_what_is_no_batch(body: bytes) -> None:
    with pytest.raises(BadEnvelope):
        routing.decode_batch(body)


def test_an_item_that_is_no_pair_is_refused_alone() -> None:
    decoded, refused = routing.decode_batch(b'{"items": [["k"]]}')
    assert decoded == []
    assert [item.body for item in refused] == [b'{"items":[["k"]]}']


def test_api_keys_are_commands() -> None:
    assert routing.is_command("api.kick")
    assert routing.is_command("api.users.kick")
    assert not routing.is_command(keys.KEY_SEND)


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
    lookups = [
        sent_to(("k1", "gw1")),
        sent_to(("k9", "gw1"), ("k8", "gw2")),
        sent_to(("k1", "gw1")),
    ]
    plan = route(batch, lookups)

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
    plan = route(batch, [sent_to(), sent_to()])

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
        [sent_to(), sent_to(("k1", "gw-live"))],
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


def test_liveness() -> None:
    assert routing.is_live(None, NOW_MS, TTL_MS)  # not seen yet: may be brand new
    assert routing.is_live(NOW_MS - TTL_MS, NOW_MS, TTL_MS)
    assert not routing.is_live(NOW_MS - TTL_MS - 1, NOW_MS, TTL_MS)
    last_seen = {"a": LIVE_MS, "b": DEAD_MS, "c": DEAD_MS - 10, "d": NOW_MS}
    assert routing.dead_gateways(last_seen, NOW_MS, TTL_MS) == ["c", "b"]


# Client retries


def test_retry_with_another_mid_is_dropped() -> None:
    plan = route(
        [outgoing("m2", client_id="c7")], [sent_to(("k1", "gw1"), claimed_mid="m1")]
    )

    assert plan.deliveries == ()
    assert plan.duplicates == (routing.Duplicate("m2", "c7", "m1"),)


def test_redelivery_with_the_same_mid_is_routed_again() -> None:
    plan = route([outgoing("m1")], [sent_to(("k1", "gw1"), claimed_mid="m1")])

    assert [p.routing_key for p in plan.deliveries] == ["gw1"]
    assert plan.duplicates == ()


def test_a_mid_redelivered_within_one_batch_is_routed_once() -> None:
    lookups = [sent_to(("k1", "gw1")), sent_to(("k1", "gw1"), claimed_mid="m1")]
    plan = route([outgoing("m1"), outgoing("m1")], lookups)

    [publish] = plan.deliveries
    assert [i.mid for i in delivery_of(publish).items] == ["m1"]
    assert plan.duplicates == ()


def test_first_frame_with_a_client_id_is_routed() -> None:
    plan = route([outgoing("m1")], [sent_to(("k1", "gw1"), claimed_mid=None)])

    assert [p.routing_key for p in plan.deliveries] == ["gw1"]


# Connections


def test_opened_connection_gets_ready_then_a_replay_request() -> None:
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    plan = route([opened], [NO_LOOKUP])

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
        keys.KEY_REPLAY,
    )
    assert envelopes.decode_replay_request(replay.body) == ReplayRequest(
        uid="bob", targets=[ReplayTarget("gw1", "k1")], from_mid=""
    )


def test_ready_precedes_a_message_routed_in_the_same_batch() -> None:
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    plan = route([opened, outgoing("m1")], [NO_LOOKUP, sent_to(("k1", "gw1"))])

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
    plan = route(batch, [NO_LOOKUP] * 3)

    assert plan == Plan(sweeps=("gw1",))


# Offline store


def test_saved_rows_are_replayed_to_uids_online_now() -> None:
    saved = Saved(
        uids=[SavedUid("bob", "m5"), SavedUid("carol", "m6"), SavedUid("dave", "m7")]
    )
    lookup = Lookup(
        (
            (Connection("k1", "gw1"), Connection("k2", "gw-dead")),
            (),
            (Connection("k3", "gw-dead"),),
        )
    )
    plan = route([saved], [lookup], last_seen_ms={"gw-dead": DEAD_MS})

    assert plan.deliveries == ()
    [replay] = plan.replays
    assert replay.routing_key == keys.KEY_REPLAY
    assert envelopes.decode_replay_request(replay.body) == ReplayRequest(
        uid="bob", targets=[ReplayTarget("gw1", "k1")], from_mid="m5"
    )


def test_saved_replays_every_live_connection_of_a_uid() -> None:
    saved = Saved(uids=[SavedUid("bob", "m5")])
    lookup = Lookup(((Connection("k1", "gw1"), Connection("k2", "gw2")),))
    plan = route([saved], [lookup])

    [replay] = plan.replays
    assert envelopes.decode_replay_request(replay.body).targets == [
        ReplayTarget("gw1", "k1"),
        ReplayTarget("gw2", "k2"),
    ]


def test_lookups_must_match_the_batch() -> None:
    with pytest.raises(ValueError, match="one lookup per envelope"):
        route([outgoing()], [])


# Groups, rooms, broadcast

REPLY_TO = ReplyTo("amq.gen-reply", "corr-1")


def frame_of(item: DeliveryItem) -> frames.AnyServerFrame:
    return frames.decode_server_frame(bytes(item.frame))


def items_by_gateway(publishes: tuple[Publish, ...]) -> dict[str, list[DeliveryItem]]:
    return {p.routing_key: delivery_of(p).items for p in publishes}


def group_lookup(
    members: dict[str, tuple[tuple[str, str], ...]],
    *,
    is_member: bool = True,
    claimed_mid: str | None = None,
) -> Lookup:
    """A group message's lookup: each member's (conn_id, gateway_id) connections."""
    return Lookup(
        connections=tuple(
            tuple(Connection(c, g) for c, g in held) for held in members.values()
        ),
        claimed_mid=claimed_mid,
        is_member=is_member,
        members=tuple(members),
    )


def test_group_message_is_one_item_per_gateway_and_one_for_the_offline_store() -> None:
    lookup = group_lookup(
        {
            "bob": (("k1", "gw1"), ("k2", "gw2")),
            "carol": (("k3", "gw1"),),
            "dave": (),
            "erin": (("k4", "gw-dead"),),
        }
    )
    plan = route(
        [outgoing(to=None, group="team")], [lookup], last_seen_ms={"gw-dead": DEAD_MS}
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
    lookup = group_lookup({"bob": (("k1", "gw1"),)})
    plan = route([outgoing(to=None, group="team", client_id="c9")], [lookup])

    [answer] = plan.replies
    assert (answer.exchange, answer.routing_key) == (
        NAMES.deliveries_exchange,
        "gw-sender",
    )
    [item] = delivery_of(answer).items
    assert frame_of(item) == frames.Sent(id="c9", mid="m1")
    assert item.targets == [Target("alice", "k-sender")]
    assert not item.durable


def test_group_sender_is_not_a_recipient() -> None:
    lookup = group_lookup({"alice": (("k0", "gw1"),), "bob": (("k1", "gw1"),)})
    plan = route([outgoing(to=None, group="team")], [lookup])

    [gw1] = plan.deliveries
    assert delivery_of(gw1).items[0].targets == [Target("bob", "k1")]


def test_group_message_from_a_non_member_is_refused_and_routes_nothing() -> None:
    lookup = group_lookup({"bob": (("k1", "gw1"),)}, is_member=False)
    plan = route([outgoing(to=None, group="team", client_id="c9")], [lookup])

    assert plan.deliveries == ()
    [answer] = plan.replies
    [item] = delivery_of(answer).items
    frame = frame_of(item)
    assert isinstance(frame, frames.Error)
    assert (frame.code, frame.id) == (ErrorCode.NOT_MEMBER, "c9")
    assert item.targets == [Target("alice", "k-sender")]


def test_group_retry_is_answered_with_the_first_mid_and_routes_nothing() -> None:
    lookup = group_lookup({"bob": (("k1", "gw1"),)}, claimed_mid="m0")
    plan = route([outgoing("m2", to=None, group="team", client_id="c9")], [lookup])

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
    plan = route(
        [outgoing("m2", client_id="c9")], [sent_to(("k1", "gw1"), claimed_mid="m0")]
    )

    assert plan.deliveries == ()
    [answer] = plan.replies
    assert frame_of(delivery_of(answer).items[0]) == frames.Sent(id="c9", mid="m0")
    assert plan.duplicates == (routing.Duplicate("m2", "c9", "m0"),)


def test_a_redelivered_frame_is_routed_and_answered_again_with_its_mid() -> None:
    plan = route(
        [outgoing("m0", client_id="c9")], [sent_to(("k1", "gw1"), claimed_mid="m0")]
    )

    [delivery] = plan.deliveries
    assert [item.mid for item in delivery_of(delivery).items] == ["m0"]
    [answer] = plan.replies
    assert frame_of(delivery_of(answer).items[0]) == frames.Sent(id="c9", mid="m0")


def test_room_message_is_one_item_per_gateway_in_the_room() -> None:
    lookup = Lookup(room_counts={"gw2": 40, "gw1": 3, "gw-empty": 0, "gw-dead": 9})
    plan = route(
        [outgoing(to=None, room="live-1")], [lookup], last_seen_ms={"gw-dead": DEAD_MS}
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
        [NO_LOOKUP],
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
    assert route(batch, [NO_LOOKUP] * 3) == Plan()


@pytest.mark.parametrize(
    "addressing",
    [
        {"to": None},
        {"to": "bob", "group": "team"},
        {"to": None, "room": "r", "broadcast": True},
    ],
)
def test_outgoing_must_be_addressed_exactly_one_way(addressing: dict[str, Any]) -> None:
    fields = {**json.loads(envelopes.encode(outgoing())), **addressing}
    with pytest.raises(BadEnvelope):
        routing.decode_inbound(keys.KEY_SEND, json.dumps(fields).encode())


def test_new_gateway_envelopes_decode() -> None:
    asked = PresenceAsked(
        uid="a", conn_id="k", gateway_id="g", client_id="p1", uids=["b"]
    )
    joined = RoomJoined(uid="a", conn_id="k", gateway_id="g", room="r")
    for key, envelope in [
        (keys.KEY_PRESENCE, asked),
        (keys.KEY_ROOM_JOINED, joined),
        (keys.KEY_ROOM_LEFT, RoomLeft(uid="a", conn_id="k", gateway_id="g", room="r")),
        (keys.KEY_SEND, outgoing(to=None, group="team")),
    ]:
        assert routing.decode_inbound(key, envelopes.encode(envelope)) == envelope


# Presence queries


def test_presence_query_is_answered_to_the_asking_connection() -> None:
    asked = PresenceAsked(
        uid="alice",
        conn_id="k0",
        gateway_id="gw1",
        client_id="p1",
        uids=["carol", "bob", "dave", "carol", "erin"],
    )
    lookup = Lookup(  # the distinct uids, in order: carol, bob, dave, erin
        (
            (Connection("k1", "gw2"),),
            (),
            (Connection("k2", "gw-dead"),),
            (Connection("k3", "gw-dead"), Connection("k4", "gw1")),
        )
    )
    plan = route([asked], [lookup], last_seen_ms={"gw-dead": DEAD_MS})

    [publish] = plan.deliveries
    assert publish.routing_key == "gw1"
    [item] = delivery_of(publish).items
    assert frame_of(item) == frames.PresenceResult(id="p1", online=["carol", "erin"])
    assert (item.targets, item.durable) == ([Target("alice", "k0")], False)


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


def test_decode_command_gives_a_call_with_a_mid_for_sends_only() -> None:
    send = routing.decode_command(
        "api.send", b'{"to": "bob", "body": [1]}', REPLY_TO, mid="m7", ts=NOW_MS
    )
    assert isinstance(send, Call)
    assert (send.name, send.mid, send.ts, send.reply_to) == (
        "send",
        "m7",
        NOW_MS,
        REPLY_TO,
    )
    assert isinstance(send.command, ApiSend)
    assert (send.command.sender, bytes(send.command.body)) == ("system", b"[1]")
    kick = routing.decode_command(
        "api.kick", b'{"uid": "bob"}', None, mid="m8", ts=NOW_MS
    )
    assert kick == Call("kick", ApiKick(uid="bob"), None)
    added = routing.decode_command(
        "api.group.add", b'{"group": "g", "uids": ["a"]}', None, mid="m9", ts=NOW_MS
    )
    assert added == Call("group.add", ApiGroupMembers(group="g", uids=["a"]), None)


@pytest.mark.parametrize(
    ("routing_key", "body", "code", "path"),
    [
        ("api.send", b"{not json", ErrorCode.INVALID_JSON, None),
        ("api.send", b'{"body": 1}', ErrorCode.INVALID_FIELD, "$"),
        (
            "api.send",
            b'{"to": "a", "group": "b", "body": 1}',
            ErrorCode.INVALID_FIELD,
            "$",
        ),
        ("api.send", b'{"to": "a"}', ErrorCode.INVALID_FIELD, "body"),
        ("api.kick", b'{"uid": 7}', ErrorCode.INVALID_FIELD, "$.uid"),
        ("api.kick", b"[]", ErrorCode.INVALID_FIELD, "object"),
        (
            "api.group.add",
            b'{"group": "g", "uids": "a"}',
            ErrorCode.INVALID_FIELD,
            "$.uids",
        ),
        ("api.teleport", b"{}", ErrorCode.UNKNOWN_COMMAND, None),
    ],
)
def test_bad_commands_are_refused_with_a_code(
    routing_key: str, body: bytes, code: ErrorCode, path: str | None
) -> None:
    refused = routing.decode_command(routing_key, body, REPLY_TO, mid="m1", ts=NOW_MS)

    assert isinstance(refused, Refused)
    assert (refused.code, refused.reply_to) == (code, REPLY_TO)
    assert refused.reason
    if path is not None:
        assert path in refused.reason


def test_refused_command_gets_an_error_reply() -> None:
    refused = Refused(ErrorCode.UNKNOWN_COMMAND, "no such command", REPLY_TO)
    plan = route([refused], [NO_LOOKUP])

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
    lookup = group_lookup({"bob": (("k1", "gw1"),), "carol": ()})
    plan = route([call(send, "send", mid="m5")], [lookup])

    items = items_by_gateway(plan.deliveries)
    assert items["gw1"][0].targets == [Target("bob", "k1")]
    assert items[""][0].targets == [Target("carol", "")]
    assert reply_of(plan) == {"mid": "m5"}  # the only reply: no `sent` frame


def test_api_send_retry_replies_the_first_mid_and_routes_nothing() -> None:
    send = ApiSend(to="bob", body=msgspec.Raw(b"1"), id="invoice-42")
    plan = route(
        [call(send, "send", mid="m6")], [sent_to(("k1", "gw1"), claimed_mid="m5")]
    )

    assert plan.deliveries == ()
    assert reply_of(plan) == {"mid": "m5"}


def test_api_send_to_a_room_and_api_broadcast() -> None:
    to_room = ApiSend(room="live", body=msgspec.Raw(b"1"))
    broadcast = ApiBroadcast(body=msgspec.Raw(b"2"), sender="ops")
    plan = route(
        [call(to_room, "send", mid="m5"), call(broadcast, "broadcast", mid="m6")],
        [Lookup(room_counts={"gw1": 1}), NO_LOOKUP],
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
    lookup = Lookup(
        (
            (
                Connection("k1", "gw1"),
                Connection("k2", "gw2"),
                Connection("k3", "gw1"),
                Connection("k4", "gw-dead"),
            ),
        )
    )
    plan = route(
        [call(ApiKick(uid="kim", reason="abuse"), "kick")],
        [lookup],
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
    # every connection leaves presence, those on dead gateways too
    assert plan.removals == tuple(
        routing.Removal("kim", c) for c in lookup.connections[0]
    )


def test_query_commands_reply_from_live_gateways_only() -> None:
    live = {"gw-dead": DEAD_MS}
    presence = route(
        [call(ApiPresence(uids=["b", "a", "b", "c"]), "presence")],
        [Lookup(((Connection("k1", "gw1"),), (), (Connection("k2", "gw-dead"),)))],
        last_seen_ms=live,
    )
    assert reply_of(presence) == {"online": ["b"]}

    connections = route(
        [call(ApiConnections(uid="b"), "connections")],
        [Lookup(((Connection("k1", "gw1"), Connection("k2", "gw-dead")),))],
        last_seen_ms=live,
    )
    assert reply_of(connections) == {
        "connections": [{"conn_id": "k1", "gateway_id": "gw1"}]
    }

    count = route(
        [call(ApiRoomCount(room="r"), "room.count")],
        [Lookup(room_counts={"gw1": 3, "gw2": 4, "gw-dead": 5, "gw-odd": -1})],
        last_seen_ms=live,
    )
    assert reply_of(count) == {"count": 7}

    added = route(
        [call(ApiGroupMembers(group="g", uids=["a"]), "group.add")], [NO_LOOKUP]
    )
    assert reply_of(added) == {"ok": True}


def test_command_without_reply_to_gets_no_reply() -> None:
    kick = Call("kick", ApiKick(uid="kim"), None)
    plan = route([kick], [Lookup(((Connection("k1", "gw1"),),))])

    assert plan.replies == ()
    assert len(plan.deliveries) == 1


# Presence events (debounced)


def opened(uid: str = "bob") -> ConnOpened:
    return ConnOpened(uid=uid, conn_id="k1", gateway_id="gw1")


def test_first_connection_publishes_user_online() -> None:
    plan = route([opened()], [Lookup(is_first_connection=True)])

    [event] = plan.events
    assert (event.exchange, event.routing_key) == (
        NAMES.events_exchange,
        keys.EVENT_USER_ONLINE,
    )
    assert not event.mandatory  # nobody may be bound
    assert json.loads(event.body) == {"uid": "bob", "ts": NOW_MS}


@pytest.mark.parametrize(
    "lookup",
    [
        Lookup(is_first_connection=True, has_flapped=True),  # a reload
        Lookup(is_first_connection=False),  # a second device
    ],
)
def test_reloads_and_second_devices_publish_no_event(lookup: Lookup) -> None:
    assert route([opened()], [lookup]).events == ()


def test_offline_is_due_after_the_debounce() -> None:
    assert routing.offline_due_ms(NOW_MS, 2_000) == NOW_MS + 2_000


def test_only_claimed_uids_without_connections_go_offline() -> None:
    due = ["a", "b", "c", "d"]
    claimed = [True, False, True, True]
    counts = [0, 0, 1, 0]
    assert routing.gone_offline(due, claimed, counts) == ["a", "d"]


def test_offline_events() -> None:
    [event] = routing.offline_events(NAMES, ["bob"], NOW_MS)

    assert (event.exchange, event.routing_key, event.mandatory) == (
        NAMES.events_exchange,
        keys.EVENT_USER_OFFLINE,
        False,
    )
    assert json.loads(event.body) == {"uid": "bob", "ts": NOW_MS}


# Re-announcement: a gateway whose presence the routers lost


@pytest.mark.parametrize(
    ("is_unknown", "connections", "expected"),
    [(True, 3, True), (True, 0, False), (False, 3, False), (False, 0, False)],
)
def test_should_reannounce_only_an_unknown_gateway_with_connections(
    is_unknown: bool, connections: int, expected: bool
) -> None:
    assert routing.should_reannounce(is_unknown, connections) is expected


def test_heartbeat_of_an_unknown_gateway_with_connections_asks_it_to_reannounce() -> (
    None
):
    heartbeat = Heartbeat(gateway_id="gw1", connections=2)
    plan = route([heartbeat], [Lookup(is_unknown_gateway=True)])
    (publish,) = plan.deliveries
    assert publish.routing_key == "gw1"
    (item,) = envelopes.decode_delivery(publish.body).items
    assert item.reannounce
    assert item.targets == []


def test_heartbeat_of_a_known_gateway_asks_nothing() -> None:
    plan = route([Heartbeat(gateway_id="gw1", connections=2)], [NO_LOOKUP])
    assert plan.deliveries == ()
    assert plan.known == ()


@pytest.mark.parametrize("connections", [0, 2])
def test_an_unknown_gateway_is_recorded_as_known_only_after_the_confirms(
    connections: int,
) -> None:
    heartbeat = Heartbeat(gateway_id="gw1", connections=connections)
    plan = route([heartbeat], [Lookup(is_unknown_gateway=True)])
    assert plan.known == ("gw1",)
    assert len(plan.deliveries) == (1 if connections else 0)


def test_reannounced_connection_gets_a_replay_but_no_ready_and_no_online_event() -> (
    None
):
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1", reannounce=True)
    plan = route([opened], [Lookup(is_first_connection=True)])
    assert plan.deliveries == ()
    assert plan.events == ()
    (replay,) = plan.replays
    request = envelopes.decode_replay_request(replay.body)
    assert request.uid == "bob"
    assert request.targets == [ReplayTarget("gw1", "k1")]
    assert request.from_mid == ""


def test_a_connection_over_the_uid_limit_gets_an_error_and_a_close_only() -> None:
    opened = ConnOpened(uid="bob", conn_id="k9", gateway_id="gw1")
    plan = route([opened], [Lookup(is_over_connection_limit=True)])

    [delivery] = plan.deliveries
    [item] = delivery_of(delivery).items
    frame = frames.decode_server_frame(bytes(item.frame))
    assert isinstance(frame, frames.Error)
    assert frame.code == ErrorCode.TOO_MANY_CONNECTIONS
    assert item.targets == [Target("bob", "k9")]
    assert (item.close_code, item.durable) == (CloseCode.TOO_MANY_CONNECTIONS, False)
    assert (plan.replays, plan.events) == ((), ())


def test_a_command_larger_than_the_limit_is_refused_too_large() -> None:
    body = b'{"uids": [' + b",".join([b'"' + b"a" * 100 + b'"'] * 20) + b"]}"
    refused = routing.decode_command(
        "api.presence", body, REPLY_TO, mid="m1", ts=NOW_MS, max_bytes=1024
    )
    accepted = routing.decode_command(
        "api.presence", body, REPLY_TO, mid="m1", ts=NOW_MS, max_bytes=len(body)
    )

    assert isinstance(refused, Refused)
    assert (refused.code, refused.reply_to) == (ErrorCode.TOO_LARGE, REPLY_TO)
    assert not isinstance(accepted, Refused)
