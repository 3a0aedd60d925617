"""Keeping this gateway known to the routers, and its clients' connections alive.

The routers route to a gateway while its heartbeats come (``run_heartbeat``), forget it when it
says it stopped (``announce_stopped``), learn its presence again when they lost it
(``reannounce``) and drop a connection that presence still places here but that is gone
(``remove_stale``). Clients are pinged from one loop (``run_pings``).
"""

import asyncio
from collections.abc import Callable

import structlog
from websockets.exceptions import ConnectionClosed

from gateway import observability
from gateway.bus import Bus
from gateway.connection import Connection
from gateway.fanout import reannouncements
from proto import envelopes
from proto.envelopes import Target
from proto.names import KEY_CONN_CLOSED, KEY_GATEWAY_STOPPED, KEY_HEARTBEAT
from runtime.publish import publish_until_confirmed
from runtime.shutdown import stop_if_cancelled

log = structlog.get_logger()


class Liveness:
    """Announcements to the routers, and pings to the clients.

    Args:
        bus: the gateway's RabbitMQ side.
        gateway_id: this gateway.
        connections: the hub's connections, by conn_id (read, never changed here).
        rooms: the hub's room index, room -> conn_ids (read, never changed here).
    """

    def __init__(
        self,
        bus: Bus,
        gateway_id: str,
        connections: dict[str, Connection],
        rooms: dict[str, set[str]],
        since_of: Callable[[Connection], int | None] | None = None,
    ) -> None:
        self._bus = bus
        self._since_of = since_of
        self._gateway_id = gateway_id
        self._connections = connections
        self._rooms = rooms

    async def run_heartbeat(self, interval_s: float) -> None:
        """Tell the routers that this gateway is alive, so they keep routing to it."""
        while True:
            heartbeat = envelopes.Heartbeat(
                gateway_id=self._gateway_id, connections=len(self._connections)
            )
            try:
                await self._bus.publish_inbound(
                    KEY_HEARTBEAT, envelopes.encode(heartbeat)
                )
                observability.count_heartbeat()
            except Exception:
                stop_if_cancelled()
                log.warning("heartbeat_failed", exc_info=True)
            await asyncio.sleep(interval_s)

    async def announce_stopped(self) -> None:
        """Tell the routers that this gateway's connections are gone, so they stop routing here."""
        stopped = envelopes.GatewayStopped(gateway_id=self._gateway_id)
        try:
            await self._bus.publish_inbound(
                KEY_GATEWAY_STOPPED, envelopes.encode(stopped)
            )
        except Exception:
            log.warning("stop_announcement_failed", exc_info=True)

    async def reannounce(self) -> None:
        """Announce every connection and room again: the routers lost this gateway's presence."""
        uids = {
            conn_id: connection.session.uid
            for conn_id, connection in self._connections.items()
            if connection.session.uid is not None and not connection.is_closing
        }
        since_of = self._since_of
        since = {
            conn_id: cursor
            for conn_id in uids
            if since_of is not None
            and (cursor := since_of(self._connections[conn_id])) is not None
        }
        pending = reannouncements(self._gateway_id, uids, self._rooms, since)
        # Retried until the broker takes them all: nobody asks again (the router marked this
        # gateway as known once its request was confirmed).
        await publish_until_confirmed(
            pending,
            lambda a: self._bus.publish_inbound(a.routing_key, a.body),
            lambda failed: log.warning("reannounce_failed", envelopes=failed),
        )
        count = len(pending)
        log.info("presence_reannounced", envelopes=count)

    async def remove_stale(self, target: Target) -> None:
        """Tell the routers that a connection they place here is gone."""
        closed = envelopes.ConnClosed(
            uid=target.uid, conn_id=target.conn_id, gateway_id=self._gateway_id
        )
        try:
            await self._bus.publish_inbound(KEY_CONN_CLOSED, envelopes.encode(closed))
        except Exception:
            log.warning(
                "presence_removal_failed", conn_id=target.conn_id, exc_info=True
            )

    async def run_pings(self, interval_s: float) -> None:
        """Ping every connection each ``interval_s``, from this one loop.

        websockets' own keepalive runs a task per connection (about 1 KiB each); one loop costs
        nothing per idle connection. A client's WebSocket library answers a ping by itself, and
        its pong counts as activity: a live connection stays within ``SWITCHBOARD_IDLE_TIMEOUT_S``,
        and one that answers nothing is closed at that timeout by its reader (4002).
        """
        while True:
            await asyncio.sleep(interval_s)  # a schedule, not a synchronisation
            for connection in list(self._connections.values()):
                transport = connection.websocket.transport
                if connection.is_closing or transport.get_write_buffer_size():
                    continue  # frames are on their way to it already; a ping would wait
                try:
                    # Written at once; the pong is not awaited.
                    await connection.websocket.ping()
                except ConnectionClosed:
                    continue
