"""Routing decisions: a batch of envelopes + what Redis said about them -> publishes.

Pure: no I/O, no clock, no randomness (mids and times come in as arguments).
``presence.py`` asks Redis (one pipeline per batch, in batch order, so that each
envelope sees the writes of the ones before it, plus one follow-up pipeline for
group members and kicks) and hands the answers here as ``Lookup``s;
``batches.py`` performs the ``Plan``.

What a batch becomes (docs/architecture.md, "The life of a message"):

* every client frame for one gateway, across the whole batch, goes into ONE
  ``Delivery`` for that gateway's queue, its items in batch order (so a ``ready``
  precedes the messages routed to the connection it announces); a group message
  is ONE item per gateway listing every target connection of every member there,
  a room or broadcast message one item per gateway with no targets at all;
* messages whose recipients have no connection on a live gateway go into one
  ``Delivery`` on the undeliverable exchange, for the offline store;
* what must wait until those deliveries are confirmed goes out after them: replay
  requests (``ready`` is queued before the offline store can push stored messages
  behind it), the router's answers to senders (``sent`` means "routed", and carries
  the mid of the first frame with that ``id``: a retry's receipt names the message
  its recipients got), and the replies to backend commands (``api.<command>``).

Presence events (``user.online``, ``user.offline``) are debounced, so that a page
reload (the last connection closes, a new one opens at once) publishes nothing:

* when a uid's LAST connection goes (closed, kicked, or its gateway swept),
  presence.py does not announce it but records the uid in ``<ns>:going-offline``,
  due ``SWITCHBOARD_PRESENCE_DEBOUNCE_S`` later (``offline_due_ms``);
* when a uid's FIRST connection opens, presence.py removes the uid from that set in
  the same script: if it was there, the uid only flapped and nothing is published,
  else this module publishes ``user.online``;
* a periodic task takes the due uids; for each, the router whose ``ZREM`` removed
  it (exactly one) publishes ``user.offline`` if the uid still has no connection
  (``gone_offline``).

Limits decided here (presence.py counts and reads, this module decides):

* the presence policy (``SWITCHBOARD_PRESENCE_POLICY``): a client's ``presence`` frame is
  refused with ``forbidden`` (``nobody``), or answered with the uids it may see online
  (``sees_presence``; the others look offline), or with every uid online (``everyone``);
* the rate per uid across gateways (``UidRate``): each batch adds the cost of each uid's
  ``send`` and ``presence`` frames to a counter of the current window in Redis; the batch
  that takes a uid over its burst sends every live gateway a ``throttle_uid`` item, and they
  answer that uid's frames ``rate_limited`` until the window ends (``throttle_for_ms``). The
  frames already routed stay routed: each was answered ``sent`` before the router saw it.
"""

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from proto import envelopes, frames, rules
from proto import names as keys
from proto.codes import CloseCode, ErrorCode
from proto.envelopes import (
    ApiBroadcast,
    ApiConnections,
    ApiGroupMembers,
    ApiKick,
    ApiPresence,
    ApiRoomCount,
    ApiSend,
    Command,
    ConnClosed,
    ConnectionInfo,
    ConnectionsReply,
    ConnOpened,
    Delivery,
    DeliveryItem,
    Envelope,
    ErrorDetail,
    ErrorReply,
    GatewayStopped,
    Heartbeat,
    KickReply,
    OkReply,
    Origin,
    Outgoing,
    PresenceAsked,
    PresenceReply,
    ReplayRequest,
    ReplayTarget,
    RoomCountReply,
    RoomJoined,
    RoomLeft,
    Saved,
    SendReply,
    Target,
    UserOffline,
    UserOnline,
)
from proto.errors import BadEnvelope
from proto.items import DECODE_ERRORS, RefusedItem, decode_batch_items, reason_of
from proto.limits import THROTTLE_MIN_MS, PresencePolicy, frame_cost
from proto.names import HEADER_REJECTED_REASON, Names
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES, pack_delivery

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class Refused:
    """A backend command that cannot be served: a bad body, or an unknown command."""

    code: ErrorCode
    reason: str
    reply_to: ReplyTo | None


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
    | Call
    | Refused
)
"""Every envelope the router consumes, and the backend commands in their decoded form."""

