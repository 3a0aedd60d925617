"""Receipts (``SWITCHBOARD_HISTORY`` on): the read markers an offline store committed, delivered
to the connections online now (``docs/history.md``, section 6.3).

A ``Receipts`` envelope (``store.receipts``) lists, per marker moved, who read (``by``) up to
which mid, the reading connection (``origin``), and the receipt entry of each inbox it entered,
``[uid, seq]``: the party's and the reader's. Each connection of those uids on a live gateway
gets ``{"type":"receipt","by":READER,"mid":MID}`` with its entry's ``seq`` in its target (the
gateway writes it in), but the reading connection, which gets an ``advance`` item of that
``seq`` instead (it has its ``marked``). Receipts are not durable: no ack is awaited, nothing is
handed to the offline store; a connection that is not there gets the entry at its next sync.

Pure: no I/O. lookups.py reads the connections, routing.py calls ``receipt_items``.
"""

from collections.abc import Mapping, Sequence

import msgspec

from proto import frames
from proto.envelopes import DeliveryItem, Target
from proto.items import DECODE_ERRORS, RefusedItem, reason_of, split_items, wrap_items
from proto.sync import ReceiptItem, Receipts, decode_receipts
from router.results import PresenceEntry

NO_FRAME = msgspec.Raw(b"null")
_DECODE_ITEM = msgspec.json.Decoder(ReceiptItem).decode


def decode_receipts_items(body: bytes) -> tuple[Receipts | None, list[RefusedItem]]:
    """Decode a ``Receipts``: its items that decode (None: none did), and each other one
    refused alone, with its reason, to be dead-lettered.

    Raises:
        BadEnvelope: not even the items can be told apart.
    """
    try:
        return decode_receipts(body), []
    except DECODE_ERRORS:
        pass  # find which items are bad, below
    items: list[ReceiptItem] = []
    refused: list[RefusedItem] = []
    for index, raw in enumerate(split_items(body)):
        try:
            items.append(_DECODE_ITEM(raw))
        except DECODE_ERRORS as exc:
            refused.append(RefusedItem(wrap_items([raw]), reason_of(exc), index))
    return (Receipts(items=items) if items else None), refused


def receipt_uids(receipts: Receipts) -> tuple[str, ...]:
    """The uids whose connections a ``Receipts`` needs, each once, in order."""
    return tuple(
        dict.fromkeys(entry.uid for item in receipts.items for entry in item.entries)
    )


def receipt_items(
    receipts: Receipts,
    connections: Mapping[str, Sequence[PresenceEntry]],
) -> list[tuple[str, DeliveryItem]]:
    """The delivery items of a ``Receipts``, each with the gateway it goes to.

    Args:
        receipts: the committed markers.
        connections: each entry's uid with its connections on live gateways.

    Returns:
        Per marker and gateway, one item of the ``receipt`` frame (encoded once per marker)
        listing every target there with its entry's ``seq``; the reading connection, when it
        is still connected, an ``advance`` item instead.
    """
    out: list[tuple[str, DeliveryItem]] = []
    for item in receipts.items:
        frame = msgspec.Raw(frames.encode(frames.Receipt(by=item.by, mid=item.mid)))
        origin = item.origin
        per_gateway: dict[str, list[Target]] = {}
        advances: list[tuple[str, Target]] = []
        for entry in item.entries:
            for connection in connections.get(entry.uid, ()):
                target = Target(entry.uid, connection.conn_id, entry.seq)
                if (entry.uid, connection.gateway_id, connection.conn_id) == (
                    origin.uid,
                    origin.gateway_id,
                    origin.conn_id,
                ):
                    advances.append((connection.gateway_id, target))
                else:
                    per_gateway.setdefault(connection.gateway_id, []).append(target)
        out += (
            (gateway_id, DeliveryItem(frame=frame, targets=targets))
            for gateway_id, targets in per_gateway.items()
        )
        out += (
            (gateway_id, DeliveryItem(frame=NO_FRAME, targets=[target], advance=True))
            for gateway_id, target in advances
        )
    return out
