"""CPU time of Switchboard's processes under test, and of the PostgreSQL backends they use.

On a shared two-core machine a rate measures the machine as much as the code; the CPU time each
process spent per message measures the code. The services of a bench stack connect to
PostgreSQL with their namespace as ``application_name`` (``servers.bench_stack``), by which
``pg_stat_activity`` tells their backends from everyone else's. RabbitMQ and Redis are shared
with other work on the machine: they are counted only when asked (``services``), whole, whoever
their CPU served.
"""

import os
from dataclasses import dataclass

import asyncpg

from proto.env import DEFAULT_POSTGRES_DSN
from tests.support.stack import Stack

POSTGRES = "PostgreSQL"
"""The role of the offline stores' PostgreSQL backends in a sample."""
SERVICES = {"RabbitMQ": "beam.smp", "Redis": "redis-server"}
"""The machine's shared servers as roles, by the command name of their processes."""


def cpu_s(pid: int) -> float:
    """CPU time a process has used, user and system, in seconds (``/proc/<pid>/stat``); 0 for
    a process that is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # The command name, in parentheses, may hold spaces: count fields after it.
            fields = stat.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(command: str) -> list[int]:
    """The processes whose command name (``/proc/<pid>/comm``) is ``command``, such as the
    shared RabbitMQ's ``beam.smp``."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm", encoding="utf-8") as comm:
                if comm.read().strip() == command:
                    pids.append(int(name))
        except (FileNotFoundError, ProcessLookupError):
            pass  # gone meanwhile
    return pids


def traced_dsn(dsn: str, application_name: str) -> str:
    """The DSN with an ``application_name``, by which ``pg_stat_activity`` tells a service's
    PostgreSQL backends."""
    separator = "&" if "?" in dsn else "?"
    return f"{dsn}{separator}application_name={application_name}"


def service_pids() -> dict[str, list[int]]:
    """The pids of each of ``SERVICES`` running on this machine (``/proc/<pid>/comm``)."""
    roles = {command: role for role, command in SERVICES.items()}
    found: dict[str, list[int]] = {role: [] for role in SERVICES}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm", encoding="utf-8") as comm:
                role = roles.get(comm.read().strip())
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        if role is not None:
            found[role].append(int(name))
    return found


@dataclass(frozen=True)
class Machine:
    """The whole machine's CPU time so far, over all cores (``/proc/stat``)."""

    busy_s: float
    """User, system, interrupts and steal: everything but idle and I/O wait."""
    total_s: float
    context_switches: int


def machine() -> Machine:
    """The machine's CPU time and context switches since boot."""
    with open("/proc/stat", encoding="ascii") as stat:
        lines = stat.read().splitlines()
    # "cpu  user nice system idle iowait irq softirq steal guest guest_nice": guest time is
    # already inside user and nice.
    ticks = [int(field) for field in lines[0].split()[1:9]]
    idle = ticks[3] + ticks[4]
    switches = next(int(line.split()[1]) for line in lines if line.startswith("ctxt "))
    per_s = os.sysconf("SC_CLK_TCK")
    return Machine((sum(ticks) - idle) / per_s, sum(ticks) / per_s, switches)


@dataclass(frozen=True)
class Sample:
    """CPU seconds used so far: by role (``gateways``, ``router``, ``store``), and by backend."""

    roles: dict[str, float]
    backends: dict[int, float]


async def sample(stack: Stack, services: bool = False) -> Sample:
    """The CPU time of the stack's processes and of its PostgreSQL backends now; with
    ``services``, of RabbitMQ and Redis too."""
    connection = await asyncpg.connect(DEFAULT_POSTGRES_DSN, timeout=10)
    try:
        records = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            stack.namespace,
        )
    finally:
        await connection.close()
    roles = {
        "gateways": sum(cpu_s(g.process.process.pid) for g in stack.gateways),
        "router": sum(cpu_s(r.process.pid) for r in stack.routers),
        "store": sum(cpu_s(s.process.pid) for s in stack.stores),
    }
    if services:
        for role, pids in service_pids().items():
            roles[role] = sum(cpu_s(pid) for pid in pids)
    return Sample(roles, {record["pid"]: cpu_s(record["pid"]) for record in records})


def used(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds each role used between two samples; ``PostgreSQL`` for the backends (one
    that opened meanwhile counts whole; one that closed is not counted)."""
    spent = {
        role: seconds - before.roles.get(role, 0.0)
        for role, seconds in after.roles.items()
    }
    spent[POSTGRES] = sum(
        seconds - before.backends.get(pid, 0.0)
        for pid, seconds in after.backends.items()
    )
    return spent


def per_message(spent: dict[str, float], messages: int, per: str = "msg") -> str:
    """``gateways 150, router 70, ... us CPU/msg``: the roles that used any CPU (``per``
    names what was counted, such as ``login``)."""
    parts = [
        f"{role} {seconds * 1e6 / messages:.0f}"
        for role, seconds in spent.items()
        if seconds > 0 and messages
    ]
    return ", ".join(parts) + f" us CPU/{per}"