_DECODERS: Mapping[str, Callable[[bytes], Inbound]] = {
    keys.KEY_CONN_OPENED: envelopes.decode_conn_opened,
    keys.KEY_CONN_CLOSED: envelopes.decode_conn_closed,
    keys.KEY_SEND: envelopes.decode_outgoing,
    keys.KEY_ROOM_JOINED: envelopes.decode_room_joined,
    keys.KEY_ROOM_LEFT: envelopes.decode_room_left,
    keys.KEY_PRESENCE: envelopes.decode_presence_asked,
    keys.KEY_HEARTBEAT: envelopes.decode_heartbeat,
    keys.KEY_GATEWAY_STOPPED: envelopes.decode_gateway_stopped,
    keys.KEY_SAVED: envelopes.decode_saved,
}
_COMMAND_DECODERS: Mapping[str, msgspec.json.Decoder[Command]] = {
    name: msgspec.json.Decoder(command_type)
    for name, command_type in envelopes.COMMANDS.items()
}
SENDING_COMMANDS = frozenset(("send", "broadcast"))
"""Commands that make a message, and so need a mid."""


def is_command(routing_key: str) -> bool:
    """Tell whether a routing key carries a backend command (``api.*``)."""
    return routing_key.startswith(keys.API_KEY_PREFIX)


def command_name(routing_key: str) -> str:
    """The command of an ``api.<command>`` routing key."""
    return routing_key.removeprefix(keys.API_KEY_PREFIX)


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


