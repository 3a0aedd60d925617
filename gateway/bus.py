"""The gateway's RabbitMQ side: publish frames to the inbound exchange, consume its own queue.

A gateway talks to RabbitMQ only. Publishes are persistent (but for queries), mandatory and
confirmed; the channel raises when the broker returns or nacks a message, so a caller that gets
no exception knows the broker holds it.

Envelopes for the router travel coalesced in ``Batch`` envelopes (routing key ``gateway.batch``),
acks of stored messages for the offline store in ``Batch``es of their own (``gateway.acks``):
what goes in a ``Batch`` is decided in ``coalescing.py``, ``coalescer.py`` publishes them
through this bus.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from gateway import observability
from gateway.coalescer import Coalescer
from gateway.coalescing import BATCH_MAX_BYTES
from gateway.settings import Settings
from proto.names import (
    BATCHABLE_KEYS,
    KEY_ACK,
    KEY_ACK_BATCH,
    KEY_BATCH,
    KEY_CONVERSATIONS,
    KEY_HISTORY,
)
from proto.topology import Topology, gateway_topology, shared_topology, store_paths
from runtime.bus import Broker, Consumer, OnMessage, open_broker
from runtime.shutdown import stop_if_cancelled

log = structlog.get_logger()

QUERY_KEYS = frozenset((KEY_HISTORY, KEY_CONVERSATIONS))
"""Reads, published not persistent: a broker that restarts loses them, and their clients ask
again (the store answers a query, it changes nothing). Confirmed at once, not after a write."""


class Bus:
    """Publishing and consuming on one robust AMQP connection (reconnects by itself)."""

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.connection = broker.connection
        """Read by the readiness check and the reconnect counter (runtime/health.py)."""
        self._settings = settings
        self._broker = broker
        self._publisher = broker.publisher
        self._names = settings.names
        self._publish_timeout_s = settings.publish_timeout_s
        self._queue_name = settings.names.gateway_queue(settings.gateway_id)
        self._consumer: Consumer | None = None
        self._on_delivery: OnMessage | None = None
        max_batch_bytes = min(BATCH_MAX_BYTES, settings.max_amqp_message_bytes)
        self._coalescer = Coalescer(
            self._publish_batch,
            settings.publish_timeout_s,
            max_batch_bytes,
            observability.BATCH_WAIT,
        )
        # Acks of stored messages, for the offline store, coalesced the same way on their own
        # routing key: a flood of acks costs one confirmed publish per Batch, not one per frame.
        self._ack_coalescer = Coalescer(
            self._publish_ack_batch, settings.publish_timeout_s, max_batch_bytes
        )

    async def publish_inbound(
        self, routing_key: str, body: bytes, mid: str = ""
    ) -> None:
        """Publish to the inbound exchange; returns once the broker confirmed.

        Envelopes for the router go in a ``Batch`` (see the module's docstring); the others
        alone.
        """
        if routing_key in BATCHABLE_KEYS:
            await self._coalescer.publish(routing_key, body)
            return
        if routing_key == KEY_ACK:
            await self._ack_coalescer.publish(routing_key, body)
            return
        observability.count_publish(routing_key)
        await self._publisher.publish(
            self._names.inbound_exchange,
            routing_key,
            body,
            message_id=mid,
            persistent=routing_key not in QUERY_KEYS,
        )

    def submit_inbound(self, routing_key: str, body: bytes) -> asyncio.Future[None]:
        """Queue an envelope for the router at once, in order; await the future for its confirm.

        Lets a connection go on reading while its earlier frames wait for their ``Batch``.
        """
        assert routing_key in BATCHABLE_KEYS
        return self._coalescer.submit(routing_key, body)

    async def _publish_batch(self, body: bytes, timeout_s: float) -> None:
        observability.count_publish(KEY_BATCH)
        await self._publisher.publish(
            self._names.inbound_exchange, KEY_BATCH, body, timeout_s=timeout_s
        )

    async def _publish_ack_batch(self, body: bytes, timeout_s: float) -> None:
        observability.count_publish(KEY_ACK_BATCH)
        await self._publisher.publish(
            self._names.inbound_exchange, KEY_ACK_BATCH, body, timeout_s=timeout_s
        )

    async def close(self) -> None:
        await self._coalescer.close()
        await self._ack_coalescer.close()

    async def publish_handover(self, body: bytes) -> None:
        """Hand a ``Delivery`` to the offline store; returns once the broker confirmed."""
        handover = store_paths(self._names).handover
        observability.count_publish(handover.routing_key)
        await self._publisher.publish(handover.exchange, handover.routing_key, body)

    async def publish_dead_letter(
        self, routing_key: str, body: bytes, reason: str
    ) -> None:
        """Dead-letter one refused item, with why; returns once the broker confirmed."""
        await self._publisher.publish_dead_letter(
            self._names.dead_letter_exchange, routing_key, body, reason
        )

    async def consume(self, on_delivery: OnMessage) -> None:
        """Hand every delivery of this gateway's queue to ``on_delivery`` (manual acks)."""
        self._on_delivery = on_delivery
        self._consumer = await self._broker.consume(
            own_topology(self._settings), on_delivery
        )

    async def stop_consuming(self) -> None:
        """Cancel the consumer; a broker that does not answer in time is left to the drain.

        What the consumer holds stays unacknowledged either way: delivered again, or
        dead-lettered to the offline store, once the connection closes.
        """
        self._on_delivery = None
        await self._broker.stop_consuming(self._publish_timeout_s)

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
                stop_if_cancelled()
                # The broker is away: the robust connection deals with that.
                log.info("consumer_check_failed", error=repr(exc))
                misses = 0
                continue
            stop_if_cancelled()
            misses = 0 if consumers else misses + 1
            if misses >= 2:
                log.error("consumer_missing", queue=self._queue_name)
                await self._consume_again()
                misses = 0

    async def _count_consumers(self) -> int:
        async with asyncio.timeout(self._publish_timeout_s):
            channel = await self.connection.channel(publisher_confirms=False)
            try:
                queue = await channel.declare_queue(self._queue_name, passive=True)
                declared = queue.declaration_result
                return int(declared.consumer_count or 0)
            finally:
                await channel.close()

    async def _consume_again(self) -> None:
        """Consume on a new channel, then close the old one (what it held is requeued)."""
        on_delivery = self._on_delivery
        assert on_delivery is not None
        assert self._consumer is not None
        old_channel = self._consumer.queue.channel
        async with asyncio.timeout(self._publish_timeout_s):
            await self.consume(on_delivery)
        log.warning("consumer_restored", queue=self._queue_name)
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                await old_channel.close()
        except Exception as exc:
            log.info("old_channel_close_failed", error=repr(exc))


@asynccontextmanager
async def open_bus(settings: Settings) -> AsyncIterator[Bus]:
    """Connect, declare the topology (shared part and this gateway's queue) and yield a ``Bus``.

    Raises:
        DependencyUnavailable: RabbitMQ does not accept a connection in time.
        SettingsError: a queue exists with other arguments (another
            ``SWITCHBOARD_QUEUE_TYPE``).
    """
    async with open_broker(settings, settings.publish_timeout_s) as broker:
        shared = shared_topology(settings.names, settings.queue_type, settings.history)
        # Declared by whichever service starts first, so that frames wait for the routers.
        # A gateway whose user may configure its own queue only (k8s/rabbitmq) finds them
        # imported with the definitions, and declares nothing shared.
        if not await broker.exists(shared):
            await broker.declare(shared)
        # Declared now, consumed once the hub is ready: a delivery waits in it till then.
        await broker.declare(own_topology(settings))
        bus = Bus(settings, broker)
        try:
            yield bus
        finally:
            await bus.close()


def own_topology(settings: Settings) -> Topology:
    """This gateway's queue, with the TTL that sends what it strands to the offline store."""
    return gateway_topology(
        settings.names,
        settings.gateway_id,
        orphan_ttl_ms=int(settings.orphan_ttl_s * 1000),
        expires_ms=int(settings.gateway_queue_expires_s * 1000),
        queue_type=settings.gateway_queue_type,
    )
