"""Read markers and receipts without I/O: the store's decisions (``offline_store/markers.py``)
and the router's deliveries of receipts (``router/receipts.py``, ``routing.route_batch``)."""

import msgspec
import pytest

from offline_store.markers import (
    Found,
    MarkerMove,
    ReceiptRow,
    party_of,
    plan_reads,
    receipts_bodies,
    reply_deliveries,
    uids_to_lock,
)
from proto import frames
from proto.codes import ErrorCode
from proto.envelopes import Target, decode_delivery
from proto.errors import BadEnvelope
from proto.items import wrap_items
from proto.names import Names
from proto.sync import (
    ReadAsked,
    ReadingConnection,
    ReceiptEntry,
    ReceiptItem,
    Receipts,
    decode_receipts,
    encode,
)
from router.answers import Answers
from router.lookups import BatchLookup, LookupRules
from router.receipts import decode_receipts_items, receipt_items, receipt_uids
from router.requests import ReadConnections
from router.results import Connections, PresenceEntry
from router.routing import route_batch

MID_1 = "018bcfe5680000000000000001"
MID_2 = "018bcfe5680000000000000002"
MID_3 = "018bcfe5680000000000000003"


def read(uid: str, mid: str, client_id: str = "r1", conn_id: str = "c1") -> ReadAsked:
    return ReadAsked(
        uid=uid, gateway_id="g1", conn_id=conn_id, client_id=client_id, mid=mid
    )


# --- the store ---------------------------------------------------------------------------


def test_the_party_of_a_read() -> None:
    assert party_of("bob", Found(4, "u:alice", "alice")) == "alice"
    # A 1:1 message the reader sent: the peer still learns how far the reader read.
    assert party_of("bob", Found(5, "u:alice", "bob")) == "alice"
    assert party_of("bob", Found(4, "u:bob", "bob")) == "bob"  # a note to oneself
    assert party_of("bob", Found(4, "g:team", "cat")) == "cat"
    assert party_of("bob", Found(4, "g:team", "bob")) is None


def test_the_head_rows_are_locked_in_uid_order_for_found_mids_only() -> None:
    reads = [read("zed", MID_1), read("bob", MID_2), read("amy", MID_3)]
    found = {0: Found(3, "u:kim", "kim"), 1: Found(2, "g:team", "bob")}
    assert uids_to_lock(reads, found) == ["bob", "kim", "zed"]


def test_a_read_moves_the_marker_and_numbers_a_receipt_in_both_inboxes() -> None:
    reads = [read("bob", MID_1)]
    plan = plan_reads(
        reads,
        {0: Found(4, "u:alice", "alice")},
        {("bob", "u:alice"): None},
        {"alice": 7, "bob": 4},
    )
    assert plan.replies == [(reads[0], frames.Marked(id="r1"))]
    assert plan.moves == [MarkerMove("bob", "u:alice", MID_1, 4)]
    assert plan.receipts == [
        ReceiptRow("alice", 8, "bob", MID_1),
        ReceiptRow("bob", 5, "bob", MID_1),
    ]
    assert plan.heads == {"alice": 8, "bob": 5}
    assert plan.items == [
        ReceiptItem(
            by="bob",
            mid=MID_1,
            origin=ReadingConnection("bob", "g1", "c1"),
            entries=[ReceiptEntry("alice", 8), ReceiptEntry("bob", 5)],
        )
    ]


def test_a_read_at_or_behind_the_marker_changes_nothing() -> None:
    reads = [read("bob", MID_1, "r1"), read("bob", MID_2, "r2")]
    found = {0: Found(4, "u:alice", "alice"), 1: Found(6, "u:alice", "alice")}
    plan = plan_reads(reads, found, {("bob", "u:alice"): 6}, {"alice": 9, "bob": 9})
    assert [frame for _, frame in plan.replies] == [
        frames.Marked(id="r1"),
        frames.Marked(id="r2"),
    ]
    assert (plan.moves, plan.receipts, plan.heads, plan.items) == ([], [], {}, [])


