"""The systems under test, each started in its own namespace and removed whole afterwards.

``async with switchboard() as system`` (or ``socketio_servers()``, ``ws_relay()``) yields a
``System``: one WebSocket URL per server process ("side"), the load dialect that speaks its
frames (``bench/load.py``), and the configuration that goes in each measurement's note.
"""

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from bench import report
from bench.harness import PeerProcess, start_peer
from bench.servers import bench_stack, close_stack, delete_exchange
from proto import env
from tests.support.stack import Stack, free_port

AMQP_URL = env.DEFAULT_AMQP_URL

SWITCHBOARD_NOTE = (
    "{routers}, 1 offline store, {gateways} gateways (bench/servers.py settings: log level "
    "warning, rate limits out of reach); quorum router queue, persistent confirmed "
    "publishes, client acks"
)
HISTORY_SETTINGS = {env.HISTORY: "on"}
HISTORY_NOTE = (
    "SWITCHBOARD_HISTORY=on: each message written and numbered in PostgreSQL before "
    "it is delivered"
)
RELAY_SETTINGS = {env.HISTORY: "off"}
RELAY_NOTE = "SWITCHBOARD_HISTORY=off: a relay, messages kept only until acknowledged"
SOCKETIO_PREFETCH = 100


@dataclass
class System:
    name: str
    """One of the report's system names."""
    dialect: str
    """The load process's dialect for it (``bench/load.py``)."""
    urls: list[str]
    """One WebSocket URL per server process."""
    note: str
    stack: Stack | None = None
    """Switchboard's processes and names; None for the peers."""
    channel: str = ""
    """python-socketio's channel (its fanout exchange); empty for the others."""
    peers: list[PeerProcess] = field(default_factory=list)


@asynccontextmanager
async def switchboard(
    gateways: int = 2,
    dialect: str = "switchboard",
    history: bool = False,
    routers: int = 1,
) -> AsyncIterator[System]:
    """Switchboard as a relay (``SWITCHBOARD_HISTORY=off``, the system ``switchboard``, like
    the peers) or, with ``history``, as configured by default (``SWITCHBOARD_HISTORY=on``,
    the system ``switchboard-history``). Both are set explicitly: a default that changes must
    not change what a system's name measures."""
    stack = bench_stack(**(HISTORY_SETTINGS if history else RELAY_SETTINGS))
    note = SWITCHBOARD_NOTE.format(
        gateways=gateways,
        routers="1 router" if routers == 1 else f"{routers} routers",
    )
    try:
        await stack.start(gateways=gateways, routers=routers)
        yield System(
            name=report.SWITCHBOARD_HISTORY if history else report.SWITCHBOARD,
            dialect=dialect,
            urls=[gateway.url for gateway in stack.gateways],
            note=f"{note}; {HISTORY_NOTE if history else RELAY_NOTE}",
            stack=stack,
        )
    finally:
        await close_stack(stack)


@asynccontextmanager
async def socketio_servers(
    servers: int = 2, prefetch: int = SOCKETIO_PREFETCH
) -> AsyncIterator[System]:
    channel = f"bench-sio-{uuid.uuid4().hex[:12]}"
    ports = [free_port() for _ in range(servers)]
    started = await asyncio.gather(
        *(
            start_peer(
                f"socketio{index + 1}",
                "bench.peers.socketio_server",
                "--port",
                str(port),
                "--amqp-url",
                AMQP_URL,
                "--channel",
                channel,
                "--prefetch",
                str(prefetch),
            )
            for index, port in enumerate(ports)
        ),
        return_exceptions=True,
    )
    peers = [peer for peer in started if isinstance(peer, PeerProcess)]
    try:
        for failure in started:
            if isinstance(failure, BaseException):
                raise failure
        yield System(
            name=report.SOCKETIO,
            dialect="socketio",
            urls=[f"ws://127.0.0.1:{port}" for port in ports],
            note=(
                f"{servers} processes, AsyncServer (aiohttp) + AsyncAioPikaManager, "
                f"consumer prefetch {prefetch} (library: 1), one fanout publish per emit "
                "(persistent, confirmed); no acks: at most once"
            ),
            channel=channel,
            peers=peers,
        )
    finally:
        await stop_peers(peers)
        await delete_exchange(AMQP_URL, channel)


@asynccontextmanager
async def ws_relay() -> AsyncIterator[System]:
    port = free_port()
    peer = await start_peer("ws-relay", "bench.peers.ws_relay", "--port", str(port))
    try:
        yield System(
            name=report.WS_RELAY,
            dialect="relay",
            urls=[f"ws://127.0.0.1:{port}"],
            note=(
                "1 process, websockets, uid -> connections in memory, broadcast() writes; "
                "no broker, no store, no acks"
            ),
            peers=[peer],
        )
    finally:
        await stop_peers([peer])


async def stop_peers(peers: list[PeerProcess]) -> None:
    codes = await asyncio.gather(*(peer.stop() for peer in peers))
    for peer, code in zip(peers, codes, strict=True):
        if code != 0:
            print(
                f"{peer.name} exited with {code}:",
                *peer.output,
                sep="\n",
                file=sys.stderr,
            )
