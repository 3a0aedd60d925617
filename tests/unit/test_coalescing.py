"""gateway.coalescing: which envelopes wait, and which leave together in one ``Batch``."""

import msgspec

from gateway.coalescing import (
    BATCH_MAX_ITEMS,
    BATCHES_IN_FLIGHT,
    Coalesced,
    Coalescing,
)
from proto.envelopes import decode_batch


def keys(batch: Coalesced[int] | None) -> list[str]:
    assert batch is not None
    return [item.key for item in decode_batch(batch.body).items]


def tickets(batch: Coalesced[int] | None) -> list[int]:
    assert batch is not None
    return batch.tickets


def fill_slots(coalescing: Coalescing[int]) -> None:
    for n in range(BATCHES_IN_FLIGHT):
        assert coalescing.submit(f"slot{n}", b"{}", -1 - n) is not None


def test_a_lone_envelope_leaves_at_once_alone() -> None:
    coalescing: Coalescing[int] = Coalescing()
    batch = coalescing.submit("gateway.send", b'{"n":1}', 7)
    assert tickets(batch) == [7]
    assert batch is not None
    (item,) = decode_batch(batch.body).items
    assert (item.key, msgspec.json.decode(item.body)) == ("gateway.send", {"n": 1})


def test_envelopes_wait_while_the_batches_in_flight_are_unconfirmed() -> None:
    coalescing: Coalescing[int] = Coalescing()
    fill_slots(coalescing)
    assert [coalescing.submit(f"w{n}", b"{}", n) for n in range(5)] == [None] * 5
    batch = coalescing.on_sent()
    # Every envelope that waited leaves in the next batch, in the order given.
    assert keys(batch) == [f"w{n}" for n in range(5)]
    assert tickets(batch) == list(range(5))


def test_nothing_leaves_when_nothing_waits() -> None:
    coalescing: Coalescing[int] = Coalescing()
    fill_slots(coalescing)
    for _ in range(BATCHES_IN_FLIGHT):
        assert coalescing.on_sent() is None
    # Every slot is free again: the next envelope leaves at once.
    assert keys(coalescing.submit("k", b"{}", 0)) == ["k"]


def test_a_batch_holds_at_most_its_item_limit() -> None:
    coalescing: Coalescing[int] = Coalescing()
    fill_slots(coalescing)
    for n in range(BATCH_MAX_ITEMS + 3):
        coalescing.submit("k", b"{}", n)
    assert tickets(coalescing.on_sent()) == list(range(BATCH_MAX_ITEMS))
    assert tickets(coalescing.on_sent()) == [BATCH_MAX_ITEMS + n for n in range(3)]


def test_a_batch_closes_before_its_byte_limit() -> None:
    body = b'"' + b"x" * 98 + b'"'  # 100 bytes; 107 in the batch with its key "k"
    coalescing: Coalescing[int] = Coalescing(max_bytes=12 + 3 * 107)
    fill_slots(coalescing)
    for n in range(7):
        coalescing.submit("k", body, n)
    sizes = []
    while (batch := coalescing.on_sent()) is not None:
        sizes.append(len(batch.tickets))
        assert len(batch.body) <= 12 + 3 * 107
    assert sizes == [3, 3, 1]


def test_an_envelope_larger_than_the_byte_limit_goes_alone() -> None:
    coalescing: Coalescing[int] = Coalescing(max_bytes=64)
    fill_slots(coalescing)
    coalescing.submit("small", b"{}", 0)
    coalescing.submit("large", b'"' + b"x" * 200 + b'"', 1)
    coalescing.submit("small", b"{}", 2)
    assert keys(coalescing.on_sent()) == ["small"]
    assert keys(coalescing.on_sent()) == ["large"]
    assert keys(coalescing.on_sent()) == ["small"]
