"""The scenarios: a whole stack under load, one fault each, then the ledger's report.

Each scenario gets its own namespace and processes (tests/support/stack.py). It runs the load
for ``warmup_s``, injects its fault and repairs it (restart, resume, mend), keeps the load on for
``after_s``, stops sending, waits until deliveries go quiet, closes every client and logs every
user in once more to drain the offline store.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from proto import env
from tests.chaos import faults
from tests.chaos.checker import Report, report
from tests.chaos.load import Load, LoadShape, Probes, members, uid_of
from tests.support.api import open_backend
from tests.support.postgres_pair import PostgresPair
from tests.support.rabbitmq_cluster import RabbitMQCluster
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_sentinel import RedisSentinels
from tests.support.stack import Stack, new_namespace

AMQP_PORT = 5672
FREEZE_S = 5.0
"""Longer than the stack's SWITCHBOARD_GATEWAY_TTL_S (3 s): routers sweep the frozen gateway."""
OUTAGE_S = 4.0
"""How long a backing service stays down, or the proxy stays cut (after the heartbeat noticed)."""
AMQP_HEARTBEAT_S = 2
RECOVERY_WITHIN_S = 60.0


@dataclass
class Run:
    """What a scenario's fault acts on."""

    stack: Stack
    proxy: faults.CuttableProxy | None = None
    backing: "OwnBacking | None" = None
    fault_at: float = 0.0
    repaired_at: float = 0.0

    def fault(self) -> None:
        self.fault_at = time.monotonic()

    def repaired(self) -> None:
        self.repaired_at = time.monotonic()


Inject = Callable[[Run], Awaitable[None]]


class OwnBacking(Protocol):
    """A backing service a scenario starts for itself (RedisSentinels, PostgresPair,
    RabbitMQCluster, RedisCluster)."""

    def settings(self) -> dict[str, str]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Inject
    routers: int = 1
    stores: int = 1
    is_proxied: bool = False
    """The first gateway reaches RabbitMQ through a CuttableProxy."""
    restarts_shared: bool = False
    """Stops a shared backing service: waits for other test runs first."""
    own_backing: "Callable[[], OwnBacking] | None" = None
    """Makes the backing service of the scenario's own that the stack uses (its settings)
    instead of the machine's, started before the stack and removed after it."""
    settings: dict[str, str] = field(default_factory=dict)


# Faults on Switchboard processes.


async def kill_gateway(run: Run) -> None:
    gateway = run.stack.gateways[0]
    run.fault()
    await gateway.process.kill()
    await run.stack.restart_gateway(gateway)
    run.repaired()


async def kill_router(run: Run) -> None:
    run.fault()
    await run.stack.routers[0].kill()
    await run.stack.start_router()
    run.repaired()


async def kill_store(run: Run) -> None:
    run.fault()
    await run.stack.stores[0].kill()
    await run.stack.start_store()
    run.repaired()


async def drain_gateway(run: Run) -> None:
    gateway = run.stack.gateways[0]
    run.fault()
    code = await gateway.process.stop()
    if code != 0:
        raise AssertionError(f"the drained gateway exited with {code}")
    await run.stack.restart_gateway(gateway)
    run.repaired()


async def freeze_gateway(run: Run) -> None:
    process = run.stack.gateways[0].process
    run.fault()
    process.pause()
    try:
        await asyncio.sleep(FREEZE_S)  # the fault's length
    finally:
        process.resume()
    run.repaired()


async def cut_gateway_from_broker(run: Run) -> None:
    assert run.proxy is not None
    run.fault()
    run.proxy.cut()
    # Two missed AMQP heartbeats make both ends give the connection up; then a while more.
    await asyncio.sleep(AMQP_HEARTBEAT_S * 2 + OUTAGE_S)
    run.proxy.mend()
    run.repaired()


async def kill_one_router_and_one_store(run: Run) -> None:
    run.fault()
    await asyncio.gather(run.stack.routers[0].kill(), run.stack.stores[0].kill())
    run.repaired()  # the others carry on: nothing is restarted


# Faults on the shared backing services.


