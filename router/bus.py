"""RabbitMQ for the router: declare the shared topology, consume the router's queue,
publish with confirms (deliveries, events, replies to backend commands). What to
publish is decided in routing.py.

Two channels: one consumes (with a prefetch), one publishes (publisher confirms, and a
message the broker cannot route raises rather than vanishing). RabbitMQ docs:
https://www.rabbitmq.com/docs/confirms.
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
from aio_pika.exceptions import AMQPError, ChannelPreconditionFailed
from pamqp.common import FieldTable

from proto import env
from proto.env import location
from proto.errors import DependencyUnavailable, SettingsError
from proto.shutdown import finish_within
from proto.topology import Topology, shared_topology
from router.routing import Publish
from router.settings import Settings

log = structlog.get_logger()

CONTENT_TYPE = "application/json"
RABBITMQ_HINT = f"start it with: rabbitmq-server -detached (or check {env.AMQP_URL})"

Receive = Callable[[AbstractIncomingMessage], Awaitable[None]]


@asynccontextmanager
async def open_bus(settings: Settings) -> AsyncIterator["Bus"]:
    """Connect to RabbitMQ, declare the shared topology, open both channels.

    Raises:
        DependencyUnavailable: RabbitMQ does not accept a connection in time.
        SettingsError: a shared queue exists with other arguments (another
            ``SWITCHBOARD_QUEUE_TYPE``).
    """
    try:
        connection = await aio_pika.connect_robust(
            settings.amqp_url, timeout=settings.connect_timeout_s
        )
    except (AMQPError, OSError, TimeoutError) as exc:
        where = location(settings.amqp_url)
        raise DependencyUnavailable("RabbitMQ", where, RABBITMQ_HINT) from exc
    try:
        publishing = await connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        topology = shared_topology(settings.names, settings.queue_type)
        try:
            await declare_topology(publishing, topology)
        except ChannelPreconditionFailed as exc:
            raise SettingsError(
                f"{env.QUEUE_TYPE}: a shared queue or exchange exists with other "
                f"arguments ({exc.args[0] if exc.args else exc})"
            ) from exc
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=settings.prefetch)
        queue_spec = next(
            q for q in topology.queues if q.name == settings.names.router_queue
        )
        queue = await consuming.declare_queue(
            queue_spec.name, durable=True, arguments=dict(queue_spec.arguments)
        )
        yield Bus(connection, publishing, queue, settings.publish_timeout_s)
    finally:
        await finish_within(
            settings.shutdown_timeout_s, connection.close(), "connection_close_failed"
        )


async def declare_topology(
    channel: AbstractChannel, topology: Topology
) -> dict[str, AbstractExchange]:
    """Declare every exchange, queue and binding (idempotent); return the exchanges."""
    exchanges = {
        spec.name: await channel.declare_exchange(
            spec.name,
            aio_pika.ExchangeType(spec.kind),
            durable=True,
            arguments=dict(spec.arguments),
        )
        for spec in topology.exchanges
    }
    queues = {
        spec.name: await channel.declare_queue(
            spec.name, durable=True, arguments=dict(spec.arguments)
        )
        for spec in topology.queues
    }
    for binding in topology.bindings:
        await queues[binding.queue].bind(
            exchanges[binding.exchange], binding.routing_key
        )
    return exchanges


class Bus:
    """The router's RabbitMQ: its queue to consume, the exchanges to publish to."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        publishing: AbstractChannel,
        queue: AbstractQueue,
        publish_timeout_s: float,
    ) -> None:
        self._connection = connection
        self._publishing = publishing
        self._queue = queue
        self._publish_timeout_s = publish_timeout_s
        self._consumer_tag: str | None = None

    @property
    def connection(self) -> AbstractRobustConnection:
        """The robust connection: readiness and the reconnect counter watch it."""
        return self._connection

    async def start_consuming(self, receive: Receive) -> None:
        """Hand every message of the router's queue to ``receive`` (manual acks)."""
        self._consumer_tag = await self._queue.consume(receive, no_ack=False)

    async def stop_consuming(self, timeout_s: float) -> None:
        """Ask the broker for no more messages; those already received stay ours."""
        if self._consumer_tag is None:
            return
        tag, self._consumer_tag = self._consumer_tag, None
        await finish_within(
            timeout_s, self._queue.cancel(tag), "consumer_cancel_failed"
        )

    async def publish_all(self, publishes: Sequence[Publish]) -> None:
        """Publish concurrently; return once every one is confirmed.

        Raises:
            Exception: the first failure (no confirm in time, a nack, a return, a
                closed channel), after every publish has finished one way or another.
        """
        if not publishes:
            return
        results = await asyncio.gather(
            *(self.publish(publish) for publish in publishes), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def publish(self, publish: Publish) -> None:
        """Publish one message (persistent) and wait for its confirm.

        Through the AMQP channel under aio-pika's, with ``wait=False``: aio-pika's publish
        holds the channel until its frames are written, one message per pass of the writer;
        this lets a batch's publishes share the passes (about a third less CPU per message),
        and each still waits for its own confirm (a nack or a return raises).
        """
        headers: FieldTable | None = (
            {key: value for key, value in publish.headers.items()}
            if publish.headers
            else None
        )
        properties = aiormq.spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
            message_id=publish.mid or None,
            correlation_id=publish.correlation_id or None,
            headers=headers,
        )
        # The deadline covers the wait for a reconnecting channel as well as the confirm.
        async with asyncio.timeout(self._publish_timeout_s):
            channel = await self._publishing.get_underlay_channel()
            assert isinstance(channel, aiormq.Channel)  # ``wait`` is aiormq.Channel's
            await channel.basic_publish(
                publish.body,
                exchange=publish.exchange,
                routing_key=publish.routing_key,
                properties=properties,
                mandatory=publish.mandatory,
                wait=False,
            )
