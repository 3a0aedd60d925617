"""A delivery's copies for syncing connections, taken apart from the rest (history on).

Pure, beside ``fanout.py``. A connection that sent ``init`` with ``since`` gets its uid's inbox
by ``seq`` through its ``SyncCursor`` (``cursor.py``): live copies (targets with a ``seq``),
``advance`` items (its own messages) and the store's sync windows (``Delivery.sync``) go to the
cursor, not to the ledger's admission. Such copies never pin their AMQP delivery and are never
handed to the offline store: history keeps them. Replayed rows of the undelivered table
(``stored`` items) are dropped for a syncing connection: it gets every entry by ``seq``.
Everything else (``ready``, ``sent``, errors, room and broadcast frames) takes today's path.
"""

from collections.abc import Container
from dataclasses import dataclass, field

import msgspec

from gateway.cursor import Entry
from proto.envelopes import Delivery, DeliveryItem, SyncWindow
from proto.frames import with_seq


@dataclass(frozen=True, slots=True)
class SyncSplit:
    """What one delivery brings to syncing connections, and what takes today's path."""

    rest: Delivery
    """The delivery without the syncing connections' copies."""
    live: dict[str, list[Entry]] = field(default_factory=dict)
    """conn_id -> the live copies (and advances) for that syncing connection, in order."""
    window: SyncWindow | None = None
    """Set when the delivery is a sync window: its entries are in ``window_entries``."""
    window_entries: dict[str, list[Entry]] = field(default_factory=dict)
    """conn_id -> the window's entries for it (a window is for one connection)."""


def _entry(item: DeliveryItem, seq: int) -> Entry:
    if item.advance:
        return Entry(seq, item.mid, None)
    # Every pushed frame carries its seq, a receipt's too (as live ones do): a client keeps
    # the highest it processed. A receipt entry has no mid, so the cursor never takes it for
    # a message this connection sent.
    return Entry(seq, item.mid, with_seq(bytes(item.frame), seq))


def split_sync(delivery: Delivery, syncing: Container[str]) -> SyncSplit:
    """Take the copies for syncing connections (``syncing``: their conn_ids) out of a delivery.

    A sync window (``Delivery.sync``) goes to its connection (``SyncWindow.conn_id``) whole;
    a window for a connection that is not syncing here is dropped.
    """
    if delivery.sync is not None:
        conn_id = delivery.sync.conn_id
        if conn_id not in syncing:
            return SyncSplit(Delivery(items=[]))
        entries = [
            _entry(item, target.seq)
            for item in delivery.items
            for target in item.targets
            if target.seq is not None and target.conn_id == conn_id
        ]
        return SyncSplit(Delivery(items=[]), {}, delivery.sync, {conn_id: entries})
    live: dict[str, list[Entry]] = {}
    items: list[DeliveryItem] = []
    for item in delivery.items:
        if item.broadcast or item.room or not item.targets:
            items.append(item)
            continue
        kept = []
        for target in item.targets:
            if target.conn_id not in syncing:
                kept.append(target)
            elif item.stored:
                continue  # a replayed row: the connection gets it by seq
            elif target.seq is not None:
                live.setdefault(target.conn_id, []).append(_entry(item, target.seq))
            else:
                kept.append(target)
        if len(kept) == len(item.targets):
            items.append(item)
        elif kept:
            items.append(msgspec.structs.replace(item, targets=kept))
    rest = msgspec.structs.replace(delivery, items=items)
    return SyncSplit(rest, live)


@dataclass(frozen=True, slots=True)
class Ahead:
    """Entries of the store's windows that a syncing connection has no room for yet: the
    gateway keeps them and hands them to the cursor as the client acknowledges, instead of
    reading them again. They are what the store read of ``(cursor, to_seq]``."""

    entries: list[Entry]
    to_seq: int
    """How far the windows they came in reach."""
    more: bool
    """Whether entries follow ``to_seq`` in this sync."""


def with_window(
    ahead: Ahead | None, entries: list[Entry], to_seq: int, more: bool
) -> Ahead:
    """What is kept ahead once a window of the store came (``entries`` in ``seq`` order, all
    the inbox kept of the window's range).

    A window asked for the entries after the ones kept goes after them; one that reaches no
    further (a request answered twice) brings nothing new.
    """
    if ahead is None:
        return Ahead(entries, to_seq, more)
    if to_seq <= ahead.to_seq:
        return ahead
    later = [entry for entry in entries if entry.seq > ahead.to_seq]
    return Ahead(ahead.entries + later, to_seq, more)


def take_ahead(
    ahead: Ahead, free: int, cursor: int
) -> tuple[list[Entry], int, bool, Ahead | None]:
    """The part of the entries kept ahead that the connection may take now (its cap of
    unacknowledged messages), as a window for the cursor, and what stays ahead.

    Args:
        ahead: the entries kept, in ``seq`` order.
        free: messages the connection may still take.
        cursor: the connection's cursor: entries at or below it are pushed already.

    Returns:
        The entries to hand the cursor, how far they reach, whether more follows, and what
        stays ahead (None: nothing; the cursor gets the windows' own end).
    """
    fresh = [entry for entry in ahead.entries if entry.seq > cursor]
    if len(fresh) <= free:
        return fresh, ahead.to_seq, ahead.more, None
    kept = fresh[: max(free, 0)]
    reach = kept[-1].seq if kept else cursor
    return kept, reach, True, Ahead(fresh[len(kept) :], ahead.to_seq, ahead.more)
