"""Feeding the offline store's inbox straight, and watching its commits (history on).

``publish_bodies`` publishes ``InboxBatch`` bodies (``inbox_batches.py``) as a router does: to
the inbound exchange with ``router.inbox``, persistent, mandatory and confirmed, some in flight.
``Heads`` reads ``<ns>.inbox_heads``: the store raises a uid's head in the transaction that
writes its entries, so the sum of the heads is the number of entries committed, read from a
table of one row per uid. ``sink`` stands for the gateway that the online uids are connected to:
a queue that takes the store's deliveries and keeps only the last few. ``offline_events`` counts
the ``message.offline`` events: the store announces the entries kept for uids without a
connection after their commit, and a batch is done once they are confirmed.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import aio_pika
import asyncpg

from proto.env import DEFAULT_AMQP_URL
from proto.names import EVENT_MESSAGE_OFFLINE, KEY_INBOX, Names
from tests.support.stack import Stack

PUBLISHES_IN_FLIGHT = 8
"""``InboxBatch`` messages awaiting their confirm: a router pipelines a few batches too."""
POLL_S = 0.02
SINK_KEPT = 100
"""Deliveries the sink queue keeps (the oldest are dropped): nobody reads them."""
SINK_EXPIRES_MS = 600_000
"""A sink left behind by a crash goes by itself."""


async def publish_bodies(names: Names, bodies: Sequence[bytes]) -> float:
    """Publish the bodies to ``<ns>.inbox`` in order; return when the first went (monotonic)."""
    connection = await aio_pika.connect(DEFAULT_AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        inbound = await channel.get_exchange(names.inbound_exchange, ensure=False)
        in_flight = asyncio.Semaphore(PUBLISHES_IN_FLIGHT)

        async def publish(body: bytes) -> None:
            async with in_flight:
                message = aio_pika.Message(
                    body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                await inbound.publish(message, KEY_INBOX, mandatory=True, timeout=60)

        started = time.monotonic()
        await asyncio.gather(*(publish(body) for body in bodies))
    return started


@contextlib.asynccontextmanager
async def sink(stack: Stack) -> AsyncIterator[str]:
    """A gateway id whose queue takes the store's deliveries and drops them; the stack's
    cleanup deletes it with the gateways' queues."""
    gateway_id = f"sink-{uuid.uuid4().hex[:6]}"
    stack.gateway_ids.append(gateway_id)
    names = stack.names
    connection = await aio_pika.connect(DEFAULT_AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            names.gateway_queue(gateway_id),
            durable=True,
            arguments={
                "x-queue-type": "classic",
                "x-max-length": SINK_KEPT,
                "x-expires": SINK_EXPIRES_MS,
            },
        )
        await queue.bind(names.deliveries_exchange, gateway_id)
    yield gateway_id


class OfflineEvents:
    """The ``message.offline`` events of one namespace, counted as they come."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.count += 1
        self._changed.set()

    async def wait_for(self, expected: int, within_s: float) -> int:
        """Wait until ``expected`` events came; return the count (less when time ran out)."""
        try:
            async with asyncio.timeout(within_s):
                while self.count < expected:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        return self.count


@contextlib.asynccontextmanager
async def offline_events(names: Names) -> AsyncIterator[OfflineEvents]:
    """Count the namespace's ``message.offline`` events from now on, on a queue of the
    bench's own that goes with its connection."""
    events = OfflineEvents()
    connection = await aio_pika.connect(DEFAULT_AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(names.events_exchange, EVENT_MESSAGE_OFFLINE)

        async def counted(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            events.on_event(message)

        await queue.consume(counted, no_ack=True)
        yield events


class Heads:
    """The inbox heads of one namespace, read straight from PostgreSQL."""

    def __init__(self, connection: asyncpg.Connection, names: Names) -> None:
        self._connection = connection
        # The namespace is a plain SQL identifier (see proto.names.NAMESPACE_PATTERN).
        self._sum_sql = f"SELECT coalesce(sum(head), 0) FROM {names.inbox_heads_table}"
        self._one_sql = f"SELECT coalesce(max(head), 0) FROM {names.inbox_heads_table}"
        self._one_sql += " WHERE uid = $1"

    async def entries(self, uid: str | None = None) -> int:
        """Entries committed: of every uid, or of ``uid``."""
        if uid is None:
            total: int = await self._connection.fetchval(self._sum_sql)
            return int(total)
        head: int = await self._connection.fetchval(self._one_sql, uid)
        return head

    async def wait_for(
        self, expected: int, within_s: float, uid: str | None = None
    ) -> tuple[int, float]:
        """Poll until ``expected`` entries are committed; return the count and when it was
        reached (monotonic), or the count when ``within_s`` ran out."""
        count = 0
        try:
            async with asyncio.timeout(within_s):
                # Polling what cannot be subscribed to; the deadline above synchronises.
                while (count := await self.entries(uid)) < expected:  # noqa: ASYNC110
                    await asyncio.sleep(POLL_S)
        except TimeoutError:
            pass
        return count, time.monotonic()
