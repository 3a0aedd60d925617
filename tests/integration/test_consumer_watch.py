"""A gateway whose consumer vanished from the broker consumes again by itself.

After a RabbitMQ restart, aio-pika's robust connection sometimes comes back without a consumer
(aio-pika issue #231): the channel is open, aio-pika still lists the consumer, and the broker
counts none on the gateway's queue. The test builds that state on purpose, by cancelling the
consumer on the AMQP channel underneath aio-pika, and expects the gateway's watch
(``Bus.watch_consumer``) to notice and to consume again, so that deliveries flow once more.
"""

import asyncio

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from gateway.bus import open_bus
from gateway.settings import Settings
from proto import env
from proto.env import DEFAULT_AMQP_URL
from proto.names import Names
from tests.support.cleanup import remove_namespace
from tests.support.stack import TEST_SETTINGS, new_namespace
from tests.support.timing import scaled

pytestmark = pytest.mark.integration

GATEWAY_ID = "gw-watch"
CHECK_S = 0.2


async def consumer_count(queue_name: str) -> int:
    connection = await aio_pika.connect(DEFAULT_AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.consumer_count or 0)


async def publish_to(queue_name: str, body: bytes) -> None:
    connection = await aio_pika.connect(DEFAULT_AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(body), queue_name)


async def test_a_consumer_lost_without_notice_is_restored() -> None:
    names = Names(new_namespace())
    settings = Settings.from_env(
        {
            **TEST_SETTINGS,
            env.NAMESPACE: names.namespace,
            env.GATEWAY_ID: GATEWAY_ID,
            # Long enough that nothing expires into the offline store during the test.
            env.ORPHAN_TTL_S: "30",
        }
    )
    queue_name = names.gateway_queue(GATEWAY_ID)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_delivery(message: AbstractIncomingMessage) -> None:
        await message.ack()
        received.put_nowait(message.body)

    try:
        async with open_bus(settings) as bus:
            await bus.consume(on_delivery)
            watch = asyncio.create_task(bus.watch_consumer(CHECK_S))
            try:
                await publish_to(queue_name, b"before")
                assert await asyncio.wait_for(received.get(), scaled(5)) == b"before"

                # The state aio-pika issue #231 leaves behind: the broker has no consumer,
                # aio-pika still lists one and restores nothing.
                consumer = bus._consumer
                assert consumer is not None
                underlay = await consumer.queue.channel.get_underlay_channel()
                await underlay.basic_cancel(consumer.tag)
                assert await consumer_count(queue_name) == 0

                await publish_to(queue_name, b"after")
                assert await asyncio.wait_for(received.get(), scaled(5)) == b"after"
                assert await consumer_count(queue_name) == 1
            finally:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            await bus.stop_consuming()
    finally:
        await remove_namespace(names, [GATEWAY_ID])
