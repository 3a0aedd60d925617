"""A throwaway RabbitMQ node of the test's own, with a small ``max_message_size``.

The shared broker's configuration is never changed: this starts a second node on free ports,
as the ``rabbitmq`` user, with its own node name, data and log directories, configuration and
environment files (the system's pin port 5672), no plugins; it stops the node (SIGTERM to its
process group) and deletes its directory on exit. Needs root (for ``runuser``) and a local
RabbitMQ installation; the test is skipped otherwise.
"""

import asyncio
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aio_pika

from tests.support.stack import free_port
from tests.support.timing import scaled

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def missing_requirement() -> str | None:
    """Why a throwaway node cannot be started here, or None."""
    if os.geteuid() != 0:
        return "starting a RabbitMQ node as the rabbitmq user needs root"
    for tool in ("runuser", "rabbitmq-server"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _prepare_home(max_message_size: int, port: int) -> Path:
    """A directory the rabbitmq user owns, with the node's configuration files."""
    home = Path(tempfile.mkdtemp(prefix="sbrmq."))
    home.chmod(0o755)  # the rabbitmq user must be able to enter it
    (home / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\n"
        f"max_message_size = {max_message_size}\n"
    )
    (home / "rabbitmq-env.conf").write_text("")
    (home / "enabled_plugins").write_text("[].\n")
    shutil.chown(home, "rabbitmq", "rabbitmq")
    for entry in home.iterdir():
        shutil.chown(entry, "rabbitmq", "rabbitmq")
    return home


@asynccontextmanager
async def small_broker(max_message_size: int) -> AsyncIterator[str]:
    """Run a RabbitMQ node refusing messages over ``max_message_size``; yield its AMQP URL."""
    port, dist_port = free_port(), free_port()
    home = _prepare_home(max_message_size, port)
    environ = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "RABBITMQ_NODENAME": f"sbtest{uuid.uuid4().hex[:8]}@localhost",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(home / "data"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
        "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }
    process = await asyncio.create_subprocess_exec(
        "runuser",
        "-u",
        "rabbitmq",
        "--",
        "env",
        *(f"{key}={value}" for key, value in environ.items()),
        "rabbitmq-server",
        cwd=home,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stopped as a whole below
    )
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    try:
        await _wait_until_serving(url, process)
        yield url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(scaled(STOP_TIMEOUT_S)):
                await process.wait()
                await _wait_for_group_exit(process.pid)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        shutil.rmtree(home, ignore_errors=True)


async def _wait_until_serving(url: str, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(scaled(START_TIMEOUT_S)):
        while True:
            if process.returncode is not None:
                raise AssertionError(
                    f"rabbitmq-server exited with {process.returncode}"
                )
            try:
                connection = await aio_pika.connect(url, timeout=2)
            except Exception:
                # Polling a port; the deadline above synchronises.
                await asyncio.sleep(0.5)
                continue
            await connection.close()
            return


async def _wait_for_group_exit(group: int) -> None:
    """The node's processes (beam, epmd helpers) outlive the runuser parent briefly."""
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        # Polling for exits; the caller's deadline synchronises.
        await asyncio.sleep(0.2)
