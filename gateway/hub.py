"""The connections of this gateway, their rooms, and the deliveries held until clients acknowledge.

A delivery from the gateway's queue is acknowledged to RabbitMQ only when every durable copy in
it was acknowledged by its client or handed to the offline store (confirmed). Copies are handed
over when their connection is not here, closes, falls behind, does not acknowledge within
``ack_timeout_s``, or holds ``max_unacked`` unacknowledged messages already: one client that
never acknowledges holds at most that many of the gateway's AMQP deliveries (its prefetch),
never all of them. What to push where is decided in ``fanout.py``; the sockets live in ``ws.py``.

Replays from the offline store come in windows: a window that did not hold every stored row
says where the rest starts (``Delivery.next_mid``), and the hub asks the store for the next
window (``gateway.replay``) once the connection has acknowledged half of what it holds. Stored
messages count against ``max_unacked`` too; those past it are not pushed, and the next window
starts at the first of them. Once a live message was handed over for the cap, the connection's
later live messages follow it through the store until a replay window has brought the last of
them (``Connection.overflow_mid``): the client gets them in mid order. For the same reason a
window that starts after a stored row still to push here (``Connection.replay_floor``) is not
pushed: the window asked from that row brings both.

The room index (room -> conn_ids) is local: it lists the connections of this gateway whose join
the broker confirmed, so that one room delivery per gateway reaches them without a lookup.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway import observability
from gateway.bus import Bus
from gateway.fanout import (
    floor_after_window,
    is_ready,
    is_reannounce_requested,
    item_problem,
    plan_delivery,
    reannouncements,
    throttles,
)
from gateway.session import Session
from proto import envelopes, names
from proto.codes import CloseCode
from proto.envelopes import Delivery, DeliveryItem, Target
from proto.errors import BadEnvelope
from proto.items import Decoded, RefusedItem, decode_delivery_items, wrap_items
from proto.metrics import CODE_ENVELOPE_REJECTED
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES, runs_within

log = structlog.get_logger()

HANDOVER_RETRY_S = 1.0
THROTTLED_PRUNE_AT = 1024
"""Throttled uids remembered before the expired ones are dropped."""
_EMPTY_DELIVERY = envelopes.encode(Delivery(items=[]))


class Held:
    """One AMQP delivery, acknowledged to the broker when its last held copy is released."""

    __slots__ = ("message", "pins", "remaining")

    def __init__(self, message: AbstractIncomingMessage, pins: "Pins") -> None:
        self.message = message
        self.pins = pins
        self.remaining = 0


@dataclass(slots=True)
class Pins:
    """The gateway's AMQP deliveries that wait for something (a client's ack, a handover).

    Their number must stay below the consumer's prefetch: at the prefetch, RabbitMQ sends the
    gateway nothing more, and every connection on it waits. ``max_unacked`` bounds what one
    connection pins; many connections that never acknowledge could still pin them all, so past
    ``high`` the hub hands the oldest copies to the offline store (``Hub._relieve_pressure``).
    """

    high: int
    """Pinned deliveries past which the oldest copies are handed over."""
    low: int
    """What a relief aims for: pinned deliveries, once the handed-over copies are confirmed."""
    pinned: set[Held] = field(default_factory=set)
    freeing: set[Held] = field(default_factory=set)
    """Pinned deliveries whose copies were handed over, not yet confirmed: about to go."""

    @property
    def is_over(self) -> bool:
        return len(self.pinned) - len(self.freeing) > self.high

    def released(self, held: Held) -> None:
        self.pinned.discard(held)
        self.freeing.discard(held)


@dataclass(slots=True, eq=False)
class Unacked:
    """A message pushed to one connection and not yet acknowledged by the client."""

    mid: str
    frame: bytes
    conn: "Connection"
    deadline: float
    held: list[Held]
    """The AMQP deliveries this copy holds; empty for a stored message (nothing to hand over)."""
    is_stored: bool = False
    """Replayed from the offline store: its ack goes on to the store, which deletes its row."""

    def handover_item(self) -> DeliveryItem:
        uid = self.conn.session.uid or ""
        return DeliveryItem(
            frame=msgspec.Raw(self.frame),
            targets=[Target(uid, self.conn.session.conn_id)],
            mid=self.mid,
            durable=True,
        )


@dataclass(frozen=True, slots=True)
class CloseRequest:
    code: CloseCode
    reason: str


class Outbox:
    """A connection's frames waiting for its writer: a bounded FIFO with one waiting reader.

    What ``asyncio.Queue`` does for this single reader, in a fraction of its memory: a queue
    holds four deques, about 3 KiB per idle connection; this holds one deque, and only while
    frames wait.
    """

    __slots__ = ("_items", "_maxsize", "_waiter")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[bytes | CloseRequest] | None = None
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: "bytes | CloseRequest") -> bool:
        """Queue an item; False when ``maxsize`` items wait already."""
        if self._items is None:
            self._items = deque()
        elif len(self._items) >= self._maxsize:
            return False
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        return True

    async def get(self) -> "bytes | CloseRequest":
        """The oldest item, waiting for one if there is none."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