def decode_batch(body: bytes) -> tuple[list[Inbound], list[RefusedItem]]:
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
            if item.key not in keys.BATCHABLE_KEYS:
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
) -> Call | Refused:
    """Decode a backend command (strict, like every envelope).

    Args:
        routing_key: ``api.<command>``.
        body: the AMQP body, JSON of the command's ``proto.envelopes.Api*``.
        reply_to: where the reply goes, if the backend wants one.
        mid: the mid of the message the command makes, if it makes one.
        ts: the current Unix time in milliseconds.
        max_bytes: the largest body decoded (``SWITCHBOARD_MAX_COMMAND_BYTES``); None: any.

    Returns:
        The ``Call``, or why it is ``Refused``: ``unknown_command``, ``too_large``,
        ``invalid_json``, or ``invalid_field`` with msgspec's message (it names the JSON
        path): a field of the wrong type, a name that breaks ``proto/rules.py``'s identifier
        rule, a ``body`` that breaks its body rules.
    """
    name = command_name(routing_key)
    decoder = _COMMAND_DECODERS.get(name)
    if decoder is None:
        return Refused(ErrorCode.UNKNOWN_COMMAND, "no such command", reply_to)
    if max_bytes is not None and len(body) > max_bytes:
        return Refused(
            ErrorCode.TOO_LARGE, f"the body is larger than {max_bytes} bytes", reply_to
        )
    too_deep = rules.nesting_violation(body)
    if too_deep is not None:
        return Refused(ErrorCode.INVALID_FIELD, f"$.body {too_deep}", reply_to)
    try:
        command = decoder.decode(body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: first
        return Refused(ErrorCode.INVALID_FIELD, str(exc), reply_to)
    except msgspec.DecodeError:
        return Refused(ErrorCode.INVALID_JSON, "the body is not JSON", reply_to)
    except RecursionError:  # msgspec's decoder recurses per nesting level
        return Refused(
            ErrorCode.INVALID_JSON, "the body is nested too deeply", reply_to
        )
    if name not in SENDING_COMMANDS:
        mid, ts = "", 0
    return Call(name, command, reply_to, mid, ts)


def outgoing_of(call: Call) -> Outgoing | None:
    """The message an ``api.send`` or ``api.broadcast`` makes; None for other commands.

    It has no ``gateway_id`` or ``conn_id``: its sender is a backend, answered by a reply.
    """
    match call.command:
        case ApiSend() as send:
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


def unique(values: Iterable[T]) -> list[T]:
    """The values without repeats, in their first order."""
    return list(dict.fromkeys(values))


@dataclass(frozen=True, slots=True)
class Connection:
    """One connection of a uid, as ``<ns>:presence:<uid>`` records it."""

    conn_id: str
    gateway_id: str


@dataclass(frozen=True, slots=True)
class Lookup:
    """What Redis answered for one envelope, read after the envelopes before it."""

    connections: tuple[tuple[Connection, ...], ...] = ()
    """The connections of each uid the envelope names: ``to`` of a message, each of
    ``members``, each uid of a ``Saved`` in its order, each distinct uid of a
    presence query in its order, the uid of a kick or of ``api.connections``."""
    claimed_mid: str | None = None
    """For a message with a dedup key: the mid it held before (None: it was set)."""
    is_member: bool = True
    """For a client's group message: whether the sender is a member of the group."""
    members: tuple[str, ...] = ()
    """For a group message: the members other than the sender, sorted."""
    room_counts: Mapping[str, int] = field(default_factory=dict)
    """For a room message or ``api.room.count``: the room's connections per gateway."""
    is_first_connection: bool = False
    """For ``ConnOpened``: the uid had no other connection (presence was empty)."""
    has_flapped: bool = False
    """For ``ConnOpened``: the uid was going offline (debounce), so it never left."""
    is_over_connection_limit: bool = False
    """For ``ConnOpened``: the uid holds ``SWITCHBOARD_MAX_CONNECTIONS_PER_UID``
    connections already, so this one was not registered."""
    is_unknown_gateway: bool = False
    """For ``Heartbeat``: Redis had no record of the gateway (first heartbeat, Redis
    restarted empty, or the gateway was swept while it lived on)."""
    visible: tuple[bool, ...] | None = None
    """For a client's presence query under the ``shared_group`` policy: whether the asker may
    see each distinct uid (``sees_presence``); None: every uid."""
    throttle_ms: int = 0
    """On the last envelope of a uid whose frames took it over its rate in this batch: how
    long its gateways refuse its frames (``throttle_for_ms``); 0: not throttled."""


NO_LOOKUP = Lookup()


@dataclass(frozen=True, slots=True)
class Publish:
    """One AMQP message to publish (persistent, with a publisher confirm)."""

    exchange: str
    """The exchange's name; "" is the default exchange (replies to ``reply_to``)."""
    routing_key: str
    body: bytes
    mid: str = ""
    """The AMQP ``message_id``: the mid when the message carries exactly one message."""
    correlation_id: str = ""
    """The AMQP ``correlation_id`` of a reply to a backend command."""
    mandatory: bool = True
    """Whether a message no queue takes is an error (not for events and replies,
    which nobody may be waiting for)."""
    reason: str = ""
    """For a dead-lettered item: why it was refused (``HEADER_REJECTED_REASON``)."""

    @property
    def headers(self) -> dict[str, str] | None:
        """The AMQP headers of the message."""
        return {HEADER_REJECTED_REASON: self.reason} if self.reason else None


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A retry dropped because its ``client_id`` already carried another mid."""

    mid: str
    client_id: str
    first_mid: str


@dataclass(frozen=True, slots=True)
class Throttled:
    """A uid over its rate across gateways, refused by every gateway for ``throttle_ms``."""

    uid: str
    throttle_ms: int


@dataclass(frozen=True, slots=True)
class Removal:
    """A connection to take out of presence before the batch's replies (a kicked one)."""

    uid: str
    connection: Connection


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one batch, in this order; then the batch is acknowledged."""

    deliveries: tuple[Publish, ...] = ()
    """Published concurrently, each confirmed."""
    events: tuple[Publish, ...] = ()
    """``user.online`` events, published with the deliveries."""
    removals: tuple[Removal, ...] = ()
    """Kicked connections: out of presence once the ``kicked`` frames are queued (a
    batch that fails before finds them again when it is redelivered)."""
    replays: tuple[Publish, ...] = ()
    """Published once every delivery is confirmed (``ready`` before stored ones)."""
    replies: tuple[Publish, ...] = ()
    """Published once every delivery is confirmed: ``sent`` (or ``not_member``) to
    client senders, replies to backend commands."""
    sweeps: tuple[str, ...] = ()
    """Gateways that stopped: sweep their presence now."""
    known: tuple[str, ...] = ()
    """Gateways whose heartbeat found no record of them: recorded as known once the
    deliveries (the re-announce request among them) are confirmed. Recorded before, a batch
    that fails and comes back would find them known and never ask again."""
    duplicates: tuple[Duplicate, ...] = ()
    """Retries dropped (logged, acknowledged, answered with the first mid)."""
    throttled: tuple[Throttled, ...] = ()
    """Uids over their rate across gateways, whose throttle items are in the deliveries
    (logged and counted)."""


def is_live(last_seen_ms: int | None, now_ms: int, gateway_ttl_ms: int) -> bool:
    """Tell whether a gateway counts as live.

    Args:
        last_seen_ms: its last heartbeat (Unix ms) as last read from Redis; None
            for a gateway not seen yet, which counts as live (it may be brand new).
        now_ms: the current Unix time in milliseconds.
        gateway_ttl_ms: how long a gateway stays live after its last heartbeat.
    """
    return last_seen_ms is None or last_seen_ms >= now_ms - gateway_ttl_ms


def dead_gateways(
    last_seen_ms: Mapping[str, int], now_ms: int, gateway_ttl_ms: int
) -> list[str]:
    """Return the gateways not heard from for ``gateway_ttl_ms``, oldest first."""
    return sorted(
        (
            gid
            for gid, seen in last_seen_ms.items()
            if not is_live(seen, now_ms, gateway_ttl_ms)
        ),
        key=lambda gid: (last_seen_ms[gid], gid),
    )


def needs_gateways(envelope: Inbound) -> bool:
    """Tell whether routing the envelope needs the list of live gateways (a broadcast)."""
    match envelope:
        case Outgoing(broadcast=True):
            return True
        case Call(command=ApiBroadcast()):
            return True
        case _:
            return False


def route_batch(
    names: Names,
    batch: Sequence[Inbound],
    lookups: Sequence[Lookup],
    *,
    last_seen_ms: Mapping[str, int],
    now_ms: int,
    gateway_ttl_ms: int,
    presence_policy: PresencePolicy = PresencePolicy.EVERYONE,
    max_message_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES,
) -> Plan:
    """Decide the publishes of one batch.

    Args:
        names: the namespace's names.
        batch: the decoded envelopes, in the order they were consumed.
        lookups: one per envelope, in the same order (see ``Lookup``).
        last_seen_ms: the last heartbeat of each known gateway (Unix ms); a
            broadcast goes to every live one.
        now_ms: the current Unix time in milliseconds.
        gateway_ttl_ms: how long a gateway stays live after its last heartbeat.
        presence_policy: who may learn presence with a client's ``presence`` frame.
        max_message_bytes: the most bytes of one delivery
            (``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``); more items go in more messages.

    Returns:
        The deliveries (one per gateway, plus one for the offline store; more when they
        would be larger than ``max_message_bytes``) and
        events, then the replay requests and the replies, the gateways to sweep
        and the dropped retries.

    Raises:
        ValueError: ``lookups`` does not match ``batch``.
    """
    if len(lookups) != len(batch):
        raise ValueError("one lookup per envelope is needed")
    plan = _PlanBuilder(
        names,
        last_seen_ms,
        now_ms,
        gateway_ttl_ms,
        presence_policy,
        max_message_bytes,
    )
    for envelope, lookup in zip(batch, lookups, strict=True):
        plan.add(envelope, lookup)
    return plan.build()


class _PlanBuilder:
    """The publishes of one batch so far, grouped per gateway."""

    def __init__(
        self,
        names: Names,
        last_seen_ms: Mapping[str, int],
        now_ms: int,
        gateway_ttl_ms: int,
        presence_policy: PresencePolicy,
        max_message_bytes: int,
    ) -> None:
        self.names = names
        self.last_seen_ms = last_seen_ms
        self.now_ms = now_ms
        self.gateway_ttl_ms = gateway_ttl_ms
        self.presence_policy = presence_policy
        self.throttled: list[Throttled] = []
        self.max_message_bytes = max_message_bytes
        self.per_gateway: dict[str, list[DeliveryItem]] = {}
        self.offline: list[DeliveryItem] = []
        self.answers: dict[str, list[DeliveryItem]] = {}
        self.events: list[Publish] = []
        self.removals: list[Removal] = []
        self.replays: list[Publish] = []
        self.replies: list[Publish] = []
        self.sweeps: list[str] = []
        self.known: list[str] = []
        self.duplicates: list[Duplicate] = []
        self.routed_mids: set[str] = set()

    def is_live(self, gateway_id: str) -> bool:
        seen = self.last_seen_ms.get(gateway_id)
        return is_live(seen, self.now_ms, self.gateway_ttl_ms)

    def live(self, connections: Iterable[Connection]) -> list[Connection]:
        return [c for c in connections if self.is_live(c.gateway_id)]

    def deliver(self, gateway_id: str, item: DeliveryItem) -> None:
        self.per_gateway.setdefault(gateway_id, []).append(item)

    def reply(self, reply_to: ReplyTo | None, reply: Envelope) -> None:
        if reply_to is not None:
            self.replies.append(reply_publish(reply_to, reply))

    def throttle(self, uid: str, throttle_ms: int) -> None:
        """Tell every live gateway to refuse the uid's frames for a while: a connection it
        opens meanwhile, on any of them, is refused as well."""
        self.throttled.append(Throttled(uid, throttle_ms))
        item = throttle_item(uid, throttle_ms)
        for gateway_id in sorted(g for g in self.last_seen_ms if self.is_live(g)):
            self.deliver(gateway_id, item)

    def add(self, envelope: Inbound, lookup: Lookup) -> None:
        if lookup.throttle_ms and isinstance(envelope, Outgoing | PresenceAsked):
            uid = envelope.sender if isinstance(envelope, Outgoing) else envelope.uid
            self.throttle(uid, lookup.throttle_ms)
        match envelope:
            case Outgoing():
                self.add_outgoing(envelope, lookup)
            case Call():
                self.add_call(envelope, lookup)
            case Refused(code=code, reason=reason, reply_to=reply_to):
                self.reply(reply_to, ErrorReply(error=ErrorDetail(code, reason)))
            case ConnOpened(uid=uid, conn_id=conn_id, gateway_id=gateway_id):
                if lookup.is_over_connection_limit:
                    # Not registered: an error and a close instead of ready, no replay.
                    self.deliver(gateway_id, too_many_connections_item(uid, conn_id))
                    return
                if not envelope.reannounce:
                    self.deliver(gateway_id, ready_item(uid, conn_id))
                # A re-announced connection gets what was stored while it was unknown.
                target = ReplayTarget(gateway_id, conn_id)
                self.replays.append(replay_publish(self.names, uid, [target], ""))
                if (
                    lookup.is_first_connection
                    and not lookup.has_flapped
                    and not envelope.reannounce
                ):
                    event = UserOnline(uid=uid, ts=self.now_ms)
                    self.events.append(
                        event_publish(self.names, keys.EVENT_USER_ONLINE, event)
                    )
            case PresenceAsked():
                asker = Target(envelope.uid, envelope.conn_id)
                self.deliver(
                    envelope.gateway_id,
                    frame_item(self.presence_answer(envelope, lookup), [asker]),
                )
            case Saved():
                for saved, connections in zip(
                    envelope.uids, lookup.connections, strict=True
                ):
                    targets = [
                        ReplayTarget(c.gateway_id, c.conn_id)
                        for c in self.live(connections)
                    ]
                    if targets:
                        self.replays.append(
                            replay_publish(
                                self.names, saved.uid, targets, saved.first_mid
                            )
                        )
            case GatewayStopped():
                self.sweeps.append(envelope.gateway_id)
            case Heartbeat(gateway_id=gateway_id, connections=connections):
                if lookup.is_unknown_gateway:
                    self.known.append(gateway_id)
                if should_reannounce(lookup.is_unknown_gateway, connections):
                    self.deliver(gateway_id, reannounce_item())
            case ConnClosed() | RoomJoined() | RoomLeft():
                pass  # presence writes only, done by presence.py

    def presence_answer(
        self, asked: PresenceAsked, lookup: Lookup
    ) -> frames.ServerFrame:
        """A client's presence query, answered as the presence policy allows."""
        if self.presence_policy is PresencePolicy.NOBODY:
            return frames.Error(
                code=ErrorCode.FORBIDDEN,
                message="presence is not available to clients",
                id=asked.client_id,
            )
        uids = unique(asked.uids)
        if lookup.visible is not None:
            seen = [
                (uid, connections)
                for uid, connections, is_visible in zip(
                    uids, lookup.connections, lookup.visible, strict=True
                )
                if is_visible
            ]
            uids = [uid for uid, _ in seen]
            connections = [c for _, c in seen]
        else:
            connections = list(lookup.connections)
        online = online_uids(uids, connections, self.is_live)
        return frames.PresenceResult(id=asked.client_id, online=online)

    def add_outgoing(self, outgoing: Outgoing, lookup: Lookup) -> None:
        """A client's message, and the sender's ``sent`` (the first mid, for a retry)."""
        is_group = outgoing.group is not None
        if is_group and not lookup.is_member:
            error = frames.Error(
                code=ErrorCode.NOT_MEMBER,
                message="only members may send to a group",
                id=outgoing.client_id,
            )
            self.answer(outgoing, error)
            return
        mid = self.route_once(outgoing, lookup)
        if mid is not None:
            self.answer(outgoing, frames.Sent(id=outgoing.client_id, mid=mid))

    def add_call(self, call: Call, lookup: Lookup) -> None:
        """A backend command: its effects, and its reply."""
        reply_to = call.reply_to
        outgoing = outgoing_of(call)
        if outgoing is not None:
            mid = self.route_once(outgoing, lookup)
            if mid is not None:
                self.reply(reply_to, SendReply(mid=mid))
            return
        match call.command:
            case ApiKick(uid=uid, reason=reason):
                self.removals += [Removal(uid, c) for c in lookup.connections[0]]
                connections = self.live(lookup.connections[0])
                for item_gateway, item in kick_items(uid, reason, connections):
                    self.deliver(item_gateway, item)
                self.reply(reply_to, KickReply(kicked=len(connections)))
            case ApiGroupMembers():
                self.reply(reply_to, OkReply())
            case ApiPresence(uids=uids):
                online = online_uids(unique(uids), lookup.connections, self.is_live)
                self.reply(reply_to, PresenceReply(online=online))
            case ApiConnections():
                infos = [
                    ConnectionInfo(conn_id=c.conn_id, gateway_id=c.gateway_id)
                    for c in self.live(lookup.connections[0])
                ]
                self.reply(reply_to, ConnectionsReply(connections=infos))
            case ApiRoomCount():
                count = room_count(lookup.room_counts, self.is_live)
                self.reply(reply_to, RoomCountReply(count=count))
            case _:
                raise ValueError(f"no routing for command {call.name!r}")

    def route_once(self, outgoing: Outgoing, lookup: Lookup) -> str | None:
        """Route a message unless it is a retry; return the mid to answer with.

        None: the same mid was routed earlier in this batch (a redelivery), and
        answered then.
        """
        claimed = lookup.claimed_mid
        if claimed is not None and claimed != outgoing.mid:
            # A retry: its client_id already carries another mid. (The same mid
            # again is a redelivery after a failure: route it.)
            self.duplicates.append(Duplicate(outgoing.mid, outgoing.client_id, claimed))
            return claimed
        if outgoing.mid in self.routed_mids:
            return None
        self.routed_mids.add(outgoing.mid)
        if outgoing.to is not None:
            recipient = lookup.connections[0] if lookup.connections else ()
            route_message(
                outgoing, self.live(recipient), self.per_gateway, self.offline
            )
        elif outgoing.group is not None:
            members = [
                (uid, self.live(connections))
                for uid, connections in zip(
                    lookup.members, lookup.connections, strict=True
                )
                if uid != outgoing.sender
            ]
            route_group_message(outgoing, members, self.per_gateway, self.offline)
        elif outgoing.room is not None:
            gateways = [
                gid
                for gid, count in sorted(lookup.room_counts.items())
                if count > 0 and self.is_live(gid)
            ]
            for gateway_id, item in room_items(outgoing, outgoing.room, gateways):
                self.deliver(gateway_id, item)
        else:
            gateways = sorted(g for g in self.last_seen_ms if self.is_live(g))
            for gateway_id, item in broadcast_items(outgoing, gateways):
                self.deliver(gateway_id, item)
        return outgoing.mid

    def answer(self, outgoing: Outgoing, frame: frames.ServerFrame) -> None:
        """A frame for the sender's connection, once the batch's deliveries are confirmed."""
        target = Target(outgoing.sender, outgoing.conn_id)
        self.answers.setdefault(outgoing.gateway_id, []).append(
            frame_item(frame, [target])
        )

    def build(self) -> Plan:
        limit = self.max_message_bytes
        deliveries = [
            publish
            for gateway_id, items in self.per_gateway.items()
            for publish in delivery_publishes(
                self.names.deliveries_exchange, gateway_id, items, limit
            )
        ]
        deliveries += delivery_publishes(
            self.names.undeliverable_exchange, "", self.offline, limit
        )
        answers = [
            publish
            for gateway_id, items in self.answers.items()
            for publish in delivery_publishes(
                self.names.deliveries_exchange, gateway_id, items, limit
            )
        ]
        return Plan(
            deliveries=tuple(deliveries),
            events=tuple(self.events),
            removals=tuple(self.removals),
            replays=tuple(self.replays),
            replies=(*answers, *self.replies),
            sweeps=tuple(self.sweeps),
            known=tuple(self.known),
            duplicates=tuple(self.duplicates),
            throttled=tuple(self.throttled),
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
            )
        )
    )


