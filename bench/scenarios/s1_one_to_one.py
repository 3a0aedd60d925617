"""Scenario 1: one-to-one messages across two servers, at saturation and at fixed rates.

Each pair is a sender on one server and its partner on the other; half the pairs send from the
first server to the second, half the other way (the relay is one server). Two load processes
hold half the pairs each, as raw WebSocket clients that speak each system's frames with the
same code (``bench/load.py``): on a two-core machine the clients' CPU is taken from the
servers', and Switchboard's Python client costs more per message (measured once, at 1,000/s,
beside the raw clients; each note gives the load's CPU per message).

Saturation is a closed loop: each sender keeps ``window`` messages on their way to its partner,
and the figure is the messages delivered per second after a warmup. Latency is an open loop at
100, 500, 1,000 and 2,000 messages per second in all, each message timed from its scheduled
send (at 100/s no system here is short of CPU: the path's own latency); above a system's
capacity the queue, and so the latency, grows for as long as the phase lasts.
The raw aio-pika rates (``bench/brokerrate.py``) are the broker client's ceiling.

Switchboard runs twice, history off (``switchboard``) and on (``switchboard-history``), one
right after the other in the same run: with history every message is written and numbered in
PostgreSQL before it is delivered, on the same two cores. The note of a Switchboard saturation
gives the CPU its processes (and the offline store's PostgreSQL backends) spent per message in
that phase (``bench/cpu.py``): on a busy machine, what the two configurations cost whatever CPU
the machine had to give. The target compares the two configurations alternated: with both
stacks up, each is saturated ``ALTERNATIONS`` times in turn (off, on, on, off, off, on), and
each one's figure is the median of its phases. Two saturations a minute apart carry the
machine's drift (its speed moves by a third within minutes here); phases seconds apart, in an
order that favours neither, compare the two on the same machine.
"""

import dataclasses
import statistics
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from bench import brokerrate, cpu, hops, systems
from bench.harness import LoadWorker, load_workers, play
from bench.pairs import FULL, QUICK, RAW_CLIENTS, Plan, load_plans, saturate
from bench.report import ALTERNATED_SATURATION, Measurement
from bench.servers import QuietStack

NAME = "1:1 cross-gateway"
RATES = (100, 500, 1000, 2000)
CLIENT_LIBRARY_RATE = 1000
QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))
HOP_RATES = (100, 500, 1000)
"""The rates at which Switchboard's hops are read from its /metrics (``bench/hops.py``)."""
ALTERNATIONS = 3
"""Saturation phases of each configuration in the alternated comparison."""
HOP_NOTE = (
    "the phase's observations (warmup included) summed over the service's processes, "
    "from /metrics (bench/hops.py)"
)


async def run(quick: bool) -> list[Measurement]:
    plan = QUICK if quick else FULL
    measured: list[Measurement] = []
    async with systems.switchboard() as relay:
        measured += await measure(relay, plan)
        with_client = dataclasses.replace(relay, dialect="switchboard-client")
        measured += await measure_client_library(with_client, plan)
        async with systems.switchboard(history=True) as history:
            measured += await measure(history, plan)
            measured += await alternate(relay, history, plan)
    starters: list[Callable[[], AbstractAsyncContextManager[systems.System]]] = [
        systems.socketio_servers,
        systems.ws_relay,
    ]
    for start in starters:
        async with start() as system:
            measured += await measure(system, plan)
    measured += await brokerrate.measure(NAME, plan.broker_s)
    return measured


async def measure(system: systems.System, plan: Plan) -> list[Measurement]:
    """Saturation, then latency at each rate, over the same connections."""
    measured = []
    async with load_workers(load_plans(system, plan)) as workers:
        saturation = await saturate(system, workers, plan)
        saturated = saturation.phase
        servers = (
            f", servers {cpu.per_message(saturation.cpu_s, saturated.received)}"
            if saturation.cpu_s
            else ""
        )
        measured.append(
            Measurement(
                NAME,
                system.name,
                "delivered/s at saturation",
                saturated.delivered_per_s,
                "msg/s",
                "higher",
                lost=saturated.lost,
                note=(
                    f"{plan.pairs} pairs x window {plan.window}, {RAW_CLIENTS} "
                    f"({saturated.load_cpu_us_per_message:.0f} us load CPU/msg"
                    f"{servers}); {system.note}"
                ),
            )
        )
        for rate in RATES:
            measured += await measure_rate(
                system, workers, plan, rate, clients=RAW_CLIENTS
            )
    return measured


