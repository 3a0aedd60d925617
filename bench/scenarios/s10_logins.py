"""Scenario 10: logins, on one gateway at full speed, and a reconnect storm after a crash.

Switchboard only, as the system ``switchboard`` (``SWITCHBOARD_HISTORY=off``, as in ``s5``):
``init`` without ``since`` replays what no device acknowledged, which is what a client of the
library sends when the gateway numbers nothing.

1. ``init``/s on one gateway: client worker processes (``bench/idle_clients.py``, as ``s5``
   opens them) open 5,000 connections to a stack with a single gateway, each authenticated
   with a JWT; from the first connect to the last ``ready``. Over the same phase, the CPU time
   of each process from /proc: the gateway, the router, the offline store, the offline store's
   PostgreSQL backends, RabbitMQ's ``beam.smp`` and ``redis-server`` (both shared with other
   work on the machine: an upper bound), and the client workers; divided by the logins.
2. Reconnect storm: a stack of three gateways; a backend stores one message (``api.send``) for
   each of 10,000 uids that have never connected, then the 10,000 connect to the first gateway
   (its replay reaches them and stays unacknowledged). That gateway is killed (SIGKILL); every
   connection comes back through the other two with the client library's reconnect delays,
   open deadline and turn through the URLs (``idle_clients.py``, ``--reconnect-url``), and is
   back once ``ready`` and its replayed message have arrived. From the kill to the last one
   back, each one's time, and the number not back within ``STORM_TIMEOUT_S`` (lost).

Once measured, the gateways are killed rather than stopped, as in ``s5``.
"""

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from bench import cpu, systems
from bench.idle_clients import ClientWorkers
from bench.report import SWITCHBOARD, Measurement
from bench.scenarios.s4_replay import Rows, publish_from_backend
from bench.scenarios.s5_connections import HANDSHAKES_PER_WORKER, require_file_limit
from proto.env import DEFAULT_POSTGRES_DSN

NAME = "10 logins"
LOGINS = 5_000
QUICK_LOGINS = 1_000
LOGIN_WORKERS = 2
STORM = 10_000
QUICK_STORM = 2_000
STORM_WORKERS = 4
"""Client processes holding the storm's connections: one Python process cannot take back
10,000 connections in seconds, whatever the servers do."""
STORM_TIMEOUT_S = 60.0
ROWS_TIMEOUT_S = 120.0
REPLAYED_TIMEOUT_S = 180.0
POLL_S = 0.5
SHARED = {"RabbitMQ": "beam.smp", "Redis": "redis-server"}
"""Shared services counted by process name: their CPU includes other work on the machine."""


@asynccontextmanager
async def killed_at_end(gateways: int) -> AsyncIterator[systems.System]:
    """Switchboard with ``gateways`` gateways, killed after use (see ``s5``)."""
    async with systems.switchboard(gateways=gateways) as system:
        assert system.stack is not None
        try:
            yield system
        finally:
            for gateway in system.stack.gateways:
                await gateway.process.kill()


def shared_cpu_s(pids: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(cpu.cpu_s(pid) for pid in found) for role, found in pids.items()}


async def measure_logins(logins: int) -> list[Measurement]:
    """Part 1: ``logins`` connections opening on one gateway, and the CPU of each process."""
    shared_pids = {role: cpu.pids_named(command) for role, command in SHARED.items()}
    async with killed_at_end(gateways=1) as system:
        assert system.stack is not None
        stack = system.stack
        workers = await ClientWorkers.start(
            "switchboard",
            system.urls * LOGIN_WORKERS,
            f"s10{uuid.uuid4().hex[:6]}",
            HANDSHAKES_PER_WORKER,
        )
        worker_pids = [process.pid for process in workers.processes]
        try:
            before = await cpu.sample(stack)
            shared_before = shared_cpu_s(shared_pids)
            clients_before = sum(cpu.cpu_s(pid) for pid in worker_pids)
            opened = await workers.open(logins)
            after = await cpu.sample(stack)
            shared_after = shared_cpu_s(shared_pids)
            clients_after = sum(cpu.cpu_s(pid) for pid in worker_pids)
        finally:
            await workers.stop()
    spent = cpu.used(before, after)
    spent.update(
        {role: shared_after[role] - shared_before[role] for role in SHARED},
    )
    servers_s = sum(spent.values())
    spent["clients"] = clients_after - clients_before
    per_login = cpu.per_message(spent, opened.ready, per="login")
    print(
        f"  one gateway: {opened.per_s:.0f} init/s, failed {opened.failed} "
        f"{opened.errors}; {per_login}",
        file=sys.stderr,
    )
    note = (
        f"1 gateway, {LOGIN_WORKERS} client processes, {HANDSHAKES_PER_WORKER} handshakes "
        f"in flight each; history off"
    )
    return [
        Measurement(
            NAME,
            SWITCHBOARD,
            f"init/s on one gateway ({logins:,} opening)",
            opened.per_s,
            "init/s",
            "higher",
            lost=opened.failed,
            note=note,
        ),
        Measurement(
            NAME,
            SWITCHBOARD,
            "ms CPU per login, servers (RabbitMQ, Redis shared)",
            servers_s * 1e3 / max(opened.ready, 1),
            "ms",
            "lower",
            note=per_login,
        ),
    ]


