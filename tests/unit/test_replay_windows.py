"""replay.py: a replay request gets one window of rows, and says where the next one starts."""

from offline_store import replay
from offline_store.replay import GatewayTargets
from offline_store.rows import StoredRow
from proto.envelopes import Target, decode_delivery, encode

MIDS = [f"0190f0a1b2c3{n:04x}aaaaaaaaaa" for n in range(5)]
ROWS = [StoredRow(mid, '{"type":"message","mid":"' + mid + '"}') for mid in MIDS]
GATEWAYS = (GatewayTargets("gw1", (Target("bob", "c1"),)),)


def test_a_window_is_what_the_request_asks_for_never_more_than_a_page() -> None:
    assert replay.window_rows(0, 500) == 500  # a router's request: a page
    # A gateway's: what its connection can take.
    assert replay.window_rows(100, 500) == 100
    assert replay.window_rows(900, 500) == 500
    assert replay.window_rows(-1, 500) == 500


def test_rows_beyond_the_window_give_where_the_next_one_starts() -> None:
    window, next_mid = replay.split_window(ROWS, 3)
    assert list(window) == ROWS[:3]
    assert next_mid == MIDS[3]


def test_a_window_with_every_remaining_row_has_no_next() -> None:
    assert replay.split_window(ROWS, 5) == (ROWS, "")
    assert replay.split_window(ROWS[:2], 5) == (ROWS[:2], "")
    assert replay.split_window([], 5) == ([], "")


def test_each_gateway_learns_where_the_next_window_starts() -> None:
    window, next_mid = replay.split_window(ROWS, 2)
    gateways = (*GATEWAYS, GatewayTargets("gw2", (Target("bob", "c2"),)))
    outbound = replay.replay_deliveries(window, gateways, next_mid)
    for sent in outbound:
        assert [item.mid for item in sent.delivery.items] == MIDS[:2]
        assert sent.delivery.next_mid == MIDS[2]
        # On the wire, for a gateway to decode.
        assert decode_delivery(encode(sent.delivery)).next_mid == MIDS[2]


def test_the_last_window_carries_no_next_mid_on_the_wire() -> None:
    (sent,) = replay.replay_deliveries(ROWS, GATEWAYS)
    assert decode_delivery(encode(sent.delivery)).next_mid == ""


def test_a_batch_of_replays_is_read_in_pieces_of_bounded_rows() -> None:
    # Logins with nothing stored read nothing, and ride along in the piece they fall in.
    limits = [501, 0, 501, 2, 0, 501, 501]
    pieces = replay.read_pieces(limits, max_rows=1003)
    assert [list(piece) for piece in pieces] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(sum(limits[i] for i in piece) <= 1003 for piece in pieces)


def test_a_request_over_the_bound_is_read_alone() -> None:
    assert [list(p) for p in replay.read_pieces([5, 20, 5], max_rows=10)] == [
        [0],
        [1],
        [2],
    ]
    assert replay.read_pieces([], max_rows=10) == []
    assert [list(p) for p in replay.read_pieces([0, 0], max_rows=10)] == [[0, 1]]


def test_a_storm_of_logins_is_read_in_a_few_statements() -> None:
    default_page = 500
    limits = [default_page + 1] * 500
    pieces = replay.read_pieces(limits, replay.MAX_ROWS_PER_READ)
    assert len(pieces) == 11  # 49 requests a statement, against one each


def whole_window(uid: str, rows: list[StoredRow]) -> list[replay.GatewayDelivery]:
    """A login's window of ``uid`` on its connections at gw1 and gw2."""
    gateways = (
        GatewayTargets("gw1", (Target(uid, "c1"),)),
        GatewayTargets("gw2", (Target(uid, "c2"),)),
    )
    return replay.replay_deliveries(rows, gateways)


def test_whole_windows_of_many_uids_share_one_message_per_gateway() -> None:
    ann, bob = whole_window("ann", ROWS[:2]), whole_window("bob", ROWS[2:])
    merged = replay.merge_whole_windows([ann, bob], max_bytes=1_000_000)
    assert [sent.gateway_id for sent in merged] == ["gw1", "gw2"]
    for sent in merged:
        decoded = decode_delivery(sent.body)
        assert decoded == sent.delivery
        assert [item.mid for item in decoded.items] == MIDS
        uids = [item.targets[0].uid for item in decoded.items]
        assert uids == ["ann", "ann", "bob", "bob", "bob"]
        assert decoded.from_mid == ""
        assert decoded.next_mid == ""
        assert all(item.stored and item.durable for item in decoded.items)


def test_a_window_is_never_split_between_merged_messages() -> None:
    windows = [whole_window(uid, ROWS[:2]) for uid in ("ann", "bob", "cy")]
    one_window = len(windows[0][0].body)
    merged = replay.merge_whole_windows(windows, max_bytes=2 * one_window)
    gw1 = [decode_delivery(sent.body) for sent in merged if sent.gateway_id == "gw1"]
    assert [[item.targets[0].uid for item in d.items] for d in gw1] == [
        ["ann", "ann", "bob", "bob"],
        ["cy", "cy"],
    ]
    assert all(len(sent.body) <= 2 * one_window for sent in merged)
    assert replay.merge_whole_windows([], max_bytes=one_window) == []
