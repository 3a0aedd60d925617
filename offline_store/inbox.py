"""The inbox of each uid: a router's ``InboxItem``s in, the rows to write and then the deliveries
to publish out.

With ``SWITCHBOARD_HISTORY`` on, a 1:1 or group message is written before it is delivered
(``docs/history.md``, section 4.2): one ``messages`` row (the frame once, without ``seq``), one
``inbox`` row per uid it enters (each recipient and its sender), and for a recipient that had no
connection a thin row of the undelivered table (``(uid, mid, seq)``, no frame) for its next
``init`` without ``since``. Once the batch is written and numbered (``numbering.py``), each
copy goes to its gateway with its ``seq`` in its target, and the sending connection gets an
``advance`` item instead of its own message.

Pure: ``inbox_writer.py`` does the awaiting, ``inbox_tables.py`` the SQL.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from offline_store.numbering import EntryKey
from offline_store.replay import MAX_ROUTING_KEY_BYTES, GatewayDelivery
from offline_store.rows import storable_problem
from proto.envelopes import Delivery, DeliveryItem, Target
from proto.inbox import InboxItem, encode
from proto.items import Decoded, RefusedItem, wrap_items
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES, pack_delivery

NO_FRAME = msgspec.Raw(b"null")


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One row of ``messages``: a message once."""

    mid: str
    sender: str
    frame: str
    """The ``message`` frame as the router encoded it, without ``seq``."""


@dataclass(frozen=True, slots=True)
class EntryRow:
    """One row of ``inbox`` but its ``seq``, which numbering gives at commit."""

    uid: str
    mid: str
    conv: str
    """The conversation: ``u:<peer>`` or ``g:<group>``."""
    is_own: bool
    is_absent: bool = False
    """A recipient without a connection: a thin undelivered row too (``InboxRows.absent``)."""


@dataclass(frozen=True, slots=True)
class InboxRows:
    """What one batch of ``InboxItem``s writes."""

    items: list[InboxItem]
    """The items kept, each mid once, in batch order: their deliveries follow the commit."""
    messages: list[MessageRow]
    entries: list[EntryRow]
    """Each (uid, mid) once, in batch order: each uid's entries are numbered in this order."""
    absent: list[EntryKey]
    """Recipients that had no connection: a thin undelivered row each, within their cap."""
    refused: list[RefusedItem]
    """Items that can never be written, each to be dead-lettered alone."""


def conversation(item: InboxItem, uid: str) -> str:
    """The conversation a message belongs to in ``uid``'s inbox: its group, or the other uid
    (for the sender, the recipient; a message to oneself is a conversation with oneself)."""
    if item.group is not None:
        return f"g:{item.group}"
    peer = item.to if uid == item.sender else item.sender
    return f"u:{peer}"


def rows_from_items(decoded: Decoded[InboxItem]) -> InboxRows:
    """The rows a batch of items writes; an item that PostgreSQL could never keep is refused.

    A mid that comes twice (a router batch redelivered into the same store batch) is written
    once: its first item wins. An entry's uid that comes twice in one item is one entry.

    Args:
        decoded: the items of the batch's ``InboxBatch`` messages, in order.
    """
    rows = InboxRows([], [], [], [], list(decoded.refused))
    seen: set[str] = set()
    for index, item in enumerate(decoded.items):
        if item.mid in seen:
            continue
        frame = _frame_text(item)
        problem = _item_problem(item, frame)
        if frame is None or problem is not None:
            raw = wrap_items([encode(item)])
            reason = problem or "$.frame is not UTF-8"
            rows.refused.append(RefusedItem(raw, reason, decoded.position(index)))
            continue
        seen.add(item.mid)
        rows.items.append(item)
        rows.messages.append(MessageRow(item.mid, item.sender, frame))
        uids: set[str] = set()
        for entry in item.entries:
            if entry.uid in uids:
                continue
            uids.add(entry.uid)
            is_absent = not entry.targets and is_recipient(item, entry.uid, entry.own)
            rows.entries.append(
                EntryRow(
                    entry.uid,
                    item.mid,
                    conversation(item, entry.uid),
                    entry.own,
                    is_absent,
                )
            )
            if is_absent:
                rows.absent.append(EntryKey(entry.uid, item.mid))
    return rows


def is_recipient(item: InboxItem, uid: str, own: bool) -> bool:
    """Whether the entry is a recipient's (kept for its ``init`` when it has no connection):
    not the sender's own, unless the message is to the sender itself."""
    return not own or item.to == uid


def _frame_text(item: InboxItem) -> str | None:
    """The item's frame as text; None when it is not UTF-8."""
    try:
        return bytes(item.frame).decode()
    except UnicodeDecodeError:
        return None


