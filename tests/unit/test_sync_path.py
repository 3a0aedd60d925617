"""The pure parts of sync at ``init``: the router's request, the store's windows, the gateway's
split of a delivery between cursors and today's path, and ``sync`` kept through packing and
the per-item decoder. No I/O."""

import json

import msgspec

from gateway.cursor import AskWindow, Entry, Push, SyncCursor, Synced
from gateway.fanout import reannouncements
from gateway.sync_split import Ahead, split_sync, take_ahead, with_window
from offline_store.inbox import inbox_deliveries
from offline_store.numbering import EntryKey
from offline_store.windows import (
    WindowRow,
    cutoff_mid,
    upper_bound,
    window_deliveries,
    window_of,
    window_size,
)
from proto import envelopes
from proto.envelopes import (
    ConnOpened,
    Delivery,
    DeliveryItem,
    Origin,
    SyncWindow,
    Target,
)
from proto.frames import with_seq
from proto.inbox import EntryTarget, InboxEntry, InboxItem
from proto.items import decode_delivery_items
from proto.names import KEY_REPLAY, KEY_SYNC, Names
from proto.packing import pack_delivery
from proto.sync import SyncRequest, decode_sync_request
from router import routing
from router.answers import Answers
from router.results import Opened

NAMES = Names("t")
FRAME = b'{"type":"message","mid":"m","from":"bob","to":"alice","body":1,"ts":1}'


def row(seq: int, size: int = 10) -> WindowRow:
    return WindowRow(seq, f"m{seq}", '{"type":"message","b":"' + "x" * size + '"}')


# The router


def opened_plan(
    since: int | None, history: bool, reannounce: bool = False
) -> routing.Plan:
    opened = ConnOpened(
        uid="alice", conn_id="k1", gateway_id="gw1", since=since, reannounce=reannounce
    )
    return routing.route_batch(
        NAMES,
        [opened],
        Answers((Opened(False, False, False),), {}),
        last_seen_ms={},
        now_ms=1,
        gateway_ttl_ms=1000,
        debounce_ms=0,
        history=history,
    )


def test_a_syncing_connection_gets_a_sync_request_instead_of_a_replay() -> None:
    plan = opened_plan(since=7, history=True)
    assert len(plan.deliveries) == 1  # ready first, the request once it is confirmed
    [request] = plan.replays
    assert request.routing_key == KEY_SYNC
    assert decode_sync_request(request.body) == SyncRequest(
        uid="alice", gateway_id="gw1", conn_id="k1", since=7, register=True
    )


def test_init_without_since_or_with_history_off_keeps_the_replay() -> None:
    assert [p.routing_key for p in opened_plan(None, True).replays] == [KEY_REPLAY]
    assert [p.routing_key for p in opened_plan(3, False).replays] == [KEY_REPLAY]


def test_a_reannounced_syncing_connection_syncs_from_its_cursor_without_ready() -> None:
    plan = opened_plan(since=12, history=True, reannounce=True)
    assert plan.deliveries == ()
    [request] = plan.replays
    assert decode_sync_request(request.body).since == 12


def test_reannouncements_carry_each_syncing_connection_cursor() -> None:
    announced = reannouncements("gw1", {"k1": "alice", "k2": "bob"}, {}, {"k1": 9})
    opened = [envelopes.decode_conn_opened(a.body) for a in announced]
    assert [(o.conn_id, o.since, o.reannounce) for o in opened] == [
        ("k1", 9, True),
        ("k2", None, True),
    ]


# The store's windows


def test_a_window_reaches_a_page_or_the_head() -> None:
    assert window_size(0, 1000) == 1000
    assert window_size(40, 1000) == 40
    assert window_size(5000, 1000) == 1000
    assert upper_bound(10, 40) == 50
    rows = [row(seq) for seq in range(11, 21)]
    assert window_of(rows, 10, 40, 20, 10_000) == window_of(rows, 10, 40, 20, 10_000)
    whole = window_of(rows, 10, 40, 20, 10_000)
    assert ([r.seq for r in whole.rows], whole.to_seq, whole.more) == (
        list(range(11, 21)),
        20,
        False,
    )
    part = window_of(rows[:5], 10, 5, 20, 10_000)
    assert ([r.seq for r in part.rows], part.to_seq, part.more) == (
        [11, 12, 13, 14, 15],
        15,
        True,
    )


def test_a_window_whose_entries_expired_still_says_how_far_it_reaches() -> None:
    window = window_of([], 10, 5, 20, 10_000)
    assert (window.rows, window.to_seq, window.more) == ([], 15, True)


def test_a_since_at_or_above_the_head_gets_the_head_and_no_more() -> None:
    for since in (20, 1000):
        window = window_of([], since, 1000, 20, 10_000)
        assert (window.rows, window.to_seq, window.more) == ([], 20, False)
    assert window_of([], 0, 1000, 0, 10_000).to_seq == 0  # no inbox yet


