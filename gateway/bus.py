"""The gateway's RabbitMQ side: publish frames to the inbound exchange, consume its own queue.

A gateway talks to RabbitMQ only. Publishes are persistent, mandatory and confirmed; the channel
raises when the broker returns or nacks a message, so a caller that gets no exception knows the
broker holds it.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from gateway.settings import Settings
from proto.env import location
from proto.errors import DependencyUnavailable
from proto.topology import Topology, gateway_topology, shared_topology

log = structlog.get_logger()

JSON = "application/json"


class Bus:
    """Publishing and consuming on one robust AMQP connection (reconnects by itself)."""

    def __init__(
        self,
        settings: Settings,
        inbound: AbstractExchange,
        undeliverable: AbstractExchange,
        queue: AbstractQueue,
        connection: AbstractRobustConnection,
    ) -> None:
        self.connection = connection
        """Read by the readiness check and the reconnect counter (observability.py)."""
        self._publish_timeout_s = settings.publish_timeout_s
        self._inbound = inbound
        self._undeliverable = undeliverable
        self._queue = queue
        self._consumer_tag: str | None = None

    async def publish_inbound(
        self, routing_key: str, body: bytes, mid: str = ""
    ) -> None:
        """Publish to the inbound exchange; returns once the broker confirmed."""
        # aio-pika's timeout covers the confirm, not the wait for a reconnecting channel.
        async with asyncio.timeout(self._publish_timeout_s):
            await self._inbound.publish(
                _message(body, mid), routing_key, mandatory=True
            )

    async def publish_undeliverable(self, body: bytes) -> None:
        """Hand a ``Delivery`` to the offline store; returns once the broker confirmed."""
        async with asyncio.timeout(self._publish_timeout_s):  # see publish_inbound
            await self._undeliverable.publish(_message(body), "", mandatory=True)

    async def consume_deliveries(
        self, on_delivery: Callable[[AbstractIncomingMessage], Awaitable[None]]
    ) -> None:
        self._consumer_tag = await self._queue.consume(on_delivery, no_ack=False)

    async def stop_consuming(self) -> None:
        if self._consumer_tag is not None:
            await self._queue.cancel(self._consumer_tag)
            self._consumer_tag = None


def _message(body: bytes, mid: str = "") -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=JSON,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=mid or None,
    )


@asynccontextmanager
async def open_bus(settings: Settings) -> AsyncIterator[Bus]:
    """Connect, declare the topology (shared part and this gateway's queue) and yield a ``Bus``."""
    try:
        connection: AbstractRobustConnection = await aio_pika.connect_robust(
            settings.amqp_url, timeout=settings.connect_timeout_s
        )
    except Exception as exc:
        raise DependencyUnavailable(
            "RabbitMQ",
            location(settings.amqp_url),
            "start it with: rabbitmq-server -detached",
        ) from exc
    async with connection:
        publish_channel = await connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        names = settings.names
        await declare(publish_channel, shared_topology(names, settings.queue_type))
        own = gateway_topology(
            names,
            settings.gateway_id,
            orphan_ttl_ms=int(settings.orphan_ttl_s * 1000),
            expires_ms=int(settings.gateway_queue_expires_s * 1000),
        )
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=settings.prefetch)
        (queue,) = (await declare(consume_channel, own)).values()
        inbound = await publish_channel.get_exchange(
            names.inbound_exchange, ensure=False
        )
        undeliverable = await publish_channel.get_exchange(
            names.undeliverable_exchange, ensure=False
        )
        yield Bus(settings, inbound, undeliverable, queue, connection)


async def declare(
    channel: AbstractChannel, topology: Topology
) -> dict[str, AbstractQueue]:
    """Declare exchanges, queues and bindings; idempotent. Returns the declared queues by name.

    A robust channel remembers what was declared through it and declares it again after a reconnect.
    """
    for exchange in topology.exchanges:
        await channel.declare_exchange(
            exchange.name,
            aio_pika.ExchangeType(exchange.kind),
            durable=True,
            arguments=dict(exchange.arguments),
        )
    queues = {
        spec.name: await channel.declare_queue(
            spec.name, durable=True, arguments=dict(spec.arguments)
        )
        for spec in topology.queues
    }
    for binding in topology.bindings:
        await queues[binding.queue].bind(binding.exchange, binding.routing_key)
    return queues
