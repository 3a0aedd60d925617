"""Acknowledged rows: ``gateway.ack`` and ``gateway.acks`` bodies in, the keys to delete out.

A client's ``ack`` of a stored message reaches the store as an ``Acked`` envelope, alone or in a
``Batch`` of them; each names rows to delete. Pure: ``consumers.py`` does the awaiting,
``store.py`` the deletes, at most ``MAX_KEYS_PER_DELETE`` keys per statement (``key_pieces``).
"""

from collections.abc import Iterable, Iterator

from offline_store.rows import require_storable
from proto.envelopes import Acked, decode_acked
from proto.errors import BadEnvelope
from proto.items import DECODE_ERRORS, RefusedItem, batch_of, reason_of
from proto.names import KEY_ACK


def acked_from_body(body: bytes) -> Acked:
    """Decode an ``Acked`` body.

    Raises:
        BadEnvelope: the body is not an ``Acked``, or a value could never match a row.
    """
    try:
        acked = decode_acked(body)
    except DECODE_ERRORS as exc:
        raise BadEnvelope(reason_of(exc)) from None
    require_storable(acked.uid, "$.uid")
    for mid in acked.mids:
        require_storable(mid, "$.mids[]")
    return acked


def acks_from_batch_body(body: bytes) -> tuple[list[Acked], list[RefusedItem]]:
    """Decode a ``gateway.acks`` body: a ``Batch`` of ``gateway.ack`` envelopes, each decoded
    on its own (``proto.items.batch_of``): a bad one is refused alone.

    Raises:
        BadEnvelope: the body is not a ``Batch`` at all.
    """
    return batch_of(body, KEY_ACK, acked_from_body)


def key_pieces(
    acks: Iterable[Acked], size: int
) -> Iterator[tuple[list[str], list[str]]]:
    """The distinct (uid, mid) keys of these acks, as parallel lists (uids, mids) of at most
    ``size`` keys: one delete statement each.

    Lazy, a piece at a time: the store awaits its statement between pieces, so a batch of a
    million acked mids never holds the event loop (and the replays beside it) for longer than
    one piece's work.
    """
    uids: list[str] = []
    mids: list[str] = []
    seen: set[tuple[str, str]] = set()
    for acked in acks:
        for mid in acked.mids:
            if (acked.uid, mid) in seen:
                continue
            seen.add((acked.uid, mid))
            uids.append(acked.uid)
            mids.append(mid)
            if len(mids) == size:
                yield uids, mids
                uids, mids = [], []
    if mids:
        yield uids, mids
