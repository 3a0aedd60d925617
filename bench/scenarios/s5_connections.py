"""Scenario 5: connection setup rate, and server memory per idle authenticated connection.

Client worker processes (``bench/idle_clients.py``) open connections to each system, every
worker at once, each with a bounded number of handshakes in flight, and authenticate them as
that system wants. The first batch gives the setup rate (from the first connect to the last
``ready``). The servers' resident memory (VmRSS) is read before any connection, after the first
batch and after the second, each time after a settle period, and the growth is divided by the
connections held. A connection that failed to open, or closed before the end, counts as lost.

Systems: Switchboard with two gateways (their RSS summed; the router, the offline store and the
broker are not counted); the single-process websockets relay; python-socketio on two processes
sharing an aio-pika channel (RSS summed); and, for reference, a bare websockets server, with
the first batch only. A peer whose module is missing is left out, with a line on stderr.

Once measured, the servers are killed rather than stopped: closing thousands of connections
gracefully (for Switchboard, a confirmed publish and a Redis update each) would take longer
than the measurement, and tells nothing about it.
"""

import asyncio
import importlib.util
import resource
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from bench import systems
from bench.harness import PeerProcess, start_peer
from bench.idle_clients import ClientWorkers, Opened
from bench.report import SOCKETIO, SWITCHBOARD, WS_RELAY, Measurement
from bench.servers import delete_exchange, rss_kib
from proto.env import DEFAULT_AMQP_URL
from tests.support.stack import free_port

NAME = "5 connections"
BARE = "websockets-bare"
"""Reference only: a websockets server that accepts and reads, nothing else."""

WS_RELAY_MODULE = "bench.peers.ws_relay"
SOCKETIO_MODULE = "bench.peers.socketio_server"
BARE_MODULE = "bench.bare_websockets"

FIRST_BATCH = 5_000
SECOND_BATCH = 5_000
QUICK_FIRST_BATCH = 1_000
QUICK_SECOND_BATCH = 1_000
HANDSHAKES_PER_WORKER = 50
"""Handshakes in flight per worker: two workers stay within a listener's accept backlog (100)."""
SETTLE_S = 1.0
"""Pause before reading RSS, for the buffers of the setup burst to be released or reused."""
SPARE_FILES = 1_000
"""Descriptors a server needs besides its clients' sockets (broker, logs, libraries)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A system to load: where its clients connect, and which processes hold the connections."""

    system: str
    protocol: str
    urls: list[str]
    """One client worker per URL."""
    pids: list[int]
    note: str
    is_reference: bool = False
    """Measured with the first batch only."""

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) for pid in self.pids)


async def kill_peer(server: PeerProcess) -> None:
    server.process.kill()
    await server.stop()


@asynccontextmanager
async def switchboard() -> AsyncIterator[Target]:
    async with systems.switchboard(gateways=2) as system:
        assert system.stack is not None
        gateways = system.stack.gateways
        yield Target(
            SWITCHBOARD,
            "switchboard",
            system.urls,
            [gateway.process.process.pid for gateway in gateways],
            "2 gateways (RSS of both), init with a JWT until ready",
        )
        for gateway in gateways:
            await gateway.process.kill()


@asynccontextmanager
async def ws_relay() -> AsyncIterator[Target]:
    port = free_port()
    server = await start_peer(WS_RELAY, WS_RELAY_MODULE, "--port", str(port))
    try:
        url = f"ws://127.0.0.1:{port}/"
        yield Target(
            WS_RELAY,
            "ws-relay",
            [url, url],
            [server.process.pid],
            "1 process, uid frame",
        )
    finally:
        await kill_peer(server)


