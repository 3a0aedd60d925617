"""rows.py: a ``Delivery`` body in, the rows to keep and the items refused out. No I/O."""

import msgspec
import pytest

from offline_store.rows import KeptRows, UndeliveredRow, rows_from_body, unique_rows
from proto import frames
from proto.envelopes import (
    Delivery,
    DeliveryItem,
    Origin,
    Target,
    decode_delivery,
    encode,
)
from proto.errors import BadEnvelope

MID_1 = "0190f0a1b2c30000aaaaaaaaaa"
MID_2 = "0190f0a1b2c30001aaaaaaaaaa"
MID_3 = "0190f0a1b2c40000bbbbbbbbbb"


def message_frame(mid: str, to: str = "bob", body: bytes = b'{"text":"hi"}') -> bytes:
    return frames.encode(
        frames.Message(mid=mid, sender="alice", to=to, body=msgspec.Raw(body), ts=1)
    )


def item(
    frame: bytes,
    *targets: tuple[str, str],
    mid: str = "",
    durable: bool = False,
    stored: bool = False,
) -> DeliveryItem:
    return DeliveryItem(
        frame=msgspec.Raw(frame),
        targets=[Target(uid, conn_id) for uid, conn_id in targets],
        mid=mid,
        durable=durable,
        stored=stored,
    )


def delivery_body(*items: DeliveryItem) -> bytes:
    return encode(Delivery(items=list(items)))


def test_durable_item_gives_one_row_per_distinct_uid() -> None:
    frame = message_frame(MID_1)
    body = delivery_body(
        item(
            frame, ("bob", "c1"), ("bob", "c2"), ("carol", ""), mid=MID_1, durable=True
        )
    )
    rows = rows_from_body(body).rows
    assert rows == [
        UndeliveredRow("bob", MID_1, frame.decode()),
        UndeliveredRow("carol", MID_1, frame.decode()),
    ]


def test_frame_is_kept_byte_for_byte() -> None:
    # Spacing and key order that a re-encoding would change.
    frame = (
        b'{"type":"message", "mid":"%s","from":"alice","to":"bob",'
        b'"body":{"z":1, "a":"\\u00e9"},"ts":1}' % MID_1.encode()
    )
    rows = rows_from_body(
        delivery_body(item(frame, ("bob", "c1"), mid=MID_1, durable=True))
    ).rows
    assert [row.frame.encode() for row in rows] == [frame]


def test_non_durable_and_stored_items_are_skipped() -> None:
    ready = frames.encode(frames.Ready(uid="bob", conn="c1"))
    body = delivery_body(
        item(ready, ("bob", "c1")),
        item(message_frame(MID_1), ("bob", "c1"), mid=MID_1, durable=False),
        item(message_frame(MID_2), ("bob", "c1"), mid=MID_2, durable=True, stored=True),
        item(message_frame(MID_3), ("bob", "c1"), mid=MID_3, durable=True),
    )
    assert [(row.uid, row.mid) for row in rows_from_body(body).rows] == [("bob", MID_3)]


def test_durable_item_without_mid_is_skipped() -> None:
    body = delivery_body(item(message_frame(MID_1), ("bob", "c1"), durable=True))
    assert rows_from_body(body) == KeptRows([], [])


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"items": "none"}'])
def test_body_that_is_not_a_delivery_is_a_bad_envelope(body: bytes) -> None:
    with pytest.raises(BadEnvelope):
        rows_from_body(body)


@pytest.mark.parametrize(
    "bad_item",
    [
        b'{"frame": {}, "targets": [["bob"]]}',
        b'{"targets": []}',
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_an_item_that_is_not_a_delivery_item_is_refused_alone(bad_item: bytes) -> None:
    good = item(message_frame(MID_1), ("bob", ""), mid=MID_1, durable=True)
    body = b'{"items": [' + bad_item + b", " + encode(good) + b"]}"
    kept = rows_from_body(body)
    assert [(row.uid, row.mid) for row in kept.rows] == [("bob", MID_1)]
    (refused,) = kept.refused
    assert refused.index == 0
    assert refused.body == b'{"items":[' + bad_item + b"]}"


def test_a_uid_postgresql_cannot_store_is_refused_alone() -> None:
    body = delivery_body(
        item(message_frame(MID_1), ("carol", ""), mid=MID_1, durable=True),
        item(
            message_frame(MID_2),
            ("bob\x00", ""),
            ("dave", ""),
            mid=MID_2,
            durable=True,
        ),
    )
    kept = rows_from_body(body)
    assert [(row.uid, row.mid) for row in kept.rows] == [
        ("carol", MID_1),
        ("dave", MID_2),
    ]
    (refused,) = kept.refused
    assert "NUL" in refused.reason
    assert refused.index == 1
    (alone,) = decode_delivery(refused.body).items
    assert (alone.mid, alone.targets) == (MID_2, [Target("bob\x00", "")])


@pytest.mark.parametrize(
    ("mid", "frame"),
    [
        ("m\x00", b'{"type":"message"}'),
        ("m" * 2000, b'{"type":"message"}'),
        ("m1", b'"\xff"'),
    ],
)
def test_an_item_whose_mid_or_frame_cannot_be_stored_is_refused_alone(
    mid: str, frame: bytes
) -> None:
    body = delivery_body(
        item(frame, ("bob", ""), mid=mid, durable=True),
        item(message_frame(MID_1), ("carol", ""), mid=MID_1, durable=True),
    )
    kept = rows_from_body(body)
    assert [(row.uid, row.mid) for row in kept.rows] == [("carol", MID_1)]
    assert [r.index for r in kept.refused] == [0]


def test_unique_rows_keeps_the_first_copy_of_each_key() -> None:
    rows = [
        UndeliveredRow("bob", MID_1, "first"),
        UndeliveredRow("carol", MID_1, "x"),
        UndeliveredRow("bob", MID_1, "second"),
    ]
    assert unique_rows(rows) == rows[:2]


ORIGIN = Origin("alice", "gw-1", "conn-a", "c7")


def test_rows_keep_the_origin_of_their_item() -> None:
    durable = DeliveryItem(
        frame=msgspec.Raw(message_frame(MID_1)),
        targets=[Target("bob", "")],
        mid=MID_1,
        durable=True,
        origin=ORIGIN,
    )
    (row,) = rows_from_body(encode(Delivery(items=[durable]))).rows
    assert row.origin == ORIGIN


def test_a_numbered_copy_is_kept_with_its_seq_written_in() -> None:
    # A store's delivery to a gateway whose queue is gone reaches the store again.
    frame = message_frame(MID_1)
    numbered = DeliveryItem(
        frame=msgspec.Raw(frame),
        targets=[Target("bob", "c1", 4), Target("alice", "c2", 9)],
        mid=MID_1,
        durable=True,
    )
    rows = rows_from_body(delivery_body(numbered)).rows
    assert [(row.uid, row.frame.encode()) for row in rows] == [
        ("bob", frames.with_seq(frame, 4)),
        ("alice", frames.with_seq(frame, 9)),
    ]
