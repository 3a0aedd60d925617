"""replay.py: a replay request and rows in, deliveries per gateway out. No I/O."""

import msgspec
import pytest

from offline_store import replay, rows
from offline_store.replay import GatewayTargets
from offline_store.rows import StoredRow
from proto import frames
from proto.envelopes import (
    Batch,
    Batched,
    ReplayRequest,
    ReplayTarget,
    Target,
    decode_delivery,
    encode,
)
from proto.errors import BadEnvelope
from proto.names import KEY_ACK, KEY_REPLAY

MID_1 = "0190f0a1b2c30000aaaaaaaaaa"
MID_2 = "0190f0a1b2c30001aaaaaaaaaa"


def message_frame(mid: str, to: str = "bob", body: bytes = b'{"text":"hi"}') -> bytes:
    return frames.encode(
        frames.Message(mid=mid, sender="alice", to=to, body=msgspec.Raw(body), ts=1)
    )


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
    assert rows.rows_from_body(body).rows == []  # stored: never stored a second time
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


def test_a_batch_of_replay_requests_refuses_a_bad_one_alone() -> None:
    good = [
        ReplayRequest(uid=uid, targets=[ReplayTarget("gw1", "c1")])
        for uid in ("a", "b")
    ]
    items = [
        Batched(KEY_REPLAY, msgspec.Raw(encode(good[0]))),
        Batched(KEY_ACK, msgspec.Raw(encode(good[1]))),  # not a replay request's key
        Batched(KEY_REPLAY, msgspec.Raw(b'{"uid": 3}')),  # not a replay request
        Batched(KEY_REPLAY, msgspec.Raw(encode(good[1]))),
    ]
    body = encode(Batch(items=items))
    requests, refused = replay.replay_requests_from_batch_body(body)
    assert requests == good
    assert [item.index for item in refused] == [1, 2]
    assert refused[0].reason == "$.items[] has a routing key other than router.replay"
    with pytest.raises(BadEnvelope):
        replay.replay_requests_from_batch_body(b'{"items": 3}')
