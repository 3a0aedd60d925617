"""replay.py: deliveries in, rows out; rows in, deliveries per gateway out. No I/O."""

import msgspec
import pytest

from offline_store import replay
from offline_store.replay import (
    GatewayTargets,
    RowKey,
    StoredRow,
    UndeliveredRow,
)
from proto import frames
from proto.codes import ErrorCode
from proto.envelopes import (
    Acked,
    Batch,
    Batched,
    Delivery,
    DeliveryItem,
    MessageOffline,
    MessageRefused,
    Origin,
    ReplayRequest,
    ReplayTarget,
    Saved,
    SavedUid,
    Target,
    decode_delivery,
    encode,
)
from proto.errors import BadEnvelope
from proto.names import KEY_ACK

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


# rows_from_body


def test_durable_item_gives_one_row_per_distinct_uid() -> None:
    frame = message_frame(MID_1)
    body = delivery_body(
        item(
            frame, ("bob", "c1"), ("bob", "c2"), ("carol", ""), mid=MID_1, durable=True
        )
    )
    rows = replay.rows_from_body(body).rows
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
    rows = replay.rows_from_body(
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
    assert [(row.uid, row.mid) for row in replay.rows_from_body(body).rows] == [
        ("bob", MID_3)
    ]


def test_durable_item_without_mid_is_skipped() -> None:
    body = delivery_body(item(message_frame(MID_1), ("bob", "c1"), durable=True))
    assert replay.rows_from_body(body) == replay.KeptRows([], [])


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"items": "none"}'])
def test_body_that_is_not_a_delivery_is_a_bad_envelope(body: bytes) -> None:
    with pytest.raises(BadEnvelope):
        replay.rows_from_body(body)


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
    kept = replay.rows_from_body(body)
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
    kept = replay.rows_from_body(body)
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
    kept = replay.rows_from_body(body)
    assert [(row.uid, row.mid) for row in kept.rows] == [("carol", MID_1)]
    assert [r.index for r in kept.refused] == [0]


def test_unique_rows_keeps_the_first_copy_of_each_key() -> None:
    rows = [
        UndeliveredRow("bob", MID_1, "first"),
        UndeliveredRow("carol", MID_1, "x"),
        UndeliveredRow("bob", MID_1, "second"),
    ]
    assert replay.unique_rows(rows) == rows[:2]


# saved_envelope


def test_saved_has_the_smallest_mid_per_uid() -> None:
    keys = [
        RowKey("carol", MID_2),
        RowKey("bob", MID_3),
        RowKey("bob", MID_1),
        RowKey("carol", MID_2),
        RowKey("bob", MID_2),
    ]
    assert replay.saved_envelope(keys) == Saved(
        uids=[SavedUid("bob", MID_1), SavedUid("carol", MID_2)]
    )


def test_nothing_saved_gives_no_envelope() -> None:
    assert replay.saved_envelope([]) is None


# acks


def test_acked_keys_are_flattened_without_duplicates() -> None:
    acks = [
        Acked(uid="bob", mids=[MID_1, MID_2]),
        Acked(uid="carol", mids=[MID_1]),
        Acked(uid="bob", mids=[MID_2]),
    ]
    assert replay.acked_keys(acks) == (["bob", "bob", "carol"], [MID_1, MID_2, MID_1])


def test_acked_body_is_decoded_and_checked() -> None:
    acked = Acked(uid="bob", mids=[MID_1])
    assert replay.acked_from_body(encode(acked)) == acked
    with pytest.raises(BadEnvelope):
        replay.acked_from_body(b'{"uid": "bob"}')


# replay


def test_targets_are_grouped_by_gateway_without_duplicates() -> None:
    request = ReplayRequest(
        uid="bob",
        targets=[
            ReplayTarget("gw1", "c1"),
            ReplayTarget("gw2", "c3"),
            ReplayTarget("gw1", "c2"),
            ReplayTarget("gw1", "c1"),
        ],
    )
    assert replay.targets_by_gateway(request) == (
        GatewayTargets("gw1", (Target("bob", "c1"), Target("bob", "c2"))),
        GatewayTargets("gw2", (Target("bob", "c3"),)),
    )


def test_page_gives_one_stored_delivery_per_gateway_in_mid_order() -> None:
    rows = [
        StoredRow(MID_1, message_frame(MID_1).decode()),
        StoredRow(MID_2, message_frame(MID_2).decode()),
    ]
    gateways = (
        GatewayTargets("gw1", (Target("bob", "c1"), Target("bob", "c2"))),
        GatewayTargets("gw2", (Target("bob", "c3"),)),
    )
    outbound = replay.replay_deliveries(rows, gateways)
    assert [d.gateway_id for d in outbound] == ["gw1", "gw2"]
    for gateway, sent in zip(gateways, outbound, strict=True):
        assert [i.mid for i in sent.delivery.items] == [MID_1, MID_2]
        for row, sent_item in zip(rows, sent.delivery.items, strict=True):
            assert sent_item.targets == list(gateway.targets)
            assert sent_item.durable
            assert sent_item.stored
            assert bytes(sent_item.frame) == row.frame.encode()


