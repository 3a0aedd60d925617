"""Routing decisions: a batch of envelopes + what Redis said about them -> publishes.

Pure: no I/O, no clock, no randomness (mids and times come in as arguments). lookups.py
decides what a batch reads and writes in Redis and hands the answers here
(``answers.Answers``, one typed answer per envelope); ``consumer.py`` performs the ``Plan``.

What a batch becomes (docs/architecture.md, "The life of a message"):

* every client frame for one gateway, across the whole batch, goes into ONE
  ``Delivery`` for that gateway's queue, its items in batch order (so a ``ready``
  precedes the messages routed to the connection it announces); a group message
  is ONE item per gateway listing every target connection of every member there,
  a room or broadcast message one item per gateway with no targets at all;
* messages whose recipients have no connection on a live gateway go into one
  ``Delivery`` on the undeliverable exchange, for the offline store;
* with history on, 1:1 and group messages (but transient ones) go instead into one
  ``InboxBatch`` for the offline store's inbox, each with the connections of its
  recipients and of its sender (``inbox_items.py``): the store numbers and then delivers
  them; the receipts of read markers the store committed (``Receipts``) go to the
  connections of the reader and the party online now (``receipts.py``);
* what must wait until those deliveries are confirmed goes out after them: replay
  requests (``ready`` is queued before the offline store can push stored messages
  behind it), the router's answers to senders (``sent`` means "routed", and carries
  the mid of the first frame with that ``id``: a retry's receipt names the message
  its recipients got), and the replies to backend commands (``api.<command>``);
  and the Redis writes that must wait as well (kicked connections, known gateways).

A first connection publishes ``user.online`` unless the uid only flapped (debounce.py). One
message (a client's or a backend's) is routed in message_routing.py.
"""

from collections.abc import Callable, Mapping, Sequence

