"""One broker or Redis operation after the other, in a process of its own (scenario 11).

``python -m bench.peers.one_at_a_time --operations N`` publishes ``N`` persistent messages to a
fresh quorum queue, each awaiting its confirm, with aio-pika and then ``N`` more on the aiormq
channel beneath it (the protocol library aio-pika is built on); consumes ``N`` with prefetch 1,
each acknowledged before the next arrives; sends ``N`` Redis commands, then ``N`` pipelines of
five, each once the last was answered; then ``N // 4`` pauses of ``PAUSE_S`` alone, and ``N //
4`` pipelines each after such a pause (a process woken from idle, as at a few hundred messages a
second). It prints one JSON line: for each, the CPU this process spent per operation and the
wall time per operation, in microseconds (after ``WARMUP`` operations of each kind); for the
pipelines after a pause, the CPU of a pause alone is taken out. Last, paced at ``PACED_RATE``
messages a second with a consumer acknowledging each, ``N // 4`` messages through each kind of
queue in ``PACED_QUEUES``: for these, the figures are RabbitMQ's CPU per message (its
``beam.smp``, whatever else it served meanwhile) and this process's. The queues and the keys
are its own, deleted at the end.
"""

import argparse
import asyncio
import json
import time
import uuid

import aio_pika
import redis.asyncio as redis
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from bench.cpu import SERVICES, cpu_s, pids_named

WARMUP = 100
BODY = b"x" * 256
CONSUME_TIMEOUT_S = 60.0
PAUSE_S = 0.005
"""How long the process idles before each paused pipeline (``asyncio.sleep``)."""
PACED_RATE = 100
"""Messages a second in the paced phases, where no process here is short of CPU."""
PACED_QUEUES = {
    "paced_quorum": ("quorum", aio_pika.DeliveryMode.PERSISTENT),
    "paced_classic": ("classic", aio_pika.DeliveryMode.PERSISTENT),
    "paced_classic_transient": ("classic", aio_pika.DeliveryMode.NOT_PERSISTENT),
}
"""Each paced phase's figure: its queue type and its messages' delivery mode."""
PAUSED = ("pause", "pipeline_after_pause")
"""The timed figures measured over ``paused_operations(N)`` operations, not ``N`` (as the
paced ones are)."""


