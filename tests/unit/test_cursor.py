"""The syncing connection's cursor (gateway/cursor.py): windows and live copies merged into one
gap-free, duplicate-free sequence of pushes, with ``synced`` at the boundary. No I/O."""

from gateway.cursor import (
    MAX_SENT_MIDS,
    AskWindow,
    Effect,
    Entry,
    Push,
    SyncCursor,
    Synced,
    WatchGap,
)


def entry(seq: int, mid: str | None = None) -> Entry:
    return Entry(seq, mid or f"m{seq}", f'{{"seq":{seq}}}'.encode())


def advance(seq: int, mid: str) -> Entry:
    return Entry(seq, mid, None)


def pushed(effects: list[Effect]) -> list[int]:
    return [e.entry.seq for e in effects if isinstance(e, Push)]


def test_live_copies_wait_for_the_last_window_then_follow_synced() -> None:
    cursor = SyncCursor(since=3, max_held=100)
    assert cursor.on_live(entry(7)) == []
    assert cursor.on_live(entry(6)) == []
    effects = cursor.on_window([entry(4), entry(5)], to_seq=5, more=False)
    assert effects == [
        Push(entry(4)),
        Push(entry(5)),
        Synced(5),
        Push(entry(6)),
        Push(entry(7)),
    ]
    assert (cursor.cursor, cursor.is_synced, cursor.held) == (7, True, 0)


def test_a_copy_that_came_both_ways_is_pushed_once() -> None:
    cursor = SyncCursor(since=0, max_held=100)
    cursor.on_live(
        entry(2)
    )  # routed while init was in flight, and committed before the read
    effects = cursor.on_window([entry(1), entry(2)], to_seq=2, more=False)
    assert effects == [Push(entry(1)), Push(entry(2)), Synced(2)]
    assert cursor.on_live(entry(2)) == []
    assert cursor.on_live(entry(1)) == []


def test_windows_in_pieces_ask_for_the_next_one_and_synced_comes_once() -> None:
    cursor = SyncCursor(since=0, max_held=100)
    first = cursor.on_window([entry(1), entry(2)], to_seq=2, more=True)
    assert first == [Push(entry(1)), Push(entry(2)), AskWindow(2)]
    assert not cursor.is_synced
    last = cursor.on_window([entry(3)], to_seq=3, more=False)
    assert last == [Push(entry(3)), Synced(3)]
    # The same last window again (a store answered twice): nothing new.
    assert cursor.on_window([entry(3)], to_seq=3, more=False) == []


def test_entries_retention_deleted_are_skipped_by_the_window_end() -> None:
    cursor = SyncCursor(since=0, max_held=100)
    effects = cursor.on_window([entry(9), entry(10)], to_seq=10, more=False)
    assert effects == [Push(entry(9)), Push(entry(10)), Synced(10)]
    assert cursor.on_live(entry(11)) == [Push(entry(11))]


def test_after_synced_a_gap_is_held_watched_and_filled_by_a_window() -> None:
    cursor = SyncCursor(since=0, max_held=100)
    cursor.on_window([], to_seq=0, more=False)
    assert cursor.on_live(entry(1)) == [Push(entry(1))]
    assert cursor.on_live(entry(3)) == [WatchGap()]
    assert cursor.on_live(entry(2)) == [Push(entry(2)), Push(entry(3))]
    assert cursor.on_gap_timeout() == []  # the gap closed by itself

    assert cursor.on_live(entry(5)) == [WatchGap()]
    assert cursor.on_gap_timeout() == [AskWindow(3)]
    assert cursor.on_gap_timeout() == []  # asked already
    effects = cursor.on_window([entry(4), entry(5)], to_seq=5, more=False)
    assert effects == [Push(entry(4)), Push(entry(5))]  # no second synced
    assert cursor.cursor == 5


def test_copies_past_the_cap_are_dropped_and_fetched_by_a_window() -> None:
    cursor = SyncCursor(since=0, max_held=2)
    for seq in (1, 2, 3, 4):
        assert cursor.on_live(entry(seq)) == []
    assert cursor.held == 2
    effects = cursor.on_window([], to_seq=0, more=False)
    assert effects == [Synced(0), Push(entry(1)), Push(entry(2)), AskWindow(2)]
    assert cursor.on_window([entry(3), entry(4)], to_seq=4, more=False) == [
        Push(entry(3)),
        Push(entry(4)),
    ]


def test_own_messages_move_the_cursor_without_a_push() -> None:
    cursor = SyncCursor(since=0, max_held=100)
    cursor.on_sent("mine")
    effects = cursor.on_window(
        [entry(1), entry(2, "mine"), entry(3)], to_seq=3, more=False
    )
    assert effects == [Push(entry(1)), Push(entry(3)), Synced(3)]
    # Live: the sending connection gets an advance, no frame.
    assert cursor.on_live(advance(4, "other-mine")) == []
    assert cursor.on_live(entry(5)) == [Push(entry(5))]
    assert cursor.cursor == 5


def test_since_above_the_head_starts_again_at_the_head() -> None:
    cursor = SyncCursor(since=50, max_held=100)
    assert (
        cursor.on_live(entry(8)) == []
    )  # below since: dropped, as it could not be told apart
    assert cursor.on_window([], to_seq=7, more=False) == [Synced(7)]
    assert cursor.cursor == 7
    # The next copy shows the gap; the window asked for brings the dropped one.
    assert cursor.on_live(entry(9)) == [WatchGap()]
    assert cursor.on_gap_timeout() == [AskWindow(7)]
    assert cursor.on_window([entry(8), entry(9)], to_seq=9, more=False) == [
        Push(entry(8)),
        Push(entry(9)),
    ]


def test_sent_mids_are_bounded() -> None:
    cursor = SyncCursor(since=0, max_held=100)
    for n in range(MAX_SENT_MIDS + 1):
        cursor.on_sent(f"s{n}")
    # The oldest was forgotten: its entry is pushed; the newest is not.
    effects = cursor.on_window(
        [entry(1, "s0"), entry(2, f"s{MAX_SENT_MIDS}")], to_seq=2, more=False
    )
    assert effects == [Push(entry(1, "s0")), Synced(2)]


def test_every_seq_is_pushed_once_in_order_whatever_the_arrival_order() -> None:
    """Live copies 1..40 in a scrambled order around a sync of 1..25 in windows of 10."""
    order = [(seq * 17) % 40 + 1 for seq in range(40)]
    cursor = SyncCursor(since=0, max_held=100)
    seen: list[int] = []
    for seq in order[:20]:
        seen += pushed(cursor.on_live(entry(seq)))
    for start in (0, 10, 20):
        end = min(start + 10, 25)
        window = [entry(s) for s in range(start + 1, end + 1)]
        seen += pushed(cursor.on_window(window, to_seq=end, more=end < 25))
    for seq in order[20:]:
        seen += pushed(cursor.on_live(entry(seq)))
    assert seen == list(range(1, 41))
