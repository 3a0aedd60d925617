"""What the offline store announces about the rows it inserted or refused.

Inserted rows become one ``Saved`` for the routers (each uid with its smallest new mid, so that
a uid online now is replayed at once) and ``message.offline`` events for backends. Rows over
their uid's cap become a ``recipient_full`` error frame for each sending connection and
``message.refused`` events. Pure: ``consumers.py`` publishes them through ``bus.py``.
"""

from collections.abc import Iterable, Sequence

import msgspec

from offline_store.replay import MAX_ROUTING_KEY_BYTES, GatewayDelivery
from offline_store.rows import RowKey, UndeliveredRow, unique_rows
from proto import frames
from proto.codes import ErrorCode
from proto.envelopes import (
    Delivery,
    DeliveryItem,
    MessageOffline,
    MessageRefused,
    Saved,
    SavedUid,
    Target,
)
from proto.inbox import InboxItem
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES, pack_delivery


def saved_envelope(keys: Iterable[RowKey]) -> Saved | None:
    """Return the ``Saved`` envelope for new rows: each uid with its smallest new mid.

    Args:
        keys: the keys of the rows that were committed (duplicates allowed).

    Returns:
        ``Saved`` with uids in sorted order, or None when there is nothing to announce.
    """
    first_mids: dict[str, str] = {}
    for key in keys:
        known = first_mids.get(key.uid)
        if known is None or key.mid < known:
            first_mids[key.uid] = key.mid
    if not first_mids:
        return None
    return Saved(uids=[SavedUid(uid, first_mids[uid]) for uid in sorted(first_mids)])


def message_offline_events(
    keys: Iterable[RowKey], ts_ms: int, items: Iterable[InboxItem] = ()
) -> list[MessageOffline]:
    """One ``message.offline`` event per new row, for backends that notify offline users.

    Args:
        keys: the keys of the rows that were committed (duplicates dropped here).
        ts_ms: when they were stored, Unix milliseconds.
        items: history on, the inbox batch's items: an event names its row's sender and
            conversation. Without its message here (the relay's rows), it names neither.
    """
    by_mid = {item.mid: item for item in items}
    events: list[MessageOffline] = []
    for uid, mid in dict.fromkeys((key.uid, key.mid) for key in keys):
        item = by_mid.get(mid)
        if item is None:
            events.append(MessageOffline(uid=uid, mid=mid, ts=ts_ms))
            continue
        events.append(
            MessageOffline(
                uid=uid,
                mid=mid,
                ts=ts_ms,
                sender=item.sender,
                peer=item.sender if item.group is None else None,
                group=item.group,
            )
        )
    return events


def refusals(
    rows: Sequence[UndeliveredRow],
    ts_ms: int,
    max_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES,
) -> tuple[list[GatewayDelivery], list[MessageRefused]]:
    """What the store says about rows it refused because their uid's store is full.

    Each sending connection gets one ``error`` frame (``recipient_full``) per refused row, with
    its ``send``'s id, the mid and the recipient; every refused row also makes a
    ``message.refused`` event for backends (a backend's own ``api.send`` has no connection).
    A row that came twice (the same uid and mid, delivered at least once) is told once.

    Args:
        rows: the refused rows, as they came (their origin, when known, says who sent them).
        ts_ms: when they were refused, Unix milliseconds.
        max_bytes: the most bytes of one message (``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``).

    Returns:
        One ``Delivery`` per gateway of a sending connection, and the events.
    """
    per_gateway: dict[str, list[DeliveryItem]] = {}
    events: list[MessageRefused] = []
    for row in unique_rows(rows):
        origin = row.origin
        events.append(
            MessageRefused(
                uid=row.uid,
                mid=row.mid,
                code=ErrorCode.RECIPIENT_FULL,
                ts=ts_ms,
                sender=origin.uid if origin else "",
                client_id=origin.client_id if origin else "",
            )
        )
        if origin is None or not (origin.gateway_id and origin.conn_id):
            continue  # a backend's message: the event alone tells
        if len(origin.gateway_id.encode()) > MAX_ROUTING_KEY_BYTES:
            continue
        error = frames.Error(
            code=ErrorCode.RECIPIENT_FULL,
            message="the recipient's offline store is full: the message was not kept",
            id=origin.client_id or None,
            mid=row.mid,
            to=row.uid,
        )
        per_gateway.setdefault(origin.gateway_id, []).append(
            DeliveryItem(
                frame=msgspec.Raw(frames.encode(error)),
                targets=[Target(origin.uid, origin.conn_id)],
            )
        )
    deliveries = [
        GatewayDelivery(gateway_id, Delivery(items=packed.items), packed.body)
        for gateway_id, items in per_gateway.items()
        for packed in pack_delivery(items, max_bytes)
    ]
    return deliveries, events
