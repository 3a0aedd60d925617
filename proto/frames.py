"""Client frames: the JSON text frames between a client and a gateway at ``ws://HOST:PORT/ws``.

Every frame is a JSON object with a ``type``. Unknown extra fields are ignored. Every client frame
that carries an ``id`` gets exactly one reply carrying the same ``id``: its result or an ``error``.

Client -> gateway::

    {"type":"init","token":JWT}                          -> ready, then the offline messages
    {"type":"send","id":CLIENT_ID,"to":UID,"body":ANY}   -> sent {id, mid} | error {id, code, ...}
        ("group":GID or "room":RID or "broadcast":true instead of "to"; "transient":true
        for a message delivered only to the connections online now, never stored)
    {"type":"ack","mids":[MID,...]}                       (no reply)
    {"type":"join","id":CLIENT_ID,"room":RID}            -> joined {id, room} | error
    {"type":"leave","id":CLIENT_ID,"room":RID}           -> left {id, room} | error
    {"type":"presence","id":CLIENT_ID,"uids":[UID,...]}  -> presence {id, online} | error
    {"type":"ping","id":CLIENT_ID?}                      -> pong {id?}
    {"type":"refresh","id":CLIENT_ID,"token":JWT}        -> refreshed {id} | error {id, code}

Gateway -> client::

    {"type":"ready","uid":UID,"conn":CONNECTION_ID}
    {"type":"sent","id":CLIENT_ID,"mid":MID}
    {"type":"message","mid":MID,"from":UID,"to":UID,"body":ANY,"ts":UNIX_MS}
        ("group":GID, "room":RID or "broadcast":true instead of "to"; "transient":true on a
        transient one)
    {"type":"joined","id":CLIENT_ID,"room":RID}   {"type":"left","id":CLIENT_ID,"room":RID}
    {"type":"presence","id":CLIENT_ID,"online":[UID,...]}
    {"type":"error","id":CLIENT_ID?,"code":CODE,"message":TEXT}
        (code "recipient_full", after the "sent" of that id: also "mid":MID,"to":UID)
    {"type":"pong","id":CLIENT_ID?}
    {"type":"kicked","reason":TEXT}
    {"type":"refreshed","id":CLIENT_ID}

Uids, group and room names, client ids and mids follow the identifier rule of ``proto/rules.py``
(ASCII letters, digits and ``_ - . @ + = | ~``, 1 to 128 characters); a ``body`` follows its body
rules (at most 64 levels deep, no number literal longer than 64 characters or out of a double's
range). A frame that breaks one is answered ``invalid_field`` with the JSON path.

A ``message`` (but a room, broadcast or transient one) is answered with ``ack``; until then it
counts as undelivered and ends up in the offline store if the connection closes. The JSON
Schemas in ``proto/schemas/`` are generated from these classes (``make schemas``).
"""

from typing import Annotated

import msgspec

from proto import rules
from proto.rules import IDENTIFIER_PATTERN, Identifier

MAX_ID_LENGTH = rules.MAX_ID_LENGTH
MAX_ACK_MIDS = 1000
MAX_PRESENCE_UIDS = 100
"""Uids one ``presence`` frame may ask about; it costs one frame per ten of them against the
rate limits (``proto.limits.frame_cost``)."""

# Every name a client sends follows proto/rules.py (a documented character set and length),
# checked while the frame decodes; ``body`` follows its body rules, checked by the gateway.
ClientId = Identifier
Uid = Identifier
Mid = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN)
]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
Gid = Identifier
Rid = Identifier


