"""bench/inbox_batches.py: the router's InboxBatch envelopes, built ahead for the store."""

from bench.inbox_batches import connection_of, inbox_bodies, one_to_one_items, pairs_of
from proto.inbox import EntryTarget, InboxEntry, decode_inbox_items
from proto.mids import MidFactory
from proto.names import Names

NAMES = Names("bunit")
NOW_MS = 1_800_000_000_000


def build(count: int, gateway_id: str | None, per_batch: int = 500) -> list[bytes]:
    items = one_to_one_items(
        pairs_of(3, "w"), count, MidFactory("0123456789"), NOW_MS, gateway_id
    )
    return inbox_bodies(NAMES, items, per_batch, max_bytes=4 * 1024 * 1024)


def test_batches_of_the_size_asked_the_last_one_shorter() -> None:
    bodies = build(1_201, "gw")
    sizes = [len(decode_inbox_items(body).items) for body in bodies]
    assert sizes == [500, 500, 201]


def test_each_pair_in_turn_with_mids_in_send_order() -> None:
    items = [i for body in build(7, "gw") for i in decode_inbox_items(body).items]
    assert [(i.sender, i.to) for i in items[:4]] == [
        ("ws0", "wr0"),
        ("ws1", "wr1"),
        ("ws2", "wr2"),
        ("ws0", "wr0"),
    ]
    mids = [i.mid for i in items]
    assert mids == sorted(mids)
    assert len(set(mids)) == 7


def test_online_the_recipient_has_its_connection_and_the_sender_is_the_origin() -> None:
    (item,) = decode_inbox_items(build(1, "gw")[0]).items
    assert item.entries == [
        InboxEntry("wr0", False, [EntryTarget("gw", connection_of("wr0"))]),
        InboxEntry("ws0", True, []),  # the sending connection has its `sent`
    ]
    assert item.origin is not None
    assert (item.origin.gateway_id, item.origin.conn_id) == ("gw", connection_of("ws0"))
    assert bytes(item.frame).startswith(b'{"type":"message"')


def test_offline_nobody_is_connected_and_no_connection_sent_it() -> None:
    (item,) = decode_inbox_items(build(1, None)[0]).items
    assert item.entries == [InboxEntry("wr0", False, []), InboxEntry("ws0", True, [])]
    assert item.origin is not None
    assert (item.origin.gateway_id, item.origin.conn_id) == ("", "")
