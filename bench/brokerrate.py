"""The broker's ceiling as one aio-pika process sees it: publishes/s, then consumes/s, one queue.

One process publishes (pipelined, confirmed, persistent) into a fresh queue for a while; then
another consumes them all (manual ack). Both are ``bench/peers/amqp_rate.py``. The queue is a
quorum queue, as Switchboard's router queue, and then a classic one, as its gateways' queues;
it is declared here and deleted afterwards.
"""

import uuid

import aio_pika
import msgspec

from bench import report
from bench.harness import run_to_result
from bench.report import Measurement
from bench.systems import AMQP_URL

IN_FLIGHT = 500
PREFETCH = 1000
CONSUME_TIMEOUT_S = 60.0


class RoleResult(msgspec.Struct, frozen=True):
    """The JSON line ``amqp_rate`` prints."""

    per_s: float
    published: int = 0
    consumed: int = 0


NOTE = (
    "one aio-pika process, one {queue_type} queue, 256-byte persistent messages; "
    "{detail}. aio-pika's own CPU per message is the ceiling here, not RabbitMQ's"
)


async def measure(scenario: str, seconds: float) -> list[Measurement]:
    measured = []
    for queue_type in ("quorum", "classic"):
        measured += await measure_queue(scenario, queue_type, seconds)
    return measured


async def measure_queue(
    scenario: str, queue_type: str, seconds: float
) -> list[Measurement]:
    queue = f"bench-raw-{uuid.uuid4().hex[:12]}"
    warmup_s = min(0.5, seconds / 3)
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(
            queue, durable=True, arguments={"x-queue-type": queue_type}
        )
        try:
            published = await run_role(
                "publish",
                "--queue",
                queue,
                "--seconds",
                str(seconds),
                "--warmup-s",
                str(warmup_s),
                "--in-flight",
                str(IN_FLIGHT),
                within_s=seconds + warmup_s + 30,
            )
            total = published.published
            consumed = await run_role(
                "consume",
                "--queue",
                queue,
                "--expect",
                str(total),
                "--prefetch",
                str(PREFETCH),
                "--drain-s",
                str(CONSUME_TIMEOUT_S),
                within_s=CONSUME_TIMEOUT_S + 30,
            )
        finally:
            await channel.queue_delete(queue)
    lost = max(0, total - consumed.consumed)
    return [
        Measurement(
            scenario,
            report.AIO_PIKA,
            f"confirmed publishes/s, {queue_type} queue",
            published.per_s,
            "msg/s",
            "higher",
            note=NOTE.format(
                queue_type=queue_type,
                detail=f"{IN_FLIGHT} publishes awaiting their confirm at any time",
            ),
        ),
        Measurement(
            scenario,
            report.AIO_PIKA,
            f"consumed/s (manual ack), {queue_type} queue",
            consumed.per_s,
            "msg/s",
            "higher",
            lost=lost,
            note=NOTE.format(
                queue_type=queue_type,
                detail=f"prefetch {PREFETCH}, one ack per message, {total:,} messages",
            ),
        ),
    ]


async def run_role(role: str, *args: str, within_s: float) -> RoleResult:
    """Run ``amqp_rate`` to its end; return the JSON line it printed."""
    return await run_to_result(
        "bench.peers.amqp_rate",
        role,
        "--amqp-url",
        AMQP_URL,
        *args,
        within_s=within_s,
        result=RoleResult,
    )
