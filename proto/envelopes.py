"""Envelopes: the JSON bodies of AMQP messages between services, one class per routing key or queue.

Published with ``content_type=application/json`` and, where a message must survive a broker
restart, ``delivery_mode=2``. Unknown fields are ignored, so that services can be upgraded one at
a time. ``msgspec.Raw`` fields carry JSON that is passed through byte for byte, never re-encoded.

==========================  ===================  =====================================
routing key / queue          envelope             producer -> consumer
==========================  ===================  =====================================
gateway.opened               ConnOpened           gateway -> router
gateway.closed               ConnClosed           gateway -> router
gateway.send                 Outgoing             gateway -> router
gateway.joined               RoomJoined           gateway -> router
gateway.left                 RoomLeft             gateway -> router
gateway.presence             PresenceAsked        gateway -> router
gateway.heartbeat            Heartbeat            gateway -> router
gateway.stopped              GatewayStopped       gateway -> router
gateway.batch                Batch                gateway -> router (envelopes of the keys above)
gateway.ack                  Acked                gateway -> offline store
gateway.acks                 Batch                gateway -> offline store (``gateway.ack`` items)
gateway.replay               ReplayRequest        gateway -> offline store (the next window)
store.saved                  Saved                offline store -> router
router.replay                ReplayRequest        router -> offline store
router.replays               Batch                router -> offline store (``router.replay`` items:
                                                  a router batch's replay requests)
router.inbox -> <ns>.inbox   InboxBatch           router -> offline store (history on;
                                                  proto/inbox.py)
deliveries / <gateway_id>    Delivery             router, offline store -> gateway
undeliverable (fanout)       Delivery             router, gateway, dead-lettering -> offline store
api.<command>                Api* (commands)      backend services -> router (reply: *Reply)
api.group.*                  ApiGroup* (commands) backend services -> offline store (groups.py)
events: user.online          UserOnline           router -> backend services
events: user.offline         UserOffline          router -> backend services
events: message.offline      MessageOffline       offline store -> backend services
events: message.refused      MessageRefused       offline store -> backend services
==========================  ===================  =====================================
"""

from typing import Annotated

import msgspec

from proto import sync
from proto.bases import Command as Command  # re-exported: every envelope's base
from proto.bases import Envelope as Envelope
from proto.frames import MAX_SEND_UIDS, Seq
from proto.rules import Identifier, OptionalIdentifier, body_violation

# Every name in an envelope the router consumes from gateways, and in every backend command,
# follows the identifier rule of proto/rules.py, checked while the body decodes: what another
# service or a backend publishes is refused at the router's door like a client's frame at the
# gateway's. A command's ``body`` follows the body rules (checked in ``__post_init__``).


class ConnOpened(Envelope, frozen=True):
    """A connection passed ``init``: register it, answer ``ready``, replay its offline messages."""

    uid: Identifier
    conn_id: Identifier
    gateway_id: Identifier
    reannounce: bool = False
    """Sent again for a live connection because the routers lost its presence (a Redis restart,
    a gateway swept while frozen or cut off; see ``DeliveryItem.reannounce``): register it and
    replay its offline messages, but no ``ready`` and no ``user.online``."""
    since: Seq | None = None
    """The ``init``'s ``since`` (history on): sync the inbox after it instead of replaying."""


class ConnClosed(Envelope, frozen=True):
    """A connection is gone: remove its presence and its room memberships."""

    uid: Identifier
    conn_id: Identifier
    gateway_id: Identifier
    rooms: list[Identifier] = []  # noqa: RUF012  (msgspec copies a mutable default)


class Outgoing(Envelope, frozen=True):
    """A ``send`` frame accepted by a gateway, with the verified sender and the server's mid.

    Exactly one of ``to``, ``group``, ``room`` and ``broadcast`` is set; the gateway checked
    that the sender may use ``room`` or ``broadcast``, the router checks group membership.
    A ``transient`` message goes only to the connections online now: nothing of it is stored.
    """

    mid: Identifier
    sender: Identifier
    client_id: OptionalIdentifier
    body: msgspec.Raw
    ts: int
    gateway_id: OptionalIdentifier
    conn_id: OptionalIdentifier
    to: Identifier | None = None
    group: Identifier | None = None
    room: Identifier | None = None
    broadcast: bool = False
    transient: bool = False


class RoomJoined(Envelope, frozen=True):
    """A connection joined a room (the gateway checked the token's right to)."""

    uid: Identifier
    conn_id: Identifier
    gateway_id: Identifier
    room: Identifier


