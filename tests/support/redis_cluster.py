"""A Redis Cluster of three masters, each with a replica, on free loopback ports of its own.

Started and removed by the test that uses it (its files live in a temporary directory), so it
never touches the machine's Redis on 6379. Each server runs with ``--cluster-enabled yes`` and
``redis-cli --cluster create ... --cluster-replicas 1`` joins the six. A cluster node also
listens on its port + 10000 (the cluster bus), so ports are picked below 55535 with both free.

``kill_master`` SIGKILLs the master that serves a key's slot, ``wait_for_failover`` waits until
its replica took the slot over and the cluster is whole again, and ``restart`` brings the
killed one back (empty, as after a crash without persistence: the cluster makes it a replica
of the new master). ``reshard`` moves every slot of one master to another with
``redis-cli --cluster reshard``, keys included, while clients go on.
"""

import asyncio
import random
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as redis
from redis.crc import key_slot
from redis.exceptions import RedisError

from proto import env
from tests.support.redis_servers import kill_all, start_redis_server, wait_for_ping

MASTERS = 3
NODE_TIMEOUT_MS = 1000
"""How long a master may not answer before the others deem it failed (``cluster-node-timeout``)."""
BUS_PORT_OFFSET = 10_000
"""A cluster node's bus listens on its port + 10000."""
HIGHEST_PORT = 65_535 - BUS_PORT_OFFSET
START_WITHIN_S = 30.0
FAILOVER_WITHIN_S = 30.0
RESHARD_WITHIN_S = 300.0


@dataclass(frozen=True, slots=True)
class SlotOwner:
    """Who serves one slot: the master's port and node id."""

    port: int
    node_id: str


class RedisCluster:
    """Six servers: three masters that share the 16384 slots, a replica of each."""

    def __init__(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        self.ports = _cluster_ports(MASTERS * 2)
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    def settings(self) -> dict[str, str]:
        """The router's settings to reach the cluster through its first node (a seed)."""
        return {
            env.REDIS_CLUSTER: "true",
            env.REDIS_URL: f"redis://127.0.0.1:{self.ports[0]}/0",
        }

    async def start(self) -> None:
        for port in self.ports:
            self._start_server(port)
        for port in self.ports:
            await wait_for_ping(port, START_WITHIN_S)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        await _run(
            "redis-cli",
            "--cluster",
            "create",
            *nodes,
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        )
        await self.wait_until_whole(START_WITHIN_S)

    async def owner_of(self, key: str) -> SlotOwner:
        """The master that serves ``key``'s slot, as a running node says."""
        slot = key_slot(key.encode())
        for start, end, owner in await self._slot_ranges():
            if start <= slot <= end:
                return owner
        raise LookupError(f"no master serves slot {slot}")

    async def kill_master(self, key: str) -> SlotOwner:
        """SIGKILL the master that serves ``key``'s slot; return it."""
        owner = await self.owner_of(key)
        process = self._processes.pop(owner.port)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return owner

    async def wait_for_failover(self, key: str, killed: SlotOwner) -> None:
        """Wait until a master other than ``killed`` serves ``key``'s slot and every slot is
        served again."""
        deadline = time.monotonic() + FAILOVER_WITHIN_S
        while True:
            try:
                if (await self.owner_of(key)).port != killed.port:
                    break
            except (RedisError, OSError, LookupError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"port {killed.port} still serves {key!r}")
            await asyncio.sleep(0.2)  # polling the cluster under the deadline above
        await self.wait_until_serving(FAILOVER_WITHIN_S)

    async def restart(self, port: int) -> None:
        """Start a killed server again with its cluster configuration (it rejoins)."""
        self._start_server(port)
        await wait_for_ping(port, START_WITHIN_S)

    async def reshard(self, source: SlotOwner, target: SlotOwner) -> int:
        """Move every slot ``source`` serves, with its keys, to ``target``; return how many."""
        count = sum(
            end - start + 1
            for start, end, owner in await self._slot_ranges()
            if owner == source
        )
        await _run(
            "redis-cli",
            "--cluster",
            "reshard",
            f"127.0.0.1:{target.port}",
            "--cluster-from",
            source.node_id,
            "--cluster-to",
            target.node_id,
            "--cluster-slots",
            str(count),
            "--cluster-yes",
            timeout_s=RESHARD_WITHIN_S,
        )
        await self.wait_until_whole(START_WITHIN_S)
        return count

    async def masters(self) -> list[SlotOwner]:
        """The masters that serve slots now."""
        owners = {owner for _, _, owner in await self._slot_ranges()}
        return sorted(owners, key=lambda owner: owner.port)

    async def wait_until_whole(self, within_s: float) -> None:
        """Wait until every running node says the cluster is ok and every master that serves
        slots has a replica connected."""
        await self._wait_until(within_s, with_replicas=True)

    async def wait_until_serving(self, within_s: float) -> None:
        """Wait until every running node says the cluster is ok (every slot served)."""
        await self._wait_until(within_s, with_replicas=False)

    async def close(self) -> None:
        kill_all(self._processes, self._directory)

    async def _wait_until(self, within_s: float, *, with_replicas: bool) -> None:
        deadline = time.monotonic() + within_s
        while not await self._is_whole(with_replicas):
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster is not whole")
            await asyncio.sleep(0.2)  # polling the nodes under the deadline above

    async def _is_whole(self, with_replicas: bool) -> bool:
        try:
            for port in self._processes:
                client = redis.Redis(port=port, socket_timeout=1)
                try:
                    info = await client.cluster("INFO")
                finally:
                    await client.aclose()
                if info.get("cluster_state") != "ok":
                    return False
            for master in await self.masters() if with_replicas else []:
                client = redis.Redis(port=master.port, socket_timeout=1)
                try:
                    replication = await client.info("replication")
                finally:
                    await client.aclose()
                if int(replication.get("connected_slaves", 0)) < 1:
                    return False
        except (RedisError, OSError):
            return False
        return True

    async def _slot_ranges(self) -> list[tuple[int, int, SlotOwner]]:
        """Each range of slots with its master (``CLUSTER SLOTS``), as the first running
        node answers."""
        for port in self._processes:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                rows = await client.execute_command("CLUSTER SLOTS")
            except (RedisError, OSError):
                continue
            finally:
                await client.aclose()
            # Each row: start, end, then [host, port, node id, ...] of the master, replicas'.
            return [
                (int(start), int(end), SlotOwner(int(master[1]), _text(master[2])))
                for start, end, master, *_ in rows
            ]
        raise RuntimeError("no cluster node answered")

    def _start_server(self, port: int) -> None:
        directory = self._directory / str(port)
        self._processes[port] = start_redis_server(
            self._directory,
            port,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(directory / "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            # A replica takes over however long it was cut from its master.
            "--cluster-replica-validity-factor",
            "0",
        )


def _cluster_ports(count: int) -> list[int]:
    """Ports below ``HIGHEST_PORT`` that are free, their bus ports (+10000) too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20_000, HIGHEST_PORT)
        if port in ports or port + BUS_PORT_OFFSET in ports:
            continue
        if _is_free(port) and _is_free(port + BUS_PORT_OFFSET):
            ports.append(port)
    return ports


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _run(*command: str, timeout_s: float = START_WITHIN_S) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])} exited {process.returncode}: {output.decode()}"
        )
    return output.decode()
