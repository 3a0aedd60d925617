"""Scenario 11: what one broker or Redis operation costs when it travels alone.

At saturation every stage of Switchboard works in batches, and a message shares each
operation's cost with many others; at a few hundred messages a second a batch holds one or two
messages and pays each operation alone. This scenario measures that floor with the client
libraries Switchboard uses, in a process of their own (``bench/peers/one_at_a_time.py``), one
operation after the other (the next starts once the last is answered):

* aio-pika: a persistent message published to a quorum queue (the router's queue type),
  awaiting its confirm; the same on the aiormq channel beneath aio-pika (the protocol library
  it is built on: what a service would save by skipping aio-pika's layer); then messages
  consumed with prefetch 1, each acknowledged before the next arrives.
* redis-py (asyncio, hiredis): one command (``EXISTS``), and a pipeline of five commands (about
  a router's batch of one message with its lookups); then the same pipeline, each after the
  process idled for 5 ms, the CPU of the pause alone taken out: what one operation costs a
  process that wakes for it, as every Switchboard process does at a few hundred messages a
  second, against the same operation back to back.
* RabbitMQ: messages published at 100 a second (each awaiting its confirm) and consumed, each
  acknowledged, through a quorum queue, a classic queue, and a classic queue with messages not
  persistent; the figure is the broker's CPU per message (``beam.smp``, whatever else it
  served meanwhile). A Switchboard message crosses a quorum queue (the router's) and two
  classic ones (its delivery and its ``sent``), each persistent.

Each figure is the CPU that process spent per operation (``time.process_time()``: user and
system, the client library's and the event loop's, the kernel's socket work included); the
note gives the wall time per operation.
"""

import msgspec

from bench import report
from bench.harness import run_to_result
from bench.peers.one_at_a_time import PACED_RATE, PAUSED, paused_operations
from bench.report import Measurement
from bench.systems import AMQP_URL
from proto.env import DEFAULT_REDIS_URL

NAME = "11 one operation at a time"
OPERATIONS = 2_000
QUICK_OPERATIONS = 300
WITHIN_S = 120.0

Figures = tuple[float, float]


class Result(msgspec.Struct, frozen=True):
    """The JSON line ``one_at_a_time`` prints: (CPU µs, wall µs) per operation."""

    publish: Figures
    publish_aiormq: Figures
    consume: Figures
    command: Figures
    pipeline: Figures
    pause: Figures
    pipeline_after_pause: Figures
    paced_quorum: Figures
    """For the paced figures: RabbitMQ's CPU µs and the measuring process's, per message."""
    paced_classic: Figures
    paced_classic_transient: Figures


FIGURES = (
    (
        "publish",
        report.AIO_PIKA,
        "CPU us per publish awaiting its confirm, alone",
        "a persistent 256-byte message to a quorum queue, publisher confirms",
    ),
    (
        "publish_aiormq",
        report.AIO_PIKA,
        "CPU us per publish awaiting its confirm, alone, on aiormq beneath aio-pika",
        "the same messages on the channel's aiormq channel (basic_publish), publisher confirms",
    ),
    (
        "consume",
        report.AIO_PIKA,
        "CPU us per message consumed and acknowledged, alone",
        "from a quorum queue, prefetch 1, each acknowledged before the next arrives",
    ),
    (
        "command",
        report.REDIS_PY,
        "CPU us per command round trip, alone",
        "redis-py asyncio with hiredis: EXISTS",
    ),
    (
        "pipeline",
        report.REDIS_PY,
        "CPU us per pipeline of 5 commands, alone",
        "redis-py asyncio with hiredis: EXISTS, HGETALL, SET NX PX, SMEMBERS, GET",
    ),
    (
        "pipeline_after_pause",
        report.REDIS_PY,
        "CPU us per pipeline of 5 commands, each after 5 ms idle",
        "the same pipeline, each after asyncio.sleep(0.005), the CPU of the sleeps alone "
        "taken out",
    ),
    (
        "pause",
        report.REDIS_PY,
        "CPU us per 5 ms idle (asyncio.sleep) alone",
        "the event loop woken by its timer, nothing else to do",
    ),
)
PACED_FIGURES = (
    ("paced_quorum", "a quorum queue, persistent messages"),
    ("paced_classic", "a classic queue, persistent messages"),
    ("paced_classic_transient", "a classic queue, messages not persistent"),
)
RABBITMQ = "rabbitmq"
"""RabbitMQ's own CPU (its ``beam.smp``) in the paced figures."""


async def run(quick: bool) -> list[Measurement]:
    operations = QUICK_OPERATIONS if quick else OPERATIONS
    result = await run_to_result(
        "bench.peers.one_at_a_time",
        "--amqp-url",
        AMQP_URL,
        "--redis-url",
        DEFAULT_REDIS_URL,
        "--operations",
        str(operations),
        within_s=WITHIN_S,
        result=Result,
    )
    measured = []
    for field, system, metric, detail in FIGURES:
        cpu_us, wall_us = getattr(result, field)
        count = paused_operations(operations) if field in PAUSED else operations
        measured.append(
            Measurement(
                NAME,
                system,
                metric,
                cpu_us,
                "us",
                "lower",
                note=f"{detail}; {count:,} one at a time, {wall_us:.0f} us of wall "
                "time each; the CPU of the measuring process (time.process_time)",
            )
        )
    paced = paused_operations(operations)
    for field, queue in PACED_FIGURES:
        broker_us, client_us = getattr(result, field)
        measured.append(
            Measurement(
                NAME,
                RABBITMQ,
                f"CPU us per message at {PACED_RATE}/s, {queue}",
                broker_us,
                "us",
                "lower",
                note=f"{paced:,} messages, each published awaiting its confirm, consumed "
                f"and acknowledged; beam.smp's CPU (whatever else it served meanwhile); "
                f"the aio-pika process publishing and consuming: {client_us:.0f} us each",
            )
        )
    return measured