async def wait_for_messages(workers: ClientWorkers, expected: int) -> int:
    """Poll until ``expected`` connections have had a message; return how many had one."""
    count = 0
    try:
        async with asyncio.timeout(REPLAYED_TIMEOUT_S):
            # Polling the workers, under the deadline above.
            while (count := await workers.count_with_message()) < expected:  # noqa: ASYNC110
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        pass
    return count


def percentiles(values: list[float]) -> dict[int, float]:
    """The 50th and 99th percentiles (0 for fewer than two values)."""
    if len(values) < 2:
        return {50: 0.0, 99: 0.0}
    cuts = statistics.quantiles(values, n=100)
    return {50: cuts[49], 99: cuts[98]}


async def measure_storm(connections: int) -> list[Measurement]:
    """Part 2: ``connections`` on one of three gateways, each with a message waiting; the
    gateway killed; every connection back elsewhere with its message."""
    async with killed_at_end(gateways=3) as system:
        assert system.stack is not None
        stack = system.stack
        victim, *others = system.urls
        workers = await ClientWorkers.start(
            "switchboard",
            [victim] * STORM_WORKERS,
            f"s10{uuid.uuid4().hex[:6]}",
            HANDSHAKES_PER_WORKER,
            reconnect_urls=others,
        )
        database = await asyncpg.connect(DEFAULT_POSTGRES_DSN, timeout=10)
        try:
            await publish_from_backend(stack.names, workers.uids(connections))
            stored, _ = await Rows(database, stack.names).wait_for(
                None, connections, ROWS_TIMEOUT_S
            )
            opened = await workers.open(connections)
            # The kill waits for every first replay: a store still replaying to the killed
            # gateway would be measured with the storm.
            replayed = await wait_for_messages(workers, opened.ready)
            killed_at = time.monotonic()
            await stack.gateways[0].process.kill()
            storm = await workers.storm(STORM_TIMEOUT_S)
        finally:
            await database.close()
            await workers.stop()
    back_s = [when - killed_at for when in storm.back]
    ready = percentiles([when - killed_at for when in storm.ready])
    lost = opened.ready - len(back_s)
    last_s = back_s[-1] if back_s and not lost else STORM_TIMEOUT_S
    back = percentiles(back_s)
    ready_note = (
        f"of the {len(back_s):,} back; ready alone: p50 {ready[50]:.2f} s, "
        f"p99 {ready[99]:.2f} s"
    )
    print(
        f"  storm: {stored:,} stored, {opened.ready:,} on the killed gateway "
        f"({opened.per_s:.0f} init/s, failed {opened.failed}, {replayed:,} replayed); "
        f"{len(back_s):,} back, "
        f"the last after {last_s:.2f} s; {ready_note}; {storm.attempts:,} attempts, "
        f"errors {storm.errors}",
        file=sys.stderr,
    )
    note = (
        f"3 gateways, {opened.ready:,} connections on the one killed (SIGKILL), each with "
        f"1 stored message unacknowledged; raw connections in {STORM_WORKERS} client "
        "processes reconnecting with switchboard_client's backoff (full jitter, base 0.5 s), "
        f"open deadline and URL turn; {storm.attempts:,} attempts; history off"
    )
    return [
        Measurement(
            NAME,
            SWITCHBOARD,
            f"s from a gateway's kill to all {connections:,} ready and replayed",
            last_s,
            "s",
            "lower",
            lost=lost + opened.failed,
            note=note
            + (f"; {lost:,} not back within {STORM_TIMEOUT_S:.0f} s" if lost else ""),
        ),
        Measurement(
            NAME,
            SWITCHBOARD,
            f"p50 s to ready and replayed ({connections:,} reconnecting)",
            back[50],
            "s",
            "lower",
            note=ready_note,
        ),
        Measurement(
            NAME,
            SWITCHBOARD,
            f"p99 s to ready and replayed ({connections:,} reconnecting)",
            back[99],
            "s",
            "lower",
        ),
    ]


async def run(quick: bool) -> list[Measurement]:
    storm = QUICK_STORM if quick else STORM
    require_file_limit(storm)
    started = time.monotonic()
    measurements = await measure_logins(QUICK_LOGINS if quick else LOGINS)
    measurements += await measure_storm(storm)
    print(f"  {time.monotonic() - started:.1f} s in all", file=sys.stderr)
    return measurements
