"""The pairs of the 1:1 scenarios (``s1``, ``s9``): who sends to whom on which server, the
phases' lengths, and the closed loop that saturates a system.

Each pair is a sender on one server and its partner on the next one, so that with any number of
servers every message crosses from one server to another and the pairs spread over all of them
(the relay is one server). Two load processes hold half the pairs each (``bench/load.py``).
"""

from dataclasses import dataclass
from typing import Any

from bench import cpu, systems
from bench.harness import LoadWorker, PhaseResult, play

RAW_CLIENTS = "raw WebSocket clients"


@dataclass(frozen=True)
class Plan:
    pairs: int
    workers: int
    window: int
    """Messages each sender keeps on their way at saturation."""
    saturation_warmup_s: float
    saturation_s: float
    rate_warmup_s: float
    rate_s: float
    drain_s: float
    broker_s: float


FULL = Plan(
    pairs=64,
    workers=2,
    window=8,
    saturation_warmup_s=1.5,
    saturation_s=3.0,
    rate_warmup_s=0.5,
    rate_s=3.0,
    drain_s=15.0,
    broker_s=2.0,
)
QUICK = Plan(
    pairs=64,
    workers=2,
    window=8,
    saturation_warmup_s=0.5,
    saturation_s=1.0,
    rate_warmup_s=0.2,
    rate_s=1.0,
    drain_s=10.0,
    broker_s=0.7,
)


@dataclass(frozen=True)
class Saturation:
    """A closed-loop phase, and the CPU Switchboard's roles used in it (empty for a peer)."""

    phase: PhaseResult
    cpu_s: dict[str, float]
    """Seconds by role (``bench/cpu.py``), warmup and drain included, like ``received``."""
    machine_busy: float
    """The share of the machine's cores that were busy meanwhile, whoever used them."""
    context_switches: int
    """On the whole machine meanwhile."""

    def cpu_us_per_message(self) -> dict[str, float]:
        received = max(1, self.phase.received)
        return {role: s * 1e6 / received for role, s in self.cpu_s.items()}


async def saturate(
    system: systems.System,
    workers: list[LoadWorker],
    plan: Plan,
    services: bool = False,
) -> Saturation:
    """Each sender keeps ``plan.window`` messages on their way to its partner; with
    ``services``, RabbitMQ's and Redis's CPU is counted too (``cpu.sample``)."""
    stack = system.stack
    before = None if stack is None else await cpu.sample(stack, services)
    machine_before = cpu.machine()
    phase = await play(
        workers,
        {"cmd": "saturate", "window": plan.window},
        warmup_s=plan.saturation_warmup_s,
        measure_s=plan.saturation_s,
        drain_s=plan.drain_s,
    )
    machine_after = cpu.machine()
    spent = (
        {}
        if stack is None or before is None
        else cpu.used(before, await cpu.sample(stack, services))
    )
    return Saturation(
        phase,
        spent,
        (machine_after.busy_s - machine_before.busy_s)
        / max(1e-9, machine_after.total_s - machine_before.total_s),
        machine_after.context_switches - machine_before.context_switches,
    )


def load_plans(
    system: systems.System, plan: Plan, uid_prefix: str = ""
) -> list[dict[str, Any]]:
    """The load processes' plans, each with its share of the pairs.

    A second set of workers on the same stack takes another ``uid_prefix``: the router
    drops a frame whose (uid, client id) it saw already, and client ids restart with them.
    """
    sides = len(system.urls)
    pairs = [
        [f"{uid_prefix}s{i}", i % sides, f"{uid_prefix}r{i}", (i + 1) % sides]
        for i in range(plan.pairs)
    ]
    return [
        {
            "dialect": system.dialect,
            "urls": system.urls,
            "pairs": pairs[index :: plan.workers],
        }
        for index in range(plan.workers)
    ]
