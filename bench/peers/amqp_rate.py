"""Raw aio-pika on one queue: how fast one process publishes, and how fast one consumes.

``python -m bench.peers.amqp_rate publish --queue Q --seconds S --warmup-s W`` publishes
persistent messages to the existing queue ``Q`` through the default exchange, on a channel with
publisher confirms, ``--in-flight`` of them awaiting their confirm at any time (pipelined), and
prints ``{"published": N, "per_s": R}``, R counted after the warmup.

``python -m bench.peers.amqp_rate consume --queue Q --expect N`` consumes with manual
acknowledgement (one ack per message, ``--prefetch`` unacknowledged at most) until it has ``N``
messages or ``--drain-s`` passed, and prints ``{"consumed": M, "per_s": R}``, R from its first
message to its last.
"""

import argparse
import asyncio
import json
import time

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

BODY = b"x" * 256  # about the size of a chat message's envelope


async def publish(args: argparse.Namespace) -> dict[str, object]:
    published = 0
    connection = await aio_pika.connect(args.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        start_s = time.monotonic()
        window_start_s = start_s + args.warmup_s
        end_s = window_start_s + args.seconds
        confirmed_in_window = 0

        async def keep_publishing() -> None:
            nonlocal published, confirmed_in_window
            while time.monotonic() < end_s:
                await exchange.publish(
                    aio_pika.Message(
                        BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                    ),
                    routing_key=args.queue,
                )
                published += 1
                if window_start_s <= time.monotonic() <= end_s:
                    confirmed_in_window += 1

        await asyncio.gather(*(keep_publishing() for _ in range(args.in_flight)))
    return {"published": published, "per_s": confirmed_in_window / args.seconds}


async def consume(args: argparse.Namespace) -> dict[str, object]:
    consumed = 0
    first_s = last_s = 0.0
    complete = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal consumed, first_s, last_s
        last_s = time.monotonic()
        if not consumed:
            first_s = last_s
        consumed += 1
        await message.ack()
        if consumed >= args.expect:
            complete.set()

    connection = await aio_pika.connect(args.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=args.prefetch)
        queue = await channel.get_queue(args.queue, ensure=False)
        await queue.consume(on_message)
        try:
            async with asyncio.timeout(args.drain_s):
                await complete.wait()
        except TimeoutError:
            pass
    elapsed_s = last_s - first_s
    return {"consumed": consumed, "per_s": consumed / elapsed_s if elapsed_s else 0.0}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.peers.amqp_rate")
    parser.add_argument("role", choices=("publish", "consume"))
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup-s", type=float, default=0.5)
    parser.add_argument("--in-flight", type=int, default=500)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--drain-s", type=float, default=60.0)
    args = parser.parse_args()
    role = publish if args.role == "publish" else consume
    print(json.dumps(asyncio.run(role(args))), flush=True)
