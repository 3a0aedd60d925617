"""What the router consumes, decoded strictly: the envelopes gateways and offline stores
publish (alone or in a ``Batch``), and backend commands (``api.<command>``). A ``Receipts``
(``store.receipts``, history on) is decoded item by item in receipts.py.

Pure: no I/O. An envelope that breaks its schema or ``proto/rules.py`` is a ``BadEnvelope``
(dead-lettered by consumer.py); a bad command is ``Refused`` (answered, or dead-lettered
without a ``reply_to``). What the router reads for an envelope is decided in lookups.py, what
it publishes in routing.py.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import msgspec

from proto import envelopes, rules, sync
from proto.codes import ErrorCode
from proto.commands import RefusedCommand, decode_command_body
from proto.envelopes import (
    ApiBroadcast,
    ApiSend,
    Command,
    ConnClosed,
    ConnOpened,
    GatewayStopped,
    Heartbeat,
    Outgoing,
    PresenceAsked,
    RoomJoined,
    RoomLeft,
    Saved,
)
from proto.errors import BadEnvelope
from proto.items import DECODE_ERRORS, RefusedItem, decode_batch_items, reason_of
from proto.names import (
    API_KEY_PREFIX,
    BATCHABLE_KEYS,
    KEY_CONN_CLOSED,
    KEY_CONN_OPENED,
    KEY_GATEWAY_STOPPED,
    KEY_HEARTBEAT,
    KEY_PRESENCE,
    KEY_ROOM_JOINED,
    KEY_ROOM_LEFT,
    KEY_SAVED,
    KEY_SEND,
)


@dataclass(frozen=True, slots=True)
class ReplyTo:
    """Where a backend command wants its reply: the AMQP ``reply_to`` and ``correlation_id``."""

    queue: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class Call:
    """A backend command (``api.<name>``) that decoded and can be served."""

    name: str
    """The command's name, ``send`` or ``group.add`` (the routing key without ``api.``)."""
    command: Command
    reply_to: ReplyTo | None
    mid: str = ""
    """The mid of the message a ``send`` or ``broadcast`` makes (drawn by the caller)."""
    ts: int = 0
    """When the command was received, Unix ms: the ``ts`` of the message it makes."""
    mids: tuple[str, ...] = ()
    """The mids of the messages a ``send`` to a list of uids makes, one per uid in its order
    (``with_mids``); ``mid`` is then unused."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A backend command that cannot be served: a bad body, or an unknown command."""

    code: ErrorCode
    reason: str
    reply_to: ReplyTo | None


@dataclass(frozen=True, slots=True)
class ServedByStore:
    """A backend command the offline stores serve (history on): the router leaves it to them."""

    name: str


Inbound = (
    ConnOpened
    | ConnClosed
    | Outgoing
    | RoomJoined
    | RoomLeft
    | PresenceAsked
    | Heartbeat
    | GatewayStopped
    | Saved
    | sync.Receipts
    | Call
    | Refused
)
"""Every envelope the router consumes, and the backend commands in their decoded form."""

_DECODERS: Mapping[str, Callable[[bytes], Inbound]] = {
    KEY_CONN_OPENED: envelopes.decode_conn_opened,
    KEY_CONN_CLOSED: envelopes.decode_conn_closed,
    KEY_SEND: envelopes.decode_outgoing,
    KEY_ROOM_JOINED: envelopes.decode_room_joined,
    KEY_ROOM_LEFT: envelopes.decode_room_left,
    KEY_PRESENCE: envelopes.decode_presence_asked,
    KEY_HEARTBEAT: envelopes.decode_heartbeat,
    KEY_GATEWAY_STOPPED: envelopes.decode_gateway_stopped,
    KEY_SAVED: envelopes.decode_saved,
}
_COMMAND_DECODERS: Mapping[str, msgspec.json.Decoder[Command]] = {
    name: msgspec.json.Decoder(command_type)
    for name, command_type in envelopes.COMMANDS.items()
}
SENDING_COMMANDS = frozenset(("send", "broadcast"))
"""Commands that make a message, and so need a mid."""


def is_command(routing_key: str) -> bool:
    """Tell whether a routing key carries a backend command (``api.*``)."""
    return routing_key.startswith(API_KEY_PREFIX)


def command_name(routing_key: str) -> str:
    """The command of an ``api.<command>`` routing key."""
    return routing_key.removeprefix(API_KEY_PREFIX)


def decode_inbound(routing_key: str, body: bytes) -> Inbound:
    """Decode the body of a message from the router's queue by its routing key.

    Raises:
        BadEnvelope: the routing key is not one the router handles, or the body
            does not match its envelope (the reason carries msgspec's JSON path,
            never the body; names follow ``proto/rules.py``), or an ``Outgoing`` is not
            addressed exactly one way or its body breaks the body rules.
    """
    decoder = _DECODERS.get(routing_key)
    if decoder is None:
        raise BadEnvelope("unknown routing key")
    try:
        envelope = decoder(body)
    except DECODE_ERRORS as exc:  # ValidationError, RecursionError included
        raise BadEnvelope(reason_of(exc)) from None
    if isinstance(envelope, Outgoing):
        if addressing_count(envelope) != 1:
            raise BadEnvelope(
                "exactly one of to, group, room and broadcast must be set"
            )
        violation = rules.body_violation(bytes(envelope.body))
        if violation is not None:
            raise BadEnvelope(f"$.body {violation}")
    return envelope