def test_reads_of_one_batch_see_the_markers_moved_before_them() -> None:
    reads = [
        read("bob", MID_2, "r1"),  # seq 6: moves
        read("bob", MID_1, "r2"),  # seq 4, older: nothing
        read("bob", MID_3, "r3"),  # seq 8: moves again
    ]
    found = {
        0: Found(6, "u:alice", "alice"),
        1: Found(4, "u:alice", "alice"),
        2: Found(8, "u:alice", "alice"),
    }
    plan = plan_reads(reads, found, {("bob", "u:alice"): 2}, {"alice": 10, "bob": 8})
    assert plan.moves == [MarkerMove("bob", "u:alice", MID_3, 8)]  # where it ends
    assert [(r.uid, r.seq, r.mid) for r in plan.receipts] == [
        ("alice", 11, MID_2),
        ("bob", 9, MID_2),
        ("alice", 12, MID_3),
        ("bob", 10, MID_3),
    ]
    assert plan.heads == {"alice": 12, "bob": 10}
    assert [item.mid for item in plan.items] == [MID_2, MID_3]


def test_a_group_read_gives_the_sender_a_receipt_and_ones_own_message_none() -> None:
    reads = [read("bob", MID_1, "r1"), read("cat", MID_2, "r2")]
    found = {0: Found(3, "g:team", "alice"), 1: Found(5, "g:team", "cat")}
    plan = plan_reads(
        reads,
        found,
        {("bob", "g:team"): None, ("cat", "g:team"): 1},
        {"alice": 4, "bob": 3, "cat": 5},
    )
    assert [(r.uid, r.seq, r.reader) for r in plan.receipts] == [
        ("alice", 5, "bob"),
        ("bob", 4, "bob"),
        ("cat", 6, "cat"),  # cat sent it: only cat's other devices learn of it
    ]
    assert [len(item.entries) for item in plan.items] == [2, 1]


def test_a_read_of_a_note_to_oneself_is_one_entry_and_a_party_without_inbox_none() -> (
    None
):
    reads = [read("bob", MID_1, "r1"), read("bob", MID_2, "r2")]
    found = {0: Found(2, "u:bob", "bob"), 1: Found(3, "u:system", "system")}
    plan = plan_reads(
        reads,
        found,
        {("bob", "u:bob"): None, ("bob", "u:system"): None},
        {"bob": 3},  # system has no inbox: no head row
    )
    assert [(r.uid, r.seq, r.mid) for r in plan.receipts] == [
        ("bob", 4, MID_1),
        ("bob", 5, MID_2),
    ]
    assert [item.entries for item in plan.items] == [
        [ReceiptEntry("bob", 4)],
        [ReceiptEntry("bob", 5)],
    ]


def test_a_mid_not_found_is_answered_not_found_beside_the_others() -> None:
    reads = [read("bob", MID_1, "r1"), read("bob", MID_2, "r2", conn_id="c2")]
    plan = plan_reads(
        reads, {1: Found(2, "u:amy", "amy")}, {("bob", "u:amy"): None}, {"amy": 1}
    )
    error, marked = (frame for _, frame in plan.replies)
    assert isinstance(error, frames.Error)
    assert (error.code, error.id) == (ErrorCode.NOT_FOUND, "r1")
    assert marked == frames.Marked(id="r2")
    deliveries = reply_deliveries(plan.replies, 1 << 20)
    assert [d.gateway_id for d in deliveries] == ["g1"]
    items = decode_delivery(deliveries[0].body).items
    assert [item.targets for item in items] == [
        [Target("bob", "c1")],
        [Target("bob", "c2")],
    ]
    assert not any(item.durable for item in items)
    assert msgspec.json.decode(bytes(items[0].frame))["code"] == "not_found"
    assert bytes(items[1].frame) == b'{"type":"marked","id":"r2"}'


def test_receipts_are_packed_within_the_message_size() -> None:
    items = [
        ReceiptItem(
            by="bob",
            mid=MID_1,
            origin=ReadingConnection("bob", "g1", f"c{n}"),
            entries=[ReceiptEntry("alice", n)],
        )
        for n in range(1, 40)
    ]
    limit = 12 + 6 * (len(encode(items[-1])) + 1)  # six items at most
    bodies = receipts_bodies(items, limit)
    assert len(bodies) == 7
    assert all(len(body) <= limit for body in bodies)
    assert [i for body in bodies for i in decode_receipts(body).items] == items
    assert receipts_bodies([], 1000) == []


