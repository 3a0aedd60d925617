"""Run a whole Switchboard stack locally: a router, an offline store and two gateways.

Development only (``make run``). Each service runs as ``python -m <package>`` in its own
process group; its output is printed with the service's name in front. When one service
exits, or on Ctrl-C / SIGTERM, the others are stopped with SIGTERM (gateways first, so
that they can hand their connections over), and killed if they outlive the deadline.
"""

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from proto import env
from proto.logs import READY_EVENT

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 20.0
"""Longer than a service's own shutdown deadline (SWITCHBOARD_SHUTDOWN_TIMEOUT_S)."""
HIDDEN_KEYS = frozenset({"event", "level", "timestamp"})


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    module: str
    environ: Mapping[str, str] = field(default_factory=dict)
    is_gateway: bool = False


def gateway(gateway_id: str, port: int) -> ServiceSpec:
    environ = {
        env.GATEWAY_ID: gateway_id,
        env.GATEWAY_PORT: str(port),
        # Loopback unless asked otherwise: the development secret is no secret.
        env.GATEWAY_HOST: os.environ.get(env.GATEWAY_HOST, "127.0.0.1"),
    }
    return ServiceSpec(gateway_id, "gateway", environ, is_gateway=True)


SERVICES = (
    ServiceSpec("router", "router"),
    ServiceSpec("store", "offline_store"),
    gateway("gw1", 8001),
    gateway("gw2", 8002),
)
WIDTH = max(len(spec.name) for spec in SERVICES)


def render(line: str) -> str:
    """A JSON log line as ``time level event key=value ...``; other lines as they are."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict) or "event" not in entry:
        return line
    clock = str(entry.get("timestamp", ""))[11:23]
    level = str(entry.get("level", ""))
    pairs = " ".join(f"{k}={v}" for k, v in entry.items() if k not in HIDDEN_KEYS)
    return f"{clock} {level:<7} {entry['event']} {pairs}".rstrip()


def is_ready_line(line: str) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and entry.get("event") == READY_EVENT


def say(text: str) -> None:
    print(f"{'stack':<{WIDTH}} | {text}", flush=True)


class Service:
    """One running service process and the task that copies its output."""

    def __init__(self, spec: ServiceSpec, process: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.process = process
        self.ready = asyncio.Event()

    async def copy_output(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if is_ready_line(line):
                self.ready.set()
            print(f"{self.spec.name:<{WIDTH}} | {render(line)}", flush=True)

    async def stop(self) -> int:
        """SIGTERM, wait, SIGKILL after the deadline; returns the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                return await self.process.wait()
        except TimeoutError:
            say(f"{self.spec.name} did not stop within {STOP_TIMEOUT_S:.0f} s: killed")
            self.process.kill()
            return await self.process.wait()


async def start(spec: ServiceSpec) -> Service:
    environ = {**os.environ, **spec.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        spec.module,
        cwd=REPO_ROOT,
        env=environ,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Own process group: Ctrl-C reaches this script only, which stops the
        # services in order.
        start_new_session=True,
        limit=1 << 20,
    )
    return Service(spec, process)


def print_banner() -> None:
    urls = "  ".join(
        f"ws://127.0.0.1:{s.environ[env.GATEWAY_PORT]}/ws"
        for s in SERVICES
        if s.is_gateway
    )
    say(f"all services are ready; connect to {urls}")
    say("mint a token with: make token USER=alice")
    say('then send: {"type":"init","token":"<token>"}; stop with Ctrl-C')


async def announce_when_ready(services: list[Service]) -> None:
    for service in services:
        await service.ready.wait()
    print_banner()


async def run() -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    services: list[Service] = []
    copiers: list[asyncio.Task[None]] = []
    exits: list[asyncio.Task[int]] = []
    crashed: list[Service] = []
    try:
        for spec in SERVICES:
            service = await start(spec)
            services.append(service)
            copiers.append(asyncio.create_task(service.copy_output()))
            exits.append(asyncio.create_task(service.process.wait()))
        announcer = asyncio.create_task(announce_when_ready(services))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
        announcer.cancel()
        stopping.cancel()
        crashed = [s for s in services if s.process.returncode is not None]
        for service in crashed:
            code = service.process.returncode
            say(f"{service.spec.name} exited with {code}: stopping the stack")
    finally:
        gateways = [s for s in services if s.spec.is_gateway]
        others = [s for s in services if not s.spec.is_gateway]
        codes = []
        for group in (gateways, others):
            codes += await asyncio.gather(*(s.stop() for s in group))
        await asyncio.gather(*copiers)
    if crashed:
        return 1
    failed = [
        (s.spec.name, c) for s, c in zip(gateways + others, codes, strict=True) if c
    ]
    for name, code in failed:
        say(f"{name} exited with {code}")
    return 1 if failed else 0


def main() -> int:
    missing = [
        s.module
        for s in SERVICES
        if not (REPO_ROOT / s.module / "__main__.py").is_file()
    ]
    if missing:
        print(f"run_stack: no __main__.py in {', '.join(missing)} yet", file=sys.stderr)
        return 1
    if not os.environ.get(env.JWT_SECRET):
        print(
            f"run_stack: set {env.JWT_SECRET} (make run sets a development one)",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
