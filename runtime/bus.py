"""RabbitMQ as every service uses it: one robust connection, the topology declared, consumers on
channels of their own, and confirmed publishes (``publish.py``).

What to declare is data in ``proto/topology.py``; what each service consumes and publishes, and
when it acknowledges, is in its own ``bus.py`` and loops. Declarations are idempotent; a robust
channel declares again, after a reconnect, what was declared through it.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed
from aiormq.exceptions import ChannelAccessRefused

from proto import env
from proto.errors import SettingsError
from proto.topology import Topology
from runtime.nodes import NodeFollower, connect_first, node_urls
from runtime.publish import Publisher
from runtime.settings import ServiceSettings
from runtime.shutdown import finish_within
from runtime.startup import unavailable

log = structlog.get_logger()

RABBITMQ_HINT = (
    f"start it with: rabbitmq-server -detached, or point {env.AMQP_URL} "
    "at a running broker"
)

OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]


@asynccontextmanager
async def connect(
    url: str,
    connect_timeout_s: float,
    close_timeout_s: float,
    *,
    name: str = "RabbitMQ",
    hint: str = RABBITMQ_HINT,
) -> AsyncIterator[AbstractRobustConnection]:
    """A robust connection (it reconnects by itself), closed on exit within ``close_timeout_s``.

    ``url`` may name several nodes of a cluster, separated by commas: the connection goes to
    the first that answers, and to the next ones in turn while it is lost (``nodes.py``).

    Raises:
        DependencyUnavailable: no node can be reached, or accepts the connection, in time.
    """
    urls = node_urls(url)
    try:
        connection, index = await connect_first(urls, connect_timeout_s)
    except Exception as exc:
        raise unavailable(name, urls[-1], exc, hint) from exc
    follower = NodeFollower(connection, urls, index) if len(urls) > 1 else None
    try:
        yield connection
    finally:
        if follower is not None:
            await follower.close()
        await finish_within(
            close_timeout_s, connection.close(), "connection_close_failed"
        )


@asynccontextmanager
async def open_broker(
    settings: ServiceSettings, close_timeout_s: float
) -> AsyncIterator["Broker"]:
    """Connect to ``SWITCHBOARD_AMQP_URL`` and open the publishing channel; close on exit.

    Raises:
        DependencyUnavailable: the broker cannot be reached, or refuses the connection, in time.
    """
    async with connect(
        settings.amqp_url, settings.connect_timeout_s, close_timeout_s
    ) as connection:
        publisher = await Publisher.open(connection, settings.publish_timeout_s)
        yield Broker(
            connection, publisher, settings.prefetch, settings.connect_timeout_s
        )


async def declare(
    channel: AbstractChannel, topology: Topology, timeout_s: float
) -> dict[str, AbstractQueue]:
    """Declare every exchange, queue and binding of ``topology``, each within ``timeout_s``;
    return the queues by name.

    Raises:
        SettingsError: a queue or exchange exists with other arguments (RabbitMQ answers
            PRECONDITION_FAILED), as when the shared queues were declared with another
            ``SWITCHBOARD_QUEUE_TYPE``; or the user may not declare it (ACCESS_REFUSED: its
            permissions are not those of this release's definitions).
    """
    try:
        for exchange in topology.exchanges:
            await channel.declare_exchange(
                exchange.name,
                aio_pika.ExchangeType(exchange.kind),
                durable=True,
                arguments=dict(exchange.arguments),
                timeout=timeout_s,
            )
        queues = {
            spec.name: await channel.declare_queue(
                spec.name,
                durable=True,
                arguments=dict(spec.arguments),
                timeout=timeout_s,
            )
            for spec in topology.queues
        }
        for binding in topology.bindings:
            await queues[binding.queue].bind(
                binding.exchange, binding.routing_key, timeout=timeout_s
            )
    except ChannelPreconditionFailed as exc:
        raise SettingsError(
            f"{env.QUEUE_TYPE}: a queue or exchange exists with other arguments "
            f"({exc.args[0] if exc.args else exc})"
        ) from exc
    except ChannelAccessRefused as exc:
        # RabbitMQ's reason names the user, the resource and the vhost, never a password.
        raise SettingsError(
            f"{env.AMQP_URL}: RabbitMQ refused a declaration "
            f"({exc.args[0] if exc.args else exc}); give this user its role's permissions "
            "from the definitions of this release (k8s/rabbitmq/definitions.json, "
            "python -m proto.definitions)"
        ) from exc
    return queues


def queue_alone(topology: Topology, queue_name: str) -> Topology:
    """The declaration of one queue of ``topology``, without exchanges or bindings."""
    spec = next(q for q in topology.queues if q.name == queue_name)
    return Topology(exchanges=(), queues=(spec,), bindings=())


@dataclass(frozen=True, slots=True)
class Consumer:
    """A queue consumed on a channel of its own (``queue.channel``), and its consumer tag."""

    queue: AbstractQueue
    tag: str


class Broker:
    """A service's RabbitMQ: its connection, its publisher, and the consumers it started."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        publisher: Publisher,
        prefetch: int,
        declare_timeout_s: float,
    ) -> None:
        self.connection = connection
        """Watched by the readiness check and the reconnect counter (``health.py``)."""
        self.publisher = publisher
        self._prefetch = prefetch
        self._declare_timeout_s = declare_timeout_s
        self._consumers: dict[str, Consumer] = {}
        """Queue name -> its consumer, for every queue consumed."""

    async def declare(self, topology: Topology) -> dict[str, AbstractQueue]:
        """Declare ``topology`` on the publishing channel (see ``declare``)."""
        return await declare(self.publisher.channel, topology, self._declare_timeout_s)

    async def exists(self, topology: Topology) -> bool:
        """Tell whether every exchange and queue of ``topology`` exists already.

        Passive declares, which take no permission (https://www.rabbitmq.com/docs/access-control):
        a service whose user may not configure the shared names (a gateway's) finds what the
        definitions import, a router or an offline store declared. On a channel of its own,
        since the broker closes the channel at the first name missing.
        """
        timeout_s = self._declare_timeout_s
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            for exchange in topology.exchanges:
                await channel.declare_exchange(
                    exchange.name, passive=True, timeout=timeout_s
                )
            for queue in topology.queues:
                await channel.declare_queue(queue.name, passive=True, timeout=timeout_s)
        except ChannelNotFoundEntity:
            return False
        finally:
            await finish_within(timeout_s, channel.close(), "channel_close_failed")
        return True

    async def consume(self, topology: Topology, on_message: OnMessage) -> Consumer:
        """Declare ``topology`` (one queue and its bindings) on a channel of its own, with the
        prefetch, and hand every message of that queue to ``on_message`` (manual acks).

        Consuming a queue again replaces its consumer here; the caller closes the old channel.
        """
        timeout_s = self._declare_timeout_s
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch, timeout=timeout_s)
        (queue,) = (await declare(channel, topology, timeout_s)).values()
        tag = await queue.consume(on_message, no_ack=False, timeout=timeout_s)
        consumer = self._consumers[queue.name] = Consumer(queue, tag)
        return consumer

    async def stop_consuming(self, timeout_s: float) -> None:
        """Ask the broker for no more messages (every consumer at once, each within
        ``timeout_s``); those already received stay unacknowledged until settled."""
        consumers, self._consumers = self._consumers, {}
        await asyncio.gather(
            *(
                finish_within(
                    timeout_s,
                    consumer.queue.cancel(consumer.tag),
                    "consumer_cancel_failed",
                    queue=consumer.queue.name,
                )
                for consumer in consumers.values()
            )
        )