async def rabbitmq_stop_app(run: Run) -> None:
    await faults.wait_for_no_other_tests()
    run.fault()
    async with faults.service_down(faults.stop_rabbitmq_app, faults.start_rabbitmq_app):
        await asyncio.sleep(OUTAGE_S)  # the outage's length
    run.repaired()


async def rabbitmq_restart(run: Run) -> None:
    await faults.wait_for_no_other_tests()
    run.fault()
    async with faults.service_down(faults.stop_rabbitmq, faults.start_rabbitmq):
        pass
    run.repaired()


async def postgres_restart(run: Run) -> None:
    await faults.wait_for_no_other_tests()
    run.fault()
    await faults.restart_postgres()
    run.repaired()


async def redis_restart_empty(run: Run) -> None:
    await faults.wait_for_no_other_tests()
    run.fault()
    async with faults.service_down(faults.stop_redis, faults.start_redis):
        pass
    run.repaired()


async def redis_sentinel_failover(run: Run) -> None:
    sentinels = run.backing
    assert isinstance(sentinels, RedisSentinels)
    run.fault()
    killed = await sentinels.kill_master()
    await sentinels.wait_for_failover(killed)
    await sentinels.restart(killed)  # empty; the Sentinels make it a replica
    run.repaired()


async def rabbitmq_cluster_nodes_lost(run: Run) -> None:
    cluster = run.backing
    assert isinstance(cluster, RabbitMQCluster)
    names = run.stack.names
    run.fault()
    for queue in (names.router_queue, names.gateway_queue(run.stack.gateway_ids[0])):
        leader = await cluster.leader_of(queue)
        await cluster.stop_node(leader)
        await asyncio.sleep(OUTAGE_S)  # the node's outage
        await cluster.start_node(leader)
    run.repaired()


def busy_key(run: Run) -> str:
    """A key of the first user of the load, who sends and receives all along: its slot is
    the one the Redis Cluster scenarios fail."""
    return run.stack.names.presence_key(uid_of(0))


async def redis_cluster_failover(run: Run) -> None:
    cluster = run.backing
    assert isinstance(cluster, RedisCluster)
    key = busy_key(run)
    run.fault()
    killed = await cluster.kill_master(key)
    await cluster.wait_for_failover(key, killed)
    await cluster.restart(killed.port)  # empty; the cluster makes it a replica
    await cluster.wait_until_whole(RECOVERY_WITHIN_S)
    run.repaired()


async def redis_cluster_reshard(run: Run) -> None:
    cluster = run.backing
    assert isinstance(cluster, RedisCluster)
    source = await cluster.owner_of(busy_key(run))
    target = next(master for master in await cluster.masters() if master != source)
    run.fault()
    await cluster.reshard(source, target)
    run.repaired()


async def postgres_primary_switch(run: Run) -> None:
    pair = run.backing
    assert isinstance(pair, PostgresPair)
    run.fault()
    await pair.switch()
    run.repaired()


async def no_fault(run: Run) -> None:
    run.fault()
    run.repaired()