def route_message(
    outgoing: Outgoing,
    connections: Sequence[Connection],
    per_gateway: dict[str, list[DeliveryItem]],
    offline: list[DeliveryItem],
) -> None:
    """Add one message to the deliveries of the gateways holding ``connections``.

    Args:
        outgoing: the message, addressed ``to`` a uid.
        connections: the recipient's connections on live gateways.
        per_gateway: the items of each gateway's delivery so far; extended in place.
        offline: the items for the offline store so far; extended when
            ``connections`` is empty.
    """
    recipient = outgoing.to or ""
    route_group_message(outgoing, [(recipient, connections)], per_gateway, offline)


def route_group_message(
    outgoing: Outgoing,
    recipients: Sequence[tuple[str, Sequence[Connection]]],
    per_gateway: dict[str, list[DeliveryItem]],
    offline: list[DeliveryItem],
) -> None:
    """Add a message for several uids: one item per gateway, one for the offline store.

    Args:
        outgoing: the message.
        recipients: each recipient uid with its connections on live gateways.
        per_gateway: the items of each gateway's delivery so far; extended with ONE
            item per gateway, listing every target connection of every recipient there.
        offline: the items for the offline store so far; extended with ONE item
            listing the recipients that have no connection, if any.
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
            message_item(frame, gateway_targets, outgoing.mid, origin)
        )
    if absent:
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
    uid: str, reason: str, connections: Sequence[Connection]
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


def online_uids(
    uids: Sequence[str],
    connections: Sequence[Sequence[Connection]],
    is_live_gateway: Callable[[str], bool],
) -> list[str]:
    """The uids (distinct, in order) with a connection on a live gateway.

    Args:
        uids: the distinct uids asked about.
        connections: each uid's connections, in the same order.
        is_live_gateway: tells a live gateway.
    """
    return [
        uid
        for uid, held in zip(uids, connections, strict=True)
        if any(is_live_gateway(c.gateway_id) for c in held)
    ]


def room_count(
    counts: Mapping[str, int], is_live_gateway: Callable[[str], bool]
) -> int:
    """The connections in a room: the sum of its per-gateway counts on live gateways."""
    return sum(
        count
        for gateway_id, count in counts.items()
        if count > 0 and is_live_gateway(gateway_id)
    )


def message_item(
    frame: msgspec.Raw, targets: list[Target], mid: str, origin: Origin | None = None
) -> DeliveryItem:
    """A message for some connections; durable: an unacknowledged copy is stored."""
    return DeliveryItem(
        frame=frame, targets=targets, mid=mid, durable=True, origin=origin
    )


def frame_item(frame: frames.ServerFrame, targets: list[Target]) -> DeliveryItem:
    """A frame that is not a message (no mid, not durable) for some connections."""
    return DeliveryItem(frame=msgspec.Raw(frames.encode(frame)), targets=targets)


def should_reannounce(is_unknown_gateway: bool, connections: int) -> bool:
    """Tell whether to ask a gateway to announce its connections and rooms again.

    Args:
        is_unknown_gateway: Redis had no record of the gateway before this heartbeat.
        connections: the connections the heartbeat says the gateway holds.

    A gateway new to Redis that holds connections is one whose presence was lost: Redis
    restarted empty, or routers swept it while it was frozen or cut from the broker. Its
    clients are still connected, and without their presence every message for them would
    go to the offline store until they reconnect.
    """
    return is_unknown_gateway and connections > 0


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


def delivery_publish(
    exchange: str, routing_key: str, items: list[DeliveryItem]
) -> Publish:
    """One ``Delivery`` with these items, as one AMQP message."""
    body = envelopes.encode(Delivery(items=items))
    return Publish(exchange, routing_key, body, _only_mid(items))


def delivery_publishes(
    exchange: str, routing_key: str, items: list[DeliveryItem], max_bytes: int
) -> list[Publish]:
    """The ``Delivery`` messages with these items, each at most ``max_bytes`` (one when they
    fit, none for no items)."""
    return [
        Publish(exchange, routing_key, packed.body, _only_mid(packed.items))
        for packed in pack_delivery(items, max_bytes)
    ]


def _only_mid(items: Iterable[DeliveryItem]) -> str:
    """The AMQP ``message_id``: the mid when the items carry exactly one message."""
    mids = unique(item.mid for item in items if item.mid)
    return mids[0] if len(mids) == 1 else ""


def dead_letter_publish(names: Names, routing_key: str, item: RefusedItem) -> Publish:
    """A refused item, alone, to the dead-letter exchange with its reason."""
    return Publish(
        names.dead_letter_exchange, routing_key, item.body, reason=item.reason
    )


def replay_publish(
    names: Names, uid: str, targets: list[ReplayTarget], from_mid: str
) -> Publish:
    """Ask the offline store to replay ``uid``'s rows from ``from_mid`` to targets."""
    body = envelopes.encode(ReplayRequest(uid=uid, targets=targets, from_mid=from_mid))
    return Publish(names.inbound_exchange, keys.KEY_REPLAY, body)


