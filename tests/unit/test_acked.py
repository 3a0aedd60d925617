"""acked.py: ack bodies in, the keys of the rows to delete out. No I/O."""

import msgspec
import pytest

from offline_store.acked import (
    acked_from_body,
    acked_keys,
    acks_from_batch_body,
    chunks,
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
    assert acked_keys(acks) == (["bob", "bob", "carol"], [MID_1, MID_2, MID_1])


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


def test_ack_batch_that_is_not_a_batch_is_a_bad_envelope() -> None:
    with pytest.raises(BadEnvelope):
        acks_from_batch_body(b'{"items": 3}')


def test_delete_keys_are_cut_into_bounded_statements() -> None:
    uids = [f"u{n}" for n in range(5)]
    mids = [f"m{n}" for n in range(5)]
    pieces = chunks(uids, mids, 2)
    assert [(list(u), list(m)) for u, m in pieces] == [
        (["u0", "u1"], ["m0", "m1"]),
        (["u2", "u3"], ["m2", "m3"]),
        (["u4"], ["m4"]),
    ]
    assert chunks([], [], 2) == []