def paused_operations(operations: int) -> int:
    """How many pauses, and pipelines after a pause, of a run of ``operations``."""
    return max(1, operations // 4)


Figures = tuple[float, float]
"""CPU µs and wall µs per operation."""


class Clock:
    """CPU and wall time of this process between ``start`` and ``per_operation``."""

    def __init__(self) -> None:
        self._cpu_s = time.process_time()
        self._wall_s = time.perf_counter()

    def per_operation(self, operations: int) -> tuple[float, float]:
        """(CPU µs, wall µs) per operation since the clock was made."""
        cpu_us = (time.process_time() - self._cpu_s) * 1e6 / operations
        wall_us = (time.perf_counter() - self._wall_s) * 1e6 / operations
        return cpu_us, wall_us


async def measure_broker(amqp_url: str, operations: int) -> dict[str, Figures]:
    queue_name = f"bench-one-{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        try:
            exchange = channel.default_exchange
            persistent = aio_pika.DeliveryMode.PERSISTENT
            for _ in range(WARMUP):
                message = aio_pika.Message(BODY, delivery_mode=persistent)
                await exchange.publish(message, routing_key=queue_name)
            clock = Clock()
            for _ in range(operations):
                message = aio_pika.Message(BODY, delivery_mode=persistent)
                await exchange.publish(message, routing_key=queue_name)
            published = clock.per_operation(operations)
            underlay = await channel.get_underlay_channel()
            properties = aio_pika.Message(BODY, delivery_mode=persistent).properties
            clock = Clock()
            for _ in range(operations):
                await underlay.basic_publish(
                    BODY, routing_key=queue_name, properties=properties
                )
            published_underneath = clock.per_operation(operations)
            consumed = await consume_one_by_one(channel, queue, WARMUP + operations)
        finally:
            await channel.queue_delete(queue_name)
        paced = await measure_paced(channel, paused_operations(operations))
    return {
        "publish": published,
        "publish_aiormq": published_underneath,
        "consume": consumed,
        **paced,
    }


async def measure_paced(channel: AbstractChannel, messages: int) -> dict[str, Figures]:
    """For each of ``PACED_QUEUES``: ``messages`` through a fresh queue of its kind, paced
    (``paced_phase``)."""
    await channel.set_qos(prefetch_count=100)
    broker_pids = pids_named(SERVICES["RabbitMQ"])
    return {
        figure: await paced_phase(
            channel, queue_type, delivery_mode, messages, broker_pids
        )
        for figure, (queue_type, delivery_mode) in PACED_QUEUES.items()
    }


async def paced_phase(
    channel: AbstractChannel,
    queue_type: str,
    delivery_mode: aio_pika.DeliveryMode,
    messages: int,
    broker_pids: list[int],
) -> Figures:
    """``messages`` published at ``PACED_RATE`` to a fresh queue, each awaiting its confirm,
    consumed and acknowledged: (RabbitMQ's CPU µs, this process's CPU µs) per message."""
    queue_name = f"bench-paced-{uuid.uuid4().hex[:12]}"
    queue = await channel.declare_queue(
        queue_name, durable=True, arguments={"x-queue-type": queue_type}
    )
    everything = asyncio.Event()
    received = 0

    async def acknowledge(message: AbstractIncomingMessage) -> None:
        nonlocal received
        await message.ack()
        received += 1
        if received == messages:
            everything.set()

    try:
        await queue.consume(acknowledge)
        broker_s = sum(cpu_s(pid) for pid in broker_pids)
        own_s = time.process_time()
        started = time.monotonic()
        for n in range(messages):
            # The schedule being measured: one message every 1 / PACED_RATE s.
            await asyncio.sleep(max(0.0, started + n / PACED_RATE - time.monotonic()))
            message = aio_pika.Message(BODY, delivery_mode=delivery_mode)
            await channel.default_exchange.publish(message, routing_key=queue_name)
        async with asyncio.timeout(CONSUME_TIMEOUT_S):
            await everything.wait()
        broker_us = (sum(cpu_s(pid) for pid in broker_pids) - broker_s) * 1e6
        own_us = (time.process_time() - own_s) * 1e6
        return broker_us / messages, own_us / messages
    finally:
        await channel.queue_delete(queue_name)


async def consume_one_by_one(
    channel: AbstractChannel, queue: AbstractQueue, expected: int
) -> Figures:
    """Consume ``expected`` messages with prefetch 1; the figures of all but the warmup."""
    await channel.set_qos(prefetch_count=1)
    clock = Clock()
    received = 0
    async with queue.iterator(timeout=CONSUME_TIMEOUT_S) as messages:
        async for message in messages:
            await message.ack()
            received += 1
            if received == WARMUP:
                clock = Clock()
            if received == expected:
                break
    return clock.per_operation(expected - WARMUP)


async def measure_redis(redis_url: str, operations: int) -> dict[str, Figures]:
    client = redis.Redis.from_url(redis_url)
    prefix = f"bench-one-{uuid.uuid4().hex[:12]}"
    keys = [f"{prefix}:{n}" for n in range(5)]
    try:
        await client.set(keys[0], 1)
        for _ in range(WARMUP):
            await client.exists(keys[0])
        clock = Clock()
        for _ in range(operations):
            await client.exists(keys[0])
        single = clock.per_operation(operations)
        clock = Clock()
        for _ in range(operations):
            await five_commands(client, keys)
        piped = clock.per_operation(operations)
        paused = paused_operations(operations)
        clock = Clock()
        for _ in range(paused):
            await asyncio.sleep(PAUSE_S)  # the idle time being measured
        pause = clock.per_operation(paused)
        clock = Clock()
        for _ in range(paused):
            await asyncio.sleep(PAUSE_S)  # the idle time being measured
            await five_commands(client, keys)
        cpu_us, wall_us = clock.per_operation(paused)
        after_pause = (cpu_us - pause[0], wall_us - pause[1])
    finally:
        await client.delete(*keys)
        await client.aclose()
    return {
        "command": single,
        "pipeline": piped,
        "pause": pause,
        "pipeline_after_pause": after_pause,
    }


async def five_commands(client: redis.Redis, keys: list[str]) -> None:
    """One pipeline of five commands, about a router's batch of one message."""
    pipeline = client.pipeline(transaction=False)
    pipeline.exists(keys[0])
    pipeline.hgetall(keys[1])
    pipeline.set(keys[2], 1, nx=True, px=60_000)
    pipeline.smembers(keys[3])
    pipeline.get(keys[4])
    await pipeline.execute()


async def main(args: argparse.Namespace) -> dict[str, Figures]:
    return {
        **await measure_broker(args.amqp_url, args.operations),
        **await measure_redis(args.redis_url, args.operations),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.peers.one_at_a_time")
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--operations", type=int, default=2_000)
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
