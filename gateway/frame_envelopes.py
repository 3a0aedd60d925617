"""The envelopes of a client's ``send``, ``join``, ``leave`` and ``presence`` frames: each frame
checked against the sender's rights and the connection's rooms, then built into the envelope
published to the inbound exchange (``effects.Publish``).

Pure, like ``session.py``, which calls it with the connection's state (its ids, its rooms, its
identity) and keeps the state; ``queries.py`` does the same for the history frames. Mids and
time come in as arguments.
"""

from collections.abc import Callable, Collection

from gateway.effects import Effect, Publish, Reply
from gateway.tokens import Identity
from proto import envelopes, frames, rules
from proto.codes import ErrorCode
from proto.errors import FrameRejected
from proto.names import KEY_PRESENCE, KEY_ROOM_JOINED, KEY_ROOM_LEFT, KEY_SEND


def outgoing(
    frame: frames.Send,
    sender: Identity,
    rooms: Collection[str],
    next_mid: Callable[[int], str],
    now_ms: int,
    *,
    conn_id: str,
    gateway_id: str,
) -> Publish:
    """Check a send's addressing and the sender's right to it; build its envelope.

    Args:
        frame: the ``send``.
        sender: the connection's verified identity.
        rooms: the rooms the connection is in.
        next_mid: draws the message's mid for a time (``MidFactory.next_mid``); called only
            for a send that passed the checks.
        now_ms: the current Unix time in milliseconds.
        conn_id: the sending connection.
        gateway_id: the gateway holding it.

    Raises:
        FrameRejected: ``invalid_field`` unless exactly one of ``to``, ``group``, ``room``
            and ``broadcast`` is set; ``not_member`` for a room this connection has not
            joined; ``forbidden`` for a broadcast without the token's ``broadcast`` claim;
            ``invalid_field`` for a body that breaks the rules of ``proto/rules.py``.
    """
    addresses = (
        frame.to is not None,
        frame.group is not None,
        frame.room is not None,
        frame.broadcast,
    )
    if sum(addresses) != 1:
        raise FrameRejected(
            ErrorCode.INVALID_FIELD,
            "send needs exactly one of to, group, room and broadcast: true",
            frame.id,
        )
    if frame.room is not None and frame.room not in rooms:
        raise FrameRejected(
            ErrorCode.NOT_MEMBER, "join the room before sending to it", frame.id
        )
    if frame.broadcast and not sender.may_broadcast:
        raise FrameRejected(
            ErrorCode.FORBIDDEN, "the token does not allow broadcasts", frame.id
        )
    violation = rules.body_violation(bytes(frame.body))
    if violation is not None:
        raise FrameRejected(ErrorCode.INVALID_FIELD, f"$.body {violation}", frame.id)
    mid = next_mid(now_ms)
    message = envelopes.Outgoing(
        mid=mid,
        sender=sender.uid,
        client_id=frame.id,
        to=frame.to,
        group=frame.group,
        room=frame.room,
        broadcast=frame.broadcast,
        transient=frame.transient,
        body=frame.body,
        ts=now_ms,
        gateway_id=gateway_id,
        conn_id=conn_id,
    )
    # The router answers: only it knows whether the id was used before (a retry gets
    # the first mid) and who the members of a group are.
    return Publish(KEY_SEND, envelopes.encode(message), mid=mid, client_id=frame.id)


def room_joined(
    frame: frames.Join,
    identity: Identity,
    rooms: Collection[str],
    *,
    is_public: bool,
    max_rooms: int,
    conn_id: str,
    gateway_id: str,
) -> list[Effect]:
    """Publish a join the token allows; a room already joined is answered at once.

    Args:
        frame: the ``join``.
        identity: the connection's verified identity.
        rooms: the rooms the connection is in.
        is_public: the room may be joined without a claim (``SWITCHBOARD_PUBLIC_ROOM_PREFIX``).
        max_rooms: how many rooms the connection may be in at once.
        conn_id: the joining connection.
        gateway_id: the gateway holding it.

    Raises:
        FrameRejected: ``forbidden`` when no pattern of the ``rooms`` claim matches and the
            room is not public, or when the connection is in ``max_rooms`` rooms already
            (leave one first).
    """
    if not (is_public or identity.may_join(frame.room)):
        raise FrameRejected(
            ErrorCode.FORBIDDEN, "the token does not allow this room", frame.id
        )
    joined = frames.encode(frames.Joined(id=frame.id, room=frame.room))
    if frame.room in rooms:
        return [Reply(joined)]
    if len(rooms) >= max_rooms:
        raise FrameRejected(
            ErrorCode.FORBIDDEN,
            f"a connection may be in at most {max_rooms} rooms; leave one first",
            frame.id,
        )
    envelope = envelopes.RoomJoined(
        uid=identity.uid, conn_id=conn_id, gateway_id=gateway_id, room=frame.room
    )
    return [
        Publish(
            KEY_ROOM_JOINED,
            envelopes.encode(envelope),
            client_id=frame.id,
            answer=joined,
            room=frame.room,
        )
    ]


def room_left(
    frame: frames.Leave,
    identity: Identity,
    rooms: Collection[str],
    *,
    conn_id: str,
    gateway_id: str,
) -> list[Effect]:
    """Publish the leave of a joined room; any other room is answered ``left`` at once."""
    left = frames.encode(frames.Left(id=frame.id, room=frame.room))
    if frame.room not in rooms:
        return [Reply(left)]
    envelope = envelopes.RoomLeft(
        uid=identity.uid, conn_id=conn_id, gateway_id=gateway_id, room=frame.room
    )
    return [
        Publish(
            KEY_ROOM_LEFT,
            envelopes.encode(envelope),
            client_id=frame.id,
            answer=left,
            room=frame.room,
        )
    ]


def presence_asked(
    frame: frames.PresenceQuery, identity: Identity, *, conn_id: str, gateway_id: str
) -> Publish:
    """The envelope of a presence query; the router answers with a delivery to the
    connection."""
    asked = envelopes.PresenceAsked(
        uid=identity.uid,
        conn_id=conn_id,
        gateway_id=gateway_id,
        client_id=frame.id,
        uids=frame.uids,
    )
    return Publish(KEY_PRESENCE, envelopes.encode(asked), client_id=frame.id)
