"""A RabbitMQ cluster of three nodes of its own, on free loopback ports.

Started and removed by the test that uses it, as the ``rabbitmq`` user (whose Erlang cookie
the nodes share), each node with its own node name, ports, data and log directories,
configuration file and environment file, so that the machine's node (``rabbit@localhost`` on
5672, pinned by /etc/rabbitmq) is not touched. The second and third nodes join the first.
"""

import asyncio
import contextlib
import json
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from proto import env
from tests.support.stack import free_port

RABBITMQ_USER = "rabbitmq"
RABBITMQ_HOME = "/var/lib/rabbitmq"
"""The user's home: its ``.erlang.cookie`` lets the nodes and rabbitmqctl talk."""
NODES = 3
START_WITHIN_S = 120


@dataclass(frozen=True)
class Node:
    name: str
    amqp_port: int
    dist_port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    def environment(self) -> dict[str, str]:
        return {
            "HOME": RABBITMQ_HOME,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "data"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.directory / "rabbitmq.pid"),
        }


class RabbitMQCluster:
    """Three nodes joined in one cluster; ``stop``/``start`` one of them by index."""

    def __init__(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="rabbitmq-cluster-"))
        self._directory.chmod(0o755)
        nonce = secrets.token_hex(3)
        self.nodes = [
            Node(
                f"sb{index}{nonce}@localhost",
                free_port(),
                free_port(),
                self._directory / f"node{index}",
            )
            for index in range(NODES)
        ]
        self._running: set[str] = set()

    def amqp_url(self) -> str:
        """Every node's URL, comma-separated (``SWITCHBOARD_AMQP_URL``)."""
        return ",".join(node.url for node in self.nodes)

    def settings(self) -> dict[str, str]:
        """Every service on the cluster, each gateway with a replicated queue."""
        return {
            env.AMQP_URL: self.amqp_url(),
            env.API_AMQP_URL: self.amqp_url(),
            env.GATEWAY_QUEUE_TYPE: "quorum",
        }

    async def leader_of(self, queue: str) -> int:
        """The index of the node that leads a quorum queue, as a running node says."""
        for node in self.nodes:
            if node.name not in self._running:
                continue
            listed = await self.ctl(
                node, "list_queues", "-q", "--formatter", "json", "name", "leader"
            )
            for row in json.loads(listed):
                if row["name"] == queue:
                    return [n.name for n in self.nodes].index(row["leader"])
            raise LookupError(f"no queue {queue} on the cluster")
        raise RuntimeError("no node runs")

    async def start(self) -> None:
        for node in self.nodes:
            self._write_files(node)
        await asyncio.gather(*(self.start_node(index) for index in range(NODES)))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            await self.ctl(node, "stop_app")
            await self.ctl(node, "join_cluster", first.name)
            await self.ctl(node, "start_app")

    async def start_node(self, index: int) -> None:
        node = self.nodes[index]
        await _as_rabbitmq(node, "rabbitmq-server", "-detached")
        self._running.add(node.name)
        # await_startup fails at once while the node is still registering: ask again.
        deadline = time.monotonic() + START_WITHIN_S
        while True:
            try:
                await self.ctl(node, "await_startup", "--timeout", str(START_WITHIN_S))
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)  # the node boots; the deadline above bounds it

    async def stop_node(self, index: int) -> None:
        """Stop a node (its Erlang VM exits): a node lost, as far as the others see."""
        node = self.nodes[index]
        await self.ctl(node, "stop")
        self._running.discard(node.name)

    async def ctl(self, node: Node, *arguments: str) -> str:
        return await _as_rabbitmq(node, "rabbitmqctl", "-n", node.name, *arguments)

    async def close(self) -> None:
        for node in self.nodes:
            if node.name in self._running:
                with contextlib.suppress(RuntimeError):  # already gone
                    await self.ctl(node, "stop")
        self._running.clear()
        shutil.rmtree(self._directory, ignore_errors=True)

    def _write_files(self, node: Node) -> None:
        for sub in ("", "data", "log"):
            (node.directory / sub).mkdir(parents=True, exist_ok=True)
            shutil.chown(node.directory / sub, RABBITMQ_USER, RABBITMQ_USER)
        (node.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{node.amqp_port}\n"
            # A node that cannot see the majority pauses rather than diverge.
            "cluster_partition_handling = pause_minority\n"
        )
        (node.directory / "rabbitmq-env.conf").write_text(
            f"NODENAME={node.name}\n"
            "ERL_EPMD_ADDRESS=127.0.0.1\n"
            'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
        )
        (node.directory / "enabled_plugins").write_text("[].\n")


async def _as_rabbitmq(node: Node, *command: str) -> str:
    environment = " ".join(f"{k}={v}" for k, v in node.environment().items())
    process = await asyncio.create_subprocess_exec(
        "runuser",
        "-u",
        RABBITMQ_USER,
        "--",
        "env",
        *environment.split(" "),
        *command,
        cwd=RABBITMQ_HOME,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {process.returncode}: {output!r}"
        )
    return output.decode()
