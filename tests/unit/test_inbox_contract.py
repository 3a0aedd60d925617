"""The contract of the numbered inbox: ``Target.seq``, ``advance`` items, ``with_seq``, the
``InboxBatch`` envelope and the fields ``message.offline`` gained."""

import msgspec
import pytest

from proto import envelopes, frames
from proto.inbox import (
    EntryTarget,
    InboxBatch,
    InboxEntry,
    InboxItem,
    decode_inbox_items,
    encode,
)

FRAME = frames.encode(
    frames.Message(
        mid="m1", sender="alice", body=msgspec.Raw(b'{"t":"hi"}'), ts=5, to="bob"
    )
)


def test_a_target_without_seq_decodes_as_before() -> None:
    body = b'{"items":[{"frame":{},"targets":[["bob","k1"]]}]}'
    (target,) = envelopes.decode_delivery(body).items[0].targets
    assert target == envelopes.Target("bob", "k1")
    assert target.seq is None


def test_a_target_carries_its_seq_as_a_third_element() -> None:
    item = envelopes.DeliveryItem(
        frame=msgspec.Raw(FRAME), targets=[envelopes.Target("bob", "k1", 7)]
    )
    encoded = envelopes.encode(envelopes.Delivery(items=[item]))
    assert b'"targets":[["bob","k1",7]]' in encoded
    assert envelopes.decode_delivery(encoded).items[0].targets[0].seq == 7


def test_an_advance_item_decodes_and_defaults_to_false() -> None:
    body = b'{"items":[{"frame":null,"targets":[["a","k",3]],"advance":true}]}'
    (item,) = envelopes.decode_delivery(body).items
    assert item.advance
    assert (
        not envelopes.decode_delivery(b'{"items":[{"frame":1,"targets":[]}]}')
        .items[0]
        .advance
    )


def test_with_seq_writes_seq_first_without_decoding() -> None:
    numbered = frames.with_seq(FRAME, 42)
    assert numbered.startswith(b'{"seq":42,"type":"message"')
    assert numbered[len(b'{"seq":42,') :] == FRAME[1:]
    decoded = frames.decode_server_frame(numbered)
    assert isinstance(decoded, frames.Message)
    assert (decoded.seq, decoded.mid, decoded.to) == (42, "m1", "bob")


def test_a_message_frame_has_no_seq_by_default() -> None:
    assert b"seq" not in FRAME


def test_message_offline_keeps_todays_body_without_the_new_fields() -> None:
    event = envelopes.MessageOffline(uid="bob", mid="m1", ts=5)
    assert envelopes.encode(event) == b'{"uid":"bob","mid":"m1","ts":5}'


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            envelopes.MessageOffline(uid="bob", mid="m1", ts=5, sender="al", peer="al"),
            b'{"uid":"bob","mid":"m1","ts":5,"sender":"al","with":"al"}',
        ),
        (
            envelopes.MessageOffline(uid="bob", mid="m1", ts=5, sender="al", group="g"),
            b'{"uid":"bob","mid":"m1","ts":5,"sender":"al","group":"g"}',
        ),
    ],
)
def test_message_offline_names_the_sender_and_the_conversation(
    event: envelopes.MessageOffline, expected: bytes
) -> None:
    assert envelopes.encode(event) == expected


def inbox_item(mid: str = "m1") -> InboxItem:
    return InboxItem(
        mid=mid,
        sender="alice",
        frame=msgspec.Raw(FRAME),
        entries=[
            InboxEntry("bob", False, [EntryTarget("g1", "k1")]),
            InboxEntry("alice", True, []),
        ],
        to="bob",
        origin=envelopes.Origin("alice", "g1", "k0", "c1"),
    )


def test_an_inbox_batch_is_compact_and_carries_the_frame_raw() -> None:
    encoded = encode(InboxBatch(items=[inbox_item()]))
    assert b'"entries":[["bob",false,[["g1","k1"]]],["alice",true,[]]]' in encoded
    assert b'"frame":' + FRAME in encoded
    decoded = decode_inbox_items(encoded)
    assert decoded.refused == []
    assert decoded.items == [inbox_item()]


def test_a_bad_inbox_item_is_refused_alone() -> None:
    good = encode(inbox_item("m2"))
    body = b'{"items":[{"mid":3},' + good + b"]}"
    decoded = decode_inbox_items(body)
    assert [item.mid for item in decoded.items] == ["m2"]
    (refused,) = decoded.refused
    assert refused.index == 0
    assert "$.mid" in refused.reason
    assert decoded.position(0) == 1
