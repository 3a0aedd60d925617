"""Envelopes decoded item by item (proto/items.py) and messages bounded by bytes
(proto/packing.py): pure logic, no broker."""

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto.envelopes import (
    Delivery,
    DeliveryItem,
    SavedUid,
    Target,
    decode_delivery,
    decode_saved,
    encode,
)
from proto.errors import BadEnvelope
from proto.items import decode_delivery_items, split_items
from proto.packing import pack_delivery, pack_saved, runs_within, split_by_targets

DEEP = b"[" * 5000 + b"]" * 5000


def item(mid: str, *uids: str, frame: bytes = b'{"type":"message"}') -> DeliveryItem:
    return DeliveryItem(
        frame=msgspec.Raw(frame),
        targets=[Target(uid, "") for uid in uids],
        mid=mid,
        durable=True,
    )


# split_items


@pytest.mark.parametrize(
    "elements",
    [
        [],
        [b"1"],
        [b'{"a": "]},[{\\"x"}', b"[1, [2, {}]]", b'"\\\\"', b"null"],
        [DEEP, b"{}"],
    ],
)
def test_split_items_finds_each_element_of_the_items_array(
    elements: list[bytes],
) -> None:
    body = b'{"before": [1, {"items": 2}], "items": [' + b", ".join(elements)
    body += b'], "after": {"items": []}}'
    assert split_items(body) == elements


def test_split_items_reads_an_escaped_key() -> None:
    assert split_items(b'{"\\u0069tems": [1,2]}') == [b"1", b"2"]


@pytest.mark.parametrize(
    "body",
    [b"", b"nope", b"[]", b'{"items": 3}', b'{"items": [1, 2}', b'{"other": []}'],
)
def test_split_items_refuses_what_has_no_items_array(body: bytes) -> None:
    with pytest.raises(BadEnvelope):
        split_items(body)


@given(st.lists(st.recursive(st.none() | st.text() | st.integers(), st.lists)))
def test_split_items_agrees_with_a_json_decoder(elements: list[object]) -> None:
    body = json.dumps({"x": "items", "items": elements}).encode()
    assert [json.loads(raw) for raw in split_items(body)] == elements


# decode_delivery_items


def test_a_delivery_that_decodes_is_decoded_in_one_pass() -> None:
    delivery = Delivery(items=[item("m1", "bob"), item("m2", "carol")])
    decoded = decode_delivery_items(encode(delivery))
    assert decoded.items == delivery.items
    assert decoded.refused == []
    assert [decoded.position(i) for i in range(2)] == [0, 1]


def test_bad_items_are_refused_alone_and_the_others_decoded() -> None:
    good = encode(item("m1", "bob"))
    body = b'{"items": [{"targets": 1}, ' + good + b', {"frame": ' + DEEP + b"}]}"
    decoded = decode_delivery_items(body)
    assert decoded.items == [item("m1", "bob")]
    assert decoded.position(0) == 1
    assert [(r.index, r.body) for r in decoded.refused] == [
        (0, b'{"items":[{"targets": 1}]}'),
        (2, b'{"items":[{"frame": ' + DEEP + b"}]}"),
    ]
    assert decoded.refused[1].reason == "nested too deeply"


# packing


def test_runs_within_keeps_order_and_puts_an_oversized_element_alone() -> None:
    # overhead 10, each comma 1: [10+5+1+5=21 <= 25], then 30 alone, then [5]
    assert runs_within([5, 5, 30, 5], max_bytes=25, overhead=10) == [
        range(0, 2),
        range(2, 3),
        range(3, 4),
    ]
    assert runs_within([], max_bytes=25, overhead=10) == []


@given(
    st.lists(st.integers(min_value=0, max_value=50), max_size=30),
    st.integers(min_value=20, max_value=200),
)
def test_runs_within_covers_every_element_within_the_limit(
    sizes: list[int], max_bytes: int
) -> None:
    runs = runs_within(sizes, max_bytes, overhead=12)
    assert [i for run in runs for i in run] == list(range(len(sizes)))
    for run in runs:
        total = 12 + sum(sizes[i] for i in run) + len(run) - 1
        assert len(run) == 1 or total <= max_bytes


