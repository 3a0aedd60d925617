"""Switchboard services as real processes: start, wait for ``service_ready``, stop.

Each process's output (JSON log lines) is collected; tests wait for log events with a deadline,
and the stack prints every process's output when a test fails.
"""

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proto.logs import READY_EVENT
from tests.support.timing import scaled

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
LAST_LINES_ON_HANG = 30
"""How much of a hung process's log a failed stop shows: enough to see which step it was in."""


@dataclass
class ServiceProcess:
    """One running service (``python -m gateway`` and so on) and what it printed."""

    name: str
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    async def _read_output(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.append(event)
                self._changed.set()
        self._changed.set()

    async def wait_for_event(
        self, event: str, within_s: float = 10.0, **keys: Any
    ) -> dict[str, Any]:
        """Return the first log line with this event (and these key values), waiting for it."""
        async with asyncio.timeout(scaled(within_s)):
            while True:
                for seen in self.events:
                    if seen.get("event") == event and all(
                        seen.get(k) == v for k, v in keys.items()
                    ):
                        return seen
                if (
                    self.process.returncode is not None
                    and self._reader is not None
                    and self._reader.done()
                ):
                    raise AssertionError(
                        f"{self.name} exited with {self.process.returncode} before {event}"
                    )
                self._changed.clear()
                await self._changed.wait()

    def count_events(self, event: str) -> int:
        return sum(1 for seen in self.events if seen.get("event") == event)

    @property
    def is_running(self) -> bool:
        return self.process.returncode is None

    async def stop(self) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait_exit()

    def pause(self) -> None:
        """SIGSTOP: the process is frozen, its sockets stay open."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    async def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.process.returncode is None:
            self.process.kill()
        await self.wait_exit()

    async def wait_exit(self) -> int:
        try:
            async with asyncio.timeout(scaled(STOP_TIMEOUT_S)):
                code = await self.process.wait()
                if self._reader is not None:
                    await self._reader
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            last = "\n".join(self.lines[-LAST_LINES_ON_HANG:])
            raise AssertionError(
                f"{self.name} did not exit within {STOP_TIMEOUT_S} s; its last lines:\n{last}"
            ) from None
        return code

    def output(self) -> str:
        return "\n".join(self.lines)


def service_environment(env: dict[str, str]) -> dict[str, str]:
    """This process's environment with ``env`` on top, for a service process.

    The test process runs in asyncio debug mode; the services run as they do in production
    (debug mode makes them several times slower, and timing matters to the failure tests).
    """
    full_env = {**os.environ, **env}
    full_env.pop("PYTHONASYNCIODEBUG", None)
    return full_env


async def spawn_service(
    name: str, module: str, env: dict[str, str], args: Sequence[str] = ()
) -> ServiceProcess:
    """Start ``python -m module [args]`` with ``env`` over this process's environment,
    collecting its output; return at once."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=REPO_ROOT,
        env=service_environment(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        limit=1 << 20,
    )
    service = ServiceProcess(name=name, process=process)
    service._reader = asyncio.create_task(service._read_output(), name=f"read-{name}")
    return service


async def start_service(
    name: str, module: str, env: dict[str, str], args: Sequence[str] = ()
) -> ServiceProcess:
    """``spawn_service``, then wait until the service logs that it is ready."""
    service = await spawn_service(name, module, env, args)
    try:
        await service.wait_for_event(READY_EVENT, within_s=START_TIMEOUT_S)
    except BaseException:
        await service.kill()
        print(f"--- {name} output ---\n{service.output()}")
        raise
    return service


async def run_until_exit(
    module: str, env: dict[str, str], within_s: float = 20.0
) -> tuple[int, str, str]:
    """Run ``python -m module`` to its exit (a startup that must fail); return code and output."""
    full_env = service_environment(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        cwd=REPO_ROOT,
        env=full_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(scaled(within_s)):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
