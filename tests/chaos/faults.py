"""Faults the scenarios inject beyond signals: a TCP proxy that stops forwarding, and restarts of
the shared RabbitMQ, Redis and PostgreSQL.

The backing services on a developer machine are shared with other test runs, so a restart waits
until no other pytest runs (outside this process tree), and always brings the service back in a
``finally``, with the exact commands below.
"""

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

OTHERS_POLL_S = 2.0
OTHERS_WAIT_S = 600.0
SERVICE_BACK_S = 120.0


class SharedServiceBusy(Exception):
    """Another engineer's tests kept running: the shared service was not restarted."""


# The proxy: loopback only.


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` stops forwarding without closing.

    After the cut, both sides see an open TCP connection that carries nothing: the gateway's
    AMQP connection dies only by its heartbeat, as it would behind a broken network path.
    ``hold()`` stalls the link instead: nothing passes until ``release()``, then everything
    held passes in order, as from a broker that stopped answering for a while.
    """

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._is_cut = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    def cut(self) -> None:
        self._is_cut = True

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def mend(self) -> None:
        """Forward again, for new connections (the old ones stay dead, as after a cut link)."""
        self._is_cut = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self._target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        try:
            while chunk := await source.read(65536):
                await self._flowing.wait()
                if self._is_cut:
                    continue  # swallowed: the peer waits for bytes that never come
                sink.write(chunk)
                await sink.drain()
        except OSError:
            pass
        finally:
            if not self._is_cut:
                sink.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


# Shared services.


def own_tree() -> set[int]:
    """This process, its ancestors and its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    tree = {os.getpid()}
    pid = os.getpid()
    while pid in parents and parents[pid] > 1:
        pid = parents[pid]
        tree.add(pid)
    grew = True
    while grew:
        children = {p for p, parent in parents.items() if parent in tree} - tree
        grew = bool(children)
        tree |= children
    return tree


def other_pytests() -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", "pytest"], capture_output=True, text=True, check=False
    )
    mine = own_tree()
    return [int(p) for p in found.stdout.split() if int(p) not in mine]


async def wait_for_no_other_tests(within_s: float = OTHERS_WAIT_S) -> None:
    """Poll every 2 s until no other pytest runs.

    Raises:
        SharedServiceBusy: some still ran after ``within_s``.
    """
    deadline = time.monotonic() + within_s
    while others := other_pytests():
        if time.monotonic() > deadline:
            raise SharedServiceBusy(f"other pytest processes still running: {others}")
        await asyncio.sleep(OTHERS_POLL_S)  # the poll the shared-checkout rules ask for


async def run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {process.returncode}: {output!r}"
        )


async def wait_for_port(port: int, within_s: float = SERVICE_BACK_S) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # polling a port under the deadline above


def postgres_version() -> str:
    (version,) = os.listdir("/etc/postgresql")
    return version


async def restart_postgres() -> None:
    try:
        await run(
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            postgres_version(),
            "main",
            "restart",
        )
    finally:
        await wait_for_port(5432)


async def stop_redis() -> None:
    await run("redis-cli", "-h", "127.0.0.1", "shutdown", "nosave")


async def start_redis() -> None:
    try:
        await run(
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        )
    finally:
        await wait_for_port(6379)


async def stop_rabbitmq_app() -> None:
    await run("rabbitmqctl", "stop_app")


async def start_rabbitmq_app() -> None:
    await run("rabbitmqctl", "start_app")
    await wait_for_port(5672)


async def stop_rabbitmq() -> None:
    await run("rabbitmqctl", "stop")


async def start_rabbitmq() -> None:
    await run("rabbitmq-server", "-detached")
    # await_startup fails until the new node has registered with epmd: ask again meanwhile.
    deadline = time.monotonic() + SERVICE_BACK_S
    while True:
        try:
            await run("rabbitmqctl", "await_startup")
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            # The node is still booting; the deadline above bounds it.
            await asyncio.sleep(0.5)
    await wait_for_port(5672)


@asynccontextmanager
async def service_down(
    stop: Callable[[], Awaitable[None]], start: Callable[[], Awaitable[None]]
) -> AsyncIterator[None]:
    """Stop a shared service for the body of the block; start it again whatever happens."""
    try:
        await stop()
        yield
    finally:
        await start()