# --- the router --------------------------------------------------------------------------

ORIGIN = ReadingConnection("bob", "g1", "c1")
RECEIPT = ReceiptItem(
    by="bob",
    mid=MID_1,
    origin=ORIGIN,
    entries=[ReceiptEntry("alice", 8), ReceiptEntry("bob", 5)],
)


def test_a_receipt_reaches_the_party_and_the_readers_other_connections() -> None:
    connections = {
        "alice": [PresenceEntry("a1", "g1"), PresenceEntry("a2", "g2")],
        "bob": [PresenceEntry("c1", "g1"), PresenceEntry("c2", "g2")],
    }
    items = receipt_items(Receipts(items=[RECEIPT]), connections)
    by_gateway = [(g, bytes(i.frame), i.targets, i.advance) for g, i in items]
    receipt = b'{"type":"receipt","by":"bob","mid":"%s"}' % MID_1.encode()
    assert by_gateway == [
        ("g1", receipt, [Target("alice", "a1", 8)], False),
        ("g2", receipt, [Target("alice", "a2", 8), Target("bob", "c2", 5)], False),
        # The reading connection: an advance of its cursor, no frame.
        ("g1", b"null", [Target("bob", "c1", 5)], True),
    ]
    assert not any(item.durable or item.mid for _, item in items)


def test_a_receipt_for_nobody_online_is_no_delivery() -> None:
    assert receipt_items(Receipts(items=[RECEIPT]), {}) == []
    assert receipt_uids(Receipts(items=[RECEIPT, RECEIPT])) == ("alice", "bob")


def test_a_receipts_envelope_reads_the_connections_of_its_uids_once() -> None:
    other = ReceiptItem(
        by="cat", mid=MID_2, origin=ORIGIN, entries=[ReceiptEntry("bob", 6)]
    )
    lookup = BatchLookup(
        [Receipts(items=[RECEIPT, other])], 1000, LookupRules(1000, 0, history=True)
    )
    assert lookup.requests() == [ReadConnections(("alice", "bob"))]
    answer = Connections((("alice", ()), ("bob", ())))
    lookup.receive([answer])
    lookup.receive([])
    assert lookup.answers().per_envelope == (answer,)


def test_route_batch_delivers_receipts_to_live_gateways_only() -> None:
    names = Names("ns")
    answer = Connections(
        (
            ("alice", (PresenceEntry("a1", "g1"), PresenceEntry("a9", "dead"))),
            ("bob", (PresenceEntry("c1", "g1"),)),
        )
    )
    plan = route_batch(
        names,
        [Receipts(items=[RECEIPT])],
        Answers((answer,), {}),
        last_seen_ms={"g1": 1000, "dead": 1},
        now_ms=1000,
        gateway_ttl_ms=100,
        debounce_ms=0,
        history=True,
    )
    assert [p.routing_key for p in plan.deliveries] == ["g1"]
    items = decode_delivery(plan.deliveries[0].body).items
    assert [(i.targets, i.advance) for i in items] == [
        ([Target("alice", "a1", 8)], False),
        ([Target("bob", "c1", 5)], True),
    ]
    assert plan.replies == ()


def test_a_bad_receipt_item_is_refused_alone() -> None:
    good = encode(RECEIPT)
    bad = b'{"by":"b o b","mid":"%s","origin":["bob","g1","c1"],"entries":[]}' % (
        MID_1.encode()
    )
    receipts, refused = decode_receipts_items(wrap_items([bad, good]))
    assert receipts == Receipts(items=[RECEIPT])
    assert [(r.index, r.body) for r in refused] == [(0, wrap_items([bad]))]
    only_bad, refused = decode_receipts_items(wrap_items([bad]))
    assert only_bad is None
    assert len(refused) == 1


@pytest.mark.parametrize("body", [b"[]", b"{}", b"not json"])
def test_a_receipts_body_without_items_is_a_bad_envelope(body: bytes) -> None:
    with pytest.raises(BadEnvelope):
        decode_receipts_items(body)
