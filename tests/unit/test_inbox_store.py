"""The offline store's inbox decisions: numbering, items to rows, rows to deliveries."""

import msgspec

from offline_store.announcements import message_offline_events
from offline_store.inbox import (
    conversation,
    inbox_deliveries,
    rows_from_items,
)
from offline_store.numbering import EntryKey, batch_seqs
from offline_store.rows import RowKey
from proto import envelopes, frames
from proto.envelopes import MessageOffline, Origin, Target
from proto.inbox import EntryTarget, InboxBatch, InboxEntry, InboxItem, encode
from proto.items import Decoded


def frame_of(
    mid: str, sender: str, to: str | None = None, group: str | None = None
) -> bytes:
    return frames.encode(
        frames.Message(
            mid=mid, sender=sender, body=msgspec.Raw(b"1"), ts=1, to=to, group=group
        )
    )


def one_to_one(
    mid: str,
    sender: str = "alice",
    to: str = "bob",
    recipient_at: tuple[tuple[str, str], ...] = (("g1", "b1"),),
    sender_at: tuple[tuple[str, str], ...] = (("g2", "a2"),),
    origin: Origin | None = None,
) -> InboxItem:
    entries = [InboxEntry(to, to == sender, [EntryTarget(*t) for t in recipient_at])]
    if to != sender:
        entries.append(InboxEntry(sender, True, [EntryTarget(*t) for t in sender_at]))
    return InboxItem(
        mid=mid,
        sender=sender,
        frame=msgspec.Raw(frame_of(mid, sender, to=to)),
        entries=entries,
        to=to,
        origin=origin or Origin(sender, "g1", "a1", "c-" + mid),
    )


def group_message(mid: str, members: dict[str, list[tuple[str, str]]]) -> InboxItem:
    return InboxItem(
        mid=mid,
        sender="alice",
        frame=msgspec.Raw(frame_of(mid, "alice", group="team")),
        entries=[
            InboxEntry(uid, uid == "alice", [EntryTarget(*t) for t in targets])
            for uid, targets in members.items()
        ],
        group="team",
        origin=Origin("alice", "g1", "a1", "c-" + mid),
    )


def decoded(*items: InboxItem) -> Decoded[InboxItem]:
    return Decoded(list(items), [])


# --- numbering ---------------------------------------------------------------------


def test_fresh_entries_take_their_numbers_and_kept_ones_keep_theirs() -> None:
    numbered = {EntryKey("alice", "m1"): 4, EntryKey("bob", "m2"): 9}
    kept = {EntryKey("bob", "m1"): 8}
    assert batch_seqs(numbered, kept) == {
        EntryKey("bob", "m1"): 8,
        EntryKey("alice", "m1"): 4,
        EntryKey("bob", "m2"): 9,
    }


# --- items to rows -----------------------------------------------------------------


def test_a_one_to_one_message_is_one_message_row_and_two_entries() -> None:
    item = one_to_one("m1")
    rows = rows_from_items(decoded(item))
    assert [(m.mid, m.sender) for m in rows.messages] == [("m1", "alice")]
    assert rows.messages[0].frame.encode() == bytes(item.frame)
    assert [(e.uid, e.conv, e.is_own) for e in rows.entries] == [
        ("bob", "u:alice", False),
        ("alice", "u:bob", True),
    ]
    assert rows.absent == []


def test_a_group_message_is_stored_once_for_every_member() -> None:
    item = group_message("m1", {"bob": [], "carol": [("g2", "c1")], "alice": []})
    rows = rows_from_items(decoded(item))
    assert len(rows.messages) == 1
    assert {e.conv for e in rows.entries} == {"g:team"}
    # bob has no connection: a thin row. alice is the sender: none, connected or not.
    assert rows.absent == [EntryKey("bob", "m1")]


def test_a_message_to_oneself_is_one_entry_kept_when_offline() -> None:
    item = one_to_one("m1", sender="alice", to="alice", recipient_at=())
    rows = rows_from_items(decoded(item))
    assert [(e.uid, e.conv, e.is_own) for e in rows.entries] == [
        ("alice", "u:alice", True)
    ]
    assert rows.absent == [EntryKey("alice", "m1")]
    assert conversation(item, "alice") == "u:alice"


def test_a_mid_that_comes_twice_is_written_once() -> None:
    rows = rows_from_items(
        decoded(one_to_one("m1"), one_to_one("m1"), one_to_one("m2"))
    )
    assert [m.mid for m in rows.messages] == ["m1", "m2"]
    assert [i.mid for i in rows.items] == ["m1", "m2"]
    assert len(rows.entries) == 4


