"""A Redis master, its replica and three Sentinels, on free loopback ports of their own.

Started and removed by the test that uses them (their files live in a temporary directory), so
they never touch the machine's Redis on 6379. ``kill_master`` SIGKILLs whichever server is the
master now, ``wait_for_failover`` waits until the Sentinels name another, and ``restart``
brings the killed one back (empty, as after a crash without persistence: the Sentinels make it
a replica of the new master).
"""

import asyncio
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as redis
from redis.exceptions import RedisError

from proto import env
from tests.support.redis_servers import kill_all, start_redis_server, wait_for_ping
from tests.support.stack import free_port

MASTER_NAME = "switchboard"
DOWN_AFTER_MS = 1000
"""How long a master may not answer before a Sentinel deems it down."""
FAILOVER_TIMEOUT_MS = 5000
START_WITHIN_S = 10.0
FAILOVER_WITHIN_S = 30.0

MasterCheck = Callable[[int, int], bool]
"""Given the port the Sentinels name and its replica count: is this the state waited for?"""


class RedisSentinels:
    """A master, a replica and three Sentinels that watch them (quorum 2)."""

    def __init__(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="sentinels-"))
        self.server_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    def settings(self) -> dict[str, str]:
        """The router's settings to reach the master through the Sentinels."""
        sentinels = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return {
            env.REDIS_SENTINELS: sentinels,
            env.REDIS_MASTER: MASTER_NAME,
            env.REDIS_URL: "redis://127.0.0.1/0",
        }

    async def start(self) -> None:
        master, replica = self.server_ports
        self._start_server(master)
        self._start_server(replica, "--replicaof", "127.0.0.1", str(master))
        for port in self.sentinel_ports:
            self._start_sentinel(port, master)
        for port in (*self.server_ports, *self.sentinel_ports):
            await wait_for_ping(port, START_WITHIN_S)
        await self._wait_until(
            lambda master_port, replicas: master_port == master and replicas == 1
        )
        await self._wait_for_sentinels_to_know_each_other()

    async def master_port(self) -> int:
        """The master's port as the first Sentinel that answers names it."""
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                address = await client.sentinel_get_master_addr_by_name(MASTER_NAME)
                assert isinstance(address, tuple), address
                return int(address[1])
            except (RedisError, OSError):
                continue
            finally:
                await client.aclose()
        raise RuntimeError("no Sentinel answered")

    async def kill_master(self) -> int:
        """SIGKILL the master; return its port."""
        port = await self.master_port()
        process = self._processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return port

    async def wait_for_failover(self, old_port: int) -> None:
        """Wait until the Sentinels name a master other than ``old_port``."""
        await self._wait_until(lambda master_port, _: master_port != old_port)

    async def restart(self, port: int) -> None:
        self._start_server(port)
        await wait_for_ping(port, START_WITHIN_S)

    async def close(self) -> None:
        kill_all(self._processes, self._directory)

    def _start_server(self, port: int, *arguments: str) -> None:
        self._processes[port] = start_redis_server(self._directory, port, *arguments)

    def _start_sentinel(self, port: int, master_port: int) -> None:
        config = self._directory / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {self._directory}\n"
            f"logfile {self._directory / f'sentinel-{port}.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        )
        self._processes[port] = subprocess.Popen(
            ["redis-server", str(config), "--sentinel"]
        )

    async def _wait_for_sentinels_to_know_each_other(self) -> None:
        """Wait until every Sentinel knows the replica and the two other Sentinels.

        A Sentinel learns of a replica from the master's INFO and of the other Sentinels from
        their hello messages, seconds after it starts: a master killed before that has no
        replica to promote, or no majority to elect the Sentinel that would promote it.
        """
        others = len(self.sentinel_ports) - 1
        deadline = time.monotonic() + START_WITHIN_S
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                while True:
                    state = await client.sentinel_master(MASTER_NAME)
                    assert isinstance(state, dict), state
                    if (
                        int(state["num-slaves"]) >= 1
                        and int(state["num-other-sentinels"]) >= others
                    ):
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"Sentinel {port} knows only {state}")
                    await asyncio.sleep(0.2)  # polling the Sentinel under the deadline
            finally:
                await client.aclose()

    async def _wait_until(self, holds: MasterCheck) -> None:
        deadline = time.monotonic() + FAILOVER_WITHIN_S
        while True:
            master_port = await self.master_port()
            client = redis.Redis(port=master_port, socket_timeout=1)
            try:
                info = await client.info("replication")
                is_master = info.get("role") == "master"
                replicas = int(info.get("connected_slaves", 0))
            except (RedisError, OSError):
                is_master, replicas = False, 0
            finally:
                await client.aclose()
            if is_master and holds(master_port, replicas):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Sentinels still name {master_port}")
            await asyncio.sleep(0.2)  # polling the Sentinels under the deadline above