def test_a_window_is_cut_by_bytes_but_never_before_its_first_entry() -> None:
    rows = [row(seq, size=400) for seq in range(1, 11)]
    window = window_of(rows, 0, 100, 10, 1000)
    assert [r.seq for r in window.rows] == [1, 2]
    assert (window.to_seq, window.more) == (2, True)
    alone = window_of(rows, 0, 100, 10, 10)
    assert ([r.seq for r in alone.rows], alone.to_seq, alone.more) == ([1], 1, True)


def test_the_cutoff_is_the_mid_prefix_of_the_oldest_kept_time() -> None:
    assert cutoff_mid(10 * 86_400_000, 0) == ""
    assert cutoff_mid(10 * 86_400_000, 1) == f"{9 * 86_400_000:012x}"
    assert cutoff_mid(1000, 1) == "000000000000"


def test_window_deliveries_carry_each_entry_with_its_seq_and_the_window() -> None:
    request = SyncRequest(uid="alice", gateway_id="gw1", conn_id="k1", since=0)
    window = window_of(
        [row(1), WindowRow(2, "m1", None, reader="bob")], 0, 10, 2, 10_000
    )
    [delivery] = window_deliveries(request, window, 100_000)
    assert delivery.gateway_id == "gw1"
    decoded = envelopes.decode_delivery(delivery.body)
    assert decoded.sync == SyncWindow(to_seq=2, more=False, conn_id="k1")
    message, receipt = decoded.items
    assert message.targets == [Target("alice", "k1", 1)]
    assert message.mid == "m1"
    assert receipt.mid == ""  # nothing to acknowledge
    assert json.loads(bytes(receipt.frame)) == {
        "type": "receipt",
        "by": "bob",
        "mid": "m1",
    }
    # At the gateway the receipt's frame gets its seq too, as a live receipt's does.
    split = split_sync(decoded, {"k1"})
    [_, pushed] = split.window_entries["k1"]
    assert (pushed.seq, pushed.mid) == (2, "")
    assert json.loads(pushed.frame or b"") == {
        "seq": 2,
        "type": "receipt",
        "by": "bob",
        "mid": "m1",
    }


def test_an_empty_window_still_names_its_connection() -> None:
    request = SyncRequest(uid="alice", gateway_id="gw1", conn_id="k1", since=50)
    [delivery] = window_deliveries(request, window_of([], 50, 10, 3, 1000), 1000)
    decoded = envelopes.decode_delivery(delivery.body)
    assert decoded.items == []
    assert decoded.sync == SyncWindow(to_seq=3, more=False, conn_id="k1")


# The inbox writer's boundary: connections that registered a sync lately


def test_recent_syncs_join_the_copies_but_the_sending_connection() -> None:
    origin = Origin("bob", "gw0", "kb", "c1")
    item = InboxItem(
        mid="m1",
        sender="bob",
        frame=msgspec.Raw(FRAME),
        to="alice",
        origin=origin,
        entries=[
            InboxEntry("alice", False, [EntryTarget("gw1", "k1")]),
            InboxEntry("bob", True, []),
        ],
    )
    seqs = {EntryKey("alice", "m1"): 4, EntryKey("bob", "m1"): 9}
    syncing = {
        "alice": [("gw1", "k1"), ("gw2", "k2")],  # k1 was listed by the router already
        "bob": [("gw0", "kb"), ("gw2", "kb2")],  # kb sent it: an advance, not a copy
    }
    deliveries = inbox_deliveries([item], seqs, 1_000_000, syncing)
    targets = {
        (d.gateway_id, t.conn_id, t.seq, i.advance)
        for d in deliveries
        for i in d.delivery.items
        for t in i.targets
    }
    assert targets == {
        ("gw1", "k1", 4, False),
        ("gw2", "k2", 4, False),
        ("gw2", "kb2", 9, False),
        ("gw0", "kb", 9, True),
    }


# The gateway's split


def item(
    mid: str,
    *targets: Target,
    durable: bool = False,
    advance: bool = False,
    stored: bool = False,
) -> DeliveryItem:
    return DeliveryItem(
        frame=msgspec.Raw(FRAME),
        targets=list(targets),
        mid=mid,
        durable=durable,
        advance=advance,
        stored=stored,
    )


def test_copies_for_syncing_connections_go_to_their_cursor() -> None:
    delivery = Delivery(
        items=[
            item(
                "m1",
                Target("alice", "sync", 5),
                Target("bob", "plain", 3),
                durable=True,
            ),
            item("m2", Target("alice", "sync", 6), advance=True),
            item("m3", Target("alice", "sync"), Target("alice", "plain"), stored=True),
            item("", Target("alice", "sync")),  # ready, sent, errors: today's path
        ]
    )
    split = split_sync(delivery, {"sync"})
    assert split.live == {
        "sync": [Entry(5, "m1", with_seq(FRAME, 5)), Entry(6, "m2", None)]
    }
    assert [(i.mid, [t.conn_id for t in i.targets]) for i in split.rest.items] == [
        ("m1", ["plain"]),
        ("m3", ["plain"]),
        ("", ["sync"]),
    ]
    assert split.window is None