async def alternate(
    relay: systems.System, history: systems.System, plan: Plan
) -> list[Measurement]:
    """History off and on saturated in turn, both stacks up: the median of each one's phases."""
    rates: dict[str, list[float]] = {relay.name: [], history.name: []}
    lost = {relay.name: 0, history.name: 0}
    async with (
        load_workers(load_plans(relay, plan)) as relay_workers,
        load_workers(load_plans(history, plan)) as history_workers,
    ):
        turns = [(relay, relay_workers), (history, history_workers)]
        for alternation in range(ALTERNATIONS):
            for system, workers in turns if alternation % 2 == 0 else turns[::-1]:
                phase = (await saturate(system, workers, plan)).phase
                rates[system.name].append(phase.delivered_per_s)
                lost[system.name] += phase.lost
    return [
        Measurement(
            NAME,
            system.name,
            ALTERNATED_SATURATION,
            statistics.median(rates[system.name]),
            "msg/s",
            "higher",
            lost=lost[system.name],
            note=(
                f"median of {ALTERNATIONS} closed-loop phases "
                f"({', '.join(f'{rate:,.0f}' for rate in rates[system.name])}), "
                f"alternated with the other configuration, both stacks up; "
                f"{plan.pairs} pairs x window {plan.window}; {system.note}"
            ),
        )
        for system in (relay, history)
    ]


async def measure_client_library(
    system: systems.System, plan: Plan
) -> list[Measurement]:
    """Latency at one rate through Switchboard's Python client, next to the raw clients'."""
    async with load_workers(load_plans(system, plan, "client-")) as workers:
        return await measure_rate(
            system,
            workers,
            plan,
            CLIENT_LIBRARY_RATE,
            clients="a switchboard_client.Client per connection",
            metric_suffix=", switchboard_client",
        )


async def measure_rate(
    system: systems.System,
    workers: list[LoadWorker],
    plan: Plan,
    rate: int,
    *,
    clients: str,
    metric_suffix: str = "",
) -> list[Measurement]:
    """p50, p99 and p99.9 latency at ``rate`` messages per second in all, open loop; for
    Switchboard with raw clients at ``HOP_RATES``, the mean of each hop (``bench/hops.py``)."""
    stack = system.stack
    ports = (
        stack.metrics_ports_by_module()
        if isinstance(stack, QuietStack) and not metric_suffix and rate in HOP_RATES
        else None
    )
    before = None if ports is None else await hops.scrape_all(ports)
    paced = await play(
        workers,
        {"cmd": "rate", "rate": rate / len(workers)},
        warmup_s=plan.rate_warmup_s,
        measure_s=plan.rate_s,
        drain_s=plan.drain_s,
    )
    note = (
        f"open loop over {plan.pairs} pairs, {paced.delivered_per_s:,.0f}/s delivered, "
        f"{clients} ({paced.load_cpu_us_per_message:.0f} us load CPU/msg); {system.note}"
    )
    measured = []
    if ports is not None and before is not None:
        after = await hops.scrape_all(ports)
        figures = hops.breakdown(before, after)
        cpu_us = {
            module: seconds * 1e6 / max(1, paced.received)
            for module, seconds in hops.cpu_seconds(before, after).items()
        }
        print(hops.format_breakdown(figures, cpu_us, rate), file=sys.stderr, flush=True)
        measured += [
            Measurement(
                NAME,
                system.name,
                f"CPU us per message at {rate:,}/s, {module} processes",
                us,
                "us",
                "lower",
                note=f"{HOP_NOTE}; {note}",
            )
            for module, us in cpu_us.items()
        ]
        measured += [
            Measurement(
                NAME,
                system.name,
                f"hop ms at {rate:,}/s, {figure.hop.name} (mean)",
                figure.mean_s * 1000,
                "ms",
                "lower",
                note=f"{HOP_NOTE}; {note}",
            )
            for figure in figures
            if figure.count  # the store's hops are not on the relay's path
        ]
    return measured + [
        Measurement(
            NAME,
            system.name,
            f"{label} ms at {rate:,}/s{metric_suffix}",
            paced.latency_ms(quantile),
            "ms",
            "lower",
            lost=paced.lost,
            note=note,
        )
        for label, quantile in QUANTILES
    ]
