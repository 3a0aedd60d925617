"""Scenario 8: one backend process sending chat messages, against raw aio-pika publishes.

1. Raw aio-pika (``bench/brokerrate.py``): one process publishes persistent messages to a
   quorum queue, pipelined, 500 awaiting their confirm: the rate a backend could reach if it
   only had to hand messages to RabbitMQ.
2. Switchboard (history off, 2 gateways): 1,000 recipients online, half on each gateway, held
   by two load processes (``bench/load.py``, ``listen``) that acknowledge every message. One
   backend process (``bench/peers/api_send.py``) sends for the phase's length:

   - ``api.send`` to one uid with ``reply_to``, round robin over the recipients, 500 awaiting
     their reply: replies/s;
   - the same without ``reply_to``, answered by publisher confirms only: confirms/s;
   - multicast: ``"to"`` every recipient (1,000 uids), 4 commands awaiting their reply (4,000
     messages on their way): recipients reached per second, counted at the clients.

Lost: messages owed to the recipients (every command sent, answered or not) and not received
within the drain time.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from bench import brokerrate, cpu, report, systems
from bench.harness import START_DELAY_S, LoadWorker, load_workers, run_to_result
from bench.report import Measurement

NAME = "8 backend sends"
COMMANDS = "messages/s from one backend process, answered"
RECIPIENTS = "recipients/s from one backend process, delivered"


@dataclass(frozen=True)
class Plan:
    recipients: int
    workers: int
    warmup_s: float
    measure_s: float
    drain_s: float
    in_flight: int
    """1:1 commands awaiting their answer, as the raw publisher's confirms."""
    multicast_in_flight: int


FULL = Plan(
    recipients=1000,
    workers=2,
    warmup_s=1.0,
    measure_s=5.0,
    drain_s=30.0,
    in_flight=brokerrate.IN_FLIGHT,
    multicast_in_flight=4,
)
QUICK = Plan(
    recipients=1000,
    workers=2,
    warmup_s=0.5,
    measure_s=2.0,
    drain_s=20.0,
    in_flight=brokerrate.IN_FLIGHT,
    multicast_in_flight=4,
)


class Sent(msgspec.Struct, frozen=True):
    """The JSON line ``api_send`` prints."""

    sent: int
    answered: int
    refused: int
    recipients: int
    per_s: float
    recipients_per_s: float
    cpu_s: float


@dataclass(frozen=True)
class Mode:
    name: str
    """``api_send``'s mode."""
    metric: str
    label: str


MODES = (
    Mode("reply", COMMANDS, "api.send with reply_to, replies/s"),
    Mode(
        "confirm",
        "messages/s from one backend process, confirmed (no reply_to)",
        "api.send without reply_to, publisher confirms/s",
    ),
    Mode("multicast", RECIPIENTS, "api.send to 1,000 uids at once"),
)


async def run(quick: bool) -> list[Measurement]:
    plan = QUICK if quick else FULL
    raw_publish, _ = await brokerrate.measure_queue(NAME, "quorum", plan.measure_s)
    measured = [
        Measurement(
            NAME,
            report.AIO_PIKA,
            metric,
            raw_publish.value,
            "msg/s",
            "higher",
            note=raw_publish.note,
        )
        for metric in (COMMANDS, RECIPIENTS)
    ]
    uids = [f"b8-{i}" for i in range(plan.recipients)]
    async with (
        systems.switchboard() as system,
        load_workers(load_plans(system, uids, plan)) as workers,
    ):
        for phase, mode in enumerate(MODES, start=1):
            measured.append(await measure(system, workers, uids, plan, phase, mode))
    return measured


def load_plans(
    system: systems.System, uids: list[str], plan: Plan
) -> list[dict[str, Any]]:
    """Each load process holds every ``workers``-th recipient; recipient i is on gateway i % 2."""
    members = [[uid, i % len(system.urls)] for i, uid in enumerate(uids)]
    return [
        {"dialect": system.dialect, "urls": system.urls, "room": {"members": share}}
        for share in (members[w :: plan.workers] for w in range(plan.workers))
    ]