class RoomLeft(Envelope, frozen=True):
    """A connection left a room."""

    uid: Identifier
    conn_id: Identifier
    gateway_id: Identifier
    room: Identifier


class PresenceAsked(Envelope, frozen=True):
    """A client's ``presence`` query; the router answers it with a delivery to that connection."""

    uid: Identifier
    conn_id: Identifier
    gateway_id: Identifier
    client_id: Identifier
    uids: list[Identifier]


class Acked(Envelope, frozen=True):
    """A client acknowledged these mids: their offline rows (if any) can go."""

    uid: Identifier
    mids: list[Identifier]


class Heartbeat(Envelope, frozen=True):
    """A gateway is alive; one silent for ``SWITCHBOARD_GATEWAY_TTL_S`` counts as dead."""

    gateway_id: Identifier
    connections: int


class GatewayStopped(Envelope, frozen=True):
    """A gateway shut down cleanly: its presence entries can go at once."""

    gateway_id: Identifier


class Batched(msgspec.Struct, frozen=True, array_like=True):
    """One envelope inside a ``Batch``: its routing key and its JSON body, as ``[key, body]``."""

    key: str
    """A routing key of ``proto.names.BATCHABLE_KEYS``."""
    body: msgspec.Raw


class Batch(Envelope, frozen=True):
    """Envelopes of a gateway's connections, in the order they were accepted, in one message.

    The router handles them as if each had come alone with its own routing key; the message is
    acknowledged, or requeued, as a whole. Under load a gateway sends one batch per broker
    confirm instead of one message per frame.
    """

    items: list[Batched]


class Target(msgspec.Struct, frozen=True, array_like=True):
    """One connection a delivery is for; ``conn_id`` is empty when the uid has no connection.

    ``[uid, conn_id]``, or ``[uid, conn_id, seq]`` for a copy numbered in the uid's inbox (with
    ``SWITCHBOARD_HISTORY`` on): the gateway writes ``seq`` into the frame it pushes there
    (``proto.frames.with_seq``). A target without it decodes as before.
    """

    uid: str
    conn_id: str
    seq: int | None = None


class Origin(msgspec.Struct, frozen=True, array_like=True):
    """The connection a message came from, and its ``send``'s id: where a later notice goes."""

    uid: str
    gateway_id: str
    conn_id: str
    client_id: str


class DeliveryItem(Envelope, frozen=True):
    """One client frame for some connections of one gateway."""

    frame: msgspec.Raw
    """The complete client frame, encoded once by its producer and pushed as it is."""
    targets: list[Target]
    mid: str = ""
    """The message's mid; empty for frames that are not messages (``ready``, ``kicked``)."""
    durable: bool = False
    """Whether a copy that misses its target (or is not acknowledged) goes to the offline store."""
    stored: bool = False
    """Replayed from the offline store, where its row stays until the client acknowledges it."""
    close_code: int = 0
    """When not 0, the gateway closes the target connections with this code after pushing."""
    room: str = ""
    """When set, the frame is for every connection of the gateway in this room (``targets``
    is empty): one delivery per gateway, whatever the size of the room."""
    broadcast: bool = False
    """When true, the frame is for every initialized connection of the gateway."""
    reannounce: bool = False
    """When true (with no frame to push and no targets), the routers lost this gateway's
    presence: it publishes ``ConnOpened`` (``reannounce``) for each of its initialized
    connections and ``RoomJoined`` (``count``) for each room it has members in."""
    origin: Origin | None = None
    """On a durable message sent by a client: its sending connection. When the offline store
    refuses the message for a recipient whose store is full, it tells that connection (an
    ``error`` frame, code ``recipient_full``); kept by a gateway that hands the item over because
    a target connection is not there."""
    throttle_uid: str = ""
    """When set (with no frame to push and no targets), this uid sent more than
    ``SWITCHBOARD_RATE_LIMIT_PER_UID_BURST`` across all gateways in a window: every gateway
    answers its frames ``rate_limited`` for ``throttle_ms`` (and nothing is stored)."""
    throttle_ms: int = 0
    advance: bool = False
    """When true (with no frame to push), the target connections sent this message: their
    uid's inbox reached the target's ``seq`` with it. Nothing is pushed; the connection has its
    ``sent``."""


class SyncWindow(Envelope, frozen=True):
    """How far a sync window reaches in its uid's inbox."""

    to_seq: int
    """The highest ``seq`` the window covers (entries up to it were read, kept or not)."""
    more: bool
    """Entries above ``to_seq`` remain: the gateway asks for the next window. False: the
    window reached the head, ``to_seq``, which ``synced`` carries."""
    conn_id: str = ""
    """The connection the window is for (on this gateway): an empty window names no target."""