def reply_publish(reply_to: ReplyTo, reply: Envelope) -> Publish:
    """A command's reply: to its ``reply_to`` queue through the default exchange.

    Not mandatory: a backend that gave up waiting may have deleted its queue.
    """
    return Publish(
        "",
        reply_to.queue,
        envelopes.encode(reply),
        correlation_id=reply_to.correlation_id,
        mandatory=False,
    )


def event_publish(names: Names, routing_key: str, event: Envelope) -> Publish:
    """An event for backends; not mandatory: no backend may be listening."""
    return Publish(
        names.events_exchange, routing_key, envelopes.encode(event), mandatory=False
    )


# Debounced user.offline (see the module docstring)


def offline_due_ms(now_ms: int, debounce_ms: int) -> int:
    """When a uid whose last connection went now is announced offline, if it stays so."""
    return now_ms + debounce_ms


def gone_offline(
    due_uids: Sequence[str],
    were_claimed: Sequence[bool],
    connection_counts: Sequence[int],
) -> list[str]:
    """The due uids this router announces offline.

    Args:
        due_uids: uids whose debounce is over.
        were_claimed: for each, whether this router's ``ZREM`` removed it from the
            going-offline set (so no other router announces it, and it did not
            come back meanwhile: a new first connection removes it as well).
        connection_counts: for each, how many connections it holds now (read in the
            same transaction as the ``ZREM``).
    """
    return [
        uid
        for uid, claimed, count in zip(
            due_uids, were_claimed, connection_counts, strict=True
        )
        if claimed and count == 0
    ]


