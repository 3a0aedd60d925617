"""What a delivery from the gateway's queue means for the connections this gateway holds.

Pure: given a decoded ``Delivery`` and what the hub knows (the connection ids held here, which of
them are in which room, which are initialized), it says which frames to push where, which of them
wait for the client's ``ack``, and which copies go to the offline store because their connection
is not (or no longer) here.

An item reaches either its ``targets``, or every connection here in its ``room``, or (with
``broadcast``) every initialized connection here. A target with a ``seq`` (history on) gets the
frame with its ``seq`` written first (``proto.frames.with_seq``: no decoding); an ``advance``
item (the sending connection's own message) pushes nothing. Room and broadcast frames never
wait for an ``ack``: they are for whoever is there now, and nothing of them goes to the offline
store. An item this gateway cannot carry out is refused alone (``checked_delivery``), for the
hub to dead-letter.
"""

from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass

from msgspec import Raw

from proto.codes import CloseCode
from proto.envelopes import (
    ConnOpened,
    Delivery,
    DeliveryItem,
    RoomJoined,
    Target,
    encode,
)
from proto.frames import with_seq
from proto.items import Decoded, RefusedItem, wrap_items
from proto.names import KEY_CONN_OPENED, KEY_ROOM_JOINED


@dataclass(frozen=True, slots=True)
class Push:
    """Push ``frame`` to one connection."""

    conn_id: str
    frame: bytes
    mid: str
    awaits_ack: bool
    """Held until the client acknowledges it, or handed to the offline store."""
    close_code: int
    """When not 0, close the connection with this code after the push."""
    is_stored: bool = False
    """Replayed from the offline store: counted against the connection's unacknowledged cap,
    but never handed over (its row stays until the client acknowledges it)."""


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    pushes: list[Push]
    handover: list[DeliveryItem]
    """Durable copies whose connections are not here: they go to the offline store."""
    stale: list[Target]
    """Connections that presence still places on this gateway, but that are gone."""


def plan_delivery(
    delivery: Delivery,
    connected: Container[str],
    rooms: Mapping[str, Collection[str]],
    initialized: Collection[str],
) -> DeliveryPlan:
    """Split a delivery into pushes to held connections and copies for the offline store.

    Args:
        delivery: a decoded body from this gateway's queue.
        connected: the connection ids this gateway holds now.
        rooms: room -> the ids of the connections here in that room.
        since: conn_id -> the cursor of each syncing connection (history on): the routers
            ask the store to sync it from there.
        initialized: the ids of the connections here that passed ``init`` (read only for
            broadcast items).
    """
    pushes: list[Push] = []
    handover: list[DeliveryItem] = []
    stale: list[Target] = []
    for item in delivery.items:
        frame = bytes(item.frame)
        if item.broadcast or item.room:
            members = initialized if item.broadcast else rooms.get(item.room, ())
            pushes.extend(
                Push(conn_id, frame, item.mid, False, item.close_code)
                for conn_id in members
                if conn_id in connected
            )
            continue
        if item.advance:
            continue  # the sending connection's own message: it has its `sent`
        awaits_ack = item.durable and not item.stored
        is_stored = item.stored and bool(item.mid)
        missing: dict[int | None, list[Target]] = {}
        for target in item.targets:
            if target.conn_id in connected:
                pushes.append(
                    Push(
                        target.conn_id,
                        frame if target.seq is None else with_seq(frame, target.seq),
                        item.mid,
                        awaits_ack,
                        item.close_code,
                        is_stored,
                    )
                )
                continue
            missing.setdefault(target.seq, []).append(target)
            if target.conn_id:
                stale.append(target)
        if awaits_ack:
            # A numbered copy is handed over with its seq written in, as it would have
            # been pushed: the offline store replays it as it is.
            handover.extend(
                DeliveryItem(
                    frame=item.frame if seq is None else Raw(with_seq(frame, seq)),
                    targets=targets,
                    mid=item.mid,
                    durable=True,
                    origin=item.origin,
                )
                for seq, targets in missing.items()
            )
    return DeliveryPlan(pushes, handover, stale)


CLOSE_CODES = frozenset(int(code) for code in CloseCode)


def item_problem(item: DeliveryItem) -> str | None:
    """Why this gateway cannot carry out a decoded item, or None: it is refused alone."""
    if item.close_code and item.close_code not in CLOSE_CODES:
        return "$.close_code is not a close code of proto.codes.CloseCode"
    return None


@dataclass(frozen=True, slots=True)
class Announcement:
    """One envelope to publish to the inbound exchange."""

    routing_key: str
    body: bytes


def is_reannounce_requested(delivery: Delivery) -> bool:
    return any(item.reannounce for item in delivery.items)


def throttles(delivery: Delivery) -> list[tuple[str, int]]:
    """The uids the routers found over their rate across gateways, and for how long (ms) to
    refuse their frames (``DeliveryItem.throttle_uid``)."""
    return [
        (item.throttle_uid, item.throttle_ms)
        for item in delivery.items
        if item.throttle_uid and item.throttle_ms > 0
    ]


_READY_PREFIX = b'{"type":"ready"'


def is_ready(frame: bytes) -> bool:
    """Whether a frame is ``ready``: the router registered the connection it is pushed to.

    Every service encodes a frame with msgspec, which writes the tag first.
    """
    return frame.startswith(_READY_PREFIX)


def reannouncements(
    gateway_id: str,
    uids: Mapping[str, str],
    rooms: Mapping[str, Collection[str]],
    since: Mapping[str, int] | None = None,
) -> list[Announcement]:
    """What a gateway publishes when the routers lost its presence (``DeliveryItem.reannounce``).

    Args:
        gateway_id: this gateway.
        uids: conn_id -> uid of every initialized connection here.
        rooms: room -> the ids of the connections here in that room.

    Returns:
        A ``ConnOpened`` flagged ``reannounce`` per connection, then a ``RoomJoined`` per
        connection and room it is in (a join recorded already changes nothing).
    """
    opened = [
        Announcement(
            KEY_CONN_OPENED,
            encode(
                ConnOpened(
                    uid=uid,
                    conn_id=conn_id,
                    gateway_id=gateway_id,
                    reannounce=True,
                    since=(since or {}).get(conn_id),
                )
            ),
        )
        for conn_id, uid in sorted(uids.items())
    ]
    joined = [
        Announcement(
            KEY_ROOM_JOINED,
            encode(
                RoomJoined(
                    uid=uids[conn_id], conn_id=conn_id, gateway_id=gateway_id, room=room
                )
            ),
        )
        for room, members in sorted(rooms.items())
        for conn_id in sorted(members)
        if conn_id in uids
    ]
    return opened + joined


def checked_delivery(
    decoded: Decoded[DeliveryItem],
) -> tuple[Delivery, list[RefusedItem]]:
    """The items this gateway can carry out, and the others refused one by one."""
    refused = list(decoded.refused)
    items: list[DeliveryItem] = []
    for index, item in enumerate(decoded.items):
        problem = item_problem(item)
        if problem is None:
            items.append(item)
        else:
            body = wrap_items([encode(item)])
            refused.append(RefusedItem(body, problem, decoded.position(index)))
    delivery = Delivery(
        items=items,
        next_mid=decoded.next_mid,
        from_mid=decoded.from_mid,
        sync=decoded.sync,
    )
    return delivery, refused
