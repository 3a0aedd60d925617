"""publications.py: the AMQP messages the router publishes. No event loop, no network."""

import json

import msgspec

from proto import envelopes
from proto.envelopes import KickReply, ReplayRequest, ReplayTarget, UserOnline
from proto.items import RefusedItem
from proto.names import (
    EVENT_USER_ONLINE,
    HEADER_REJECTED_REASON,
    KEY_BATCH,
    KEY_REPLAY,
    Names,
)
from router import delivery_items, publications
from router.inbound import ReplyTo

NAMES = Names("tunit")


def test_deliveries_are_split_to_fit_the_message_size_limit() -> None:
    items = [
        delivery_items.message_item(msgspec.Raw(b'"' + b"x" * 1000 + b'"'), [], f"m{i}")
        for i in range(10)
    ]
    packed = publications.delivery_publications(
        NAMES.deliveries_exchange, "gw1", items, 3000
    )
    assert len(packed) > 1
    assert all(len(p.body) <= 3000 for p in packed)
    carried = [i for p in packed for i in envelopes.decode_delivery(p.body).items]
    assert [i.mid for i in carried] == [f"m{i}" for i in range(10)]
    for publish in packed:
        mids = [i.mid for i in envelopes.decode_delivery(publish.body).items]
        assert publish.mid == (mids[0] if len(mids) == 1 else "")


def test_no_items_make_no_delivery() -> None:
    assert (
        publications.delivery_publications(NAMES.deliveries_exchange, "gw1", [], 3000)
        == []
    )


def test_a_reply_goes_to_its_queue_by_the_default_exchange_and_may_be_lost() -> None:
    reply = publications.reply_publication(
        ReplyTo("amq.gen-1", "corr-1"), KickReply(kicked=2)
    )

    assert (reply.exchange, reply.routing_key, reply.correlation_id) == (
        "",
        "amq.gen-1",
        "corr-1",
    )
    assert not reply.mandatory  # the backend may have given up and deleted its queue
    assert json.loads(reply.body) == {"kicked": 2}
    assert reply.headers is None


def test_an_event_may_find_nobody_listening() -> None:
    event = publications.event_publication(
        NAMES, EVENT_USER_ONLINE, UserOnline(uid="bob", ts=5)
    )

    assert (event.exchange, event.routing_key, event.mandatory) == (
        NAMES.events_exchange,
        EVENT_USER_ONLINE,
        False,
    )


def test_a_replay_request_goes_to_the_offline_store() -> None:
    targets = [ReplayTarget("gw1", "k1")]
    replay = publications.replay_publication(NAMES, "bob", targets, "m5")

    assert (replay.exchange, replay.routing_key, replay.mandatory) == (
        NAMES.inbound_exchange,
        KEY_REPLAY,
        True,
    )
    assert envelopes.decode_replay_request(replay.body) == ReplayRequest(
        uid="bob", targets=targets, from_mid="m5"
    )


def test_a_dead_lettered_item_carries_its_reason_in_a_header() -> None:
    item = RefusedItem(b'{"items":[["k"]]}', "not a pair", 3)
    dead = publications.dead_letter_publication(NAMES, KEY_BATCH, item)

    assert (dead.exchange, dead.routing_key, dead.body) == (
        NAMES.dead_letter_exchange,
        KEY_BATCH,
        item.body,
    )
    assert dead.headers == {HEADER_REJECTED_REASON: "not a pair"}
