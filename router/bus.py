"""RabbitMQ for the router: the shared topology, the router's queues to consume (its batches,
and group changes apart), and the confirmed publishes (deliveries, events, replies to backend
commands) that routing.py decides.

Connecting, declaring, consuming and the confirmed publish itself are ``runtime/bus.py``'s.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aio_pika.abc import AbstractRobustConnection

from proto.topology import Topology, shared_topology
from router.publications import Publication
from router.settings import Settings
from runtime.bus import Broker, OnMessage, open_broker, queue_alone
from runtime.publish import confirm_all


@asynccontextmanager
async def open_bus(settings: Settings) -> AsyncIterator["Bus"]:
    """Connect to RabbitMQ and declare the shared topology; close on exit.

    Raises:
        DependencyUnavailable: RabbitMQ does not accept a connection in time.
        SettingsError: a shared queue exists with other arguments (another
            ``SWITCHBOARD_QUEUE_TYPE``).
    """
    async with open_broker(settings, settings.shutdown_timeout_s) as broker:
        topology = shared_topology(
            settings.names, settings.queue_type, settings.history
        )
        await broker.declare(topology)
        names = settings.names
        yield Bus(
            broker,
            queue_alone(topology, names.router_queue),
            queue_alone(topology, names.router_groups_queue),
        )


class Bus:
    """The router's RabbitMQ: its queue to consume, the exchanges to publish to."""

    def __init__(self, broker: Broker, queue: Topology, groups_queue: Topology) -> None:
        self._broker = broker
        self._queue = queue
        self._groups_queue = groups_queue

    @property
    def connection(self) -> AbstractRobustConnection:
        """The robust connection: readiness and the reconnect counter watch it."""
        return self._broker.connection

    async def consume(self, on_message: OnMessage) -> None:
        """Hand every message of the router's queue to ``on_message`` (manual acks)."""
        await self._broker.consume(self._queue, on_message)

    async def consume_groups(self, on_message: OnMessage) -> None:
        """Hand every message of ``<ns>.router.groups`` (group changes, rebuild pages) to
        ``on_message``, on a channel of its own: batches that wait for them never stand in
        front of them."""
        await self._broker.consume(self._groups_queue, on_message)

    async def stop_consuming(self, timeout_s: float) -> None:
        """Ask the broker for no more messages; those already received stay ours."""
        await self._broker.stop_consuming(timeout_s)

    async def publish_all(self, publications: Sequence[Publication]) -> None:
        """Publish concurrently; return once every one is confirmed.

        Raises:
            Exception: the first failure (no confirm in time, a nack, a return, a
                closed channel), after every publish has finished one way or another.
        """
        await confirm_all(self.publish(publication) for publication in publications)

    async def publish(self, publication: Publication) -> None:
        """Publish one message (persistent) and wait for its confirm."""
        await self._broker.publisher.publish(
            publication.exchange,
            publication.routing_key,
            publication.body,
            mandatory=publication.mandatory,
            message_id=publication.mid,
            correlation_id=publication.correlation_id,
            headers=publication.headers,
        )
