"""Processes of a benchmark: peer servers, load workers, and the statistics of what they report.

Every process is started with this interpreter from the repository's root, without asyncio's
debug mode, and is stopped (SIGTERM, then SIGKILL after a deadline) by whoever started it.
"""

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
REPLY_MARGIN_S = 60.0
"""Added to a phase's own length for the deadline of a load worker's answer."""
OUTPUT_LINES_KEPT = 200
START_DELAY_S = 0.2
"""Between sending a phase's command and its start: time for it to reach every worker."""


def process_environment() -> dict[str, str]:
    env = dict(os.environ)
    # Debug mode makes every process several times slower.
    env.pop("PYTHONASYNCIODEBUG", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


async def spawn(module: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=REPO_ROOT,
        env=process_environment(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        limit=1 << 26,  # a worker's answer carries every latency of a phase
    )


async def stop_process(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, wait, SIGKILL after STOP_TIMEOUT_S; return the exit code."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            return await process.wait()
    except TimeoutError:
        process.kill()
        return await process.wait()


Result = TypeVar("Result")


async def run_to_result(
    module: str, *args: str, within_s: float, result: type[Result]
) -> Result:
    """Run ``python -m module args`` to its end; decode the last JSON line it printed."""
    process = await spawn(module, *args)
    try:
        async with asyncio.timeout(within_s):
            output, _ = await process.communicate()
    finally:
        await stop_process(process)
    text = output.decode(errors="replace")
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return msgspec.json.decode(line, type=result)
    raise RuntimeError(
        f"{module} {' '.join(args[:1])} exited with {process.returncode}:\n{text}"
    )


@dataclass
class PeerProcess:
    """A peer server (``bench.peers.*``), ready once it printed ``ready``."""

    name: str
    process: asyncio.subprocess.Process
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES_KEPT))
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.output.append(raw.decode(errors="replace").rstrip("\n"))

    async def stop(self) -> int:
        code = await stop_process(self.process)
        if self.reader is not None:
            await self.reader
        return code


async def start_peer(name: str, module: str, *args: str) -> PeerProcess:
    process = await spawn(module, *args)
    peer = PeerProcess(name, process)
    assert process.stdout is not None
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while (line := await process.stdout.readline()) != b"ready\n":
                if not line:
                    raise RuntimeError(f"{name} exited with {await process.wait()}")
                peer.output.append(line.decode(errors="replace").rstrip("\n"))
    except BaseException:
        await stop_process(process)
        print(f"--- {name} ---", *peer.output, sep="\n", file=sys.stderr)
        raise
    peer.reader = asyncio.create_task(peer._read())
    return peer


class LoadWorker:
    """One ``python -m bench.load`` process: its connections, and the phases it plays."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.errors: deque[str] = deque(maxlen=OUTPUT_LINES_KEPT)

    @classmethod
    async def start(cls, name: str, plan: dict[str, Any]) -> "LoadWorker":
        worker = cls(name, await spawn("bench.load"))
        try:
            await worker._write(plan)
            connections = len(plan.get("pairs", [])) * 2 + len(
                (plan.get("room") or {}).get("members", [])
            )
            await worker._read_answer(READY_TIMEOUT_S + connections / 50)
        except BaseException:
            await worker.close()
            raise
        return worker

    async def _write(self, line: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(line).encode() + b"\n")
        await self.process.stdin.drain()

    async def _read_answer(self, within_s: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(within_s):
            while line := await self.process.stdout.readline():
                text = line.decode(errors="replace")
                if text.startswith("{"):
                    answer: dict[str, Any] = json.loads(text)
                    return answer
                self.errors.append(text.rstrip("\n"))
        raise RuntimeError(
            f"load worker {self.name} exited with {await self.process.wait()}:\n"
            + "\n".join(self.errors)
        )

    async def request(self, command: dict[str, Any], within_s: float) -> dict[str, Any]:
        await self._write(command)
        return await self._read_answer(within_s + REPLY_MARGIN_S)

    async def close(self) -> None:
        if self.process.returncode is None:
            try:
                await self._write({"cmd": "quit"})
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self._read_answer(STOP_TIMEOUT_S)
                    await self.process.wait()
            except (TimeoutError, RuntimeError, ConnectionError):
                pass
        await stop_process(self.process)


@contextlib.asynccontextmanager
async def load_workers(
    plans: Sequence[dict[str, Any]],
) -> AsyncIterator[list[LoadWorker]]:
    """Start one load process per plan, all at once; close them all at the end."""
    started = await asyncio.gather(
        *(LoadWorker.start(f"load{i + 1}", plan) for i, plan in enumerate(plans)),
        return_exceptions=True,
    )
    workers = [worker for worker in started if isinstance(worker, LoadWorker)]
    try:
        for failure in started:
            if isinstance(failure, BaseException):
                raise failure
        yield workers
    finally:
        await asyncio.gather(*(worker.close() for worker in workers))


@dataclass(frozen=True)
class PhaseResult:
    """What the load workers saw in one phase, merged."""

    sent: int
    owed: int
    received: int
    lost: int
    errors: int
    in_window: int
    window_s: float
    latencies_us: list[int]
    load_cpu_s: float
    """CPU time the load processes spent in the phase, sending and receiving included."""

    @property
    def delivered_per_s(self) -> float:
        return self.in_window / self.window_s if self.window_s else 0.0

    @property
    def load_cpu_us_per_message(self) -> float:
        return self.load_cpu_s * 1e6 / self.received if self.received else 0.0

    def latency_ms(self, quantile: float) -> float:
        return percentile(self.latencies_us, quantile) / 1000


async def play(
    workers: Sequence[LoadWorker],
    command: dict[str, Any],
    *,
    warmup_s: float,
    measure_s: float,
    drain_s: float,
) -> PhaseResult:
    """Run one phase on every worker at once (the same start instant); collect the results."""
    start_ns = time.monotonic_ns() + int(START_DELAY_S * 1e9)
    phase = {
        **command,
        "start_ns": start_ns,
        "warmup_s": warmup_s,
        "measure_s": measure_s,
    }
    length_s = START_DELAY_S + warmup_s + measure_s
    sent = await asyncio.gather(*(w.request(phase, length_s) for w in workers))
    total_sent = sum(s["sent"] for s in sent)
    collect = {"cmd": "collect", "expected": total_sent, "drain_s": drain_s}
    parts = await asyncio.gather(*(w.request(collect, drain_s) for w in workers))
    errors = sum(p["errors"] for p in parts)
    closed = sum(p["closed_early"] for p in parts)
    if errors or closed:
        print(
            f"  warning: {errors} error frames, {closed} connections closed by the server",
            file=sys.stderr,
            flush=True,
        )
    return PhaseResult(
        sent=total_sent,
        owed=sum(p["owed"] for p in parts),
        received=sum(p["received"] for p in parts),
        lost=sum(p["lost"] for p in parts),
        errors=errors,
        in_window=sum(p["in_window"] for p in parts),
        window_s=measure_s,
        latencies_us=[value for p in parts for value in p["latencies_us"]],
        load_cpu_s=sum(p["cpu_s"] for p in parts),
    )


def percentile(values: Sequence[float], quantile: float) -> float:
    """Nearest-rank percentile (``quantile`` in [0, 1]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(quantile * len(ordered)))
    return float(ordered[rank - 1])
