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

With ``SWITCHBOARD_HISTORY=on``, the default (with it off, history frames are answered
``history_off``)::

    {"type":"init","token":JWT,"since":SEQ}              -> ready, the inbox after SEQ, synced
    {"type":"history","id":CLIENT_ID,"with":UID,"before":SEQ?,"limit":N?}
        ("group":GID instead of "with")                  -> history {id, messages, more}
    {"type":"read","id":CLIENT_ID,"mid":MID}             -> marked {id} | error not_found
    {"type":"conversations","id":CLIENT_ID,"before":SEQ?,"limit":N?}
                                                         -> conversations {id, items}

Gateway -> client::

    {"type":"ready","uid":UID,"conn":CONNECTION_ID}
    {"type":"sent","id":CLIENT_ID,"mid":MID}
    {"type":"message","mid":MID,"from":UID,"to":UID,"body":ANY,"ts":UNIX_MS,"seq":SEQ}
        ("group":GID, "room":RID or "broadcast":true instead of "to"; "transient":true on a
        transient one; "seq", the message's place in the uid's inbox, with history on and
        for messages to a uid or a group only)
    {"type":"joined","id":CLIENT_ID,"room":RID}   {"type":"left","id":CLIENT_ID,"room":RID}
    {"type":"presence","id":CLIENT_ID,"online":[UID,...]}
    {"type":"error","id":CLIENT_ID?,"code":CODE,"message":TEXT}
        (code "recipient_full", after the "sent" of that id: also "mid":MID,"to":UID)
    {"type":"pong","id":CLIENT_ID?}
    {"type":"kicked","reason":TEXT}
    {"type":"synced","seq":HEAD}
    {"type":"history","id":CLIENT_ID,"messages":[message frames, oldest first],"more":BOOL}
    {"type":"marked","id":CLIENT_ID}
    {"type":"receipt","by":UID,"mid":MID}
    {"type":"conversations","id":CLIENT_ID,"items":[
        {"with":UID,"last":MESSAGE_FRAME,"unread":N,"read":MID_OR_NULL} |
        {"group":GID,"last":MESSAGE_FRAME,"unread":N,"read":MID_OR_NULL}, ...]}
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
MAX_SEND_UIDS = 1000
"""Uids one backend ``api.send`` may name in ``to`` (a list: one message per uid, each with its
own mid); more is refused with ``invalid_field``."""

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
MAX_PAGE = 100
"""Most entries one ``history`` or ``conversations`` frame may ask for."""
DEFAULT_PAGE = 50
MAX_SEQ = 2**63 - 1
"""The largest ``seq`` (PostgreSQL's ``bigint``)."""
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
"""A place in a uid's inbox; 0 is before the first entry."""
Before = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
"""An exclusive upper bound on ``seq``: the page ends below it."""
PageSize = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)]
SHAPES_KEY = "x-switchboard-shapes"
"""Key of the JSON Schema of a ``msgspec.Raw`` field that holds an encoded struct: the
names of the structs it may hold, which ``proto.schemagen`` turns into references."""