@asynccontextmanager
async def socketio() -> AsyncIterator[Target]:
    channel = f"bench-s5-{uuid.uuid4().hex[:12]}"
    async with AsyncExitStack() as servers:
        # Its queues are exclusive and go with the servers' connections; the exchange stays.
        servers.push_async_callback(delete_exchange, DEFAULT_AMQP_URL, channel)
        urls, pids = [], []
        for _ in range(2):
            port = free_port()
            server = await start_peer(
                SOCKETIO,
                SOCKETIO_MODULE,
                *(
                    "--port",
                    str(port),
                    "--amqp-url",
                    DEFAULT_AMQP_URL,
                    "--channel",
                    channel,
                ),
            )
            servers.push_async_callback(kill_peer, server)
            urls.append(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket")
            pids.append(server.process.pid)
        yield Target(
            SOCKETIO,
            "socketio",
            urls,
            pids,
            "2 processes (RSS of both), AsyncAioPikaManager; Socket.IO connect with auth",
        )


@asynccontextmanager
async def bare() -> AsyncIterator[Target]:
    port = free_port()
    server = await start_peer(BARE, BARE_MODULE, "--port", str(port))
    try:
        url = f"ws://127.0.0.1:{port}/"
        yield Target(
            BARE,
            "websockets",
            [url, url],
            [server.process.pid],
            "reference: 1 process, handshake only",
            is_reference=True,
        )
    finally:
        await kill_peer(server)


def listen_overflows() -> int:
    """Connections this host refused because a listener's accept queue was full (TcpExt
    ListenOverflows, all processes): the client retries a second later, which the setup rate
    would then measure instead of the server."""
    with open("/proc/net/netstat", encoding="ascii") as netstat:
        lines = netstat.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(counters.get("ListenOverflows", 0))
    return 0


def is_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def compression_note(opened: Opened) -> str:
    if not opened.compressed:
        return "no compression"
    return f"permessage-deflate negotiated on {opened.compressed:,} of {opened.ready:,}"


def rss_note(before_kib: int, after_kib: int) -> str:
    return f"RSS {before_kib / 1024:.0f} -> {after_kib / 1024:.0f} MiB"


async def measure(
    target: Target, first_batch: int, second_batch: int
) -> list[Measurement]:
    """Open the batches of connections to ``target``; return its rate and memory figures."""
    started = time.monotonic()
    workers = await ClientWorkers.start(
        target.protocol, target.urls, f"s5{uuid.uuid4().hex[:6]}", HANDSHAKES_PER_WORKER
    )
    overflows_before = listen_overflows()
    try:
        baseline_kib = target.rss_kib()
        first = await workers.open(first_batch)
        await asyncio.sleep(SETTLE_S)
        first_kib = target.rss_kib()
        if target.is_reference:
            second = None
        else:
            second = await workers.open(second_batch)
            await asyncio.sleep(SETTLE_S)
            second_kib = target.rss_kib()
        still_open = await workers.count_open()
    finally:
        await workers.stop()
    overflows = listen_overflows() - overflows_before
    opened = first.ready + (second.ready if second else 0)
    dropped = opened - still_open
    print(
        f"  {target.system}: {first.per_s:.0f}"
        + (f" then {second.per_s:.0f}" if second else "")
        + f" init/s, failed {first.failed + (second.failed if second else 0)} "
        f"{first.errors | (second.errors if second else {})}, dropped {dropped}, "
        f"{overflows} accept queue overflows, {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    in_flight = HANDSHAKES_PER_WORKER
    workers_note = (
        f"{len(target.urls)} client processes, {in_flight} handshakes in flight each"
    )
    measurements = [
        Measurement(
            NAME,
            target.system,
            f"init/s until ready ({first_batch:,} opening)",
            first.per_s,
            "init/s",
            "higher",
            lost=first.failed,
            note=f"{target.note}; {workers_note}",
        ),
        Measurement(
            NAME,
            target.system,
            f"KiB per idle connection at {first_batch:,}",
            (first_kib - baseline_kib) / max(first.ready, 1),
            "KiB",
            "lower",
            lost=0 if second else dropped,
            note=f"{rss_note(baseline_kib, first_kib)}; {compression_note(first)}",
        ),
    ]
    if second:
        measurements.append(
            Measurement(
                NAME,
                target.system,
                f"KiB per idle connection at {first_batch + second_batch:,}",
                (second_kib - baseline_kib) / max(still_open, 1),
                "KiB",
                "lower",
                lost=second.failed + dropped,
                note=rss_note(baseline_kib, second_kib),
            )
        )
    return measurements


def require_file_limit(connections: int) -> None:
    """The single-process relay holds every connection: it needs that many descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + SPARE_FILES:
        raise RuntimeError(
            f"{connections:,} connections need RLIMIT_NOFILE >= {connections + SPARE_FILES:,}, "
            f"it is {soft:,} (hard limit {hard:,}): raise the hard limit (ulimit -Hn)"
        )


async def run(quick: bool) -> list[Measurement]:
    first_batch = QUICK_FIRST_BATCH if quick else FIRST_BATCH
    second_batch = QUICK_SECOND_BATCH if quick else SECOND_BATCH
    require_file_limit(first_batch + second_batch)
    systems: list[tuple[Callable[[], AbstractAsyncContextManager[Target]], str]] = [
        (switchboard, "gateway"),
        (ws_relay, WS_RELAY_MODULE),
        (socketio, SOCKETIO_MODULE),
        (bare, BARE_MODULE),
    ]
    measurements: list[Measurement] = []
    for start, module in systems:
        if not is_available(module):
            print(f"  {module} is missing: left out", file=sys.stderr)
            continue
        started = time.monotonic()
        async with start() as target:
            measurements += await measure(target, first_batch, second_batch)
        print(
            f"  {target.system}: {time.monotonic() - started:.1f} s in all",
            file=sys.stderr,
        )
    return measurements
