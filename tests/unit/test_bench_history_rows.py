"""bench/history_rows.py: a made-up history that is what the inbox writer would have left."""

import random
from collections import defaultdict

import msgspec

from bench.history_rows import History, Shape, asker
from proto import frames
from proto.mids import MidFactory, mid_time_ms

SHAPE = Shape(
    askers=3,
    peers_per_asker=4,
    asker_messages=50,
    uids=40,
    peers_per_uid=3,
    other_messages=300,
)
FIRST_MS = 1_800_000_000_000


def made() -> tuple[
    History, list[tuple[str, str, str]], list[tuple[str, int, str, str, bool]]
]:
    history = History(SHAPE, random.Random(1))
    messages, entries = [], []
    for chunk_messages, chunk_entries in history.chunks(
        MidFactory("0123456789"), FIRST_MS, 10.0, size=64
    ):
        assert len(chunk_messages) <= 64
        messages += chunk_messages
        entries += chunk_entries
    return history, messages, entries


def test_two_entries_per_message_numbered_from_1_without_gaps() -> None:
    history, messages, entries = made()
    assert len(messages) == SHAPE.messages == 450
    assert len(entries) == SHAPE.inbox_rows == 900
    seqs: dict[str, list[int]] = defaultdict(list)
    for uid, seq, _, _, _ in entries:
        seqs[uid].append(seq)
    for uid, numbers in seqs.items():
        assert numbers == list(range(1, len(numbers) + 1))
        assert history.tally.heads[uid] == len(numbers)


def test_mids_grow_with_the_messages_and_frames_name_both_parties() -> None:
    _, messages, entries = made()
    mids = [mid for mid, _, _ in messages]
    assert mids == sorted(mids)
    assert len(set(mids)) == len(mids)
    assert mid_time_ms(mids[0]) == FIRST_MS
    assert mid_time_ms(mids[-1]) == FIRST_MS + 10 * (len(mids) - 1)
    by_mid: dict[str, list[tuple[str, int, str, str, bool]]] = defaultdict(list)
    for entry in entries:
        by_mid[entry[3]].append(entry)
    for mid, sender, text in messages:
        frame = msgspec.json.decode(text, type=frames.Message)
        assert (frame.mid, frame.sender, frame.seq) == (mid, sender, None)
        own, received = by_mid[mid]
        assert own == (sender, own[1], f"u:{frame.to}", mid, True)
        assert received == (frame.to, received[1], f"u:{sender}", mid, False)


def test_each_asker_talks_only_with_its_peers_in_turn() -> None:
    history, messages, _ = made()
    for index in range(SHAPE.askers):
        uid = asker(index)
        talks = [
            (s, to) for _, s, text in messages for to in [_to(text)] if uid in (s, to)
        ]
        assert len(talks) == SHAPE.asker_messages
        assert {s if s != uid else to for s, to in talks} <= set(history.peers[uid])


def test_conversations_hold_their_last_entry_and_what_was_received() -> None:
    history, _, entries = made()
    expected: dict[tuple[str, str], tuple[int, str, int]] = {}
    for uid, seq, conv, mid, is_own in entries:
        _, _, received = expected.get((uid, conv), (0, "", 0))
        expected[(uid, conv)] = (seq, mid, received + (not is_own))
    records = history.tally.conversation_records()
    assert {(u, c): (s, m, r) for u, c, s, m, r in records} == expected


def _to(text: str) -> str:
    to = msgspec.json.decode(text, type=frames.Message).to
    assert to is not None
    return to
