"""A backend service as tests see it: commands over AMQP with replies, and an events queue."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from proto.env import DEFAULT_AMQP_URL
from proto.names import Names, api_key
from tests.support.timing import scaled


class Backend:
    """Publishes ``api.<command>`` with reply_to and waits for the reply, like a backend would."""

    def __init__(
        self, channel: AbstractChannel, names: Names, replies: AbstractQueue
    ) -> None:
        self.channel = channel
        self.names = names
        self._replies = replies
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(json.loads(message.body))

    async def call(
        self, command: str, body: Mapping[str, object] | bytes, within_s: float = 5.0
    ) -> dict[str, Any]:
        """Send a command and return its JSON reply."""
        return await self.call_key(api_key(command), body, within_s)

    async def call_key(
        self,
        routing_key: str,
        body: Mapping[str, object] | bytes,
        within_s: float = 5.0,
    ) -> dict[str, Any]:
        """Publish a body with this routing key and a reply_to; return the JSON reply."""
        correlation_id = uuid.uuid4().hex
        reply: asyncio.Future[dict[str, Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[correlation_id] = reply
        await self.publish_key(
            routing_key,
            body,
            reply_to=self._replies.name,
            correlation_id=correlation_id,
        )
        async with asyncio.timeout(scaled(within_s)):
            return await reply

    async def publish(
        self, command: str, body: Mapping[str, object] | bytes, **properties: Any
    ) -> None:
        await self.publish_key(api_key(command), body, **properties)

    async def publish_key(
        self, routing_key: str, body: Mapping[str, object] | bytes, **properties: Any
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        inbound = await self.channel.get_exchange(
            self.names.inbound_exchange, ensure=False
        )
        message = aio_pika.Message(
            payload, content_type="application/json", **properties
        )
        await inbound.publish(message, routing_key, mandatory=True, timeout=scaled(5))

    async def events(self, *routing_keys: str) -> AbstractQueue:
        """An exclusive queue bound to the events exchange (gone with the connection)."""
        queue = await self.channel.declare_queue(exclusive=True)
        for key in routing_keys:
            await queue.bind(self.names.events_exchange, key)
        return queue

    async def next_event(
        self, queue: AbstractQueue, within_s: float = 5.0
    ) -> tuple[str, dict[str, Any]]:
        async with asyncio.timeout(scaled(within_s)):
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    return message.routing_key or "", json.loads(message.body)
        raise AssertionError("unreachable")


@asynccontextmanager
async def open_backend(
    names: Names, amqp_url: str = DEFAULT_AMQP_URL
) -> AsyncIterator[Backend]:
    connection = await aio_pika.connect(amqp_url, timeout=scaled(10))
    async with connection:
        channel = await connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        replies = await channel.declare_queue(exclusive=True)
        backend = Backend(channel, names, replies)
        await replies.consume(backend._on_reply, no_ack=True)
        yield backend