def test_an_item_postgresql_cannot_keep_is_refused_alone() -> None:
    bad = msgspec.structs.replace(one_to_one("m2"), sender="al\x00ice")
    no_conversation = msgspec.structs.replace(one_to_one("m3"), to=None)
    rows = rows_from_items(decoded(one_to_one("m1"), bad, no_conversation))
    assert [m.mid for m in rows.messages] == ["m1"]
    assert [(r.index, "NUL" in r.reason) for r in rows.refused] == [
        (1, True),
        (2, False),
    ]
    refused = InboxBatch(items=[bad])
    assert rows.refused[0].body == encode(refused)


# --- rows to deliveries --------------------------------------------------------------


def test_each_copy_carries_its_uids_seq_and_the_sender_gets_an_advance() -> None:
    item = one_to_one(
        "m1",
        recipient_at=(("g1", "b1"), ("g2", "b2")),
        sender_at=(("g2", "a2"),),
        origin=Origin("alice", "g1", "a1", "c1"),
    )
    seqs = {EntryKey("bob", "m1"): 7, EntryKey("alice", "m1"): 3}
    deliveries = {d.gateway_id: d.delivery for d in inbox_deliveries([item], seqs)}
    assert set(deliveries) == {"g1", "g2"}
    g1_message, g1_advance = deliveries["g1"].items
    assert g1_message.targets == [Target("bob", "b1", 7)]
    assert (g1_message.durable, g1_message.mid, g1_message.origin) == (
        True,
        "m1",
        item.origin,
    )
    assert bytes(g1_message.frame) == bytes(item.frame)  # never re-encoded
    assert g1_advance.advance
    assert g1_advance.targets == [Target("alice", "a1", 3)]
    assert not g1_advance.durable
    (g2_message,) = deliveries["g2"].items
    # The sender's other connection gets its own message, with its own seq.
    assert g2_message.targets == [Target("bob", "b2", 7), Target("alice", "a2", 3)]


def test_a_message_to_oneself_reaches_the_sending_connection_without_advance() -> None:
    item = one_to_one(
        "m1",
        to="alice",
        recipient_at=(("g1", "a1"), ("g2", "a2")),
        origin=Origin("alice", "g1", "a1", "c1"),
    )
    deliveries = inbox_deliveries([item], {EntryKey("alice", "m1"): 5})
    pushed = [i for d in deliveries for i in d.delivery.items]
    assert not any(i.advance for i in pushed)
    assert [t for i in pushed for t in i.targets] == [
        Target("alice", "a1", 5),
        Target("alice", "a2", 5),
    ]


def test_a_backends_message_has_no_advance_and_unnumbered_entries_are_skipped() -> None:
    item = msgspec.structs.replace(
        one_to_one("m1", sender="system"), origin=Origin("system", "", "", "id1")
    )
    deliveries = inbox_deliveries([item], {EntryKey("bob", "m1"): 1})
    (delivery,) = deliveries
    (message,) = delivery.delivery.items
    assert message.targets == [Target("bob", "b1", 1)]


def test_deliveries_keep_batch_order_and_split_by_size() -> None:
    items = [one_to_one(f"m{i}", sender_at=()) for i in range(50)]
    seqs = {EntryKey("bob", f"m{i}"): i + 1 for i in range(50)}
    deliveries = inbox_deliveries(items, seqs, max_bytes=4096)
    assert len(deliveries) > 1
    decoded_items = [
        i for d in deliveries for i in envelopes.decode_delivery(d.body).items
    ]
    message_seqs = [i.targets[0].seq for i in decoded_items if not i.advance]
    assert message_seqs == list(range(1, 51))


def test_message_offline_events_name_the_sender_and_the_conversation() -> None:
    one = one_to_one("m1")
    group = group_message("m2", {"bob": []})
    keys = [RowKey("bob", "m1"), RowKey("bob", "m2"), RowKey("bob", "m1")]
    assert message_offline_events(keys, 9, [one, group]) == [
        MessageOffline(uid="bob", mid="m1", ts=9, sender="alice", peer="alice"),
        MessageOffline(uid="bob", mid="m2", ts=9, sender="alice", group="team"),
    ]


def test_a_redelivered_batch_is_numbered_once() -> None:
    keys = [EntryKey("bob", "m1"), EntryKey("alice", "m1"), EntryKey("bob", "m2")]
    first = batch_seqs(dict(zip(keys, (8, 4, 9), strict=True)), {})
    # The same batch again: nothing is fresh, no head moved, the numbers read back stand.
    again = batch_seqs({}, first)
    assert again == first


def test_a_batch_mixing_fresh_and_kept_mids_numbers_only_the_fresh() -> None:
    seqs = batch_seqs({EntryKey("bob", "m2"): 6}, {EntryKey("bob", "m1"): 5})
    assert seqs == {EntryKey("bob", "m1"): 5, EntryKey("bob", "m2"): 6}