SCENARIOS = (
    Scenario("no fault", no_fault),
    Scenario("SIGKILL a gateway, restart it", kill_gateway),
    Scenario("SIGKILL the router, restart it", kill_router),
    Scenario("SIGKILL the offline store, restart it", kill_store),
    Scenario("SIGTERM (drain) a gateway, restart it", drain_gateway),
    Scenario(
        f"SIGSTOP a gateway for {FREEZE_S:g} s (TTL 3 s), SIGCONT", freeze_gateway
    ),
    Scenario(
        "a gateway cut from RabbitMQ (proxy stops forwarding), then mended",
        cut_gateway_from_broker,
        is_proxied=True,
    ),
    Scenario(
        "2 routers + 2 offline stores, SIGKILL one of each",
        kill_one_router_and_one_store,
        routers=2,
        stores=2,
    ),
    Scenario(
        f"RabbitMQ stop_app, {OUTAGE_S:g} s, start_app",
        rabbitmq_stop_app,
        restarts_shared=True,
    ),
    Scenario("RabbitMQ full restart", rabbitmq_restart, restarts_shared=True),
    Scenario("PostgreSQL restart", postgres_restart, restarts_shared=True),
    Scenario("Redis restart, empty", redis_restart_empty, restarts_shared=True),
    Scenario(
        "Redis Sentinel failover: SIGKILL the master, the replica promoted",
        redis_sentinel_failover,
        own_backing=RedisSentinels,
    ),
    Scenario(
        "RabbitMQ cluster of 3, quorum gateway queues: the router queue's leader node "
        "stopped and started, then a gateway queue's",
        rabbitmq_cluster_nodes_lost,
        own_backing=RabbitMQCluster,
    ),
    Scenario(
        "PostgreSQL primary crash, synchronous standby promoted",
        postgres_primary_switch,
        own_backing=PostgresPair,
    ),
    Scenario(
        "Redis Cluster of 3 masters with a replica each: SIGKILL the master of a busy "
        "uid's slot, its replica promoted",
        redis_cluster_failover,
        own_backing=RedisCluster,
    ),
    Scenario(
        "Redis Cluster of 3 masters with a replica each: every slot of a busy uid's "
        "master resharded to another master",
        redis_cluster_reshard,
        own_backing=RedisCluster,
    ),
)


async def start_stack(stack: Stack, scenario: Scenario, proxy_port: int | None) -> None:
    await asyncio.gather(
        *(stack.start_router() for _ in range(scenario.routers)),
        *(stack.start_store() for _ in range(scenario.stores)),
    )
    first: dict[str, str] = {}
    if proxy_port is not None:
        first[env.AMQP_URL] = (
            f"amqp://guest:guest@127.0.0.1:{proxy_port}/?heartbeat={AMQP_HEARTBEAT_S}"
        )
    await stack.start_gateway(**first)
    await stack.start_gateway()


async def run_scenario(scenario: Scenario, shape: LoadShape) -> Report:
    """Run one scenario on a fresh stack; the stack is stopped and removed whatever happens."""
    stack = Stack(new_namespace(), settings=dict(scenario.settings))
    proxy = faults.CuttableProxy(AMQP_PORT) if scenario.is_proxied else None
    backing = scenario.own_backing() if scenario.own_backing else None
    if backing is not None:
        stack.settings.update(backing.settings())
    run = Run(stack, proxy, backing)
    load: Load | None = None
    probes: Probes | None = None
    if scenario.restarts_shared:
        # Before the stack starts, so that the load does not run through the wait; the fault
        # checks again just before it stops the service.
        await faults.wait_for_no_other_tests()
    try:
        if proxy is not None:
            await proxy.start()
        if backing is not None:
            await backing.start()
        await start_stack(stack, scenario, proxy.port if proxy else None)
        amqp_url = stack.env().get(env.AMQP_URL, env.DEFAULT_AMQP_URL).split(",")[0]
        async with open_backend(stack.names, amqp_url) as backend:
            for group, uids in members(shape).items():
                await backend.call("group.add", {"group": group, "uids": uids})
        urls = [gateway.url for gateway in stack.gateways]
        load = Load(urls, shape)
        probes = Probes(urls[0], urls[1])
        await probes.start()
        await load.start()
        await asyncio.sleep(shape.warmup_s)  # steady load before the fault
        await scenario.inject(run)
        await asyncio.sleep(shape.after_s)  # load after the repair
        await probes.wait_served(run.repaired_at, RECOVERY_WITHIN_S)
        await load.stop_sending()
        await load.wait_quiet()
        await load.close()
        await load.drain()
        recovery_s = probes.recovery_s(run.fault_at, run.repaired_at)
        refused = load.ledger.rejected
        note = f"{refused} sends refused" if refused else ""
        return report(scenario.name, load.ledger, recovery_s, note)
    finally:
        if load is not None:
            await load.close()
        if probes is not None:
            await probes.close()
        for process in stack.processes:
            if process.is_running:
                process.resume()  # a frozen one must be able to stop
        problems = await stack.close()
        if proxy is not None:
            await proxy.close()
        if backing is not None:
            await backing.close()
        if problems:
            print("\n".join(problems))
