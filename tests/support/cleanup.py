"""Remove everything one namespace created in RabbitMQ, Redis and PostgreSQL, and nothing else."""

import asyncio

import aio_pika
import asyncpg
import redis.asyncio as redis

from proto.env import DEFAULT_AMQP_URL, DEFAULT_POSTGRES_DSN, DEFAULT_REDIS_URL
from proto.names import Names
from proto.topology import shared_topology


async def remove_namespace(names: Names, gateway_ids: list[str]) -> None:
    await asyncio.gather(
        remove_amqp(names, gateway_ids), remove_redis_keys(names), remove_schema(names)
    )


async def remove_amqp(names: Names, gateway_ids: list[str]) -> None:
    topology = shared_topology(names, "quorum", history=True)
    queues = [q.name for q in topology.queues] + [
        names.gateway_queue(g) for g in gateway_ids
    ]
    connection = await aio_pika.connect(DEFAULT_AMQP_URL, timeout=10)
    async with connection:
        for queue in queues:
            channel = await connection.channel()
            await channel.queue_delete(queue)
            await channel.close()
        for exchange in topology.exchanges:
            channel = await connection.channel()
            await channel.exchange_delete(exchange.name)
            await channel.close()


async def remove_redis_keys(names: Names) -> None:
    client = redis.Redis.from_url(DEFAULT_REDIS_URL)
    try:
        batch = [
            key async for key in client.scan_iter(match=names.redis_pattern, count=1000)
        ]
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


async def remove_schema(names: Names) -> None:
    connection = await asyncpg.connect(DEFAULT_POSTGRES_DSN, timeout=10)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{names.schema}" CASCADE')
    finally:
        await connection.close()
