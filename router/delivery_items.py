"""The items of deliveries: what a gateway pushes to its connections (a client's ``message``
frame, ``ready``, ``kicked``, errors) and the instructions it follows (throttle a uid,
announce its connections again).

Pure: no I/O. routing.py decides which items go to which gateway; publications.py packs them
into ``Delivery`` messages.
"""

from collections.abc import Iterable, Sequence

import msgspec

from proto import frames
from proto.codes import CloseCode, ErrorCode
from proto.envelopes import DeliveryItem, Origin, Outgoing, Target
from router.results import (
    PresenceEntry,
)


def message_frame(outgoing: Outgoing) -> msgspec.Raw:
    """The client's ``message`` frame for a message, encoded once."""
    return msgspec.Raw(
        frames.encode(
            frames.Message(
                mid=outgoing.mid,
                sender=outgoing.sender,
                body=outgoing.body,
                ts=outgoing.ts,
                to=outgoing.to,
                group=outgoing.group,
                room=outgoing.room,
                broadcast=outgoing.broadcast,
                transient=outgoing.transient,
            )
        )
    )


def add_message_items(
    outgoing: Outgoing,
    recipients: Sequence[tuple[str, Sequence[PresenceEntry]]],
    per_gateway: dict[str, list[DeliveryItem]],
    offline: list[DeliveryItem],
) -> None:
    """Add a message for one uid or several: one item per gateway, one for the offline store.

    A transient message is for the connections online now: its items are not durable (no
    ``ack`` awaited, nothing handed over) and none goes to the offline store.

    Args:
        outgoing: the message.
        recipients: each recipient uid with its connections on live gateways.
        per_gateway: the items of each gateway's delivery so far; extended with ONE
            item per gateway, listing every target connection of every recipient there.
        offline: the items for the offline store so far; extended with ONE item
            listing the recipients that have no connection, if any (never for a
            transient message).
    """
    frame = message_frame(outgoing)
    origin = origin_of(outgoing)
    targets: dict[str, list[Target]] = {}
    absent: list[Target] = []
    for uid, connections in recipients:
        if not connections:
            absent.append(Target(uid, ""))
        for connection in connections:
            targets.setdefault(connection.gateway_id, []).append(
                Target(uid, connection.conn_id)
            )
    for gateway_id, gateway_targets in targets.items():
        per_gateway.setdefault(gateway_id, []).append(
            transient_item(frame, gateway_targets, outgoing.mid)
            if outgoing.transient
            else message_item(frame, gateway_targets, outgoing.mid, origin)
        )
    if absent and not outgoing.transient:
        offline.append(message_item(frame, absent, outgoing.mid, origin))


def origin_of(outgoing: Outgoing) -> Origin:
    """Who sent a message, for the offline store's ``recipient_full`` notice.

    A backend's message (``api.send``) has no connection: its origin names the sender alone.
    """
    return Origin(
        outgoing.sender, outgoing.gateway_id, outgoing.conn_id, outgoing.client_id
    )


def room_items(
    outgoing: Outgoing, room: str, gateway_ids: Iterable[str]
) -> list[tuple[str, DeliveryItem]]:
    """One item (no targets, not durable) per gateway that has connections in the room."""
    frame = message_frame(outgoing)
    item = DeliveryItem(frame=frame, targets=[], mid=outgoing.mid, room=room)
    return [(gateway_id, item) for gateway_id in gateway_ids]


def broadcast_items(
    outgoing: Outgoing, gateway_ids: Iterable[str]
) -> list[tuple[str, DeliveryItem]]:
    """One item (no targets, not durable) per live gateway, for all its connections."""
    frame = message_frame(outgoing)
    item = DeliveryItem(frame=frame, targets=[], mid=outgoing.mid, broadcast=True)
    return [(gateway_id, item) for gateway_id in gateway_ids]


def kick_items(
    uid: str, reason: str, connections: Sequence[PresenceEntry]
) -> list[tuple[str, DeliveryItem]]:
    """Per gateway, one ``kicked`` item for the uid's connections there, then a close."""
    frame = msgspec.Raw(frames.encode(frames.Kicked(reason=reason)))
    targets: dict[str, list[Target]] = {}
    for connection in connections:
        targets.setdefault(connection.gateway_id, []).append(
            Target(uid, connection.conn_id)
        )
    return [
        (
            gateway_id,
            DeliveryItem(
                frame=frame, targets=gateway_targets, close_code=int(CloseCode.KICKED)
            ),
        )
        for gateway_id, gateway_targets in targets.items()
    ]


def message_item(
    frame: msgspec.Raw, targets: list[Target], mid: str, origin: Origin | None = None
) -> DeliveryItem:
    """A message for some connections; durable: an unacknowledged copy is stored."""
    return DeliveryItem(
        frame=frame, targets=targets, mid=mid, durable=True, origin=origin
    )


def transient_item(frame: msgspec.Raw, targets: list[Target], mid: str) -> DeliveryItem:
    """A transient message for some connections; not durable: a copy that misses is lost."""
    return DeliveryItem(frame=frame, targets=targets, mid=mid)


def frame_item(frame: frames.ServerFrame, targets: list[Target]) -> DeliveryItem:
    """A frame that is not a message (no mid, not durable) for some connections."""
    return DeliveryItem(frame=msgspec.Raw(frames.encode(frame)), targets=targets)


def throttle_item(uid: str, throttle_ms: int) -> DeliveryItem:
    """Refuse this uid's frames for ``throttle_ms`` (no frame, no targets, not stored)."""
    return DeliveryItem(
        frame=msgspec.Raw(b"null"),
        targets=[],
        throttle_uid=uid,
        throttle_ms=throttle_ms,
    )


def reannounce_item() -> DeliveryItem:
    return DeliveryItem(frame=msgspec.Raw(b"null"), targets=[], reannounce=True)


def too_many_connections_item(uid: str, conn_id: str) -> DeliveryItem:
    """The ``too_many_connections`` error that closes a connection over the uid's limit."""
    code = ErrorCode.TOO_MANY_CONNECTIONS
    error = frames.Error(
        code=code, message="this uid holds too many connections; close one first"
    )
    return DeliveryItem(
        frame=msgspec.Raw(frames.encode(error)),
        targets=[Target(uid, conn_id)],
        close_code=int(CloseCode.TOO_MANY_CONNECTIONS),
    )


def ready_item(uid: str, conn_id: str) -> DeliveryItem:
    """The ``ready`` frame for a connection that was just registered."""
    return frame_item(frames.Ready(uid=uid, conn=conn_id), [Target(uid, conn_id)])