def _item_problem(item: InboxItem, frame: str | None) -> str | None:
    """Why PostgreSQL could never keep this item (``frame``: its text), or None."""
    if (item.to is None) == (item.group is None):
        return "exactly one of `to` and `group` is needed - at `$`"
    if frame is None:
        return "$.frame is not UTF-8"
    if "\x00" in frame:
        return "$.frame contains a NUL character"
    if not frame.startswith("{") or frame == "{}":
        return "$.frame is not a message frame"
    checks = [
        (item.mid, "$.mid"),
        (item.sender, "$.sender"),
        (item.to or item.group or "", "$.to"),
        *((entry.uid, "$.entries[].uid") for entry in item.entries),
    ]
    for value, path in checks:
        problem = storable_problem(value, path)
        if problem is not None:
            return problem
    for entry in item.entries:
        for target in entry.targets:
            if len(target.gateway_id.encode()) > MAX_ROUTING_KEY_BYTES:
                return "$.entries[].targets[].gateway_id is longer than a routing key"
    return None


def inbox_deliveries(
    items: Sequence[InboxItem],
    seqs: Mapping[EntryKey, int],
    max_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES,
    syncing: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> list[GatewayDelivery]:
    """The deliveries of a committed batch: one per gateway (more when too large).

    Each message is one durable item per gateway listing its copies there, each target with its
    uid's ``seq``; the frame is the router's, byte for byte (the gateway writes each copy's
    ``seq`` in). The sending connection, unless it is listed itself (a message to oneself), gets
    an ``advance`` item with the sender's ``seq`` instead. Items keep batch order per gateway.

    Args:
        items: the batch's items (``InboxRows.items``).
        seqs: each entry's ``seq`` (fresh entries numbered, redelivered ones read back); an
            entry without one is not delivered.
        max_bytes: the most bytes of one message (``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``).
        syncing: uid -> ``(gateway_id, conn_id)`` of the connections that started a sync
            lately (``recent_syncs``, read after the commit): each gets the copies of its uid
            that the router did not list (a message routed before the connection registered,
            committed after its window was read: ``docs/history.md``, section 5.2), but the
            sending connection, which gets its ``advance``.
    """
    per_gateway: dict[str, list[DeliveryItem]] = {}
    for item in items:
        targets: dict[str, list[Target]] = {}
        own_seq: int | None = None
        is_origin_listed = False
        origin = item.origin
        for entry in item.entries:
            seq = seqs.get(EntryKey(entry.uid, item.mid))
            if seq is None:
                continue
            if entry.uid == item.sender:
                own_seq = seq
            # Most uids have no connection that synced lately: nothing to add.
            added = syncing.get(entry.uid, ()) if syncing else ()
            listed = (
                {(t.gateway_id, t.conn_id) for t in entry.targets} if added else set()
            )
            for gateway_id, conn_id in added:
                is_origin = origin is not None and (
                    entry.uid,
                    gateway_id,
                    conn_id,
                ) == (origin.uid, origin.gateway_id, origin.conn_id)
                if (gateway_id, conn_id) not in listed and not is_origin:
                    listed.add((gateway_id, conn_id))
                    targets.setdefault(gateway_id, []).append(
                        Target(entry.uid, conn_id, seq)
                    )
            for target in entry.targets:
                targets.setdefault(target.gateway_id, []).append(
                    Target(entry.uid, target.conn_id, seq)
                )
                if (
                    origin is not None
                    and entry.uid == origin.uid
                    and (target.gateway_id, target.conn_id)
                    == (origin.gateway_id, origin.conn_id)
                ):
                    is_origin_listed = True
        for gateway_id, gateway_targets in targets.items():
            per_gateway.setdefault(gateway_id, []).append(
                DeliveryItem(
                    frame=item.frame,
                    targets=gateway_targets,
                    mid=item.mid,
                    durable=True,
                    origin=origin,
                )
            )
        if (
            origin is not None
            and origin.gateway_id
            and origin.conn_id
            and own_seq is not None
            and not is_origin_listed
            and len(origin.gateway_id.encode()) <= MAX_ROUTING_KEY_BYTES
        ):
            per_gateway.setdefault(origin.gateway_id, []).append(
                DeliveryItem(
                    frame=NO_FRAME,
                    targets=[Target(origin.uid, origin.conn_id, own_seq)],
                    mid=item.mid,
                    advance=True,
                )
            )
    return [
        GatewayDelivery(gateway_id, Delivery(items=packed.items), packed.body)
        for gateway_id, gateway_items in per_gateway.items()
        for packed in pack_delivery(gateway_items, max_bytes)
    ]