def test_pack_delivery_gives_one_message_when_everything_fits() -> None:
    items = [item("m1", "bob"), item("m2", "carol")]
    (packed,) = pack_delivery(items, 1 << 20)
    assert decode_delivery(packed.body) == Delivery(items=items)
    assert packed.items == items


def test_pack_delivery_puts_next_mid_on_the_last_message_only() -> None:
    frame = b'"' + b"x" * 3000 + b'"'
    items = [item(f"m{i}", "bob", frame=frame) for i in range(20)]
    packed = pack_delivery(items, 16 * 1024, next_mid="m20")
    assert len(packed) > 1
    decoded = [decode_delivery(p.body) for p in packed]
    assert [d.next_mid for d in decoded] == [""] * (len(packed) - 1) + ["m20"]
    assert [p.next_mid for p in packed] == [d.next_mid for d in decoded]
    assert all(len(p.body) <= 16 * 1024 for p in packed)
    (whole,) = pack_delivery(items[:1], 1 << 20, next_mid="m1")
    assert decode_delivery(whole.body).next_mid == "m1"


def test_pack_delivery_says_where_each_message_of_a_window_starts() -> None:
    frame = b'"' + b"x" * 3000 + b'"'
    items = [item(f"m{i:02}", "bob", frame=frame) for i in range(20)]
    packed = pack_delivery(items, 16 * 1024, next_mid="m20", from_mid="m00")
    assert len(packed) > 1
    decoded = [decode_delivery(p.body) for p in packed]
    # The first message starts where the store started reading; each next one where it starts.
    assert [d.from_mid for d in decoded] == ["m00"] + [
        d.items[0].mid for d in decoded[1:]
    ]
    assert [p.from_mid for p in packed] == [d.from_mid for d in decoded]
    (whole,) = pack_delivery(items[:1], 1 << 20, from_mid="m00")
    assert decode_delivery(whole.body).from_mid == "m00"


def test_a_delivery_with_a_bad_item_keeps_its_window_bounds() -> None:
    good = encode(item("m1", "bob"))
    body = b'{"items":[' + good + b',{"mid":7}],"next_mid":"m9","from_mid":"m1"}'
    decoded = decode_delivery_items(body)
    assert [i.mid for i in decoded.items] == ["m1"]
    assert len(decoded.refused) == 1
    assert decoded.next_mid == "m9"
    assert decoded.from_mid == "m1"


def test_pack_delivery_splits_by_bytes_in_order() -> None:
    frame = b'"' + b"x" * 3000 + b'"'
    items = [item(f"m{i}", "bob", frame=frame) for i in range(20)]
    packed = pack_delivery(items, 10_000)
    assert len(packed) == 7  # three items of ~3.1 kB per message
    assert all(len(p.body) <= 10_000 for p in packed)
    carried = [i for p in packed for i in decode_delivery(p.body).items]
    assert carried == items
    assert [i for p in packed for i in p.items] == items


def test_an_item_with_too_many_targets_is_split_by_targets() -> None:
    big = item("m1", *(f"user-{n:05}" for n in range(5000)))
    parts = split_by_targets(big, 20_000)
    assert len(parts) > 1
    assert [t for part in parts for t in part.targets] == big.targets
    assert all(part.mid == "m1" and part.durable for part in parts)
    packed = pack_delivery([big], 20_000)
    assert all(len(p.body) <= 20_000 for p in packed)
    carried = [
        t for p in packed for i in decode_delivery(p.body).items for t in i.targets
    ]
    assert carried == big.targets


def test_an_item_with_one_target_too_large_goes_alone() -> None:
    huge = item("m1", "bob", frame=b'"' + b"x" * 5000 + b'"')
    small = item("m2", "bob")
    packed = pack_delivery([small, huge, small], 2000)
    assert [p.items for p in packed] == [[small], [huge], [small]]


def test_pack_saved_splits_by_bytes() -> None:
    uids = [SavedUid(f"user-{n:04}", f"m{n}") for n in range(1000)]
    bodies = pack_saved(uids, 4096)
    assert all(len(body) <= 4096 for body in bodies)
    assert [u for body in bodies for u in decode_saved(body).uids] == uids
