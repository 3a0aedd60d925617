"""The connections of this gateway, their rooms, and the deliveries pushed to them.

A delivery from the gateway's queue is planned in ``fanout.py`` (what to push where) and
accounted in ``acks.py`` (what to hold until clients acknowledge, what to hand over, when to
acknowledge it to RabbitMQ); the hub carries out both: it queues frames on the connections
(``connection.py``; the sockets live in ``ws.py``), hands copies to the offline store
(``handover.py``), asks the store for replay windows, and acknowledges deliveries: those
finished in one turn of the event loop together, with one multiple ack where their order allows
(``delivery_acks.py``).
Announcements to the routers and pings to the clients are in ``liveness.py``; the uids the
routers throttled, in ``throttles.py``.

The room index (room -> conn_ids) is local: it lists the connections of this gateway whose join
the broker confirmed, so that one room delivery per gateway reaches them without a lookup.
"""

import asyncio
import itertools
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelInvalidStateError

from gateway import observability
from gateway.acks import (
    AckDelivery,
    AskReplay,
    Capped,
    CaughtUp,
    DeadLetter,
    HandOver,
    Held,
    Ledger,
    LedgerEffect,
    Relieved,
    TimedOut,
)
from gateway.admission import Admission
from gateway.bus import Bus
from gateway.connection import Connection
from gateway.delivery_acks import ChannelAcks
from gateway.fanout import (
    checked_delivery,
    is_ready,
    is_reannounce_requested,
    plan_delivery,
    throttles,
)
from gateway.handover import RETRY_S, Handover
from gateway.liveness import Liveness
from gateway.sync_split import split_sync
from gateway.syncing import Syncs
from gateway.throttles import Throttles
from proto import envelopes
from proto.codes import CloseCode
from proto.errors import BadEnvelope
from proto.items import decode_delivery_items
from proto.metrics import CODE_ENVELOPE_REJECTED
from proto.names import KEY_REPLAY_MORE
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES
from runtime.publish import publish_until_confirmed
from runtime.refusals import log_refused_item

log = structlog.get_logger()