class Delivery(Envelope, frozen=True):
    """The frames one gateway (or the offline store) is to handle, for some of its connections."""

    items: list[DeliveryItem]
    next_mid: str = ""
    """Set on a replay window that did not hold every stored row: the rows from this mid on are
    still to be replayed. The gateway asks for them (``ReplayRequest`` on ``gateway.replay``)
    for each target connection once the client has acknowledged enough of what it holds."""
    from_mid: str = ""
    """On a replay window: the window holds every stored row of its uid from this mid on (up to
    its last, or to ``next_mid``), as the store read them; "" is from the first row. A gateway
    that knows of a stored row before ``from_mid`` still to push does not push the window (the
    row would come after later ones) but asks for a window from that row."""
    sync: SyncWindow | None = None
    """On a sync window (the answer to a ``SyncRequest``): how far it reaches."""


class SavedUid(msgspec.Struct, frozen=True, array_like=True):
    """A uid with new offline rows, and the smallest new mid."""

    uid: str
    first_mid: str


class Saved(Envelope, frozen=True):
    """The offline store committed new rows: a router replays them to the uids online now."""

    uids: list[SavedUid]


class ReplayTarget(msgspec.Struct, frozen=True, array_like=True):
    gateway_id: str
    conn_id: str


class ReplayRequest(Envelope, frozen=True):
    """Replay one window of ``uid``'s offline rows with ``mid >= from_mid`` to these connections.

    The store sends at most ``limit`` rows (its ``SWITCHBOARD_REPLAY_PAGE`` when 0 or larger),
    and sets ``Delivery.next_mid`` when rows remain: the gateway asks for the next window as its
    client acknowledges, so that a backlog never floods a connection.
    """

    uid: str
    targets: list[ReplayTarget]
    from_mid: str = ""
    limit: int = 0


# Backend commands: the bodies of api.<command> on the inbound exchange (and of POST /api/<command>
# on a gateway). A command with the AMQP reply_to property gets its reply there, with the same
# correlation_id: the command's *Reply, or ErrorReply.


def _check_body(body: msgspec.Raw) -> None:
    """Refuse a command's body that breaks the body rules of ``proto/rules.py``.

    Raises:
        ValueError: which msgspec turns into a ``ValidationError`` naming ``$.body``.
    """
    violation = body_violation(bytes(body))
    if violation is not None:
        raise ValueError(f"the body {violation} - at `$.body`")


SendUids = Annotated[
    list[Identifier],
    msgspec.Meta(
        min_length=1, max_length=MAX_SEND_UIDS, extra_json_schema={"uniqueItems": True}
    ),
]
"""The uids of a multicast ``api.send``: 1 to ``MAX_SEND_UIDS``, each once."""


class ApiSend(Command, frozen=True):
    """``api.send``: send ``body`` to a uid, a group or a room, as ``from`` (default "system").

    ``to`` may also be a list of 1 to 1,000 distinct uids (``proto.frames.MAX_SEND_UIDS``):
    each gets a message of its own, with its own mid, as if sent to it alone, and the reply is
    ``mids`` (each uid's mid). ``id``, when given, makes retries idempotent like a client's
    ``id`` (for a list, per uid: a retry gets the same mids back and delivers nothing twice).
    ``transient``: only the connections online now get it, and nothing of it is stored (as a
    client's ``send``).
    """

    body: msgspec.Raw
    to: Identifier | SendUids | None = None
    group: Identifier | None = None
    room: Identifier | None = None
    sender: Identifier = msgspec.field(name="from", default="system")
    id: Identifier | None = None
    transient: bool = False

    def __post_init__(self) -> None:
        # msgspec turns this into a ValidationError, so every decoder enforces it.
        targets = [t for t in (self.to, self.group, self.room) if t is not None]
        if len(targets) != 1 or not targets[0]:
            raise ValueError(
                "exactly one of `to`, `group` and `room` is needed - at `$`"
            )
        if isinstance(self.to, list) and len(set(self.to)) != len(self.to):
            raise ValueError("the uids must be distinct - at `$.to`")
        _check_body(self.body)


class ApiBroadcast(Command, frozen=True):
    """``api.broadcast``: send ``body`` to every connected user."""

    body: msgspec.Raw
    sender: Identifier = msgspec.field(name="from", default="system")

    def __post_init__(self) -> None:
        _check_body(self.body)


class ApiKick(Command, frozen=True):
    """``api.kick``: close every connection of ``uid`` with ``CloseCode.KICKED``."""

    uid: Identifier
    reason: str = ""