class ClientFrame(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    """Base of every frame a client may send."""


class Init(ClientFrame, tag="init", frozen=True):
    """Authenticate the connection with a JWT; the uid is the token's ``sub``."""

    token: Token


class Send(ClientFrame, tag="send", frozen=True):
    """Send ``body`` (any JSON) to exactly one of: a uid, a group, a room, or everyone.

    ``to``: every connection of that uid. ``group``: every other member of the group (the
    sender must be one). ``room``: the connections in that room now. ``broadcast``: every
    connected user (only with a token that grants it).

    ``transient``: deliver it only to the recipients' connections online now (for a group,
    those of the members other than the sender). It is never stored, never replayed, and
    its ``message`` needs no ``ack``. The sender still gets ``sent`` with a mid, and a retry
    with the same ``id`` is answered the same way. Rooms and broadcasts are transient anyway.
    """

    id: ClientId
    body: msgspec.Raw
    to: Uid | None = None
    group: Gid | None = None
    room: Rid | None = None
    broadcast: bool = False
    transient: bool = False


class Ack(ClientFrame, tag="ack", frozen=True):
    """Acknowledge received messages by mid; acknowledged messages leave the offline store."""

    mids: Annotated[list[Mid], msgspec.Meta(max_length=MAX_ACK_MIDS)]


class Join(ClientFrame, tag="join", frozen=True):
    """Join a room, if the token's ``rooms`` claim (or the public prefix) allows it."""

    id: ClientId
    room: Rid


class Leave(ClientFrame, tag="leave", frozen=True):
    """Leave a room."""

    id: ClientId
    room: Rid


class PresenceQuery(ClientFrame, tag="presence", frozen=True):
    """Ask which of these uids are online."""

    id: ClientId
    uids: Annotated[list[Uid], msgspec.Meta(max_length=MAX_PRESENCE_UIDS)]


class Ping(ClientFrame, tag="ping", frozen=True):
    """Application-level heartbeat; answered with ``pong``."""

    id: ClientId | None = None


class Refresh(ClientFrame, tag="refresh", frozen=True):
    """Replace the connection's token before its ``exp``, which closes the connection (4004).

    The token must be valid and for the same uid (``sub``); its claims replace the old one's
    rights (rooms already joined stay joined). Refused with ``invalid_token`` (or
    ``token_expired``), the connection keeps its old token and expiry.
    """

    id: ClientId
    token: Token


AnyClientFrame = Init | Send | Ack | Join | Leave | PresenceQuery | Ping | Refresh
CLIENT_FRAME_TYPES = frozenset(
    ("init", "send", "ack", "join", "leave", "presence", "ping", "refresh")
)


class ServerFrame(
    msgspec.Struct, frozen=True, tag_field="type", kw_only=True, omit_defaults=True
):
    """Base of every frame a gateway sends."""


class Ready(ServerFrame, tag="ready", frozen=True):
    """The connection is authenticated and registered: messages for ``uid`` reach it from now on."""

    uid: str
    conn: str


class Sent(ServerFrame, tag="sent", frozen=True):
    """The message is routed: it reached its recipients' gateways or waits in the offline store.

    ``mid`` is the mid of the first ``send`` with this ``id``: a retry (after ``unavailable``,
    a timeout or a reconnect to any gateway, within ``SWITCHBOARD_DEDUP_TTL_S``) is answered
    with the mid its recipients got, and delivers nothing again.
    """

    id: str
    mid: str


class Message(ServerFrame, tag="message", frozen=True):
    """A message for this connection; answer it with ``ack`` (room, broadcast and transient
    ones need none).

    Exactly one of ``to``, ``group``, ``room`` and ``broadcast`` says how it was addressed;
    ``transient`` is true on a message sent with ``"transient": true``.
    """

    mid: str
    sender: str = msgspec.field(name="from")
    body: msgspec.Raw
    ts: int
    to: str | None = None
    group: str | None = None
    room: str | None = None
    broadcast: bool = False
    transient: bool = False


class Joined(ServerFrame, tag="joined", frozen=True):
    """The connection is in the room: room messages reach it until it leaves or closes."""

    id: str
    room: str


class Left(ServerFrame, tag="left", frozen=True):
    id: str
    room: str


class PresenceResult(ServerFrame, tag="presence", frozen=True):
    """The uids of the query that have at least one connection now."""

    id: str
    online: list[str]


class Error(ServerFrame, tag="error", frozen=True):
    """A rejected frame; ``id`` is the rejected frame's, when it had one.

    A ``recipient_full`` error comes after the ``sent`` of the same ``id``, and also carries the
    message's ``mid`` and the recipient (``to``) whose offline store refused it.
    """

    code: str
    message: str
    id: str | None = None
    mid: str | None = None
    to: str | None = None


class Pong(ServerFrame, tag="pong", frozen=True):
    """Answer to ``ping``."""

    id: str | None = None


class Kicked(ServerFrame, tag="kicked", frozen=True):
    """Sent just before the gateway closes the connection with ``CloseCode.KICKED``."""

    reason: str


class Refreshed(ServerFrame, tag="refreshed", frozen=True):
    """The ``refresh`` is done: the connection now lasts until the new token's ``exp``."""

    id: str


AnyServerFrame = (
    Ready
    | Sent
    | Message
    | Joined
    | Left
    | PresenceResult
    | Error
    | Pong
    | Kicked
    | Refreshed
)


class FrameProbe(msgspec.Struct):
    """The fields an error reply needs from a frame that failed validation."""

    type: object = None
    id: object = None


encode = msgspec.json.Encoder().encode
_client_decoder: msgspec.json.Decoder[AnyClientFrame] = msgspec.json.Decoder(
    AnyClientFrame
)
_server_decoder: msgspec.json.Decoder[AnyServerFrame] = msgspec.json.Decoder(
    AnyServerFrame
)
decode_client_frame = _client_decoder.decode
decode_server_frame = _server_decoder.decode
probe_frame = msgspec.json.Decoder(FrameProbe).decode