class ClientFrame(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    """Base of every frame a client may send."""


class Init(ClientFrame, tag="init", frozen=True):
    """Authenticate the connection with a JWT; the uid is the token's ``sub``.

    ``since``: the highest ``seq`` the client processed (0: none). With history on, the gateway
    pushes the inbox's entries after it, then ``synced``, instead of the unacknowledged
    messages; ignored while history is off.
    """

    token: Token
    since: Seq | None = None


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


def check_conversation(peer: str | None, group: str | None) -> None:
    """Refuse a conversation named both or neither way (a uid with ``with``, or a ``group``).

    Raises:
        ValueError: which msgspec turns into a ``ValidationError`` naming ``$``.
    """
    if (peer is None) == (group is None):
        raise ValueError("exactly one of `with` and `group` is needed - at `$`")


class HistoryQuery(ClientFrame, tag="history", frozen=True):
    """Ask for a page of one conversation: its newest entries below ``before``, oldest first.

    ``with``: the 1:1 conversation with that uid; ``group``: that group's. ``before``: only
    entries whose ``seq`` is below it (default: the newest); ``limit``: at most this many.
    """

    id: ClientId
    peer: Uid | None = msgspec.field(name="with", default=None)
    group: Gid | None = None
    before: Before | None = None
    limit: PageSize = DEFAULT_PAGE

    def __post_init__(self) -> None:
        check_conversation(self.peer, self.group)


class Read(ClientFrame, tag="read", frozen=True):
    """Mark the conversation of ``mid`` read up to it; the other party gets a ``receipt``."""

    id: ClientId
    mid: Mid


class ConversationsQuery(ClientFrame, tag="conversations", frozen=True):
    """List the uid's conversations, the most recently active first.

    ``before``: only those whose last entry's ``seq`` is below it; ``limit``: at most this many.
    """

    id: ClientId
    limit: PageSize = DEFAULT_PAGE
    before: Before | None = None


class Refresh(ClientFrame, tag="refresh", frozen=True):
    """Replace the connection's token before its ``exp``, which closes the connection (4004).

    The token must be valid and for the same uid (``sub``); its claims replace the old one's
    rights (rooms already joined stay joined). Refused with ``invalid_token`` (or
    ``token_expired``), the connection keeps its old token and expiry.
    """

    id: ClientId
    token: Token


AnyClientFrame = (
    Init
    | Send
    | Ack
    | Join
    | Leave
    | PresenceQuery
    | Ping
    | HistoryQuery
    | Read
    | ConversationsQuery
    | Refresh
)
CLIENT_FRAME_TYPES = frozenset(
    (
        "init",
        "send",
        "ack",
        "join",
        "leave",
        "presence",
        "ping",
        "history",
        "read",
        "conversations",
        "refresh",
    )
)


def shapes(*structs: type[msgspec.Struct]) -> msgspec.Meta:
    """Annotate a ``msgspec.Raw`` field that holds one of these structs, encoded.

    The JSON stays as it was written (a stored frame is passed on byte for byte, never decoded
    again); the schemas say what it is.
    """
    return msgspec.Meta(
        extra_json_schema={SHAPES_KEY: [struct.__name__ for struct in structs]}
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
    seq: int | None = None
    """The message's place in this uid's inbox (1, 2, 3, ... with no gap), with history on;
    none on room, broadcast and transient messages. The gateway writes it first."""


MessageFrame = Annotated[msgspec.Raw, shapes(Message)]
"""A ``message`` frame, encoded once by its producer (the store writes ``seq`` into it)."""


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


class Synced(ServerFrame, tag="synced", frozen=True):
    """Every entry after the ``init``'s ``since`` was pushed; ``seq`` is the inbox's head then.

    What follows is live, with ``seq`` above it. A head below ``since`` means the inbox is not
    the one the client knew (a reset database): the client keeps ``seq`` as its new cursor.
    """

    seq: int


class HistoryPage(ServerFrame, tag="history", frozen=True):
    """The answer to a ``history`` frame: ``messages`` oldest first, each with the asker's
    ``seq``; ``more`` when older entries remain (ask again with ``before`` = the first one's
    ``seq``)."""

    id: str
    messages: list[MessageFrame]
    more: bool


class Marked(ServerFrame, tag="marked", frozen=True):
    """The read marker is recorded (or already was further on)."""

    id: str


class Refreshed(ServerFrame, tag="refreshed", frozen=True):
    """The ``refresh`` is done: the connection now lasts until the new token's ``exp``."""

    id: str


class Receipt(ServerFrame, tag="receipt", frozen=True):
    """``by`` read the conversation of ``mid`` up to it (one of your messages, or, from your
    other devices, one you read)."""

    by: str
    mid: str


class PeerConversation(msgspec.Struct, frozen=True, kw_only=True):
    """A 1:1 conversation in a ``conversations`` frame: ``read`` is ``null`` when unread."""

    peer: str = msgspec.field(name="with")
    last: MessageFrame
    """The conversation's last message, with the asker's ``seq``."""
    unread: int
    """Messages from others after the read marker."""
    read: str | None
    """The mid of the read marker, or ``null``."""


class GroupConversation(msgspec.Struct, frozen=True, kw_only=True):
    """A group conversation in a ``conversations`` frame: ``read`` is ``null`` when unread."""

    group: str
    last: MessageFrame
    """The conversation's last message, with the asker's ``seq``."""
    unread: int
    """Messages from others after the read marker."""
    read: str | None
    """The mid of the read marker, or ``null``."""


ConversationItem = Annotated[msgspec.Raw, shapes(PeerConversation, GroupConversation)]
"""One item of a ``conversations`` answer: a ``PeerConversation`` or a ``GroupConversation``,
encoded (their fields have no default, so ``read`` is written ``null`` when unset)."""


class ConversationsPage(ServerFrame, tag="conversations", frozen=True):
    """The answer to a ``conversations`` frame, the most recently active first."""

    id: str
    items: list[ConversationItem]


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
    | Synced
    | HistoryPage
    | Marked
    | Receipt
    | ConversationsPage
    | Refreshed
)


def with_seq(frame: bytes, seq: int) -> bytes:
    """The frame with ``"seq":seq`` written first, without decoding it.

    Every frame is a JSON object encoded by msgspec (``{`` first, at least one member, no
    ``seq`` already): ``{"seq":N,`` takes the place of its opening brace.

    Args:
        frame: an encoded ``message`` frame without ``seq``.
        seq: the copy's place in its uid's inbox.
    """
    return b'{"seq":%d,' % seq + frame[1:]


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
_decode_peer_conversation = msgspec.json.Decoder(PeerConversation).decode
_decode_group_conversation = msgspec.json.Decoder(GroupConversation).decode


def decode_conversation_item(
    item: bytes | msgspec.Raw,
) -> PeerConversation | GroupConversation:
    """Decode one item of a ``conversations`` answer (JSON has no tag: ``with`` tells).

    Raises:
        msgspec.ValidationError: the item is neither shape.
    """
    raw = bytes(item)
    if b'"with"' in raw:
        try:
            return _decode_peer_conversation(raw)
        except msgspec.ValidationError:
            pass  # a "with" inside a string: try the other shape
    return _decode_group_conversation(raw)
