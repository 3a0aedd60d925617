"""Carrying out a session's effects: the only place that awaits the broker for a connection.

``ws.py``'s reader hands each frame to ``Session`` (``session.py``) and the effects it returns
(``effects.py``) to ``Performer.perform``: replies are queued on the connection, frames are
published, and once the broker confirmed (or did not) the session says what follows: an
answer for the client, a room for the hub's index.
"""

import asyncio

import structlog

from gateway import observability
from gateway.bus import Bus
from gateway.connection import Connection
from gateway.effects import (
    Acknowledge,
    Close,
    Effect,
    JoinRoom,
    LeaveRoom,
    Publish,
    Reply,
)
from gateway.hub import Hub
from proto import frames
from proto.codes import CloseCode, ErrorCode
from proto.names import KEY_CONN_OPENED, KEY_SEND

log = structlog.get_logger()

MAX_FORWARDED_ACKS = frames.MAX_ACK_MIDS
"""Mids in one ``Acked`` for the offline store: as many as one ``ack`` frame may carry."""


class Performer:
    """Carries out the effects of every connection's session, on one bus and one hub."""

    def __init__(self, bus: Bus, hub: Hub) -> None:
        self._bus = bus
        self._hub = hub

    async def perform(
        self, connection: Connection, effects: list[Effect], tasks: asyncio.TaskGroup
    ) -> bool:
        """Carry out a session's effects in order; False once the connection is to be closed.

        A ``send`` is pipelined: it joins the bus's next ``Batch`` at once, and the reader goes on
        while up to ``SENDS_IN_FLIGHT`` sends wait for their confirms (each answered by a task of
        the connection's group, in order, since ``Batch``es are confirmed in order). Acks of stored
        messages go to the offline store the same way, in any order, gathered (``_queue_acks``).
        Other frames wait for their confirm before the next frame is read: a join, say, must be
        recorded before a room send that follows it is checked.
        """
        for effect in effects:
            match effect:
                case Reply():
                    if not connection.push(effect.frame):
                        connection.request_close(
                            CloseCode.SLOW_CONSUMER, "too many frames waiting"
                        )
                        return False
                    if effect.limit is not None:
                        log.info(
                            "frame_rejected", code=effect.error_code, limit=effect.limit
                        )
                        observability.count_error(ErrorCode.RATE_LIMITED)
                        observability.count_rate_limited(effect.limit)
                    elif effect.error_code is not None:
                        log.info("frame_rejected", code=effect.error_code)
                        observability.count_error(effect.error_code)
                case Publish() if effect.routing_key == KEY_SEND:
                    await connection.sending.acquire()
                    confirmed = self._bus.submit_inbound(
                        effect.routing_key, effect.body
                    )
                    tasks.create_task(self._answer_send(connection, effect, confirmed))
                case Publish() if effect.routing_key == KEY_CONN_OPENED:
                    # Created first: the router's ready may come before the confirm.
                    connection.registration = asyncio.get_running_loop().create_future()
                    await self._publish(connection, effect)
                    if not connection.session.is_initialized:
                        connection.registration = None  # not published: init again
                case Publish():
                    await self._publish(connection, effect)
                case Acknowledge():
                    elsewhere = await self._hub.on_client_ack(connection, effect.mids)
                    if elsewhere:
                        await self._queue_acks(connection, elsewhere, tasks)
                case Close():
                    log.info("connection_refused", code=effect.reason)
                    connection.request_close(effect.code, effect.reason)
                    return False
        return True

    async def _answer_send(
        self, connection: Connection, publish: Publish, confirmed: asyncio.Future[None]
    ) -> None:
        try:
            await confirmed
        except Exception:
            self._on_published(connection, publish, is_confirmed=False)
        else:
            self._on_published(connection, publish, is_confirmed=True)
        finally:
            connection.sending.release()

    async def _queue_acks(
        self, connection: Connection, mids: list[str], tasks: asyncio.TaskGroup
    ) -> None:
        """Acks of stored messages, for the offline store, in any order: they join the mids
        that wait for the connection's forwarder, which takes all that wait at each publish
        (one ``Acked`` for many acks, where a client acks each message alone). Another
        forwarder starts only when none runs, or when ``MAX_FORWARDED_ACKS`` wait: each holds
        one of the connection's ``SENDS_IN_FLIGHT``, so a client whose acks outrun the broker
        is read no further."""
        if connection.acks_waiting is None:
            connection.acks_waiting = []
        connection.acks_waiting.extend(mids)
        if (
            connection.ack_forwarders
            and len(connection.acks_waiting) < MAX_FORWARDED_ACKS
        ):
            return  # the running forwarder takes them at its next publish
        await connection.sending.acquire()
        connection.ack_forwarders += 1
        tasks.create_task(self._forward_acks(connection))

    async def _forward_acks(self, connection: Connection) -> None:
        """Publish the acks that wait, ``MAX_FORWARDED_ACKS`` at most in each ``Acked``, until
        none waits."""
        try:
            while connection.acks_waiting:
                mids = connection.acks_waiting[:MAX_FORWARDED_ACKS]
                del connection.acks_waiting[:MAX_FORWARDED_ACKS]
                await self._publish(connection, connection.session.acked_envelope(mids))
        finally:
            connection.ack_forwarders -= 1
            connection.sending.release()

    async def _publish(self, connection: Connection, publish: Publish) -> None:
        try:
            await self._bus.publish_inbound(
                publish.routing_key, publish.body, publish.mid
            )
        except Exception:
            self._on_published(connection, publish, is_confirmed=False)
        else:
            self._on_published(connection, publish, is_confirmed=True)

    def _on_published(
        self, connection: Connection, publish: Publish, is_confirmed: bool
    ) -> None:
        """Carry out what the session decides once the broker confirmed, or did not."""
        session = connection.session
        if not is_confirmed:
            log.warning(
                "frame_publish_failed",
                routing_key=publish.routing_key,
                mid=publish.mid,
                exc_info=True,
            )
            effects = session.on_publish_failed(publish)
        else:
            effects = session.on_confirmed(publish)
            if publish.mid:
                log.debug(
                    "frame_published", mid=publish.mid, client_id=publish.client_id
                )
        if publish.routing_key == KEY_CONN_OPENED and session.uid is not None:
            structlog.contextvars.bind_contextvars(uid=session.uid)
            log.info("connection_authenticated")
        for effect in effects:
            match effect:
                case Reply():
                    if effect.error_code is not None:
                        log.info(
                            "frame_rejected",
                            code=effect.error_code,
                            client_id=publish.client_id,
                        )
                        observability.count_error(effect.error_code)
                    connection.push(effect.frame)
                case JoinRoom():
                    self._hub.join_room(connection, effect.room)
                    log.debug("room_joined", room=effect.room)
                case LeaveRoom():
                    self._hub.leave_room(connection, effect.room)
                    log.debug("room_left", room=effect.room)
