"""Redis servers a test starts on free loopback ports, in a directory of their own: the parts the
Sentinel and Cluster engines share (``redis_sentinel.py``, ``redis_cluster.py``).

Nothing is kept on disk beyond the directory; the machine's Redis on 6379 is never touched.
"""

import asyncio
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis.asyncio as redis
from redis.exceptions import RedisError


def start_redis_server(
    directory: Path, port: int, *arguments: str
) -> subprocess.Popen[bytes]:
    """``redis-server`` on 127.0.0.1:``port``, its files in ``directory/<port>``, with
    ``arguments`` after the common ones; return at once (``wait_for_ping`` waits for it)."""
    home = directory / str(port)
    home.mkdir(exist_ok=True)
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(home),
            "--logfile",
            str(home / "redis.log"),
            *arguments,
        ]
    )


async def wait_for_ping(port: int, within_s: float) -> None:
    """Poll a starting Redis server (or Sentinel) on ``port`` until it answers PING."""
    deadline = time.monotonic() + within_s
    while True:
        client = redis.Redis(port=port, socket_timeout=1)
        try:
            if await client.ping():
                return
        except (RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(
                0.1
            )  # polling a starting server under the deadline above
        finally:
            await client.aclose()


def kill_all(processes: dict[int, subprocess.Popen[bytes]], directory: Path) -> None:
    """SIGKILL every process, wait for each, forget them, and remove their directory."""
    for process in processes.values():
        process.send_signal(signal.SIGKILL)
    for process in processes.values():
        process.wait()
    processes.clear()
    shutil.rmtree(directory, ignore_errors=True)
