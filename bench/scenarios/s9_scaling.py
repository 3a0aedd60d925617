"""Scenario 9: scaling on one machine, 2 gateways and 1 router against 4 gateways and 2 routers.

The closed loop of ``s1`` (64 pairs, 8 messages in flight each, ``bench/pairs.py``) on two
topologies of the relay (``SWITCHBOARD_HISTORY=off``), one right after the other in each run:
2 gateways, 1 router and 1 offline store (``switchboard``, as in every other scenario), then 4
gateways, 2 routers and 1 offline store. Each sender's partner is on the next gateway, so the
pairs spread over all the gateways and every message crosses two. The target asks the larger
topology to deliver more.

Both run on the same cores as RabbitMQ, Redis, PostgreSQL and the load: besides the rate, each
topology's figures are the CPU each role spent per message (RabbitMQ and Redis whole, whoever
else used them; ``bench/cpu.py``), the share of the machine's cores that were busy, the
machine's context switches per message and the batches' sizes (messages per gateway ``Batch``
and per router batch, from the services' /metrics): ``CAPACITY.md`` sizes a cluster from them.
"""

import sys
from dataclasses import dataclass

from bench import hops, report, systems
from bench.harness import load_workers
from bench.pairs import FULL, QUICK, RAW_CLIENTS, Plan, Saturation, load_plans, saturate
from bench.report import Measurement
from bench.servers import QuietStack
from proto import metrics, names

NAME = "9 scaling on one machine"
TOPOLOGIES = (
    (report.SWITCHBOARD, 2, 1),
    (report.SWITCHBOARD_4_2, 4, 2),
)
"""(system, gateways, routers); one offline store each."""
LOAD = "load"
"""The role of the load processes in the CPU figures."""
GATEWAY_BATCHES = (
    metrics.GATEWAY_PUBLISHES_TOTAL,
    ((metrics.LABEL_ROUTING_KEY, names.KEY_BATCH),),
)
ROUTER_BATCHES = (
    f"{metrics.ROUTER_BATCH_SECONDS}_count",
    ((metrics.LABEL_STAGE, metrics.ROUTER_STAGES[0]),),
)
"""One observation per router batch (its first stage)."""


@dataclass(frozen=True)
class Batches:
    """Mean messages per batch in a phase: what a process pays per publish is shared by these."""

    gateway: float
    """Per ``Batch`` a gateway published to the routers."""
    router: float
    """Per batch a router took from its queue."""


async def run(quick: bool) -> list[Measurement]:
    plan = QUICK if quick else FULL
    measured: list[Measurement] = []
    rates: list[float] = []
    for name, gateways, routers in TOPOLOGIES:
        async with systems.switchboard(gateways=gateways, routers=routers) as system:
            system.name = name
            assert isinstance(system.stack, QuietStack)
            ports = system.stack.metrics_ports_by_module()
            async with load_workers(load_plans(system, plan)) as workers:
                before = await hops.scrape_all(ports)
                saturation = await saturate(system, workers, plan, services=True)
                batches = batch_sizes(
                    before, await hops.scrape_all(ports), saturation.phase.received
                )
        print(describe(name, saturation, batches), file=sys.stderr, flush=True)
        rates.append(saturation.phase.delivered_per_s)
        measured += measurements(system, plan, saturation, batches)
    print(
        f"  {TOPOLOGIES[1][0]} / {TOPOLOGIES[0][0]}: {rates[1] / max(1.0, rates[0]):.2f}",
        file=sys.stderr,
        flush=True,
    )
    return measured


def batch_sizes(
    before: dict[str, list[hops.Samples]],
    after: dict[str, list[hops.Samples]],
    messages: int,
) -> Batches:
    """Messages per gateway ``Batch`` and per router batch between two scrapes."""
    published = hops.grown(before, after, "gateway", *GATEWAY_BATCHES)
    routed = hops.grown(before, after, "router", *ROUTER_BATCHES)
    return Batches(messages / max(1.0, published), messages / max(1.0, routed))


def measurements(
    system: systems.System, plan: Plan, saturation: Saturation, batches: Batches
) -> list[Measurement]:
    """The rate, then each role's CPU per message, the machine's busy share and switches,
    and the batches' sizes."""
    phase = saturation.phase
    note = f"{plan.pairs} pairs x window {plan.window}, {RAW_CLIENTS}; {system.note}"
    per_message = {
        **saturation.cpu_us_per_message(),
        LOAD: phase.load_cpu_us_per_message,
    }
    return [
        Measurement(
            NAME,
            system.name,
            "delivered/s at saturation",
            phase.delivered_per_s,
            "msg/s",
            "higher",
            lost=phase.lost,
            note=note,
        ),
        *(
            Measurement(
                NAME,
                system.name,
                f"CPU us per message at saturation, {role}",
                us,
                "us",
                "lower",
                note=(
                    "warmup and drain included; RabbitMQ and Redis whole, shared with "
                    f"the machine's other work; {note}"
                ),
            )
            for role, us in per_message.items()
        ),
        Measurement(
            NAME,
            system.name,
            "machine busy % at saturation",
            saturation.machine_busy * 100,
            "%",
            "higher",
            note=f"both cores, whoever used them; {note}",
        ),
        Measurement(
            NAME,
            system.name,
            "context switches per message at saturation",
            saturation.context_switches / max(1, phase.received),
            "switches",
            "lower",
            note=f"the whole machine's; {note}",
        ),
        *(
            Measurement(
                NAME,
                system.name,
                f"messages per {side} batch at saturation",
                size,
                "msgs",
                "higher",
                note=f"the phase's messages over the batches in /metrics; {note}",
            )
            for side, size in (("gateway", batches.gateway), ("router", batches.router))
        ),
    ]


def describe(name: str, saturation: Saturation, batches: Batches) -> str:
    """One line for the log: the rate, CPU per message by role, the machine's use, the
    batches."""
    phase = saturation.phase
    roles = ", ".join(
        f"{role} {us:.0f}" for role, us in saturation.cpu_us_per_message().items()
    )
    return (
        f"  {name}: {phase.delivered_per_s:,.0f} msg/s, lost {phase.lost}; us CPU/msg: "
        f"{roles}, {LOAD} {phase.load_cpu_us_per_message:.0f}; machine busy "
        f"{saturation.machine_busy:.0%}, "
        f"{saturation.context_switches / max(1, phase.received):.1f} switches/msg; "
        f"messages per batch: gateway {batches.gateway:.1f}, router {batches.router:.1f}"
    )
