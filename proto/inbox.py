"""The inbox envelope: a router's 1:1 and group messages for the offline stores to number.

With ``SWITCHBOARD_HISTORY`` on, a router does not publish 1:1 and group messages to gateways:
it publishes one ``InboxBatch`` per batch (``router.inbox`` -> ``<ns>.inbox``) with, per message,
its frame encoded once (without ``seq``) and, per inbox the message enters (each recipient's,
and the sender's own), the connections it found in Redis. An offline store writes the batch in
one transaction, gives each entry its uid's next ``seq``, and then delivers each copy with its
``seq`` (``Target.seq``) to the gateways (``docs/history.md``, sections 4.2 and 7.2).

Array-like where a batch holds many: a group of 1,000 members is 1,000 short arrays.
"""

import msgspec

from proto.envelopes import Envelope, Origin
from proto.items import (
    DECODE_ERRORS,
    Decoded,
    RefusedItem,
    reason_of,
    split_items,
    wrap_items,
)


class EntryTarget(msgspec.Struct, frozen=True, array_like=True):
    """One connection of an entry's uid, as the router found it: ``[gateway_id, conn_id]``."""

    gateway_id: str
    conn_id: str


class InboxEntry(msgspec.Struct, frozen=True, array_like=True):
    """One inbox a message enters: ``[uid, own, targets]``.

    ``own``: the uid sent the message (its own entry: not unread). ``targets``: the uid's
    connections to deliver it to, the sending connection excepted; empty when the uid had
    none (a recipient's copy is then kept for its next ``init`` without ``since``).
    """

    uid: str
    own: bool
    targets: list[EntryTarget]


class InboxItem(Envelope, frozen=True):
    """One message and the inboxes it enters.

    Exactly one of ``to`` and ``group`` is set. ``frame`` is the client's ``message`` frame
    without ``seq``, encoded once by the router and never re-encoded. ``origin`` is the sending
    connection (a backend's ``api.send`` names no connection): it gets an ``advance`` item, and
    ``recipient_full`` errors when a recipient's store is full.
    """

    mid: str
    sender: str
    frame: msgspec.Raw
    entries: list[InboxEntry]
    to: str | None = None
    group: str | None = None
    origin: Origin | None = None


class InboxBatch(Envelope, frozen=True):
    """The 1:1 and group messages of one router batch, in the order they were routed."""

    items: list[InboxItem]


encode = msgspec.json.Encoder().encode
_DECODE_BATCH = msgspec.json.Decoder(InboxBatch).decode
_DECODE_ITEM = msgspec.json.Decoder(InboxItem).decode


def decode_inbox_items(body: bytes) -> Decoded[InboxItem]:
    """Decode an ``InboxBatch``: its items that decode, and the others refused one by one.

    Raises:
        BadEnvelope: not even the items can be told apart (not a JSON object with ``items``).
    """
    try:
        return Decoded(_DECODE_BATCH(body).items, [])
    except DECODE_ERRORS:
        pass  # find which items are bad, below
    items: list[InboxItem] = []
    positions: list[int] = []
    refused: list[RefusedItem] = []
    for index, raw in enumerate(split_items(body)):
        try:
            items.append(_DECODE_ITEM(raw))
        except DECODE_ERRORS as exc:
            refused.append(RefusedItem(wrap_items([raw]), reason_of(exc), index))
        else:
            positions.append(index)
    return Decoded(items, refused, positions)
