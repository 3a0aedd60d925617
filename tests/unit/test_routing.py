"""routing.py: envelopes + presence lookups in, publishes out. No event loop, no network."""

import msgspec
import pytest

from proto import envelopes, frames
from proto import names as keys
from proto.envelopes import (
    ConnClosed,
    ConnOpened,
    Delivery,
    GatewayStopped,
    Heartbeat,
    Outgoing,
    ReplayRequest,
    ReplayTarget,
    Saved,
    SavedUid,
    Target,
)
from proto.errors import BadEnvelope
from proto.names import Names
from router import routing
from router.routing import NO_LOOKUP, Connection, Lookup, Plan, Publish

NAMES = Names("tunit")
NOW_MS = 1_700_000_000_000
TTL_MS = 15_000
LIVE_MS = NOW_MS - 1_000
DEAD_MS = NOW_MS - TTL_MS - 1


def outgoing(mid: str = "m1", to: str = "bob", client_id: str = "c1") -> Outgoing:
    return Outgoing(
        mid=mid,
        sender="alice",
        client_id=client_id,
        to=to,
        body=msgspec.Raw(b'{"text": "hi",  "n": [1, 2.50]}'),
        ts=NOW_MS - 5,
        gateway_id="gw-sender",
        conn_id="k-sender",
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
