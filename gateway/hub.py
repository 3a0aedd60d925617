"""The connections of this gateway, their rooms, and the deliveries held until clients acknowledge.

A delivery from the gateway's queue is acknowledged to RabbitMQ only when every durable copy in
it was acknowledged by its client or handed to the offline store (confirmed). Copies are handed
over when their connection is not here, closes, falls behind, or does not acknowledge within
``ack_timeout_s``. What to push where is decided in ``fanout.py``; the sockets live in ``ws.py``.

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
    is_reannounce_requested,
    item_problem,
    plan_delivery,
    reannouncements,
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
_EMPTY_DELIVERY = envelopes.encode(Delivery(items=[]))


class Held:
    """One AMQP delivery, acknowledged to the broker when its last held copy is released."""

    __slots__ = ("message", "remaining")

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self.message = message
        self.remaining = 0


@dataclass(slots=True, eq=False)
class Unacked:
    """A message pushed to one connection and not yet acknowledged by the client."""

    mid: str
    frame: bytes
    conn: "Connection"
    deadline: float
    held: list[Held]

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
    is_closing: bool = False
    sending: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(SENDS_IN_FLIGHT)
    )
    """Sends published and not yet confirmed (see ``ws.ClientServer._perform``)."""

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
        max_message_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES,
    ) -> None:
        self._bus = bus
        self._max_message_bytes = max_message_bytes
        self._gateway_id = gateway_id
        self._ack_timeout_s = ack_timeout_s
        self._clock = clock
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

    # Connections

    def add(self, connection: Connection) -> None:
        self.connections[connection.session.conn_id] = connection

    async def remove(self, connection: Connection) -> None:
        """Forget a closed connection: hand over its unacknowledged messages, drop its presence."""
        self.connections.pop(connection.session.conn_id, None)
        self._drop_rooms(connection)
        self._holding.discard(connection)
        for unacked in connection.unacked.values():
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
        # Only a broadcast needs the initialized connections: not worth a pass otherwise.
        initialized = (
            self._initialized_ids()
            if any(item.broadcast for item in delivery.items)
            else set()
        )
        plan = plan_delivery(delivery, self.connections, self.rooms, initialized)
        held = Held(message)
        deadline = self._clock() + self._ack_timeout_s
        for push in plan.pushes:
            connection = self.connections[push.conn_id]
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
            if push.close_code:
                self._close(
                    connection, CloseCode(push.close_code), "closed by the server"
                )
        for item in plan.handover:
            held.remaining += 1
            self._queue_handover(item, [held])
        for target in plan.stale:
            self._spawn(self._remove_stale(target))
        if refused:
            held.remaining += 1
            self._spawn(self._dead_letter(message.routing_key or "", refused, held))
        if held.remaining == 0:
            await _ack(message)

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
        """Release the acknowledged messages held here; return the mids not held here."""
        elsewhere = []
        for mid in mids:
            unacked = connection.unacked.pop(mid, None)
            if unacked is None:
                elsewhere.append(mid)
                continue
            for held in unacked.held:
                await _release(held)
        return elsewhere

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
                    self._queue_handover(unacked.handover_item(), unacked.held)
                if expired:
                    log.info(
                        "ack_timed_out",
                        conn_id=connection.session.conn_id,
                        count=len(expired),
                    )
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
    return Delivery(items=items), refused


async def _settle(settling: Coroutine[Any, Any, None]) -> None:
    try:
        await settling
    except Exception:
        # The channel was lost: the broker requeued the delivery, and it comes back.
        log.warning("delivery_settle_failed", exc_info=True)


async def _release(held: Held) -> None:
    held.remaining -= 1
    if held.remaining == 0:
        await _ack(held.message)


async def _ack(message: AbstractIncomingMessage) -> None:
    try:
        await message.ack()
    except Exception:
        # The channel was lost: the broker requeued the delivery, and it comes back (at least once).
        log.warning("delivery_ack_failed", exc_info=True)