def offline_events(names: Names, uids: Iterable[str], now_ms: int) -> list[Publish]:
    """The ``user.offline`` events of these uids."""
    return [
        event_publish(names, keys.EVENT_USER_OFFLINE, UserOffline(uid=uid, ts=now_ms))
        for uid in uids
    ]


# Presence policy and the rate per uid across gateways (see the module docstring)


def sees_presence(
    asker: str, uid: str, asker_groups: Collection[str], uid_groups: Collection[str]
) -> bool:
    """Whether ``asker`` may see ``uid``'s presence under the ``shared_group`` policy.

    Args:
        asker: the uid of the client that asks.
        uid: the uid asked about.
        asker_groups: the groups ``asker`` is a member of.
        uid_groups: the groups ``uid`` is a member of.
    """
    return uid == asker or not set(asker_groups).isdisjoint(uid_groups)


@dataclass(frozen=True, slots=True)
class UidRate:
    """The rate per uid across gateways: at most ``burst`` frames (``frame_cost``) per window
    of ``window_ms`` (``burst / rate`` seconds), windows counted from the epoch."""

    window_ms: int
    burst: int


def uid_rate(per_s: float, burst: int) -> UidRate | None:
    """The per-uid limit of these settings; None when ``per_s`` is 0 (no limit)."""
    if per_s <= 0:
        return None
    return UidRate(window_ms=max(1, round(burst / per_s * 1000)), burst=burst)


