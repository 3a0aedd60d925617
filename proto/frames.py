"""Client frames: the JSON text frames between a client and a gateway at ``ws://HOST:PORT/ws``.

Every frame is a JSON object with a ``type``. Unknown extra fields are ignored. Every client frame
that carries an ``id`` gets exactly one reply carrying the same ``id``: its result or an ``error``.

Client -> gateway::

    {"type":"init","token":JWT}                          -> ready, then the offline messages
    {"type":"send","id":CLIENT_ID,"to":UID,"body":ANY}   -> sent {id, mid} | error {id, code, ...}
    {"type":"ack","mids":[MID,...]}                       (no reply)
    {"type":"ping","id":CLIENT_ID?}                      -> pong {id?}

Gateway -> client::

    {"type":"ready","uid":UID,"conn":CONNECTION_ID}
    {"type":"sent","id":CLIENT_ID,"mid":MID}
    {"type":"message","mid":MID,"from":UID,"to":UID,"body":ANY,"ts":UNIX_MS}
    {"type":"error","id":CLIENT_ID?,"code":CODE,"message":TEXT}
    {"type":"pong","id":CLIENT_ID?}
    {"type":"kicked","reason":TEXT}

A ``message`` is answered with ``ack``; until then it counts as undelivered and ends up in the
offline store if the connection closes. The JSON Schemas in ``proto/schemas/`` are generated from
these classes (``make schemas``).
"""

from typing import Annotated

import msgspec

MAX_ID_LENGTH = 128
MAX_ACK_MIDS = 1000

ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Uid = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Mid = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]


class ClientFrame(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    """Base of every frame a client may send."""


class Init(ClientFrame, tag="init", frozen=True):
    """Authenticate the connection with a JWT; the uid is the token's ``sub``."""

    token: Token


class Send(ClientFrame, tag="send", frozen=True):
    """Send ``body`` (any JSON) to every connection of uid ``to``."""

    id: ClientId
    to: Uid
    body: msgspec.Raw


class Ack(ClientFrame, tag="ack", frozen=True):
    """Acknowledge received messages by mid; acknowledged messages leave the offline store."""

    mids: Annotated[list[Mid], msgspec.Meta(max_length=MAX_ACK_MIDS)]


class Ping(ClientFrame, tag="ping", frozen=True):
    """Application-level heartbeat; answered with ``pong``."""

    id: ClientId | None = None


AnyClientFrame = Init | Send | Ack | Ping
CLIENT_FRAME_TYPES = frozenset(("init", "send", "ack", "ping"))


class ServerFrame(
    msgspec.Struct, frozen=True, tag_field="type", kw_only=True, omit_defaults=True
):
    """Base of every frame a gateway sends."""


class Ready(ServerFrame, tag="ready", frozen=True):
    """The connection is authenticated and registered: messages for ``uid`` reach it from now on."""

    uid: str
    conn: str


class Sent(ServerFrame, tag="sent", frozen=True):
    """The broker holds the message: it will reach ``to`` or wait in the offline store."""

    id: str
    mid: str


class Message(ServerFrame, tag="message", frozen=True):
    """A message for this connection's uid; answer it with ``ack``."""

    mid: str
    sender: str = msgspec.field(name="from")
    to: str
    body: msgspec.Raw
    ts: int


class Error(ServerFrame, tag="error", frozen=True):
    """A rejected frame; ``id`` is the rejected frame's, when it had one."""

    code: str
    message: str
    id: str | None = None


class Pong(ServerFrame, tag="pong", frozen=True):
    """Answer to ``ping``."""

    id: str | None = None


class Kicked(ServerFrame, tag="kicked", frozen=True):
    """Sent just before the gateway closes the connection with ``CloseCode.KICKED``."""

    reason: str


AnyServerFrame = Ready | Sent | Message | Error | Pong | Kicked


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