class ApiGroupMembers(Command, frozen=True):
    """``api.group.add`` and ``api.group.remove``: change a group's members."""

    group: Identifier
    uids: list[Identifier]


class ApiGroupList(Command, frozen=True):
    """``api.group.members``: the members of a group, as the offline store holds them."""

    group: Identifier


class ApiPresence(Command, frozen=True):
    """``api.presence``: which of these uids are online."""

    uids: list[Identifier]


class ApiConnections(Command, frozen=True):
    """``api.connections``: the connections of a uid."""

    uid: Identifier


class ApiRoomCount(Command, frozen=True):
    """``api.room.count``: how many connections are in a room (without listing them)."""

    room: Identifier


class SendReply(Envelope, frozen=True, omit_defaults=True):
    """The reply to ``api.send`` and ``api.broadcast``: ``mid``, or for an ``api.send`` to a
    list of uids ``mids`` (each uid's mid) instead."""

    mid: str = ""
    mids: dict[str, str] = msgspec.field(default_factory=dict)


class KickReply(Envelope, frozen=True):
    kicked: int


class OkReply(Envelope, frozen=True):
    ok: bool = True


class GroupMembersReply(Envelope, frozen=True):
    uids: list[str]


class PresenceReply(Envelope, frozen=True):
    online: list[str]


class ConnectionInfo(Envelope, frozen=True):
    conn_id: str
    gateway_id: str


class ConnectionsReply(Envelope, frozen=True):
    connections: list[ConnectionInfo]


class RoomCountReply(Envelope, frozen=True):
    count: int


class ErrorDetail(Envelope, frozen=True):
    code: str
    message: str


class ErrorReply(Envelope, frozen=True):
    """The reply to a command that was refused: a bad body, an unknown command."""

    error: ErrorDetail


# Events for backends, on the events exchange. Each backend binds its own durable queue.


class UserOnline(Envelope, frozen=True):
    """``user.online``: the uid's first connection anywhere (reloads are debounced)."""

    uid: str
    ts: int


class UserOffline(Envelope, frozen=True):
    """``user.offline``: the uid's last connection closed, or its gateway died (debounced)."""

    uid: str
    ts: int


class MessageOffline(Envelope, frozen=True, omit_defaults=True):
    """``message.offline``: a message for ``uid`` went to the offline store.

    With history on, also who sent it (``sender``) and its conversation: ``with`` (the sender,
    seen from ``uid``) for a message to one uid, or ``group``.
    """

    uid: str
    mid: str
    ts: int
    sender: str = ""
    peer: str | None = msgspec.field(name="with", default=None)
    group: str | None = None


class MessageRefused(Envelope, frozen=True):
    """``message.refused``: the offline store did not keep ``mid`` for ``uid``: ``code`` says why
    (``recipient_full``). ``sender`` and ``client_id`` are the sending client's, when known."""

    uid: str
    mid: str
    code: str
    ts: int
    sender: str = ""
    client_id: str = ""


encode = msgspec.json.Encoder().encode
decode_conn_opened = msgspec.json.Decoder(ConnOpened).decode
decode_conn_closed = msgspec.json.Decoder(ConnClosed).decode
decode_outgoing = msgspec.json.Decoder(Outgoing).decode
decode_acked = msgspec.json.Decoder(Acked).decode
decode_heartbeat = msgspec.json.Decoder(Heartbeat).decode
decode_gateway_stopped = msgspec.json.Decoder(GatewayStopped).decode
decode_delivery = msgspec.json.Decoder(Delivery).decode
decode_batch = msgspec.json.Decoder(Batch).decode
decode_saved = msgspec.json.Decoder(Saved).decode
decode_replay_request = msgspec.json.Decoder(ReplayRequest).decode
decode_room_joined = msgspec.json.Decoder(RoomJoined).decode
decode_room_left = msgspec.json.Decoder(RoomLeft).decode
decode_presence_asked = msgspec.json.Decoder(PresenceAsked).decode

COMMANDS: dict[str, type[Command]] = {
    "send": ApiSend,
    "broadcast": ApiBroadcast,
    "kick": ApiKick,
    "group.add": ApiGroupMembers,
    "group.remove": ApiGroupMembers,
    "group.members": ApiGroupList,
    "presence": ApiPresence,
    "connections": ApiConnections,
    "room.count": ApiRoomCount,
    **sync.HISTORY_COMMANDS,
}
"""Every backend command by name: ``api.<name>`` on the broker, ``POST /api/<name>`` over HTTP."""