async def measure(
    system: systems.System,
    workers: list[LoadWorker],
    uids: list[str],
    plan: Plan,
    phase: int,
    mode: Mode,
) -> Measurement:
    assert system.stack is not None
    multicast = mode.name == "multicast"
    start_ns = time.monotonic_ns() + int(START_DELAY_S * 1e9)
    listen = {
        "cmd": "listen",
        "start_ns": start_ns,
        "warmup_s": plan.warmup_s,
        "measure_s": plan.measure_s,
    }
    length_s = START_DELAY_S + plan.warmup_s + plan.measure_s
    before = await cpu.sample(system.stack)
    _, sent = await asyncio.gather(
        asyncio.gather(*(w.request(listen, length_s) for w in workers)),
        send(
            system,
            uids,
            plan,
            phase,
            mode.name,
            start_ns,
            plan.multicast_in_flight if multicast else plan.in_flight,
        ),
    )
    collects = [
        {"cmd": "collect", "drain_s": plan.drain_s, "expected": sent.sent}
        if multicast
        else {
            "cmd": "collect",
            "drain_s": plan.drain_s,
            "owed": owed_round_robin(sent.sent, len(uids), w, plan.workers),
        }
        for w in range(plan.workers)
    ]
    parts = await asyncio.gather(
        *(w.request(c, plan.drain_s) for w, c in zip(workers, collects, strict=True))
    )
    spent = {"backend": sent.cpu_s, **cpu.used(before, await cpu.sample(system.stack))}
    messages = sent.recipients if multicast else sent.answered
    lost = sum(p["lost"] for p in parts)
    delivered_per_s = sum(p["in_window"] for p in parts) / plan.measure_s
    value = delivered_per_s if multicast else sent.per_s
    in_flight = (
        f"{plan.multicast_in_flight} commands ({plan.multicast_in_flight * len(uids):,} "
        "messages)"
        if multicast
        else f"{plan.in_flight} commands"
    )
    return Measurement(
        NAME,
        report.SWITCHBOARD,
        mode.metric,
        value,
        "msg/s",
        "higher",
        lost=lost,
        note=(
            f"{mode.label}; {in_flight} awaiting their answer; {len(uids):,} recipients "
            f"online, raw WebSocket clients acking each message; {sent.sent:,} commands, "
            f"{sent.refused} refused; answered {sent.recipients_per_s:,.0f} recipients/s, "
            f"delivered {delivered_per_s:,.0f}/s; {cpu.per_message(spent, messages)}; "
            f"{system.note}"
        ),
    )


def owed_round_robin(sent: int, recipients: int, worker: int, workers: int) -> int:
    """Messages owed to one load process's recipients when message n went to recipient
    n % recipients, and the process holds recipients worker, worker + workers, ..."""
    return sum(
        sent // recipients + (1 if index < sent % recipients else 0)
        for index in range(worker, recipients, workers)
    )


async def send(
    system: systems.System,
    uids: list[str],
    plan: Plan,
    phase: int,
    mode: str,
    start_ns: int,
    in_flight: int,
) -> Sent:
    """Run one ``api_send`` process to its end; return the JSON line it printed."""
    assert system.stack is not None
    return await run_to_result(
        "bench.peers.api_send",
        mode,
        "--amqp-url",
        systems.AMQP_URL,
        "--namespace",
        system.stack.namespace,
        "--uids",
        ",".join(uids),
        "--phase",
        str(phase),
        "--start-ns",
        str(start_ns),
        "--warmup-s",
        str(plan.warmup_s),
        "--measure-s",
        str(plan.measure_s),
        "--in-flight",
        str(in_flight),
        "--drain-s",
        str(plan.drain_s),
        within_s=START_DELAY_S + plan.warmup_s + plan.measure_s + plan.drain_s + 30,
        result=Sent,
    )