class Hub:
    """Every connection of this gateway, and the deliveries held for them."""

    def __init__(
        self,
        bus: Bus,
        gateway_id: str,
        ack_timeout_s: float,
        clock: Callable[[], float],
        max_unacked: int,
        max_message_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES,
        max_pinned: int = 500,
        history: bool = False,
        sync_gap_wait_s: float = 0.5,
        sync_window: int = 500,
    ) -> None:
        self._bus = bus
        self._ack_timeout_s = ack_timeout_s
        self._clock = clock
        self._ledger = Ledger(gateway_id, max_unacked, ack_timeout_s, max_pinned)
        self.connections: dict[str, Connection] = {}
        self.rooms: dict[str, set[str]] = {}
        """room -> the conn_ids here in that room; a room without connections has no entry."""
        self.handover = Handover(bus, max_message_bytes, self._release)
        self._background: set[asyncio.Task[None]] = set()
        self.syncs: Syncs | None = None
        """History on: the connections that sent ``init`` with ``since`` (``syncing.py``)."""
        if history:
            self.syncs = Syncs(
                bus,
                gateway_id,
                self._ledger,
                max_unacked,
                sync_window,
                sync_gap_wait_s,
                clock,
                self._spawn,
            )
        since_of = None if self.syncs is None else self.syncs.since_of
        self.liveness = Liveness(
            bus, gateway_id, self.connections, self.rooms, since_of
        )
        self._messages: dict[int, tuple[AbstractIncomingMessage, int | None]] = {}
        """The AMQP deliveries the ledger holds, by the number it knows them by, each with the
        key of its channel in ``_unacked`` (None: its channel closed before it came here)."""
        self._unacked: dict[
            int, tuple[ChannelAcks, dict[int, AbstractIncomingMessage]]
        ] = {}
        """Per channel (by ``id``): its deliveries not yet acknowledged, and their messages by
        delivery tag. A channel reopened after a reconnect is another entry."""
        self._acks_due = False
        """Deliveries finished in this turn of the event loop: acknowledged at its end."""
        self._last_acks: asyncio.Task[None] | None = None
        """The latest acks sent; each waits for the ones before it, since the broker must see
        them in the order ``ChannelAcks`` took them: a multiple ack sent ahead of an ack of one
        delivery that it covers would acknowledge that delivery twice (a channel error)."""
        self._delivery_ids = itertools.count()
        self.throttles = Throttles(clock)
        """The uids whose frames are refused for a while (the per-uid rate limit, counted by
        the routers)."""

    # Connections

    def add(self, connection: Connection) -> None:
        self.connections[connection.session.conn_id] = connection

    async def remove(self, connection: Connection) -> None:
        """Forget a closed connection: hand over its unacknowledged messages, drop its presence."""
        self.connections.pop(connection.session.conn_id, None)
        if self.syncs is not None:
            self.syncs.forget(connection)
        self._drop_rooms(connection)
        count = len(connection.account.unacked)
        for effect in self._ledger.forget(connection.account):
            await self._perform(effect)
        closed = connection.session.closed_envelope()
        if closed is not None:
            try:
                await self._bus.publish_inbound(closed.routing_key, closed.body)
            except Exception:
                # The router also drops presence entries that lead to no connection (see stale).
                log.warning("presence_removal_failed", exc_info=True)
        observability.count_close(connection.websocket.protocol)
        log.info(
            "connection_closed", unacked=count, code=connection.websocket.close_code
        )

    # Rooms

    def join_room(self, connection: Connection, room: str) -> None:
        """Let room deliveries reach the connection (its join was confirmed)."""
        if connection.is_closing:
            return  # kicked or closing meanwhile: it gets nothing more
        self.rooms.setdefault(room, set()).add(connection.session.conn_id)

    def leave_room(self, connection: Connection, room: str) -> None:
        members = self.rooms.get(room)
        if members is None:
            return
        members.discard(connection.session.conn_id)
        if not members:
            del self.rooms[room]

    def _drop_rooms(self, connection: Connection) -> None:
        for room in connection.session.rooms:
            self.leave_room(connection, room)

    def _close(self, connection: Connection, code: CloseCode, reason: str) -> None:
        """Close after the frames already queued, and out of the room index at once.

        A kicked connection stays open for its close handshake; room deliveries in that time
        must not reach it. Its session keeps the rooms, which its ``ConnClosed`` reports.
        """
        connection.request_close(code, reason)
        self._drop_rooms(connection)

    def _initialized_ids(self) -> set[str]:
        return {
            conn_id
            for conn_id, connection in self.connections.items()
            if connection.session.is_initialized
        }

    # Deliveries from the gateway's queue, and the clients' acks

    async def on_delivery(self, message: AbstractIncomingMessage) -> None:
        """Push a delivery to its connections; runs without awaiting until every push is queued."""
        consumed_at = time.monotonic()  # for the push histogram (observability.PUSH)
        try:
            decoded = decode_delivery_items(message.body)
        except BadEnvelope as exc:  # not even an object with items: nothing to save
            observability.count_error(CODE_ENVELOPE_REJECTED)
            log.error(
                "envelope_rejected", reason=exc.reason, routing_key=message.routing_key
            )
            await _settle(message.reject(requeue=False))
            return
        channel_key = self._track(message)
        delivery, refused = checked_delivery(decoded)
        observability.count_delivery(delivery, time.time_ns() // 1_000_000)
        split = None
        if self.syncs is not None:
            # Copies for syncing connections go to their cursors, pinning nothing.
            split = split_sync(delivery, self.syncs.syncing_ids(self.connections))
            delivery = split.rest
        if is_reannounce_requested(delivery):
            self._spawn(self.liveness.reannounce())
        for uid, for_ms in throttles(delivery):
            self.throttles.throttle(uid, for_ms)
            log.info("uid_throttle_received", uid=uid, throttle_ms=for_ms)
        # Only a broadcast needs the initialized connections: not worth a pass otherwise.
        initialized = (
            self._initialized_ids()
            if any(item.broadcast for item in delivery.items)
            else set()
        )
        plan = plan_delivery(delivery, self.connections, self.rooms, initialized)
        delivery_id = next(self._delivery_ids)
        self._messages[delivery_id] = (message, channel_key)
        admission = Admission(
            self._ledger, delivery_id, self._clock(), delivery.from_mid
        )
        for push in plan.pushes:
            connection = self.connections[push.conn_id]
            if not admission.admit(connection.account, push):
                continue
            if not connection.push(push.frame, consumed_at):
                self._close(
                    connection, CloseCode.SLOW_CONSUMER, "too many frames waiting"
                )
                admission.not_pushed(connection.account, push)
                continue
            admission.pushed(connection.account, push)
            if connection.registration is not None and is_ready(push.frame):
                connection.registered()
            if push.close_code:
                self._close(
                    connection, CloseCode(push.close_code), "closed by the server"
                )
        for item in plan.handover:
            admission.hand_over(item)
        for target in plan.stale:
            self._spawn(self.liveness.remove_stale(target))
        if split is not None and self.syncs is not None:
            self.syncs.handle(split, self.connections)
        effects = admission.finish(
            delivery.next_mid, refused, message.routing_key or ""
        )
        for effect in effects:
            await self._perform(effect)

    async def on_client_ack(
        self, connection: Connection, mids: tuple[str, ...]
    ) -> list[str]:
        """Release the acknowledged messages held here; return the mids for the offline store.

        Those are the mids not held here and the stored messages replayed here.
        """
        account = connection.account
        observability.count_client_acks(
            self._ledger.ack_waits(account, mids, self._clock())
        )
        elsewhere, effects = self._ledger.on_client_ack(account, mids)
        for effect in effects:
            await self._perform(effect)
        if self.syncs is not None:
            self.syncs.continue_sync(connection)
        return elsewhere

    async def run_ack_timeouts(self) -> None:
        """Hand over messages that clients did not acknowledge in time."""
        interval_s = min(1.0, self._ack_timeout_s / 4)
        while True:
            await asyncio.sleep(interval_s)
            for effect in self._ledger.sweep(self._clock()):
                await self._perform(effect)
            if self.syncs is not None:
                self.syncs.continue_all(self.connections)

    async def _perform(self, effect: LedgerEffect) -> None:
        """Carry out what the ledger decided; awaits only to acknowledge a delivery."""
        match effect:
            case HandOver():
                self.handover.queue(effect.item, effect.held)
            case AckDelivery():
                self._finish(*self._messages.pop(effect.delivery_id))
            case DeadLetter():
                self._spawn(self._dead_letter(effect))
            case AskReplay():
                connection = self.connections.get(effect.conn_id)
                if connection is not None:
                    self._spawn(self._ask_replay(connection, effect.request))
            case Capped():
                log.info(
                    "unacked_capped",
                    conn_id=effect.conn_id,
                    count=effect.count,
                    unacked=effect.unacked,
                )
                observability.UNACKED_CAPPED.inc(effect.count)
            case CaughtUp():
                log.info("unacked_caught_up", conn_id=effect.conn_id)
            case TimedOut():
                log.info("ack_timed_out", conn_id=effect.conn_id, count=effect.count)
            case Relieved():
                observability.PRESSURE_HANDOVERS.inc(effect.copies)
                log.warning(
                    "pinned_deliveries_relieved",
                    pinned=effect.pinned,
                    copies=effect.copies,
                    deliveries=effect.deliveries,
                )

    def _track(self, message: AbstractIncomingMessage) -> int | None:
        """Count a delivery among its channel's unacknowledged ones; return its channel's key."""
        try:
            channel_key = id(message.channel)
        except ChannelInvalidStateError:
            return None  # the broker redelivers it: nothing to acknowledge
        acks, by_tag = self._unacked.setdefault(channel_key, (ChannelAcks(), {}))
        acks.delivered(_tag(message))
        by_tag[_tag(message)] = message
        return channel_key

    def _finish(
        self, message: AbstractIncomingMessage, channel_key: int | None
    ) -> None:
        """Acknowledge this delivery at the end of this turn of the event loop."""
        if channel_key is None:
            return
        acks, _ = self._unacked[channel_key]
        acks.finish(_tag(message))
        if not self._acks_due:
            self._acks_due = True
            asyncio.get_running_loop().call_soon(self._ack_finished)

    def _ack_finished(self) -> None:
        """Acknowledge the deliveries finished since the last call (``delivery_acks.py``)."""
        self._acks_due = False
        for channel_id, (acks, by_tag) in list(self._unacked.items()):
            taken = acks.take()
            sending: list[tuple[AbstractIncomingMessage, bool]] = []
            if taken.up_to is not None:
                sending.append((by_tag[taken.up_to], True))
                # The multiple ack covers the front of the channel's messages up to it.
                while by_tag and next(iter(by_tag)) <= taken.up_to:
                    del by_tag[next(iter(by_tag))]
            sending += ((by_tag.pop(tag), False) for tag in taken.singles)
            if acks.is_empty:
                del self._unacked[channel_id]
            if sending:
                self._last_acks = asyncio.create_task(
                    _ack_all(sending, self._last_acks)
                )

    async def _release(self, held: Held) -> None:
        """One copy of this delivery is done: acknowledge it if it was the last."""
        for ack in self._ledger.release((held,)):
            await self._perform(ack)

    async def _dead_letter(self, dead_letter: DeadLetter) -> None:
        """Dead-letter refused items, each alone with its reason, then release their delivery.

        Retried until the broker takes them: the delivery is acknowledged only after.
        """
        routing_key = dead_letter.routing_key
        for item in dead_letter.refused:
            observability.count_error(CODE_ENVELOPE_REJECTED)
            log_refused_item(routing_key, item)
        await publish_until_confirmed(
            dead_letter.refused,
            lambda item: self._bus.publish_dead_letter(
                routing_key, item.body, item.reason
            ),
            lambda failed: log.warning("dead_letter_failed", items=failed),
        )
        await self._release(dead_letter.held)

    async def _ask_replay(
        self, connection: Connection, request: envelopes.ReplayRequest
    ) -> None:
        body = envelopes.encode(request)
        conn_id = connection.session.conn_id
        # Retried while the connection is open: no ack may come to ask again.
        while self.connections.get(conn_id) is connection:
            try:
                await self._bus.publish_inbound(KEY_REPLAY_MORE, body)
            except Exception:
                log.warning("replay_request_failed", conn_id=conn_id, exc_info=True)
                # Back off while the broker is away.
                await asyncio.sleep(RETRY_S)
                continue
            log.debug(
                "replay_requested",
                conn_id=conn_id,
                from_mid=request.from_mid,
                limit=request.limit,
            )
            return

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        # The deliveries finished last are acknowledged, not left for the broker to redeliver.
        if self._acks_due:
            self._ack_finished()
        if self._last_acks is not None:
            await asyncio.wait([self._last_acks])
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


async def _settle(settling: Coroutine[Any, Any, None]) -> None:
    try:
        await settling
    except Exception:
        # The channel was lost: the broker requeued the delivery, and it comes back.
        log.warning("delivery_settle_failed", exc_info=True)


def _tag(message: AbstractIncomingMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None  # a consumed message has one (a returned message has not)
    return tag


async def _ack_all(
    acks: list[tuple[AbstractIncomingMessage, bool]],
    previous: "asyncio.Task[None] | None",
) -> None:
    """Send these acks (each a message and whether it is a multiple ack), in order, once the
    ones before them are sent."""
    if previous is not None:
        await asyncio.wait([previous])
    for message, multiple in acks:
        try:
            await message.ack(multiple=multiple)
            observability.count_delivery_ack(multiple)
        except Exception:
            # The channel was lost: the broker requeued the deliveries, and they come back
            # (at least once).
            log.warning("delivery_ack_failed", multiple=multiple, exc_info=True)
