"""RabbitMQ for the offline store: the shared topology, a consumer per queue, and the confirmed
publishes that consumers.py makes (``Saved``, deliveries, events, dead letters).

Each consumed queue gets a channel of its own, so that its prefetch and its acknowledgements stay
apart; when to acknowledge is decided in consumers.py. Connecting, declaring, consuming and the
confirmed publish itself are ``runtime/bus.py``'s.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aio_pika.abc import AbstractRobustConnection

from offline_store.settings import Settings
from proto.envelopes import MessageOffline, MessageRefused, SavedUid, encode
from proto.names import (
    EVENT_MESSAGE_OFFLINE,
    EVENT_MESSAGE_REFUSED,
    KEY_GROUP_CHANGED,
    KEY_GROUPS_PAGE,
    KEY_RECEIPTS,
    KEY_SAVED,
    RETIRED_STORE_CONTROL_BINDINGS,
)
from proto.packing import pack_saved
from proto.topology import Topology, shared_topology
from runtime.bus import Broker, OnMessage, open_broker, queue_alone
from runtime.publish import confirm_all

EVENTS_IN_FLIGHT = 500
"""Events published at once, awaiting their confirms (see ``Bus._publish_events``)."""


@asynccontextmanager
async def open_bus(settings: Settings) -> AsyncIterator["Bus"]:
    """Connect to RabbitMQ and declare the topology; close the connection on exit.

    Raises:
        DependencyUnavailable: the broker cannot be reached or refuses the connection.
        SettingsError: a shared queue exists with other arguments (another
            ``SWITCHBOARD_QUEUE_TYPE``).
    """
    async with open_broker(settings, settings.shutdown_timeout_s) as broker:
        names = settings.names
        topology = shared_topology(names, settings.queue_type, settings.history)
        queues = await broker.declare(topology)
        # Acks had the control queue before they got their own: an older gateway's acks
        # would otherwise reach both (harmless, but they would queue beside the replays).
        for key in RETIRED_STORE_CONTROL_BINDINGS:
            await queues[names.store_control_queue].unbind(
                names.inbound_exchange, key, timeout=settings.connect_timeout_s
            )
        yield Bus(broker, settings, topology)


class Bus:
    """The offline store's side of RabbitMQ."""

    def __init__(self, broker: Broker, settings: Settings, topology: Topology) -> None:
        self._broker = broker
        self._publisher = broker.publisher
        self._settings = settings
        self._names = settings.names
        self._topology = topology

    @property
    def connection(self) -> AbstractRobustConnection:
        """The robust connection: readiness and the reconnect counter watch it."""
        return self._broker.connection

    async def consume(self, queue_name: str, on_message: OnMessage) -> None:
        """Start consuming ``queue_name`` (manual acks) on a channel of its own."""
        await self._broker.consume(queue_alone(self._topology, queue_name), on_message)

    async def stop_consuming(self) -> None:
        """Cancel every consumer: the broker sends nothing more, unacked messages stay ours."""
        await self._broker.stop_consuming(self._settings.shutdown_timeout_s)

    async def publish_saved(self, uids: Sequence[SavedUid]) -> None:
        """Announce new rows to the routers (``Saved``, in messages within the size limit);
        returns once the broker confirmed them all."""
        await confirm_all(
            self._publisher.publish(self._names.inbound_exchange, KEY_SAVED, body)
            for body in pack_saved(uids, self._settings.max_amqp_message_bytes)
        )

    async def publish_dead_letter(
        self, routing_key: str, body: bytes, reason: str
    ) -> None:
        """Dead-letter one refused item, with why; returns once the broker confirmed."""
        await self._publisher.publish_dead_letter(
            self._names.dead_letter_exchange, routing_key, body, reason
        )

    async def publish_message_offline_events(
        self, events: Sequence[MessageOffline]
    ) -> None:
        """Tell backends which messages went to the store; returns once all are confirmed."""
        await self._publish_events(EVENT_MESSAGE_OFFLINE, events)

    async def publish_message_refused_events(
        self, events: Sequence[MessageRefused]
    ) -> None:
        """Tell backends which messages the store refused; returns once all are confirmed."""
        await self._publish_events(EVENT_MESSAGE_REFUSED, events)

    async def _publish_events(
        self, routing_key: str, events: Sequence[MessageOffline | MessageRefused]
    ) -> None:
        """Publish events, ``EVENTS_IN_FLIGHT`` at a time, each slice confirmed before the
        next: the store has one publishing channel, whose frames leave in the order they were
        queued, and a sync window or a page published meanwhile waits behind one slice, not
        behind a whole batch's events (10,000 of them took 3 s to go out, ahead of a window).
        Not mandatory: an events exchange without any bound queue is normal."""
        for start in range(0, len(events), EVENTS_IN_FLIGHT):
            await confirm_all(
                self._publisher.publish(
                    self._names.events_exchange,
                    routing_key,
                    encode(event),
                    mandatory=False,
                )
                for event in events[start : start + EVENTS_IN_FLIGHT]
            )

    async def publish_delivery(self, gateway_id: str, body: bytes) -> None:
        """Send a delivery to one gateway's queue; returns once the broker confirmed."""
        await self._publisher.publish(self._names.deliveries_exchange, gateway_id, body)

    async def publish_answer(self, gateway_id: str, body: bytes) -> None:
        """Send a query's answer to one gateway's queue, not persistent: a broker that
        restarts loses it, and the client asks again (its page is read again, nothing else is
        lost). The broker confirms it without writing it to disk."""
        await self._publisher.publish(
            self._names.deliveries_exchange, gateway_id, body, persistent=False
        )

    async def publish_receipts(self, body: bytes) -> None:
        """Hand the routers committed read markers (``Receipts``) to deliver; returns once
        the broker confirmed."""
        await self._publisher.publish(self._names.inbound_exchange, KEY_RECEIPTS, body)

    async def publish_group_changed(
        self, body: bytes, reply_to: str, correlation_id: str
    ) -> None:
        """Tell the routers of a committed change (``GroupChanged``), with the command's
        ``reply_to`` and ``correlation_id``: the router that applies it answers there."""
        await self._publisher.publish(
            self._names.inbound_exchange,
            KEY_GROUP_CHANGED,
            body,
            reply_to=reply_to,
            correlation_id=correlation_id,
        )

    async def publish_groups_page(self, body: bytes) -> None:
        """Send the routers one page of a rebuild; returns once the broker confirmed."""
        await self._publisher.publish(
            self._names.inbound_exchange, KEY_GROUPS_PAGE, body
        )

    async def publish_reply(
        self, reply_to: str, correlation_id: str, body: bytes
    ) -> None:
        """Answer a backend command on its ``reply_to`` queue. Not mandatory: a backend that
        gave up waiting may have deleted its queue."""
        await self._publisher.publish(
            "", reply_to, body, correlation_id=correlation_id, mandatory=False
        )