def decode_gateway_batch(body: bytes) -> tuple[list[Inbound], list[RefusedItem]]:
    """Decode a ``Batch`` (``gateway.batch``): its envelopes in order, and each item that
    could not be decoded, alone, with its reason (to be dead-lettered; the others are routed).

    Raises:
        BadEnvelope: the body is not even an object with an ``items`` array.
    """
    batch = decode_batch_items(body)
    decoded: list[Inbound] = []
    refused = list(batch.refused)
    for index, item in enumerate(batch.items):
        try:
            if item.key not in BATCHABLE_KEYS:
                raise BadEnvelope(f"routing key {item.key!r} may not be batched")
            decoded.append(decode_inbound(item.key, item.body))
        except BadEnvelope as exc:
            alone = envelopes.encode(envelopes.Batch(items=[item]))
            refused.append(RefusedItem(alone, exc.reason, batch.position(index)))
    return decoded, refused


def addressing_count(outgoing: Outgoing) -> int:
    """How many of ``to``, ``group``, ``room`` and ``broadcast`` are set (1 is valid)."""
    return sum(
        (
            outgoing.to is not None,
            outgoing.group is not None,
            outgoing.room is not None,
            outgoing.broadcast,
        )
    )


def decode_command(
    routing_key: str,
    body: bytes,
    reply_to: ReplyTo | None,
    *,
    mid: str,
    ts: int,
    max_bytes: int | None = None,
    is_history_on: bool = False,
) -> Call | Refused | ServedByStore:
    """Decode a backend command (strict, like every envelope).

    Args:
        routing_key: ``api.<command>``.
        body: the AMQP body, JSON of the command's ``proto.envelopes.Api*``.
        reply_to: where the reply goes, if the backend wants one.
        mid: the mid of the message the command makes, if it makes one.
        ts: the current Unix time in milliseconds.
        max_bytes: the largest body decoded (``SWITCHBOARD_MAX_COMMAND_BYTES``); None: any.
        is_history_on: ``SWITCHBOARD_HISTORY``: whether the offline stores serve the history
            commands (``proto.sync.HISTORY_COMMANDS``).

    Returns:
        The ``Call``, or why it is ``Refused``: ``unknown_command``, or what
        ``proto.commands.decode_command_body`` refuses (``too_large``, ``invalid_field``,
        ``invalid_json``); ``history_off`` for a valid history command while history is
        off. With it on, such a command is ``ServedByStore``.
    """
    name = command_name(routing_key)
    decoder = _COMMAND_DECODERS.get(name)
    if decoder is None:
        return Refused(ErrorCode.UNKNOWN_COMMAND, "no such command", reply_to)
    command = decode_command_body(decoder, body, max_bytes)
    if isinstance(command, RefusedCommand):
        return Refused(command.code, command.reason, reply_to)
    if name in sync.HISTORY_COMMANDS:
        if is_history_on:
            return ServedByStore(name)
        return Refused(
            ErrorCode.HISTORY_OFF,
            "this deployment keeps no history (SWITCHBOARD_HISTORY=off)",
            reply_to,
        )
    if name not in SENDING_COMMANDS:
        mid, ts = "", 0
    return Call(name, command, reply_to, mid, ts)


MULTICAST_ID_SEPARATOR = "/"
"""Joins a multicast's ``id`` and a uid into the client id claimed for that uid's message: not
an identifier character (``proto/rules.py``), so it meets no ``api.send``'s own ``id``."""


def multicast_uids(call: Call) -> list[str] | None:
    """The uids of an ``api.send`` to a list of uids; None for any other command."""
    match call.command:
        case ApiSend(to=list() as uids):
            return uids
        case _:
            return None


def with_mids(call: Call, mids: Sequence[str]) -> Call:
    """The call with the mids of a multicast's messages (one per uid, drawn by the caller).

    Raises:
        ValueError: not one mid per uid.
    """
    uids = multicast_uids(call) or []
    if len(mids) != len(uids):
        raise ValueError("one mid per uid is needed")
    return replace(call, mids=tuple(mids))


def outgoings_of(call: Call) -> list[Outgoing]:
    """The messages a backend command makes: one per uid for an ``api.send`` to a list (its
    client id, if any, joined with the uid: ``MULTICAST_ID_SEPARATOR``), else ``outgoing_of``'s
    one, or none."""
    uids = multicast_uids(call)
    if uids is None:
        outgoing = outgoing_of(call)
        return [] if outgoing is None else [outgoing]
    send = call.command
    assert isinstance(send, ApiSend)  # multicast_uids said so
    return [
        Outgoing(
            mid=mid,
            sender=send.sender,
            client_id=""
            if send.id is None
            else f"{send.id}{MULTICAST_ID_SEPARATOR}{uid}",
            body=send.body,
            ts=call.ts,
            gateway_id="",
            conn_id="",
            to=uid,
            transient=send.transient,
        )
        for uid, mid in zip(uids, call.mids, strict=True)
    ]


def outgoing_of(call: Call) -> Outgoing | None:
    """The message an ``api.send`` (to one uid, a group or a room) or ``api.broadcast``
    makes; None for other commands, and for an ``api.send`` to a list (``outgoings_of``).

    It has no ``gateway_id`` or ``conn_id``: its sender is a backend, answered by a reply.
    """
    match call.command:
        case ApiSend(to=list()):
            return None
        case ApiSend() as send:
            assert not isinstance(send.to, list)  # the case above
            return Outgoing(
                mid=call.mid,
                sender=send.sender,
                client_id=send.id or "",
                body=send.body,
                ts=call.ts,
                gateway_id="",
                conn_id="",
                to=send.to,
                group=send.group,
                room=send.room,
                transient=send.transient,
            )
        case ApiBroadcast() as broadcast:
            return Outgoing(
                mid=call.mid,
                sender=broadcast.sender,
                client_id="",
                body=broadcast.body,
                ts=call.ts,
                gateway_id="",
                conn_id="",
                broadcast=True,
            )
        case _:
            return None
