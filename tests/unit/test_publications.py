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
    KEY_REPLAY_BATCH,
    KEY_SYNC,
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


def replay_of(uid: str) -> publications.Publication:
    return publications.replay_publication(
        NAMES, uid, [ReplayTarget("gw1", f"c-{uid}")], ""
    )


def requests_in(publication: publications.Publication) -> list[str]:
    """The uids of the replay requests a publication carries, in order."""
    if publication.routing_key == KEY_REPLAY:
        return [envelopes.decode_replay_request(publication.body).uid]
    assert publication.routing_key == KEY_REPLAY_BATCH
    batch = envelopes.decode_batch(publication.body)
    assert {item.key for item in batch.items} == {KEY_REPLAY}
    return [envelopes.decode_replay_request(bytes(i.body)).uid for i in batch.items]


def test_a_batch_of_replays_is_one_message_in_order() -> None:
    batched = publications.batched_replays(
        [replay_of(uid) for uid in ("ann", "bob", "cy")], max_bytes=1_000_000
    )
    assert [p.routing_key for p in batched] == [KEY_REPLAY_BATCH]
    assert requests_in(batched[0]) == ["ann", "bob", "cy"]
    assert batched[0].exchange == NAMES.inbound_exchange


def test_a_sync_request_stays_alone_and_in_its_place() -> None:
    sync = publications.sync_publication(NAMES, "dan", "gw1", "c-dan", 7)
    batched = publications.batched_replays(
        [replay_of("ann"), replay_of("bob"), sync, replay_of("cy")], max_bytes=1_000_000
    )
    assert [p.routing_key for p in batched] == [KEY_REPLAY_BATCH, KEY_SYNC, KEY_REPLAY]
    assert requests_in(batched[0]) == ["ann", "bob"]
    assert requests_in(batched[2]) == ["cy"]
    assert publications.batched_replays([], max_bytes=1000) == []


def test_replay_batches_fit_the_message_size_limit() -> None:
    uids = [f"u{n:03d}" for n in range(100)]
    one = len(replay_of("u000").body)
    batched = publications.batched_replays(
        [replay_of(uid) for uid in uids], max_bytes=10 * one
    )
    assert len(batched) > 1
    assert all(len(p.body) <= 10 * one for p in batched)
    assert [uid for p in batched for uid in requests_in(p)] == uids
