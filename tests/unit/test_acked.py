"""acked.py: ack bodies in, the keys of the rows to delete out. No I/O."""

from collections.abc import Iterator

import msgspec
import pytest

from offline_store.acked import (
    acked_from_body,
    acks_from_batch_body,
    key_pieces,
)
from proto.envelopes import (
    Acked,
    Batch,
    Batched,
    encode,
)
from proto.errors import BadEnvelope
from proto.names import KEY_ACK

MID_1 = "0190f0a1b2c30000aaaaaaaaaa"
MID_2 = "0190f0a1b2c30001aaaaaaaaaa"


def test_acked_keys_are_flattened_without_duplicates() -> None:
    acks = [
        Acked(uid="bob", mids=[MID_1, MID_2]),
        Acked(uid="carol", mids=[MID_1]),
        Acked(uid="bob", mids=[MID_2]),
    ]
    assert list(key_pieces(acks, 10)) == [
        (["bob", "bob", "carol"], [MID_1, MID_2, MID_1])
    ]


def test_acked_body_is_decoded_and_checked() -> None:
    acked = Acked(uid="bob", mids=[MID_1])
    assert acked_from_body(encode(acked)) == acked
    with pytest.raises(BadEnvelope):
        acked_from_body(b'{"uid": "bob"}')


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
    acks, reasons = acks_from_batch_body(encode(batch))
    assert acks == [Acked(uid="bob", mids=[MID_1]), Acked(uid="carol", mids=[MID_2])]
    assert len(reasons) == 2


def test_an_item_that_is_not_a_key_and_a_body_is_refused_alone() -> None:
    good = encode(Acked(uid="bob", mids=[MID_1])).decode()
    body = (
        f'{{"items": [["gateway.ack", {good}], 3, ["gateway.ack", {good}]]}}'.encode()
    )
    acks, refused = acks_from_batch_body(body)
    assert acks == [Acked(uid="bob", mids=[MID_1])] * 2
    assert [item.index for item in refused] == [1]
    assert refused[0].body == b'{"items":[3]}'


def test_ack_batch_that_is_not_a_batch_is_a_bad_envelope() -> None:
    with pytest.raises(BadEnvelope):
        acks_from_batch_body(b'{"items": 3}')


def test_delete_keys_are_cut_into_bounded_statements() -> None:
    acks = [
        Acked(uid="bob", mids=["m0", "m1", "m2"]),
        Acked(uid="carol", mids=["m0", "m1"]),
        Acked(uid="bob", mids=["m1"]),  # a duplicate is not counted against the piece
    ]
    assert list(key_pieces(acks, 2)) == [
        (["bob", "bob"], ["m0", "m1"]),
        (["bob", "carol"], ["m2", "m0"]),
        (["carol"], ["m1"]),
    ]
    assert list(key_pieces([], 2)) == []


def test_key_pieces_are_made_one_at_a_time() -> None:
    """The store awaits a statement between pieces; the next is not computed before."""
    seen: list[str] = []

    def acks() -> Iterator[Acked]:
        for n in range(4):
            seen.append(f"u{n}")
            yield Acked(uid=f"u{n}", mids=[MID_1])

    pieces = key_pieces(acks(), 2)
    assert next(pieces) == (["u0", "u1"], [MID_1, MID_1])
    assert seen == ["u0", "u1"]
