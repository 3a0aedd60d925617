"""The gateway's RabbitMQ side: publish frames to the inbound exchange, consume its own queue.

A gateway talks to RabbitMQ only. Publishes are persistent, mandatory and confirmed; the channel
raises when the broker returns or nacks a message, so a caller that gets no exception knows the
broker holds it.

Envelopes for the router travel in batches (``Batch``, routing key ``gateway.batch``): while a
batch waits for its confirm, what the connections publish meanwhile gathers in the next one.
A lone frame goes out at once, alone; under load one broker message and one confirm carry many
frames, and batches grow with the load (Nagle's algorithm without its delay).
Acks of stored messages, for the offline store, travel the same way in batches of their own
(routing key ``gateway.acks``).
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

from gateway import observability
from gateway.batcher import Batcher
from gateway.batching import BATCH_MAX_BYTES
from gateway.settings import Settings
from proto.env import location
from proto.errors import DependencyUnavailable
from proto.names import (
    BATCHABLE_KEYS,
    HEADER_REJECTED_REASON,
    KEY_ACK,
    KEY_ACK_BATCH,
    KEY_BATCH,
)
from proto.shutdown import finish_within
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
        dead_letter: AbstractExchange,
    ) -> None:
        self.connection = connection
        """Read by the readiness check and the reconnect counter (observability.py)."""
        self._settings = settings
        self._publish_timeout_s = settings.publish_timeout_s
        self._inbound = inbound
        self._undeliverable = undeliverable
        self._dead_letter = dead_letter
        self._queue = queue
        self._consumer_tag: str | None = None
        self._on_delivery: (
            Callable[[AbstractIncomingMessage], Awaitable[None]] | None
        ) = None
        max_batch_bytes = min(BATCH_MAX_BYTES, settings.max_amqp_message_bytes)
        self._batcher = Batcher(self._publish_batch, max_batch_bytes)
        # Acks of stored messages, for the offline store, batched the same way on their own
        # routing key: a flood of acks costs one confirmed publish per batch, not one per frame.
        self._ack_batcher = Batcher(self._publish_ack_batch, max_batch_bytes)

    async def publish_inbound(
        self, routing_key: str, body: bytes, mid: str = ""
    ) -> None:
        """Publish to the inbound exchange; returns once the broker confirmed.

        Envelopes for the router go in a batch (see the module's docstring); the others alone.
        """
        if routing_key in BATCHABLE_KEYS:
            await self._batcher.publish(routing_key, body)
            return
        if routing_key == KEY_ACK:
            await self._ack_batcher.publish(routing_key, body)
            return
        # aio-pika's timeout covers the confirm, not the wait for a reconnecting channel.
        async with asyncio.timeout(self._publish_timeout_s):
            observability.count_publish(routing_key)
            await self._inbound.publish(
                _message(body, mid), routing_key, mandatory=True
            )

    def submit_inbound(self, routing_key: str, body: bytes) -> asyncio.Future[None]:
        """Queue an envelope for the router at once, in order; await the future for its confirm.

        Lets a connection go on reading while its earlier frames wait for their batch.
        """
        assert routing_key in BATCHABLE_KEYS
        return self._batcher.submit(routing_key, body)

    async def _publish_batch(self, body: bytes) -> None:
        async with asyncio.timeout(self._publish_timeout_s):  # see publish_inbound
            observability.count_publish(KEY_BATCH)
            await self._inbound.publish(_message(body), KEY_BATCH, mandatory=True)

    async def _publish_ack_batch(self, body: bytes) -> None:
        async with asyncio.timeout(self._publish_timeout_s):  # see publish_inbound
            observability.count_publish(KEY_ACK_BATCH)
            await self._inbound.publish(_message(body), KEY_ACK_BATCH, mandatory=True)

    async def close(self) -> None:
        await self._batcher.close()
        await self._ack_batcher.close()

    async def publish_undeliverable(self, body: bytes) -> None:
        """Hand a ``Delivery`` to the offline store; returns once the broker confirmed."""
        async with asyncio.timeout(self._publish_timeout_s):  # see publish_inbound
            await self._undeliverable.publish(_message(body), "", mandatory=True)

    async def publish_dead_letter(
        self, routing_key: str, body: bytes, reason: str
    ) -> None:
        """Dead-letter one refused item, with why; returns once the broker confirmed."""
        message = _message(body)
        message.headers = {HEADER_REJECTED_REASON: reason}
        async with asyncio.timeout(self._publish_timeout_s):  # see publish_inbound
            await self._dead_letter.publish(message, routing_key, mandatory=True)

    async def consume_deliveries(
        self, on_delivery: Callable[[AbstractIncomingMessage], Awaitable[None]]
    ) -> None:
        self._on_delivery = on_delivery
        self._consumer_tag = await self._queue.consume(on_delivery, no_ack=False)

    async def stop_consuming(self) -> None:
        """Cancel the consumer; a broker that does not answer in time is left to the drain.

        What the consumer holds stays unacknowledged either way: delivered again, or
        dead-lettered to the offline store, once the connection closes.
        """
        self._on_delivery = None
        if self._consumer_tag is None:
            return
        tag, self._consumer_tag = self._consumer_tag, None
        await finish_within(
            self._publish_timeout_s, self._queue.cancel(tag), "consumer_cancel_failed"
        )

    async def watch_consumer(self, interval_s: float) -> None:
        """Keep this gateway's consumer on the broker; runs until cancelled.

        aio-pika's robust connection restores consumers after a reconnect, but not always
        (aio-pika issue #231): the broker then counts no consumer on this gateway's queue, and
        its deliveries wait there until their TTL sends them to the offline store. Every
        ``interval_s`` this asks the broker (a passive declare on a short-lived channel). Two
        answers in a row without a consumer (one may fall in the middle of a restore) make it
        consume again on a new channel.
        """
        misses = 0
        while True:
            await asyncio.sleep(interval_s)
            if (
                self._on_delivery is None
                or self.connection.reconnecting
                or self.connection.is_closed
            ):
                misses = 0
                continue
            try:
                consumers = await self._count_consumers()
            except Exception as exc:
                # The broker is away: the robust connection deals with that.
                log.info("consumer_check_failed", error=repr(exc))
                misses = 0
                continue
            misses = 0 if consumers else misses + 1
            if misses >= 2:
                log.error("consumer_missing", queue=self._queue.name)
                await self._consume_again()
                misses = 0

    async def _count_consumers(self) -> int:
        async with asyncio.timeout(self._publish_timeout_s):
            channel = await self.connection.channel(publisher_confirms=False)
            try:
                queue = await channel.declare_queue(self._queue.name, passive=True)
                declared = queue.declaration_result
                return int(declared.consumer_count or 0)
            finally:
                await channel.close()

    async def _consume_again(self) -> None:
        """Consume on a new channel, then close the old one (what it held is requeued)."""
        on_delivery = self._on_delivery
        assert on_delivery is not None
        old_channel = self._queue.channel
        async with asyncio.timeout(self._publish_timeout_s):
            channel = await self.connection.channel()
            await channel.set_qos(prefetch_count=self._settings.prefetch)
            (queue,) = (await declare(channel, own_topology(self._settings))).values()
            self._consumer_tag = await queue.consume(on_delivery, no_ack=False)
        self._queue = queue
        log.warning("consumer_restored", queue=queue.name)
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                await old_channel.close()
        except Exception as exc:
            log.info("old_channel_close_failed", error=repr(exc))


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
    try:
        publish_channel = await connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        names = settings.names
        await declare(publish_channel, shared_topology(names, settings.queue_type))
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=settings.prefetch)
        (queue,) = (await declare(consume_channel, own_topology(settings))).values()
        inbound = await publish_channel.get_exchange(
            names.inbound_exchange, ensure=False
        )
        undeliverable = await publish_channel.get_exchange(
            names.undeliverable_exchange, ensure=False
        )
        dead_letter = await publish_channel.get_exchange(
            names.dead_letter_exchange, ensure=False
        )
        bus = Bus(settings, inbound, undeliverable, queue, connection, dead_letter)
        try:
            yield bus
        finally:
            await bus.close()
    finally:
        await finish_within(
            settings.publish_timeout_s, connection.close(), "connection_close_failed"
        )


def own_topology(settings: Settings) -> Topology:
    """This gateway's queue, with the TTL that sends what it strands to the offline store."""
    return gateway_topology(
        settings.names,
        settings.gateway_id,
        orphan_ttl_ms=int(settings.orphan_ttl_s * 1000),
        expires_ms=int(settings.gateway_queue_expires_s * 1000),
    )


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
