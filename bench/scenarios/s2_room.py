"""Scenario 2: one room of 2,000 members over two servers, messages at a fixed rate.

Members alternate between the two servers (the relay has one); one of them sends room
messages, open loop, and every member (the sender too) is owed each one. Two load processes
hold half the members each. Measured: deliveries per second, latency (send to arrival at each
member) and, for the brokered systems, the broker messages each room message costs.

Broker messages are counted by a tap: an exclusive queue of this process bound like the
servers' own queues, which RabbitMQ therefore gives a copy of each message routed to them.
For Switchboard it is bound to ``<ns>.deliveries`` with each gateway's id, and counts the
``Delivery`` envelopes that carry an item for the room; for python-socketio it is bound to the
channel's fanout exchange and counts the room's emits, each of which the exchange copies to
every server's queue. The ``gateway.send`` publish into the router's queue is not counted.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aio_pika
import msgspec
from aio_pika.abc import AbstractIncomingMessage

from bench import systems
from bench.harness import load_workers, play
from bench.report import Measurement
from proto.envelopes import decode_delivery

NAME = "room of 2,000"
ROOM = "bench-room"


@dataclass(frozen=True)
class Plan:
    members: int
    workers: int
    rate: float
    """Room messages per second."""
    warmup_s: float
    measure_s: float
    drain_s: float


FULL = Plan(members=2000, workers=2, rate=4, warmup_s=1.0, measure_s=4.0, drain_s=15.0)
QUICK = Plan(members=2000, workers=2, rate=4, warmup_s=0.5, measure_s=2.0, drain_s=10.0)


async def run(quick: bool) -> list[Measurement]:
    plan = QUICK if quick else FULL
    measured: list[Measurement] = []
    starters: list[Callable[[], AbstractAsyncContextManager[systems.System]]] = [
        systems.switchboard,
        systems.socketio_servers,
        systems.ws_relay,
    ]
    for start in starters:
        async with start() as system:
            measured += await measure(system, plan)
    return measured


async def measure(system: systems.System, plan: Plan) -> list[Measurement]:
    async with (
        load_workers(load_plans(system, plan)) as workers,
        broker_tap(system) as tap,
    ):
        phase = await play(
            workers,
            {"cmd": "room", "rate": plan.rate},
            warmup_s=plan.warmup_s,
            measure_s=plan.measure_s,
            drain_s=plan.drain_s,
        )
    config = (
        f"{plan.members:,} members, {plan.rate:g} room msgs/s open loop "
        f"({plan.members * plan.rate:,.0f} deliveries/s owed), raw WebSocket clients "
        f"({phase.load_cpu_us_per_message:.0f} us load CPU/delivery); {system.note}"
    )
    measured = [
        Measurement(
            NAME,
            system.name,
            f"deliveries/s at {plan.rate:g} msgs/s",
            phase.delivered_per_s,
            "msg/s",
            "higher",
            lost=phase.lost,
            note=config,
        ),
        *(
            Measurement(
                NAME,
                system.name,
                f"{label} ms at {plan.rate:g} msgs/s",
                phase.latency_ms(quantile),
                "ms",
                "lower",
                lost=phase.lost,
                note=config,
            )
            for label, quantile in (("p50", 0.5), ("p99", 0.99))
        ),
    ]
    if tap is not None:
        measured.append(
            Measurement(
                NAME,
                system.name,
                "broker msgs to servers per room message",
                tap.copies / phase.sent if phase.sent else 0.0,
                "broker msgs",
                "lower",
                note=f"{tap.method}; {plan.members:,} members on {len(system.urls)} servers",
            )
        )
    return measured


def load_plans(system: systems.System, plan: Plan) -> list[dict[str, Any]]:
    """The load processes' plans, each with its share of the members."""
    sides = len(system.urls)
    members = [[f"m{i}", i % sides] for i in range(plan.members)]
    return [
        {
            "dialect": system.dialect,
            "urls": system.urls,
            "room": {
                "name": ROOM,
                "members": members[index :: plan.workers],
                "sender": members[0][0],
            },
        }
        for index in range(plan.workers)
    ]


class Tap:
    """Counts the messages of the room that RabbitMQ routed to the servers' queues."""

    def __init__(
        self, method: str, copies_per_message: int, counts: Callable[[bytes], bool]
    ):
        self.method = method
        self._copies_per_message = copies_per_message
        self._counts = counts
        self._seen = 0

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self._counts(message.body):
            self._seen += 1

    @property
    def copies(self) -> int:
        return self._seen * self._copies_per_message


@contextlib.asynccontextmanager
async def broker_tap(system: systems.System) -> AsyncIterator[Tap | None]:
    if system.stack is not None:
        exchange = system.stack.names.deliveries_exchange
        keys = [gateway.gateway_id for gateway in system.stack.gateways]
        tap = Tap(
            "Delivery envelopes with an item for the room, copied from <ns>.deliveries",
            1,
            is_room_delivery,
        )
    elif system.channel:
        exchange, keys = system.channel, [""]
        tap = Tap(
            "room emits on the channel's fanout exchange x the servers' queues",
            len(system.urls),
            is_room_emit,
        )
    else:
        yield None
        return
    connection = await aio_pika.connect(systems.AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        for key in keys:
            await queue.bind(exchange, key)
        await queue.consume(tap.on_message, no_ack=True)
        yield tap
        # The last copies are on their way with the last messages.
        await asyncio.sleep(0.2)


def is_room_delivery(body: bytes) -> bool:
    return any(item.room == ROOM for item in decode_delivery(body).items)


def is_room_emit(body: bytes) -> bool:
    emit: Any = msgspec.json.decode(body)
    return (
        isinstance(emit, dict)
        and emit.get("method") == "emit"
        and emit.get("room") == ROOM
    )