SENDS_IN_FLIGHT = 100
"""Sends of one connection waiting for their confirms at once; the reader waits for more."""


@dataclass(eq=False)
class Connection:
    """A client connection: its protocol state, outgoing frames and unacknowledged messages."""

    session: Session
    websocket: ServerConnection
    outbox: Outbox
    unacked: dict[str, Unacked] = field(default_factory=dict)
    replay_from: str = ""
    """The smallest mid the offline store still has to replay here, asked for once the client
    has acknowledged enough (see ``Hub._continue_replay``); empty: nothing known to remain."""
    overflow_mid: str = ""
    """Set once a live message passed the cap: the largest mid handed over since. Until a
    replay window has brought it, later live messages go to the offline store as well, so that
    they reach the client after the earlier ones, in mid order."""
    replay_floor: str = ""
    """Stored rows from this mid on may not have been pushed here (a window was cut there, or
    a live message was handed over): a replay window starting after it (``Delivery.from_mid``)
    is not pushed, or its rows would overtake that one; empty: none known."""
    is_closing: bool = False
    sending: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(SENDS_IN_FLIGHT)
    )
    """Sends published and not yet confirmed (see ``ws.ClientServer._perform``)."""
    registration: asyncio.Future[None] | None = None
    """From ``init`` until the router's ``ready`` (or its refusal, a close): the reader reads
    no frame meanwhile, so a connection over the uid's connection cap sends nothing."""

    def registered(self) -> None:
        """The router registered the connection (or refused it): the reader may go on."""
        if self.registration is not None and not self.registration.done():
            self.registration.set_result(None)

    def push(self, frame: bytes) -> bool:
        """Queue a frame for the writer; False when the client is too far behind."""
        if self.is_closing:
            return False
        return self.outbox.put_nowait(frame)

    def request_close(self, code: CloseCode, reason: str) -> None:
        """Close after the frames already queued."""
        if self.is_closing:
            return
        self.is_closing = True
        self.registered()  # a reader waiting for ready is to stop instead
        if not self.outbox.put_nowait(CloseRequest(code, reason)):
            # The client is not reading: it would not read a close frame either.
            log.info("connection_aborted", code=code.name.lower())
            self.websocket.transport.abort()


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
    ) -> None:
        self._bus = bus
        self._max_message_bytes = max_message_bytes
        self._gateway_id = gateway_id
        self._ack_timeout_s = ack_timeout_s
        self._clock = clock
        self._max_unacked = max_unacked
        """Messages one connection may leave unacknowledged (live and stored)."""
        self._pins = Pins(high=max_pinned, low=max_pinned * 2 // 3)
        self.connections: dict[str, Connection] = {}
        self.rooms: dict[str, set[str]] = {}
        """room -> the conn_ids here in that room; a room without connections has no entry."""
        self._holding: set[Connection] = set()
        """Connections with unacknowledged messages: the ones the ack-timeout sweep looks at."""
        self._handover: list[tuple[DeliveryItem, list[Held]]] = []
        self._handover_ready = asyncio.Event()
        self._handover_idle = asyncio.Event()
        self._handover_idle.set()
        self._background: set[asyncio.Task[None]] = set()
        self._throttled: dict[str, float] = {}
        """uid -> until when (``clock``) its frames are refused: the routers found it over its
        rate across gateways (``DeliveryItem.throttle_uid``)."""

    # Connections

    def add(self, connection: Connection) -> None:
        self.connections[connection.session.conn_id] = connection

    async def remove(self, connection: Connection) -> None:
        """Forget a closed connection: hand over its unacknowledged messages, drop its presence."""
        self.connections.pop(connection.session.conn_id, None)
        self._drop_rooms(connection)
        self._holding.discard(connection)
        for unacked in connection.unacked.values():
            if unacked.held:  # a stored message's row stays in the store
                self._queue_handover(unacked.handover_item(), unacked.held)
        count = len(connection.unacked)
        connection.unacked.clear()
        closed = connection.session.closed_envelope()
        if closed is not None:
            try:
                await self._bus.publish_inbound(closed.routing_key, closed.body)
            except Exception:
                # The router also drops presence entries that lead to no connection (see stale).
                log.warning("presence_removal_failed", exc_info=True)
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

    # The per-uid rate limit, counted by the routers

    def is_throttled(self, uid: str | None) -> bool:
        """Whether the routers asked, a moment ago, to refuse this uid's frames."""
        if uid is None or not self._throttled:
            return False
        until = self._throttled.get(uid)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._throttled[uid]
        return False

    def throttle(self, uid: str, for_ms: int) -> None:
        """Refuse the uid's frames for ``for_ms`` from now (on every connection here)."""
        now = self._clock()
        if len(self._throttled) >= THROTTLED_PRUNE_AT:
            self._throttled = {u: t for u, t in self._throttled.items() if t > now}
        until = now + for_ms / 1000
        self._throttled[uid] = max(until, self._throttled.get(uid, until))
        log.info("uid_throttle_received", uid=uid, throttle_ms=for_ms)

    # Deliveries from the gateway's queue

    async def on_delivery(self, message: AbstractIncomingMessage) -> None:
        """Push a delivery to its connections; runs without awaiting until every push is queued."""
        try:
            decoded = decode_delivery_items(message.body)
        except BadEnvelope as exc:  # not even an object with items: nothing to save
            observability.count_error(CODE_ENVELOPE_REJECTED)
            log.error(
                "envelope_rejected", reason=exc.reason, routing_key=message.routing_key
            )
            await _settle(message.reject(requeue=False))
            return
        delivery, refused = _checked(decoded)
        observability.count_delivery(delivery, time.time_ns() // 1_000_000)
        if is_reannounce_requested(delivery):
            self._spawn(self._reannounce())
        for uid, for_ms in throttles(delivery):
            self.throttle(uid, for_ms)
        # Only a broadcast needs the initialized connections: not worth a pass otherwise.
        initialized = (
            self._initialized_ids()
            if any(item.broadcast for item in delivery.items)
            else set()
        )
        plan = plan_delivery(delivery, self.connections, self.rooms, initialized)
        held = Held(message, self._pins)
        deadline = self._clock() + self._ack_timeout_s
        capped: dict[Connection, int] = {}
        """Connections that hold too many unacknowledged: live copies handed over, by count."""
        replay_cut: dict[Connection, str] = {}
        """Connections whose part of this replay window was cut: the first mid not pushed."""
        replayed_to: dict[Connection, str] = {}
        """Connections this replay window reached: the last mid they have now."""
        handed_first: dict[Connection, str] = {}
        """Connections whose live messages were handed over for the cap: the first such mid."""
        for push in plan.pushes:
            connection = self.connections[push.conn_id]
            is_full = (
                len(connection.unacked) >= self._max_unacked
                and push.mid not in connection.unacked
            )
            if push.is_stored:
                if connection in replay_cut:
                    continue  # a window is pushed in order, up to the first it cannot take
                if (
                    connection.replay_floor
                    and delivery.from_mid > connection.replay_floor
                ):
                    # A row before this window waits: the window from there brings both.
                    replay_cut[connection] = connection.replay_floor
                    continue
                existing = connection.unacked.get(push.mid)
                if existing is not None:
                    existing.is_stored = True  # the client has it; its ack goes on too
                    replayed_to[connection] = push.mid
                    continue
                if is_full:
                    replay_cut[connection] = push.mid
                    continue
                replayed_to[connection] = push.mid
            elif push.awaits_ack and (is_full or connection.overflow_mid):
                held.remaining += 1
                self._queue_handover(
                    _item_for(connection, push.frame, push.mid), [held]
                )
                capped[connection] = capped.get(connection, 0) + 1
                connection.overflow_mid = max(connection.overflow_mid, push.mid)
                handed_first.setdefault(connection, push.mid)
                continue
            if not connection.push(push.frame):
                self._close(
                    connection, CloseCode.SLOW_CONSUMER, "too many frames waiting"
                )
                if push.awaits_ack:
                    held.remaining += 1
                    self._queue_handover(
                        _item_for(connection, push.frame, push.mid), [held]
                    )
                continue
            if push.awaits_ack:
                held.remaining += 1
                self._hold(connection, push.mid, push.frame, held, deadline)
            elif push.is_stored:
                connection.unacked[push.mid] = Unacked(
                    push.mid, push.frame, connection, deadline, [], is_stored=True
                )
                self._holding.add(connection)
            if connection.registration is not None and is_ready(push.frame):
                connection.registered()
            if push.close_code:
                self._close(
                    connection, CloseCode(push.close_code), "closed by the server"
                )
        for item in plan.handover:
            held.remaining += 1
            self._queue_handover(item, [held])
        for target in plan.stale:
            self._spawn(self._remove_stale(target))
        for connection, count in capped.items():
            log.info(
                "unacked_capped",
                conn_id=connection.session.conn_id,
                count=count,
                unacked=len(connection.unacked),
            )
            observability.UNACKED_CAPPED.inc(count)
        if delivery.next_mid:
            for push in plan.pushes:
                if push.is_stored:
                    replay_cut.setdefault(
                        self.connections[push.conn_id], delivery.next_mid
                    )
        for connection in replay_cut.keys() | replayed_to.keys():
            connection.replay_floor = floor_after_window(
                replay_cut.get(connection, ""),
                replayed_to.get(connection, ""),
                connection.overflow_mid,
            )
            if connection.overflow_mid and not connection.replay_floor:
                # Every message handed over has been replayed: live messages go live again.
                connection.overflow_mid = ""
                log.info("unacked_caught_up", conn_id=connection.session.conn_id)
        for connection, first_mid in handed_first.items():
            if not connection.replay_floor or first_mid < connection.replay_floor:
                connection.replay_floor = first_mid
        for connection, from_mid in replay_cut.items():
            if not connection.replay_from or from_mid < connection.replay_from:
                connection.replay_from = from_mid
            self._continue_replay(connection)
        if refused:
            held.remaining += 1
            self._spawn(self._dead_letter(message.routing_key or "", refused, held))
        if held.remaining == 0:
            await _ack(message)
        else:
            self._pins.pinned.add(held)
            if self._pins.is_over:
                self._relieve_pressure()

    async def _dead_letter(
        self, routing_key: str, refused: list[RefusedItem], held: Held
    ) -> None:
        """Dead-letter refused items, each alone with its reason, then release their delivery.

        Retried until the broker takes them: the delivery is acknowledged only after.
        """
        for item in refused:
            observability.count_error(CODE_ENVELOPE_REJECTED)
            log.warning(
                "envelope_rejected",
                reason=item.reason,
                item=item.index,
                routing_key=routing_key,
            )
        while refused:
            results = await asyncio.gather(
                *(
                    self._bus.publish_dead_letter(routing_key, item.body, item.reason)
                    for item in refused
                ),
                return_exceptions=True,
            )
            refused = [
                item
                for item, result in zip(refused, results, strict=True)
                if isinstance(result, Exception)
            ]
            if refused:
                log.warning("dead_letter_failed", items=len(refused))
                await asyncio.sleep(
                    HANDOVER_RETRY_S
                )  # back off while the broker is away
        await _release(held)

    def _relieve_pressure(self) -> None:
        """Hand the oldest copies that clients have not acknowledged to the offline store, so
        that their AMQP deliveries are acknowledged before the prefetch is reached.

        The client keeps what it was sent: a copy handed over stays in its connection's unacked
        messages as a stored one, whose ack goes on to the store (which deletes its row), and
        whose replay (the store announces the new row) is not pushed a second time. The copies
        of one delivery share a deadline, so handing over every copy up to a deadline frees
        whole deliveries.
        """
        pins = self._pins
        to_free = len(pins.pinned) - len(pins.freeing) - pins.low
        oldest = sorted(
            (
                unacked
                for connection in self._holding
                for unacked in connection.unacked.values()
                if unacked.held
            ),
            key=lambda unacked: unacked.deadline,
        )
        touched: set[Held] = set()
        handed = 0
        last_deadline = None
        for unacked in oldest:
            if len(touched) >= to_free and unacked.deadline != last_deadline:
                break
            last_deadline = unacked.deadline
            touched.update(unacked.held)
            self._queue_handover(unacked.handover_item(), unacked.held)
            unacked.held = []
            unacked.is_stored = True
            handed += 1
        pins.freeing |= touched & pins.pinned
        observability.PRESSURE_HANDOVERS.inc(handed)
        log.warning(
            "pinned_deliveries_relieved",
            pinned=len(pins.pinned),
            copies=handed,
            deliveries=len(touched),
        )

    def _hold(
        self,
        connection: Connection,
        mid: str,
        frame: bytes,
        held: Held,
        deadline: float,
    ) -> None:
        existing = connection.unacked.get(mid)
        if (
            existing is not None
        ):  # the same message again (a redelivery): one ack releases both
            existing.held.append(held)
            return
        connection.unacked[mid] = Unacked(mid, frame, connection, deadline, [held])
        self._holding.add(connection)

    async def on_client_ack(
        self, connection: Connection, mids: tuple[str, ...]
    ) -> list[str]:
        """Release the acknowledged messages held here; return the mids for the offline store.

        Those are the mids not held here and the stored messages replayed here.
        """
        elsewhere = []
        for mid in mids:
            unacked = connection.unacked.pop(mid, None)
            if unacked is None:
                elsewhere.append(mid)
                continue
            if unacked.is_stored:
                elsewhere.append(mid)
            for held in unacked.held:
                await _release(held)
        self._continue_replay(connection)
        return elsewhere

    def _continue_replay(self, connection: Connection) -> None:
        """Ask the offline store for the next replay window, once half the cap is free.

        The window is what the cap leaves free; the request is the connection's own (its uid
        from the verified token, its conn_id), so a client can only ask for its own rows.
        """
        uid = connection.session.uid
        if (
            not connection.replay_from
            or connection.is_closing
            or uid is None
            or len(connection.unacked) > self._max_unacked // 2
        ):
            return
        request = envelopes.ReplayRequest(
            uid=uid,
            targets=[
                envelopes.ReplayTarget(self._gateway_id, connection.session.conn_id)
            ],
            from_mid=connection.replay_from,
            limit=self._max_unacked - len(connection.unacked),
        )
        connection.replay_from = ""
        self._spawn(self._ask_replay(connection, request))

    async def _ask_replay(
        self, connection: Connection, request: envelopes.ReplayRequest
    ) -> None:
        body = envelopes.encode(request)
        conn_id = connection.session.conn_id
        # Retried while the connection is open: no ack may come to ask again.
        while self.connections.get(conn_id) is connection:
            try:
                await self._bus.publish_inbound(names.KEY_REPLAY_MORE, body)
            except Exception:
                log.warning("replay_request_failed", conn_id=conn_id, exc_info=True)
                # Back off while the broker is away.
                await asyncio.sleep(HANDOVER_RETRY_S)
                continue
            log.debug(
                "replay_requested",
                conn_id=conn_id,
                from_mid=request.from_mid,
                limit=request.limit,
            )
            return

    async def _remove_stale(self, target: Target) -> None:
        closed = envelopes.ConnClosed(
            uid=target.uid, conn_id=target.conn_id, gateway_id=self._gateway_id
        )
        try:
            await self._bus.publish_inbound(
                names.KEY_CONN_CLOSED, envelopes.encode(closed)
            )
        except Exception:
            log.warning(
                "presence_removal_failed", conn_id=target.conn_id, exc_info=True
            )

    async def _reannounce(self) -> None:
        """Announce every connection and room again: the routers lost this gateway's presence."""
        uids = {
            conn_id: connection.session.uid
            for conn_id, connection in self.connections.items()
            if connection.session.uid is not None and not connection.is_closing
        }
        pending = reannouncements(self._gateway_id, uids, self.rooms)
        count = len(pending)
        # Retried until the broker takes them all: nobody asks again (the router marked this
        # gateway as known once its request was confirmed).
        while pending:
            results = await asyncio.gather(
                *(self._bus.publish_inbound(a.routing_key, a.body) for a in pending),
                return_exceptions=True,
            )
            pending = [
                a
                for a, result in zip(pending, results, strict=True)
                if isinstance(result, Exception)
            ]
            if pending:
                log.warning("reannounce_failed", envelopes=len(pending))
                await asyncio.sleep(
                    HANDOVER_RETRY_S
                )  # back off while the broker is away
        log.info("presence_reannounced", envelopes=count)

    # Handover to the offline store

    def _queue_handover(self, item: DeliveryItem, held: list[Held]) -> None:
        self._handover.append((item, held))
        self._handover_idle.clear()
        self._handover_ready.set()

    async def wait_handover_idle(self) -> None:
        """Return once every copy queued for the offline store was confirmed by the broker."""
        await self._handover_idle.wait()

    async def run_handover(self) -> None:
        """Publish handed-over copies to the offline store; release them once confirmed."""
        while True:
            await self._handover_ready.wait()
            self._handover_ready.clear()
            batch, self._handover = self._handover, []
            if not batch:
                self._handover_idle.set()
                continue
            # Deliveries within the broker's message size: one, unless the batch is huge.
            encoded = [envelopes.encode(item) for item, _ in batch]
            runs = runs_within(
                [len(e) for e in encoded], self._max_message_bytes, len(_EMPTY_DELIVERY)
            )
            for number, run in enumerate(runs):
                body = b'{"items":[' + b",".join(encoded[i] for i in run) + b"]}"
                try:
                    await self._bus.publish_undeliverable(body)
                except Exception:
                    log.warning("handover_failed", items=len(run), exc_info=True)
                    unsent = [
                        entry
                        for r in runs[number:]
                        for entry in batch[r.start : r.stop]
                    ]
                    self._handover = unsent + self._handover
                    break
                log.info("handover_published", items=len(run))
                for _, helds in batch[run.start : run.stop]:
                    for held in helds:
                        await _release(held)
            else:
                if not self._handover:
                    self._handover_idle.set()
                continue
            await asyncio.sleep(HANDOVER_RETRY_S)  # back off while the broker is away
            self._handover_ready.set()

    async def run_ack_timeouts(self) -> None:
        """Hand over messages that clients did not acknowledge in time."""
        interval_s = min(1.0, self._ack_timeout_s / 4)
        while True:
            await asyncio.sleep(interval_s)
            now = self._clock()
            for connection in list(self._holding):
                # Dicts keep insertion order and deadlines grow with it: stop at the first live one.
                expired = []
                for unacked in connection.unacked.values():
                    if unacked.deadline > now:
                        break
                    expired.append(unacked)
                for unacked in expired:
                    del connection.unacked[unacked.mid]
                    if unacked.held:  # a stored message's row stays in the store
                        self._queue_handover(unacked.handover_item(), unacked.held)
                if expired:
                    log.info(
                        "ack_timed_out",
                        conn_id=connection.session.conn_id,
                        count=len(expired),
                    )
                    # A client that skipped some replayed messages may take the next window.
                    self._continue_replay(connection)
                if not connection.unacked:
                    self._holding.discard(connection)

    async def run_heartbeat(self, interval_s: float) -> None:
        """Tell the routers that this gateway is alive, so they keep routing to it."""
        while True:
            heartbeat = envelopes.Heartbeat(
                gateway_id=self._gateway_id, connections=len(self.connections)
            )
            try:
                await self._bus.publish_inbound(
                    names.KEY_HEARTBEAT, envelopes.encode(heartbeat)
                )
            except Exception:
                log.warning("heartbeat_failed", exc_info=True)
            await asyncio.sleep(interval_s)

    async def run_pings(self, interval_s: float) -> None:
        """Ping every connection each ``interval_s``, from this one loop.

        websockets' own keepalive runs a task per connection (about 1 KiB each); one loop costs
        nothing per idle connection. A client's WebSocket library answers a ping by itself, and
        its pong counts as activity: a live connection stays within ``SWITCHBOARD_IDLE_TIMEOUT_S``,
        and one that answers nothing is closed at that timeout by its reader (4002).
        """
        while True:
            await asyncio.sleep(interval_s)  # a schedule, not a synchronisation
            for connection in list(self.connections.values()):
                transport = connection.websocket.transport
                if connection.is_closing or transport.get_write_buffer_size():
                    continue  # frames are on their way to it already; a ping would wait
                try:
                    await (
                        connection.websocket.ping()
                    )  # written at once; the pong not awaited
                except ConnectionClosed:
                    continue

    async def announce_stopped(self) -> None:
        """Tell the routers that this gateway's connections are gone, so they stop routing here."""
        stopped = envelopes.GatewayStopped(gateway_id=self._gateway_id)
        try:
            await self._bus.publish_inbound(
                names.KEY_GATEWAY_STOPPED, envelopes.encode(stopped)
            )
        except Exception:
            log.warning("stop_announcement_failed", exc_info=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


def _item_for(connection: Connection, frame: bytes, mid: str) -> DeliveryItem:
    uid = connection.session.uid or ""
    return DeliveryItem(
        frame=msgspec.Raw(frame),
        targets=[Target(uid, connection.session.conn_id)],
        mid=mid,
        durable=True,
    )


def _checked(decoded: Decoded[DeliveryItem]) -> tuple[Delivery, list[RefusedItem]]:
    """The items this gateway can carry out, and the others refused one by one."""
    refused = list(decoded.refused)
    items: list[DeliveryItem] = []
    for index, item in enumerate(decoded.items):
        problem = item_problem(item)
        if problem is None:
            items.append(item)
        else:
            body = wrap_items([envelopes.encode(item)])
            refused.append(RefusedItem(body, problem, decoded.position(index)))
    return (
        Delivery(items=items, next_mid=decoded.next_mid, from_mid=decoded.from_mid),
        refused,
    )


async def _settle(settling: Coroutine[Any, Any, None]) -> None:
    try:
        await settling
    except Exception:
        # The channel was lost: the broker requeued the delivery, and it comes back.
        log.warning("delivery_settle_failed", exc_info=True)


async def _release(held: Held) -> None:
    held.remaining -= 1
    if held.remaining == 0:
        held.pins.released(held)
        await _ack(held.message)


async def _ack(message: AbstractIncomingMessage) -> None:
    try:
        await message.ack()
    except Exception:
        # The channel was lost: the broker requeued the delivery, and it comes back (at least once).
        log.warning("delivery_ack_failed", exc_info=True)