def uid_costs(batch: Sequence[Inbound]) -> dict[str, tuple[int, int]]:
    """What each uid's client frames in the batch cost, and the index of its last envelope.

    Counted: ``send`` (one frame) and ``presence`` (``frame_cost`` of its uids) from clients;
    not what backends send (they have no gateway), nor logins, room changes or acks.
    """
    costs: dict[str, tuple[int, int]] = {}
    for index, envelope in enumerate(batch):
        match envelope:
            case Outgoing(sender=uid, gateway_id=gateway_id) if gateway_id:
                cost = 1
            case PresenceAsked(uid=uid, uids=uids):
                cost = frame_cost(len(uids))
            case _:
                continue
        costs[uid] = (costs.get(uid, (0, index))[0] + cost, index)
    return costs


def throttle_for_ms(count: int, cost: int, rate: UidRate, now_ms: int) -> int:
    """How long to refuse a uid's frames, now that its window's count is ``count``.

    Args:
        count: the cost of the uid's frames in the current window, this batch's included.
        cost: this batch's part of it.
        rate: the limit.
        now_ms: the current Unix time in milliseconds (the window is ``now_ms // window_ms``).

    Returns:
        0 unless this batch took the uid over ``burst`` (a uid over it already was throttled
        by the batch that took it there); else until the window ends, at least
        ``THROTTLE_MIN_MS``.
    """
    if count <= rate.burst or count - cost > rate.burst:
        return 0
    window_end_ms = (now_ms // rate.window_ms + 1) * rate.window_ms
    return max(window_end_ms - now_ms, THROTTLE_MIN_MS)