def test_replayed_frame_is_pushed_byte_for_byte() -> None:
    frame = '{"type":"message",  "mid":"' + MID_1 + '","body":{"b":2,"a":1}}'
    outbound = replay.replay_deliveries(
        [StoredRow(MID_1, frame)], (GatewayTargets("gw1", (Target("bob", "c1"),)),)
    )
    body = encode(outbound[0].delivery)
    assert frame.encode() in body
    assert replay.rows_from_body(body).rows == []  # stored: never stored a second time
    assert decode_delivery(outbound[0].body) == outbound[0].delivery


def test_a_page_larger_than_a_message_is_split_in_order() -> None:
    mids = [f"m{i:03}" for i in range(40)]
    rows = [StoredRow(mid, message_frame(mid).decode() + " " * 1000) for mid in mids]
    gateways = (GatewayTargets("gw1", (Target("bob", "c1"),)),)
    outbound = replay.replay_deliveries(rows, gateways, max_bytes=8000)
    assert len(outbound) > 1
    assert all(len(d.body) <= 8000 for d in outbound)
    assert [i.mid for d in outbound for i in decode_delivery(d.body).items] == mids


def test_empty_page_gives_no_delivery() -> None:
    gateways = (GatewayTargets("gw1", (Target("bob", "c1"),)),)
    assert replay.replay_deliveries([], gateways) == []


def test_replay_request_naming_an_unreachable_gateway_is_a_bad_envelope() -> None:
    request = ReplayRequest(uid="bob", targets=[ReplayTarget("g" * 256, "c1")])
    with pytest.raises(BadEnvelope):
        replay.replay_request_from_body(encode(request))
    with pytest.raises(BadEnvelope):
        replay.replay_request_from_body(b'{"uid": 1, "targets": []}')


def test_offline_events_one_per_new_row() -> None:
    keys = [RowKey("bob", "m1"), RowKey("carol", "m1"), RowKey("bob", "m1")]
    assert replay.offline_events(keys, 1234) == [
        MessageOffline(uid="bob", mid="m1", ts=1234),
        MessageOffline(uid="carol", mid="m1", ts=1234),
    ]


ORIGIN = Origin("alice", "gw-1", "conn-a", "c7")


def test_rows_keep_the_origin_of_their_item() -> None:
    durable = DeliveryItem(
        frame=msgspec.Raw(message_frame(MID_1)),
        targets=[Target("bob", "")],
        mid=MID_1,
        durable=True,
        origin=ORIGIN,
    )
    (row,) = replay.rows_from_body(encode(Delivery(items=[durable]))).rows
    assert row.origin == ORIGIN


def test_refused_row_tells_its_sending_connection_and_backends() -> None:
    row = UndeliveredRow("bob", MID_1, "{}", ORIGIN)
    deliveries, events = replay.refusals([row], ts_ms=5)
    (outbound,) = deliveries
    assert outbound.gateway_id == "gw-1"
    (notice,) = outbound.delivery.items
    assert notice.targets == [Target("alice", "conn-a")]
    assert not notice.durable
    assert not notice.mid
    error = frames.decode_server_frame(bytes(notice.frame))
    assert isinstance(error, frames.Error)
    assert error == frames.Error(
        code=ErrorCode.RECIPIENT_FULL,
        message=error.message,
        id="c7",
        mid=MID_1,
        to="bob",
    )
    assert events == [
        MessageRefused(
            uid="bob",
            mid=MID_1,
            code=ErrorCode.RECIPIENT_FULL,
            ts=5,
            sender="alice",
            client_id="c7",
        )
    ]


def test_refusal_without_a_connection_is_an_event_only() -> None:
    backend = Origin("system", "", "", "b1")
    rows = [
        UndeliveredRow("bob", MID_1, "{}", backend),
        UndeliveredRow("bob", MID_2, "{}", None),
    ]
    deliveries, events = replay.refusals(rows, ts_ms=5)
    assert deliveries == []
    assert [(e.mid, e.sender, e.client_id) for e in events] == [
        (MID_1, "system", "b1"),
        (MID_2, "", ""),
    ]


def test_ack_batch_keeps_the_good_items_and_names_the_bad_ones() -> None:
    good = encode(Acked(uid="bob", mids=[MID_1]))
    batch = Batch(
        items=[
            Batched(KEY_ACK, msgspec.Raw(good)),
            Batched(KEY_ACK, msgspec.Raw(b'{"uid":"x"}')),
            Batched("gateway.send", msgspec.Raw(good)),
            Batched(KEY_ACK, msgspec.Raw(encode(Acked(uid="carol", mids=[MID_2])))),
        ]
    )
    acks, reasons = replay.acks_from_batch_body(encode(batch))
    assert acks == [Acked(uid="bob", mids=[MID_1]), Acked(uid="carol", mids=[MID_2])]
    assert len(reasons) == 2


def test_ack_batch_that_is_not_a_batch_is_a_bad_envelope() -> None:
    with pytest.raises(BadEnvelope):
        replay.acks_from_batch_body(b'{"items": 3}')


def test_delete_keys_are_cut_into_bounded_statements() -> None:
    uids = [f"u{n}" for n in range(5)]
    mids = [f"m{n}" for n in range(5)]
    pieces = replay.chunks(uids, mids, 2)
    assert [(list(u), list(m)) for u, m in pieces] == [
        (["u0", "u1"], ["m0", "m1"]),
        (["u2", "u3"], ["m2", "m3"]),
        (["u4"], ["m4"]),
    ]
    assert replay.chunks([], [], 2) == []
