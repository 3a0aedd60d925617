"""RabbitMQ: the offline store's connection, topology, consumers and confirmed publishes.

One channel publishes (with publisher confirms, unroutable messages raising), and each consumed
queue gets a channel of its own, so that its prefetch and its acknowledgements stay apart.
What to publish is decided in replay.py; when to acknowledge, in consumers.py.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pamqp.common import FieldTable

from offline_store.settings import Settings, mask_password
from proto.env import location
from proto.envelopes import MessageOffline, MessageRefused, SavedUid, encode
from proto.errors import DependencyUnavailable
from proto.names import (
    EVENT_MESSAGE_OFFLINE,
    EVENT_MESSAGE_REFUSED,
    HEADER_REJECTED_REASON,
    KEY_SAVED,
    RETIRED_STORE_CONTROL_BINDINGS,
)
from proto.packing import pack_saved
from proto.shutdown import finish_within
from proto.topology import shared_topology

log = structlog.get_logger()

RABBITMQ_HINT = (
    "start it with `rabbitmq-server -detached`"
    " or point SWITCHBOARD_AMQP_URL at a running broker"
)
CONTENT_TYPE = "application/json"

OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Bus:
    """The offline store's side of RabbitMQ."""

    def __init__(
        self, connection: AbstractRobustConnection, settings: Settings
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._names = settings.names
        self._topology = shared_topology(settings.names, settings.queue_type)
        self._exchanges: dict[str, AbstractExchange] = {}
        self._publishing: AbstractChannel | None = None
        # (queue, consumer tag) of every consumer started, to cancel them on stop.
        self._consumers: list[tuple[AbstractQueue, str]] = []

    @property
    def connection(self) -> AbstractRobustConnection:
        """The robust connection: readiness and the reconnect counter watch it."""
        return self._connection

    async def declare_topology(self) -> None:
        """Declare the shared exchanges, queues and bindings; open the publishing channel."""
        timeout = self._settings.connect_timeout_s
        channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._publishing = channel
        for spec in self._topology.exchanges:
            self._exchanges[spec.name] = await channel.declare_exchange(
                spec.name,
                aio_pika.ExchangeType(spec.kind),
                durable=True,
                arguments=dict(spec.arguments),
                timeout=timeout,
            )
        queues: dict[str, AbstractQueue] = {}
        for queue_spec in self._topology.queues:
            queues[queue_spec.name] = await channel.declare_queue(
                queue_spec.name,
                durable=True,
                arguments=dict(queue_spec.arguments),
                timeout=timeout,
            )
        for binding in self._topology.bindings:
            await queues[binding.queue].bind(
                self._exchanges[binding.exchange], binding.routing_key, timeout=timeout
            )
        # Acks had the control queue before they got their own: an older gateway's acks
        # would otherwise reach both (harmless, but they would queue beside the replays).
        control = queues[self._names.store_control_queue]
        for key in RETIRED_STORE_CONTROL_BINDINGS:
            await control.unbind(
                self._exchanges[self._names.inbound_exchange], key, timeout=timeout
            )

    async def consume(self, queue_name: str, on_message: OnMessage) -> None:
        """Start consuming ``queue_name`` (manual acks) on a channel of its own."""
        timeout = self._settings.connect_timeout_s
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self._settings.prefetch, timeout=timeout)
        spec = next(q for q in self._topology.queues if q.name == queue_name)
        queue = await channel.declare_queue(
            spec.name, durable=True, arguments=dict(spec.arguments), timeout=timeout
        )
        tag = await queue.consume(on_message, no_ack=False, timeout=timeout)
        self._consumers.append((queue, tag))

    async def stop_consuming(self) -> None:
        """Cancel every consumer: the broker sends nothing more, unacked messages stay ours."""
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag, timeout=self._settings.shutdown_timeout_s)
            except Exception:
                log.exception("consumer_cancel_failed", queue=queue.name)
        self._consumers.clear()

    async def publish_saved(self, uids: Sequence[SavedUid]) -> None:
        """Announce new rows to the routers (``Saved``, in messages within the size limit);
        returns once the broker confirmed them all."""
        await asyncio.gather(
            *(
                self._publish(self._names.inbound_exchange, KEY_SAVED, body)
                for body in pack_saved(uids, self._settings.max_amqp_message_bytes)
            )
        )

    async def publish_dead_letter(
        self, routing_key: str, body: bytes, reason: str
    ) -> None:
        """Dead-letter one refused item, with why; returns once the broker confirmed."""
        await self._publish(
            self._names.dead_letter_exchange,
            routing_key,
            body,
            headers={HEADER_REJECTED_REASON: reason},
        )

    async def publish_offline_events(self, events: Sequence[MessageOffline]) -> None:
        """Tell backends which messages went to the store; returns once all are confirmed."""
        await self._publish_events(EVENT_MESSAGE_OFFLINE, events)

    async def publish_refused_events(self, events: Sequence[MessageRefused]) -> None:
        """Tell backends which messages the store refused; returns once all are confirmed."""
        await self._publish_events(EVENT_MESSAGE_REFUSED, events)

    async def _publish_events(
        self, routing_key: str, events: Sequence[MessageOffline | MessageRefused]
    ) -> None:
        """Publish events, all at once. Not mandatory: an events exchange without any bound
        queue is normal."""
        await asyncio.gather(
            *(
                self._publish(
                    self._names.events_exchange,
                    routing_key,
                    encode(event),
                    mandatory=False,
                )
                for event in events
            )
        )

    async def publish_delivery(self, gateway_id: str, body: bytes) -> None:
        """Send a delivery to one gateway's queue; returns once the broker confirmed."""
        await self._publish(self._names.deliveries_exchange, gateway_id, body)

    async def _publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        mandatory: bool = True,
        headers: FieldTable | None = None,
    ) -> None:
        """Publish persistent JSON; return once confirmed (raise on a nack or a return).

        Through the AMQP channel under aio-pika's, with ``wait=False``: aio-pika's publish
        holds the channel until its frames are written, one message per pass of the writer;
        this lets concurrent publishes share the passes (about a third less CPU per message),
        and each still waits for its own confirm.
        """
        assert self._publishing is not None, "declare_topology() first"
        async with asyncio.timeout(self._settings.publish_timeout_s):
            channel = await self._publishing.get_underlay_channel()
            assert isinstance(channel, aiormq.Channel)  # ``wait`` is aiormq.Channel's
            await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=persistent_json(headers),
                mandatory=mandatory,
                wait=False,
            )


def persistent_json(
    headers: FieldTable | None = None,
) -> aiormq.spec.Basic.Properties:
    """Fresh properties per message: aiormq writes a message id into them."""
    return aiormq.spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
        headers=headers,
    )


@asynccontextmanager
async def open_bus(settings: Settings) -> AsyncIterator[Bus]:
    """Connect to RabbitMQ and declare the topology; close the connection on exit.

    Raises:
        DependencyUnavailable: the broker cannot be reached or refuses the connection.
    """
    where = location(settings.amqp_url)
    try:
        connection = await aio_pika.connect_robust(
            settings.amqp_url, timeout=settings.connect_timeout_s
        )
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = mask_password(reason or type(exc).__name__, settings.amqp_url)
        raise DependencyUnavailable(
            "RabbitMQ", where, f"{reason}; {RABBITMQ_HINT}"
        ) from exc
    try:
        bus = Bus(connection, settings)
        await bus.declare_topology()
        yield bus
    finally:
        await finish_within(
            settings.shutdown_timeout_s, connection.close(), "connection_close_failed"
        )