from proto import frames
from proto.codes import ErrorCode
from proto.envelopes import (
    ApiBroadcast,
    ApiConnections,
    ApiKick,
    ApiPresence,
    ApiRoomCount,
    ApiSend,
    ConnClosed,
    ConnectionInfo,
    ConnectionsReply,
    ConnOpened,
    ErrorDetail,
    ErrorReply,
    GatewayStopped,
    Heartbeat,
    KickReply,
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
from proto.names import EVENT_USER_ONLINE, Names
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES
from proto.sync import Receipts
from router.answers import (
    Answer,
    Answers,
    Everyone,
    Multicast,
    NotMember,
    PresenceForbidden,
    Recipients,
    Retried,
)
from router.debounce import offline_due_ms
from router.delivery_items import (
    frame_item,
    kick_items,
    ready_item,
    reannounce_item,
    throttle_item,
    too_many_connections_item,
)
from router.inbound import Call, Inbound, Refused, outgoing_of, outgoings_of
from router.limits import Throttled
from router.liveness import should_reannounce
from router.message_routing import route_multicast, route_once, route_outgoing
from router.plan import Duplicate, Plan, PlanBuilder
from router.publications import (
    event_publication,
    replay_publication,
    sync_publication,
)
from router.receipts import receipt_items
from router.requests import (
    MarkKnown,
    RemoveConnection,
)
from router.results import (
    Connections,
    HeartbeatRecorded,
    Opened,
    RoomCounts,
    UidConnections,
)

__all__ = [  # the plan's vocabulary: observability.py reads it from here
    "Call",
    "Duplicate",
    "Inbound",
    "Plan",
    "online_uids",
    "outgoing_of",
    "outgoings_of",
    "room_count",
    "route_batch",
]


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
    history: bool = False,
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
        history: ``SWITCHBOARD_HISTORY``: 1:1 and group messages (but transient ones) go to
            the offline store's inbox in ``InboxBatch`` envelopes, not to gateways; the store
            delivers them once numbered (``inbox_items.py``).

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
    plan = PlanBuilder(
        names,
        last_seen_ms,
        now_ms,
        gateway_ttl_ms,
        offline_due_ms(now_ms, debounce_ms),
        max_message_bytes,
        history,
    )
    for index, (envelope, answer) in enumerate(
        zip(batch, answers.per_envelope, strict=True)
    ):
        throttled = answers.throttles.get(index)
        if throttled is not None:
            _throttle(plan, throttled)
        _route_envelope(plan, envelope, answer)
    return plan.build()


def _throttle(plan: PlanBuilder, throttled: Throttled) -> None:
    """Tell every live gateway to refuse the uid's frames for a while: a connection it
    opens meanwhile, on any of them, is refused as well."""
    plan.throttled.append(throttled)
    item = throttle_item(throttled.uid, throttled.throttle_ms)
    for gateway_id in plan.live_gateways():
        plan.deliver(gateway_id, item)


def _route_envelope(plan: PlanBuilder, envelope: Inbound, answer: Answer) -> None:
    match envelope, answer:
        case (
            Outgoing(),
            Recipients() | Retried() | RoomCounts() | Everyone() | NotMember(),
        ):
            route_outgoing(plan, envelope, answer)
        case Call(), _:
            _route_call(plan, envelope, answer)
        case Refused(code=code, reason=reason, reply_to=reply_to), None:
            plan.reply(reply_to, ErrorReply(error=ErrorDetail(code, reason)))
        case ConnOpened(), Opened():
            _route_opened(plan, envelope, answer)
        case PresenceAsked(), PresenceForbidden() | Connections():
            asker = Target(envelope.uid, envelope.conn_id)
            plan.deliver(
                envelope.gateway_id,
                frame_item(_presence_answer(plan, envelope, answer), [asker]),
            )
        case Saved(), Connections(by_uid=by_uid):
            for saved, (_, connections) in zip(envelope.uids, by_uid, strict=True):
                targets = [
                    ReplayTarget(c.gateway_id, c.conn_id)
                    for c in plan.live(connections)
                ]
                if targets:
                    plan.replays.append(
                        replay_publication(
                            plan.names, saved.uid, targets, saved.first_mid
                        )
                    )
        case Receipts(), Connections(by_uid=by_uid):
            live = {uid: plan.live(held) for uid, held in by_uid}
            for gateway_id, item in receipt_items(envelope, live):
                plan.deliver(gateway_id, item)
        case GatewayStopped(gateway_id=gateway_id), None:
            plan.sweeps.append(gateway_id)
        case Heartbeat(gateway_id=gateway_id, connections=connections), (
            HeartbeatRecorded(was_known=was_known)
        ):
            if not was_known:
                plan.known.append(MarkKnown(gateway_id))
            if should_reannounce(not was_known, connections):
                plan.deliver(gateway_id, reannounce_item())
        case ConnClosed() | RoomJoined() | RoomLeft(), None:
            pass  # presence writes only, made by lookups.py's requests
        case _:
            raise ValueError(
                f"no routing for a {type(envelope).__name__}"
                f" answered {type(answer).__name__}"
            )


def _route_opened(plan: PlanBuilder, opened: ConnOpened, answer: Opened) -> None:
    """A connection's ``ready`` and replay (or sync), and its uid's ``user.online``."""
    uid, conn_id, gateway_id = opened.uid, opened.conn_id, opened.gateway_id
    if answer.is_over_connection_limit:
        # Not registered: an error and a close instead of ready, no replay.
        plan.deliver(gateway_id, too_many_connections_item(uid, conn_id))
        return
    if not opened.reannounce:
        plan.deliver(gateway_id, ready_item(uid, conn_id))
    if plan.history and opened.since is not None:
        # A syncing connection (init with since) gets its inbox after since, once ready is
        # confirmed; re-announced, from its gateway's cursor (what was routed meanwhile).
        request = sync_publication(plan.names, uid, gateway_id, conn_id, opened.since)
        plan.replays.append(request)
    else:
        # A re-announced connection gets what was stored while it was unknown.
        target = ReplayTarget(gateway_id, conn_id)
        plan.replays.append(replay_publication(plan.names, uid, [target], ""))
    if answer.is_first_connection and not answer.has_flapped and not opened.reannounce:
        event = UserOnline(uid=uid, ts=plan.now_ms)
        plan.events.append(event_publication(plan.names, EVENT_USER_ONLINE, event))


def _presence_answer(
    plan: PlanBuilder, asked: PresenceAsked, answer: PresenceForbidden | Connections
) -> frames.ServerFrame:
    """A client's presence query, answered as the presence policy allows."""
    if isinstance(answer, PresenceForbidden):
        return frames.Error(
            code=ErrorCode.FORBIDDEN,
            message="presence is not available to clients",
            id=asked.client_id,
        )
    online = online_uids(answer.by_uid, plan.is_live)
    return frames.PresenceResult(id=asked.client_id, online=online)


def _route_call(plan: PlanBuilder, call: Call, answer: Answer) -> None:
    """A backend command: its effects, and its reply."""
    reply_to = call.reply_to
    match call.command, answer:
        case ApiSend(), Multicast():
            route_multicast(plan, call, answer)
        case ApiSend() | ApiBroadcast(), (
            Retried() | Recipients() | RoomCounts() | Everyone()
        ):
            outgoing = outgoing_of(call)
            assert outgoing is not None  # a send or a broadcast makes a message
            mid = route_once(plan, outgoing, answer)
            if mid is not None:
                plan.reply(reply_to, SendReply(mid=mid))
        case ApiKick(uid=uid, reason=reason), Connections(by_uid=((_, connections),)):
            plan.removals += [
                RemoveConnection(uid, c.conn_id, c.gateway_id, plan.offline_due_ms)
                for c in connections
            ]
            live = plan.live(connections)
            for item_gateway, item in kick_items(uid, reason, live):
                plan.deliver(item_gateway, item)
            plan.reply(reply_to, KickReply(kicked=len(live)))
        case ApiPresence(), Connections(by_uid=by_uid):
            online = online_uids(by_uid, plan.is_live)
            plan.reply(reply_to, PresenceReply(online=online))
        case ApiConnections(), Connections(by_uid=((_, connections),)):
            infos = [
                ConnectionInfo(conn_id=c.conn_id, gateway_id=c.gateway_id)
                for c in plan.live(connections)
            ]
            plan.reply(reply_to, ConnectionsReply(connections=infos))
        case ApiRoomCount(), RoomCounts(counts=counts):
            count = room_count(counts, plan.is_live)
            plan.reply(reply_to, RoomCountReply(count=count))
        case _:
            raise ValueError(f"no routing for command {call.name!r}")


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