def test_a_window_goes_whole_to_its_connection_or_nowhere() -> None:
    window = SyncWindow(to_seq=9, more=False, conn_id="sync")
    delivery = Delivery(items=[item("m1", Target("alice", "sync", 8))], sync=window)
    split = split_sync(delivery, {"sync"})
    assert split.window == window
    assert split.window_entries == {"sync": [Entry(8, "m1", with_seq(FRAME, 8))]}
    assert split.rest.items == []
    gone = split_sync(delivery, set())
    assert (gone.window, gone.window_entries, gone.rest.items) == (None, {}, [])


def test_entries_kept_ahead_are_cut_to_what_the_connection_may_take() -> None:
    entries = [Entry(seq, f"m{seq}", b"{}") for seq in range(1, 8)]
    ahead = Ahead(entries, 7, False)
    assert take_ahead(ahead, 10, 0) == (entries, 7, False, None)
    assert take_ahead(ahead, 3, 0) == (
        entries[:3],
        3,
        True,
        Ahead(entries[3:], 7, False),
    )
    assert take_ahead(ahead, 0, 2) == ([], 2, True, Ahead(entries[2:], 7, False))
    # entries it has already take no room
    assert take_ahead(ahead, 2, 5) == (entries[5:], 7, False, None)
    # the rest keeps the windows' end, and comes next
    rest = take_ahead(ahead, 3, 0)[3]
    assert rest is not None
    assert take_ahead(rest, 10, 3) == (entries[3:], 7, False, None)


def test_a_window_asked_ahead_goes_after_the_entries_kept() -> None:
    entries = [Entry(seq, f"m{seq}", b"{}") for seq in range(1, 8)]
    first = with_window(None, entries[:4], 4, True)
    assert first == Ahead(entries[:4], 4, True)
    # the next window, from the end of the first
    assert with_window(first, entries[4:], 7, False) == Ahead(entries, 7, False)
    # a window answered twice brings nothing new, nor does one that reaches less far
    assert with_window(first, entries[:4], 4, True) == first
    assert with_window(first, entries[:2], 2, True) == first
    # one that overlaps adds only what follows
    assert with_window(first, entries[2:6], 6, True) == Ahead(entries[:6], 6, True)
    # an empty last window still says where the sync ends
    assert with_window(None, [], 3, False) == Ahead([], 3, False)


def test_a_copy_over_the_cap_is_fetched_by_a_window_once_synced() -> None:
    cursor = SyncCursor(since=0, max_held=10)
    assert cursor.on_window([], 0, False) == [Synced(0)]
    assert cursor.on_dropped() == [AskWindow(0)]
    window = [Entry(1, "m1", b"{}")]
    assert cursor.on_window(window, 1, False) == [Push(window[0])]


def test_an_advance_held_during_the_sync_keeps_the_window_copy_from_the_sender() -> (
    None
):
    cursor = SyncCursor(since=0, max_held=10)
    assert cursor.on_live(Entry(2, "m2", None)) == []
    window = [Entry(1, "m1", b"{1}"), Entry(2, "m2", b"{2}")]
    assert cursor.on_window(window, 2, False) == [Push(window[0]), Synced(2)]


# sync kept on every path


def test_sync_is_kept_by_the_per_item_decoder() -> None:
    window = SyncWindow(to_seq=4, more=True, conn_id="k")
    good = envelopes.encode(item("m1", Target("a", "k", 4)))
    body = (
        b'{"items":['
        + good
        + b',{"frame":1}],"sync":'
        + envelopes.encode(window)
        + b',"next_mid":""}'
    )
    decoded = decode_delivery_items(body)
    assert len(decoded.refused) == 1
    assert len(decoded.items) == 1
    assert decoded.sync == window


def test_sync_is_kept_when_a_window_is_packed_into_several_messages() -> None:
    items = [item(f"m{seq}", Target("a", "k", seq)) for seq in range(1, 21)]
    window = SyncWindow(to_seq=25, more=False, conn_id="k")
    one_size = len(envelopes.encode(items[0]))
    packed = pack_delivery(items, one_size * 6, sync=window)
    assert len(packed) > 1
    decoded = [envelopes.decode_delivery(p.body) for p in packed]
    assert decoded[-1].sync == window
    for part in decoded[:-1]:
        assert part.sync is not None
        assert part.sync.more
        assert part.sync.conn_id == "k"
        assert part.sync.to_seq == part.items[-1].targets[0].seq
    assert [i.mid for d in decoded for i in d.items] == [i.mid for i in items]
