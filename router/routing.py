"""Routing decisions: a batch of envelopes + what Redis said about them -> publishes.

Pure: no I/O, no clock, no randomness (mids and times come in as arguments). lookups.py
decides what a batch reads and writes in Redis and hands the answers here
(``lookups.Answers``, one typed answer per envelope); ``batches.py`` performs the ``Plan``.

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
  its recipients got), and the replies to backend commands (``api.<command>``);
  and the Redis writes that must wait as well (kicked connections, known gateways).

A first connection publishes ``user.online`` unless the uid only flapped (debounce.py).
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from proto import frames
from proto import names as keys
from proto.codes import ErrorCode
from proto.envelopes import (
    ApiBroadcast,
    ApiConnections,
    ApiGroupMembers,
    ApiKick,
    ApiPresence,
    ApiRoomCount,
    ApiSend,
    ConnClosed,
    ConnectionInfo,
    ConnectionsReply,
    ConnOpened,
    DeliveryItem,
    Envelope,
    ErrorDetail,
    ErrorReply,
    GatewayStopped,
    Heartbeat,
    KickReply,
    OkReply,
    Outgoing,
    PresenceAsked,
    PresenceReply,
    ReplayTarget,
    RoomCountReply,
    RoomJoined,
    RoomLeft,
    Saved,
    SendReply,
    Target,
    UserOnline,
)
from proto.names import Names
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES
from router.debounce import offline_due_ms
from router.delivery_items import (
    add_message_items,
    broadcast_items,
    frame_item,
    kick_items,
    ready_item,
    reannounce_item,
    room_items,
    throttle_item,
    too_many_connections_item,
)
from router.inbound import Call, Inbound, Refused, ReplyTo, outgoing_of
from router.limits import Throttled
from router.liveness import is_live, should_reannounce
from router.lookups import (
    Answer,
    Answers,
    Everyone,
    MessageAnswer,
    NotMember,
    PresenceForbidden,
    Recipients,
    Retried,
)
from router.publishes import (
    Publish,
    delivery_publishes,
    event_publish,
    replay_publish,
    reply_publish,
)
from router.requests import (
    Connection,
    Connections,
    HeartbeatRecorded,
    MarkKnown,
    Opened,
    RemoveConnection,
    RoomCounts,
    UidConnections,
)

__all__ = [  # the Plan's vocabulary; bus.py and observability.py read it from here
    "Call",
    "Duplicate",
    "Inbound",
    "Plan",
    "Publish",
    "online_uids",
    "outgoing_of",
    "room_count",
    "route_batch",
]


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A retry dropped because its ``client_id`` already carried another mid."""

    mid: str
    client_id: str
    first_mid: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one batch, in this order; then the batch is acknowledged."""

    deliveries: tuple[Publish, ...] = ()
    """Published concurrently, each confirmed."""
    events: tuple[Publish, ...] = ()
    """``user.online`` events, published with the deliveries."""
    removals: tuple[RemoveConnection, ...] = ()
    """Kicked connections: out of presence once the ``kicked`` frames are queued (a
    batch that fails before finds them again when it is redelivered)."""
    replays: tuple[Publish, ...] = ()
    """Published once every delivery is confirmed (``ready`` before stored ones)."""
    replies: tuple[Publish, ...] = ()
    """Published once every delivery is confirmed: ``sent`` (or ``not_member``) to
    client senders, replies to backend commands."""
    sweeps: tuple[str, ...] = ()
    """Gateways that stopped: sweep their presence now."""
    known: tuple[MarkKnown, ...] = ()
    """Gateways whose heartbeat found no record of them: recorded as known once the
    deliveries (the re-announce request among them) are confirmed. Recorded before, a batch
    that fails and comes back would find them known and never ask again."""
    duplicates: tuple[Duplicate, ...] = ()
    """Retries dropped (logged, acknowledged, answered with the first mid)."""
    throttled: tuple[Throttled, ...] = ()
    """Uids over their rate across gateways, whose throttle items are in the deliveries
    (logged and counted)."""


def route_batch(
    names: Names,
    batch: Sequence[Inbound],
    answers: Answers,
    *,
    last_seen_ms: Mapping[str, int],
    now_ms: int,
    gateway_ttl_ms: int,
    debounce_ms: int,
    max_message_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES,
) -> Plan:
    """Decide the publishes of one batch.

    Args:
        names: the namespace's names.
        batch: the decoded envelopes, in the order they were consumed.
        answers: what Redis said about them (``lookups.BatchLookup``).
        last_seen_ms: the last heartbeat of each known gateway (Unix ms); a
            broadcast goes to every live one.
        now_ms: the current Unix time in milliseconds.
        gateway_ttl_ms: how long a gateway stays live after its last heartbeat.
        debounce_ms: how long a uid that lost its last connection (kicked) waits for
            ``user.offline``.
        max_message_bytes: the most bytes of one delivery
            (``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``); more items go in more messages.

    Returns:
        The deliveries (one per gateway, plus one for the offline store; more when they
        would be larger than ``max_message_bytes``) and
        events, then the replay requests and the replies, the gateways to sweep
        and the dropped retries.

    Raises:
        ValueError: ``answers`` does not match ``batch``.
    """
    if len(answers.per_envelope) != len(batch):
        raise ValueError("one answer per envelope is needed")
    plan = _PlanBuilder(
        names,
        last_seen_ms,
        now_ms,
        gateway_ttl_ms,
        offline_due_ms(now_ms, debounce_ms),
        max_message_bytes,
    )
    for index, (envelope, answer) in enumerate(
        zip(batch, answers.per_envelope, strict=True)
    ):
        throttled = answers.throttles.get(index)
        if throttled is not None:
            plan.throttle(throttled)
        plan.add(envelope, answer)
    return plan.build()


class _PlanBuilder:
    """The publishes of one batch so far, grouped per gateway."""

    def __init__(
        self,
        names: Names,
        last_seen_ms: Mapping[str, int],
        now_ms: int,
        gateway_ttl_ms: int,
        offline_due_ms: int,
        max_message_bytes: int,
    ) -> None:
        self.names = names
        self.last_seen_ms = last_seen_ms
        self.now_ms = now_ms
        self.gateway_ttl_ms = gateway_ttl_ms
        self.offline_due_ms = offline_due_ms
        self.max_message_bytes = max_message_bytes
        self.throttled: list[Throttled] = []
        self.per_gateway: dict[str, list[DeliveryItem]] = {}
        self.offline: list[DeliveryItem] = []
        self.answers: dict[str, list[DeliveryItem]] = {}
        self.events: list[Publish] = []
        self.known: list[MarkKnown] = []
        self.removals: list[RemoveConnection] = []
        self.replays: list[Publish] = []
        self.replies: list[Publish] = []
        self.sweeps: list[str] = []
        self.duplicates: list[Duplicate] = []
        self.routed_mids: set[str] = set()

    def is_live(self, gateway_id: str) -> bool:
        seen = self.last_seen_ms.get(gateway_id)
        return is_live(seen, self.now_ms, self.gateway_ttl_ms)

    def live(self, connections: Iterable[Connection]) -> list[Connection]:
        return [c for c in connections if self.is_live(c.gateway_id)]

    def live_gateways(self) -> list[str]:
        return sorted(g for g in self.last_seen_ms if self.is_live(g))

    def deliver(self, gateway_id: str, item: DeliveryItem) -> None:
        self.per_gateway.setdefault(gateway_id, []).append(item)

    def reply(self, reply_to: ReplyTo | None, reply: Envelope) -> None:
        if reply_to is not None:
            self.replies.append(reply_publish(reply_to, reply))

    def throttle(self, throttled: Throttled) -> None:
        """Tell every live gateway to refuse the uid's frames for a while: a connection it
        opens meanwhile, on any of them, is refused as well."""
        self.throttled.append(throttled)
        item = throttle_item(throttled.uid, throttled.throttle_ms)
        for gateway_id in self.live_gateways():
            self.deliver(gateway_id, item)

    def add(self, envelope: Inbound, answer: Answer) -> None:
        match envelope, answer:
            case (
                Outgoing(),
                NotMember() | Retried() | Recipients() | RoomCounts() | Everyone(),
            ):
                self.add_outgoing(envelope, answer)
            case Call(), _:
                self.add_call(envelope, answer)
            case Refused(code=code, reason=reason, reply_to=reply_to), None:
                self.reply(reply_to, ErrorReply(error=ErrorDetail(code, reason)))
            case ConnOpened(), Opened():
                self.add_opened(envelope, answer)
            case PresenceAsked(), PresenceForbidden() | Connections():
                asker = Target(envelope.uid, envelope.conn_id)
                self.deliver(
                    envelope.gateway_id,
                    frame_item(self.presence_answer(envelope, answer), [asker]),
                )
            case Saved(), Connections(by_uid=by_uid):
                for saved, (_, connections) in zip(envelope.uids, by_uid, strict=True):
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
            case GatewayStopped(gateway_id=gateway_id), None:
                self.sweeps.append(gateway_id)
            case Heartbeat(gateway_id=gateway_id, connections=connections), (
                HeartbeatRecorded(was_known=was_known)
            ):
                if not was_known:
                    self.known.append(MarkKnown(gateway_id))
                if should_reannounce(not was_known, connections):
                    self.deliver(gateway_id, reannounce_item())
            case ConnClosed() | RoomJoined() | RoomLeft(), None:
                pass  # presence writes only, made by lookups.py's requests
            case _:
                raise ValueError(
                    f"no routing for a {type(envelope).__name__}"
                    f" answered {type(answer).__name__}"
                )

    def add_opened(self, opened: ConnOpened, answer: Opened) -> None:
        """A connection's ``ready`` and replay, and its uid's ``user.online``."""
        uid, conn_id, gateway_id = opened.uid, opened.conn_id, opened.gateway_id
        if answer.is_over_connection_limit:
            # Not registered: an error and a close instead of ready, no replay.
            self.deliver(gateway_id, too_many_connections_item(uid, conn_id))
            return
        if not opened.reannounce:
            self.deliver(gateway_id, ready_item(uid, conn_id))
        # A re-announced connection gets what was stored while it was unknown.
        target = ReplayTarget(gateway_id, conn_id)
        self.replays.append(replay_publish(self.names, uid, [target], ""))
        if (
            answer.is_first_connection
            and not answer.has_flapped
            and not opened.reannounce
        ):
            event = UserOnline(uid=uid, ts=self.now_ms)
            self.events.append(event_publish(self.names, keys.EVENT_USER_ONLINE, event))

    def presence_answer(
        self, asked: PresenceAsked, answer: PresenceForbidden | Connections
    ) -> frames.ServerFrame:
        """A client's presence query, answered as the presence policy allows."""
        if isinstance(answer, PresenceForbidden):
            return frames.Error(
                code=ErrorCode.FORBIDDEN,
                message="presence is not available to clients",
                id=asked.client_id,
            )
        online = online_uids(answer.by_uid, self.is_live)
        return frames.PresenceResult(id=asked.client_id, online=online)

    def add_outgoing(self, outgoing: Outgoing, answer: MessageAnswer) -> None:
        """A client's message, and the sender's ``sent`` (the first mid, for a retry)."""
        if isinstance(answer, NotMember):
            error = frames.Error(
                code=ErrorCode.NOT_MEMBER,
                message="only members may send to a group",
                id=outgoing.client_id,
            )
            self.answer(outgoing, error)
            return
        mid = self.route_once(outgoing, answer)
        if mid is not None:
            self.answer(outgoing, frames.Sent(id=outgoing.client_id, mid=mid))

    def add_call(self, call: Call, answer: Answer) -> None:
        """A backend command: its effects, and its reply."""
        reply_to = call.reply_to
        match call.command, answer:
            case ApiSend() | ApiBroadcast(), (
                Retried() | Recipients() | RoomCounts() | Everyone()
            ):
                outgoing = outgoing_of(call)
                assert outgoing is not None  # a send or a broadcast makes a message
                mid = self.route_once(outgoing, answer)
                if mid is not None:
                    self.reply(reply_to, SendReply(mid=mid))
            case ApiKick(uid=uid, reason=reason), Connections(
                by_uid=((_, connections),)
            ):
                self.removals += [
                    RemoveConnection(uid, c.conn_id, c.gateway_id, self.offline_due_ms)
                    for c in connections
                ]
                live = self.live(connections)
                for item_gateway, item in kick_items(uid, reason, live):
                    self.deliver(item_gateway, item)
                self.reply(reply_to, KickReply(kicked=len(live)))
            case ApiGroupMembers(), None:
                self.reply(reply_to, OkReply())
            case ApiPresence(), Connections(by_uid=by_uid):
                online = online_uids(by_uid, self.is_live)
                self.reply(reply_to, PresenceReply(online=online))
            case ApiConnections(), Connections(by_uid=((_, connections),)):
                infos = [
                    ConnectionInfo(conn_id=c.conn_id, gateway_id=c.gateway_id)
                    for c in self.live(connections)
                ]
                self.reply(reply_to, ConnectionsReply(connections=infos))
            case ApiRoomCount(), RoomCounts(counts=counts):
                count = room_count(counts, self.is_live)
                self.reply(reply_to, RoomCountReply(count=count))
            case _:
                raise ValueError(f"no routing for command {call.name!r}")

    def route_once(
        self, outgoing: Outgoing, answer: Retried | Recipients | RoomCounts | Everyone
    ) -> str | None:
        """Route a message unless it is a retry; return the mid to answer with.

        None: the same mid was routed earlier in this batch (a redelivery), and
        answered then.
        """
        if isinstance(answer, Retried):
            duplicate = Duplicate(outgoing.mid, outgoing.client_id, answer.first_mid)
            self.duplicates.append(duplicate)
            return answer.first_mid
        if outgoing.mid in self.routed_mids:
            return None
        self.routed_mids.add(outgoing.mid)
        match answer:
            case Recipients(by_uid=by_uid):
                recipients = [(uid, self.live(held)) for uid, held in by_uid]
                add_message_items(outgoing, recipients, self.per_gateway, self.offline)
            case RoomCounts(counts=counts):
                gateways = [
                    gid
                    for gid, count in sorted(counts.items())
                    if count > 0 and self.is_live(gid)
                ]
                room = outgoing.room or ""  # a room message: it is set
                for gateway_id, item in room_items(outgoing, room, gateways):
                    self.deliver(gateway_id, item)
            case Everyone():
                for gateway_id, item in broadcast_items(outgoing, self.live_gateways()):
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


def online_uids(
    by_uid: UidConnections, is_live_gateway: Callable[[str], bool]
) -> list[str]:
    """The uids (in order) with a connection on a live gateway.

    Args:
        by_uid: each uid asked about, with its connections.
        is_live_gateway: tells a live gateway.
    """
    return [
        uid for uid, held in by_uid if any(is_live_gateway(c.gateway_id) for c in held)
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
