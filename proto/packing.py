"""AMQP messages bounded by bytes: the items of a ``Delivery`` (or any array envelope) packed into
as few messages as fit ``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES`` each.

RabbitMQ refuses a message larger than its ``max_message_size`` (16 MiB by default since 4.0,
128 MiB before) by closing the channel: a batch whose delivery outgrew it would fail at every
retry. Each item is encoded once; a message is the items' bytes joined, so nothing is encoded
twice. An item too large on its own is split by its targets (a group message for many members);
an item with one target that is still too large goes alone: the edge's limits (frame and command
sizes) keep it far below any sane setting.

Pure: no I/O.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from proto.envelopes import DeliveryItem, Saved, SavedUid, SyncWindow, encode

DEFAULT_MAX_AMQP_MESSAGE_BYTES = 4 * 1024 * 1024
"""The default of ``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``: well under RabbitMQ's 16 MiB."""
MIN_MAX_AMQP_MESSAGE_BYTES = 64 * 1024
"""The smallest accepted setting: a message must hold at least one frame of the default size."""

_ARRAY_OVERHEAD = len(b'{"items":[]}')


class _RawItems(msgspec.Struct, omit_defaults=True):
    """A ``Delivery`` or a ``Batch`` whose items are already encoded."""

    items: list[msgspec.Raw]
    next_mid: str = ""
    from_mid: str = ""
    sync: SyncWindow | None = None


class _Items(msgspec.Struct, omit_defaults=True):
    """A ``Delivery``, encoded the same way: the one message when everything fits."""

    items: list[DeliveryItem]
    next_mid: str = ""
    from_mid: str = ""
    sync: SyncWindow | None = None


@dataclass(frozen=True, slots=True)
class PackedDelivery:
    """One ``Delivery`` message: its body, and the items it carries."""

    body: bytes
    items: list[DeliveryItem]
    next_mid: str = ""
    """``Delivery.next_mid``: set on the last message of a replay window only."""
    from_mid: str = ""
    """``Delivery.from_mid``: where this message's part of a replay window starts."""
    sync: SyncWindow | None = None
    """``Delivery.sync``: how far this message's part of a sync window reaches."""


def runs_within(sizes: Sequence[int], max_bytes: int, overhead: int) -> list[range]:
    """Cut consecutive elements into runs whose JSON array fits ``max_bytes``.

    Args:
        sizes: the encoded size of each element, in order.
        max_bytes: the most bytes one message may have.
        overhead: the bytes of the envelope around the array (``{"items":[]}``).

    Returns:
        Ranges of indexes covering every element in order; an element too large on its own
        gets a range of its own.
    """
    runs: list[range] = []
    start, size = 0, overhead
    for index, element_size in enumerate(sizes):
        extra = element_size + (1 if index > start else 0)  # the comma
        if index > start and size + extra > max_bytes:
            runs.append(range(start, index))
            start, size, extra = index, overhead, element_size
        size += extra
    if start < len(sizes):
        runs.append(range(start, len(sizes)))
    return runs


def split_by_targets(item: DeliveryItem, max_bytes: int) -> list[DeliveryItem]:
    """An item as copies that each fit ``max_bytes`` in a ``Delivery``, by halving its targets.

    An item that fits, or that has one target or none, is returned as it is.
    """
    if len(item.targets) <= 1 or len(encode(item)) + _ARRAY_OVERHEAD <= max_bytes:
        return [item]
    half = len(item.targets) // 2
    return [
        *split_by_targets(
            msgspec.structs.replace(item, targets=item.targets[:half]), max_bytes
        ),
        *split_by_targets(
            msgspec.structs.replace(item, targets=item.targets[half:]), max_bytes
        ),
    ]


def pack_delivery(
    items: Sequence[DeliveryItem],
    max_bytes: int,
    next_mid: str = "",
    from_mid: str = "",
    sync: SyncWindow | None = None,
) -> list[PackedDelivery]:
    """The ``Delivery`` messages carrying ``items`` in order, each at most ``max_bytes``.

    Args:
        items: the items for one queue (one gateway, or the offline store).
        max_bytes: ``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``.
        next_mid: a replay window's ``Delivery.next_mid``; only the last message carries it,
            so that a gateway asks for the next window after it has every row of this one.
        from_mid: a replay window's ``Delivery.from_mid``; the first message carries it, each
            later one starts where it starts (at its first item's mid).
        sync: a sync window's ``Delivery.sync``; the last message carries it, each earlier
            one a part of the window reaching its own last entry, with more to follow.

    Returns:
        One message when everything fits (the usual case), else as few as fit; none for no
        items.
    """
    if not items:
        return []
    whole = encode(_Items(list(items), next_mid, from_mid, sync))
    if len(whole) <= max_bytes:  # the usual case: one message, encoded in one call
        return [PackedDelivery(whole, list(items), next_mid, from_mid, sync)]
    parts = [part for item in items for part in split_by_targets(item, max_bytes)]
    encoded = [encode(part) for part in parts]
    overhead = len(encode(_RawItems([], next_mid, from_mid, sync)))
    runs = runs_within([len(e) for e in encoded], max_bytes, overhead)
    packed = []
    for number, run in enumerate(runs, start=1):
        run_next_mid = next_mid if number == len(runs) else ""
        run_from_mid = from_mid if number == 1 else parts[run.start].mid
        run_items = [parts[i] for i in run]
        run_sync = sync if number == len(runs) else _part_of_window(sync, run_items)
        body = encode(
            _RawItems(
                [msgspec.Raw(encoded[i]) for i in run],
                run_next_mid,
                run_from_mid,
                run_sync,
            )
        )
        packed.append(
            PackedDelivery(body, run_items, run_next_mid, run_from_mid, run_sync)
        )
    return packed


def _part_of_window(
    sync: SyncWindow | None, items: Sequence[DeliveryItem]
) -> SyncWindow | None:
    """The ``sync`` of a message that carries the first part of a sync window: up to its last
    entry's ``seq``, more following (the window's later messages)."""
    if sync is None:
        return None
    seqs = [t.seq for item in items for t in item.targets if t.seq is not None]
    return SyncWindow(to_seq=max(seqs, default=0), more=True, conn_id=sync.conn_id)


def pack_saved(uids: Sequence[SavedUid], max_bytes: int) -> list[bytes]:
    """The ``Saved`` messages announcing ``uids`` in order, each at most ``max_bytes``."""
    encoded = [encode(uid) for uid in uids]
    overhead = len(encode(Saved(uids=[])))
    return [
        encode(Saved(uids=[uids[i] for i in run]))
        for run in runs_within([len(e) for e in encoded], max_bytes, overhead)
    ]
