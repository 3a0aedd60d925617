"""Idle authenticated connections, held by worker processes apart from the servers they load.

``python -m bench.idle_clients --protocol P --uid-prefix X URL`` is one worker. It prints
``started``, then obeys one command per line on stdin and answers each with one JSON line:

    open N     open N more connections, each authenticated as the protocol wants, at most
               ``--concurrency`` handshakes at a time; answers {"ready", "failed",
               "compressed", "started", "finished", "errors"} (times on the system-wide
               monotonic clock)
    status     answers {"open": connections still open, "with_message": connections that
               have received a ``message`` frame}
    storm S    waits until every connection opened has come back after its close (below),
               at most S seconds; answers {"back": when each came back, "attempts",
               "errors"}
    exit       leaves at once: the kernel closes the sockets, as when clients vanish

With ``--reconnect-url`` (switchboard only), a connection that closes comes back as
``switchboard_client.Client`` would: the library's own reconnect delays
(``policy.reconnect_delay_s``, its default base and cap), its open deadline for the handshake
and again for ``ready`` (doubling after each failed attempt, up to its cap:
``policy.open_deadline_s``), and its turn through the URLs (the next one each attempt: this
connection's URL first, then the reconnect URLs, rotated by the connection's number so that the
clients of a lost gateway spread over the others, as the library's own random order of the URLs
spreads them: ``policy.url_order``). It is back once ``ready`` and then one ``message`` (the
replay of what it left unacknowledged) have arrived. Raw connections stand for the library's
clients: thousands of ``Client`` objects, each with its keepalive and token tasks, would take
the CPU the servers are measured with.

Protocols, each as a real client of that server speaks it:

    switchboard   {"type":"init","token":JWT} -> {"type":"ready",...}
    ws-relay      {"uid":UID} -> {"type":"ready"}
    socketio      Engine.IO v4 open packet "0{...}", Socket.IO v5 connect "40{"uid":UID}" ->
                  "40{"sid":...}"; every Engine.IO ping "2" is answered "3"
    websockets    the WebSocket handshake alone (a bare server, for reference)

``ClientWorkers`` starts and drives a set of workers from the benchmark process.
"""

import argparse
import asyncio
import inspect
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State

from switchboard_client import Client
from switchboard_client.policy import open_deadline_s, reconnect_delay_s
from tests.support.processes import REPO_ROOT, service_environment
from tests.support.tokens import make_token

PROTOCOLS = ("switchboard", "ws-relay", "socketio", "websockets")
OPEN_TIMEOUT_S = 60.0
"""From the TCP connect to the protocol's ready: thousands of handshakes may be queued."""
WORKER_START_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 180.0
EXIT_TIMEOUT_S = 10.0
ANSWER_LINE_LIMIT = 16 * 1024 * 1024
"""Longest answer line read from a worker: a storm answer lists each connection's times, about
20 bytes each (asyncio's default of 64 KiB held about 3,000)."""
ENGINEIO_PING = "2"
ENGINEIO_PONG = "3"
SOCKETIO_CONNECT = "40"
SOCKETIO_CONNECT_ERROR = "44"
CLIENT_DEFAULTS = inspect.signature(Client).parameters
"""The library's defaults, so that a reconnect here follows the same schedule."""
BACKOFF_BASE_S: float = CLIENT_DEFAULTS["backoff_base_s"].default
BACKOFF_MAX_S: float = CLIENT_DEFAULTS["backoff_max_s"].default
CLIENT_OPEN_TIMEOUT_S: float = CLIENT_DEFAULTS["open_timeout_s"].default
CLIENT_OPEN_TIMEOUT_MAX_S: float = CLIENT_DEFAULTS["open_timeout_max_s"].default


class OpenAnswer(msgspec.Struct, frozen=True):
    """A worker's answer to ``open``."""

    ready: int
    failed: int
    compressed: int
    """Connections that negotiated permessage-deflate (the client offers it, as browsers do)."""
    started: float
    finished: float
    errors: dict[str, int]


class StatusAnswer(msgspec.Struct, frozen=True):
    """A worker's answer to ``status``."""

    open: int
    with_message: int


class StormAnswer(msgspec.Struct, frozen=True):
    """A worker's answer to ``storm``."""

    back: list[float]
    """When each connection that came back had its replayed message (monotonic clock)."""
    ready: list[float]
    """When each of them had its ``ready``."""
    attempts: int
    """Reconnects tried, successful or not."""
    errors: dict[str, int]
    """Failed attempts by what went wrong."""


# The worker


class Worker:
    """The connections of one worker process, all to one URL."""

    def __init__(
        self,
        protocol: str,
        url: str,
        uid_prefix: str,
        concurrency: int,
        reconnect_urls: list[str],
    ) -> None:
        self._protocol = protocol
        self._url = url
        self._reconnect_urls = reconnect_urls
        self._uid_prefix = uid_prefix
        self._handshakes = asyncio.Semaphore(concurrency)
        self._opened = 0
        self._compressed = 0
        self._connections: list[ClientConnection] = []
        # One reader per connection: it answers Engine.IO pings and notices a close.
        self._readers: set[asyncio.Task[None]] = set()
        self._held = 0
        self._with_message = 0
        """Connections of an ``open`` that have received a ``message`` (switchboard)."""
        """Connections that reached ``ready`` in an ``open``."""
        self._back: list[float] = []
        self._ready: list[float] = []
        self._attempts = 0
        self._reconnect_errors: Counter[str] = Counter()
        self._all_back = asyncio.Event()
        """Set once every connection opened has come back (``storm``)."""

    async def open(self, count: int) -> OpenAnswer:
        first = self._opened
        self._opened += count
        compressed_before = self._compressed
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(
                self._open_one(f"{self._uid_prefix}-{n}")
                for n in range(first, first + count)
            )
        )
        finished = time.monotonic()
        errors = Counter(outcome for outcome in outcomes if outcome)
        failed = sum(errors.values())
        compressed = self._compressed - compressed_before
        return OpenAnswer(
            count - failed, failed, compressed, started, finished, dict(errors)
        )

    def status(self) -> StatusAnswer:
        return StatusAnswer(
            sum(1 for ws in self._connections if ws.state is State.OPEN),
            self._with_message,
        )

    async def storm(self, within_s: float) -> StormAnswer:
        try:
            async with asyncio.timeout(within_s):
                await self._all_back.wait()
        except TimeoutError:
            pass
        return StormAnswer(
            list(self._back),
            list(self._ready),
            self._attempts,
            dict(self._reconnect_errors),
        )

    async def _open_one(self, uid: str) -> str:
        """Open and authenticate one connection; return "" or what went wrong."""
        async with self._handshakes:
            try:
                async with asyncio.timeout(OPEN_TIMEOUT_S):
                    websocket = await connect(self._url, open_timeout=None)
                    try:
                        await self._authenticate(websocket, uid)
                    except BaseException:
                        websocket.transport.abort()
                        raise
            except TimeoutError:
                return "timeout"
            except Exception as exc:
                return type(exc).__name__
        self._connections.append(websocket)
        self._held += 1
        if websocket.protocol.extensions:
            self._compressed += 1
        reader = asyncio.create_task(self._read(websocket, uid, len(self._connections)))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        return ""

    async def _authenticate(self, websocket: ClientConnection, uid: str) -> None:
        if self._protocol == "switchboard":
            await websocket.send(
                json.dumps({"type": "init", "token": make_token(uid, ttl_s=3600)})
            )
            reply = json.loads(await websocket.recv())
            if reply.get("type") != "ready":
                raise RuntimeError(f"init refused: {reply.get('code')}")
        elif self._protocol == "ws-relay":
            await websocket.send(json.dumps({"uid": uid}))
            reply = json.loads(await websocket.recv())
            if reply.get("type") != "ready":
                raise RuntimeError("relay refused the uid")
        elif self._protocol == "socketio":
            opening = await websocket.recv()
            if not isinstance(opening, str) or not opening.startswith("0"):
                raise RuntimeError("no Engine.IO open packet")
            await websocket.send(SOCKETIO_CONNECT + json.dumps({"uid": uid}))
            while True:
                packet = await websocket.recv()
                if packet == ENGINEIO_PING:
                    await websocket.send(ENGINEIO_PONG)
                elif isinstance(packet, str) and packet.startswith(SOCKETIO_CONNECT):
                    return
                elif isinstance(packet, str) and packet.startswith(
                    SOCKETIO_CONNECT_ERROR
                ):
                    raise RuntimeError("Socket.IO connect refused")

    async def _read(self, websocket: ClientConnection, uid: str, number: int) -> None:
        has_message = False
        try:
            async for packet in websocket:
                if self._protocol == "socketio" and packet == ENGINEIO_PING:
                    await websocket.send(ENGINEIO_PONG)
                elif self._protocol == "switchboard" and not has_message:
                    has_message = json.loads(packet).get("type") == "message"
                    self._with_message += has_message
        except ConnectionClosed:
            pass
        if self._reconnect_urls:
            close_code = websocket.close_code
            await self._come_back(
                uid, number, None if close_code == 1006 else close_code
            )

    async def _come_back(self, uid: str, number: int, close_code: int | None) -> None:
        """Reconnect as ``switchboard_client.Client._reconnect_forever`` does, until ``ready``
        and the replayed message."""
        shift = number % len(self._reconnect_urls)
        urls = [
            self._url,
            *self._reconnect_urls[shift:],
            *self._reconnect_urls[:shift],
        ]
        index = 1  # the library's turn: the connection that closed used urls[0]
        attempt = 0
        while True:
            await asyncio.sleep(
                reconnect_delay_s(
                    attempt, close_code, BACKOFF_BASE_S, BACKOFF_MAX_S, random.random
                )
            )
            attempt += 1
            self._attempts += 1
            url = urls[index % len(urls)]
            index += 1
            close_code = None
            # attempt - 1 reconnects failed before this one (the library's count since ready)
            deadline_s = open_deadline_s(
                attempt - 1, CLIENT_OPEN_TIMEOUT_S, CLIENT_OPEN_TIMEOUT_MAX_S
            )
            try:
                websocket = await connect(
                    url,
                    open_timeout=deadline_s,
                    ping_interval=None,
                    compression=None,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                self._reconnect_errors[type(exc).__name__] += 1
                continue
            try:
                await self._wait_for_replay(websocket, uid, deadline_s)
            except (TimeoutError, RuntimeError) as exc:
                self._reconnect_errors[str(exc) or "no ready in time"] += 1
                websocket.transport.abort()
                continue
            except ConnectionClosed:
                self._reconnect_errors["closed before the replay"] += 1
                close_code = websocket.close_code
                continue
            self._back.append(time.monotonic())
            self._connections.append(websocket)
            if len(self._back) >= self._held:
                self._all_back.set()
            return

    async def _wait_for_replay(
        self, websocket: ClientConnection, uid: str, deadline_s: float
    ) -> None:
        """``init``, ``ready`` within the attempt's open deadline, then one ``message``."""
        await websocket.send(
            json.dumps({"type": "init", "token": make_token(uid, ttl_s=3600)})
        )
        async with asyncio.timeout(deadline_s):
            reply = json.loads(await websocket.recv())
        if reply.get("type") != "ready":
            raise RuntimeError(f"init refused: {reply.get('code')}")
        self._ready.append(time.monotonic())
        while json.loads(await websocket.recv()).get("type") != "message":
            pass


async def serve_commands(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(commands), sys.stdin
    )
    print("started", flush=True)
    while line := (await commands.readline()).decode().split():  # until stdin closes
        answer: OpenAnswer | StatusAnswer | StormAnswer
        match line:
            case ["open", count]:
                answer = await worker.open(int(count))
            case ["status"]:
                answer = worker.status()
            case ["storm", within_s]:
                answer = await worker.storm(float(within_s))
            case ["exit"]:
                # Thousands of closing handshakes would load the server after the
                # measurement, and nothing here needs cleaning: leave at once, and let the
                # kernel close the sockets.
                sys.stdout.flush()
                os._exit(0)
            case _:
                raise ValueError(f"unknown command {' '.join(line)!r}")
        sys.stdout.buffer.write(msgspec.json.encode(answer) + b"\n")
        sys.stdout.flush()


def worker_main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_clients")
    parser.add_argument("--protocol", choices=PROTOCOLS, required=True)
    parser.add_argument("--uid-prefix", required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--reconnect-url",
        action="append",
        default=[],
        help="switchboard: where a connection that closes reconnects (repeat for more)",
    )
    parser.add_argument("url")
    args = parser.parse_args()
    worker = Worker(
        args.protocol,
        args.url,
        args.uid_prefix,
        args.concurrency,
        args.reconnect_url,
    )
    asyncio.run(serve_commands(worker))


# The benchmark's side


@dataclass(frozen=True, slots=True)
class Opened:
    """What one ``open`` across every worker gave."""

    ready: int
    failed: int
    compressed: int
    duration_s: float
    """From the first worker's start to the last worker's last ready."""
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.ready / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Storm:
    """What ``storm`` across every worker gave."""

    back: list[float]
    """When each connection came back with its replayed message, in order."""
    ready: list[float]
    """When each had its ``ready``, in order."""
    attempts: int
    errors: dict[str, int]


@dataclass
class ClientWorkers:
    """Worker processes, each holding connections to one URL."""

    processes: list[asyncio.subprocess.Process]
    uid_prefix: str

    @classmethod
    async def start(
        cls,
        protocol: str,
        urls: list[str],
        uid_prefix: str,
        concurrency: int = 50,
        reconnect_urls: list[str] | None = None,
    ) -> "ClientWorkers":
        """Start one worker per URL (repeat a URL for several workers on one server); with
        ``reconnect_urls``, their connections come back there when closed."""
        workers = cls([], uid_prefix)
        reconnecting = [
            argument
            for url in reconnect_urls or []
            for argument in ("--reconnect-url", url)
        ]
        try:
            for n, url in enumerate(urls):
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.idle_clients",
                    "--protocol",
                    protocol,
                    "--uid-prefix",
                    f"{uid_prefix}w{n}",
                    "--concurrency",
                    str(concurrency),
                    *reconnecting,
                    url,
                    cwd=REPO_ROOT,
                    env=service_environment({}),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=ANSWER_LINE_LIMIT,
                )
                workers.processes.append(process)
            async with asyncio.timeout(WORKER_START_TIMEOUT_S):
                for process in workers.processes:
                    assert process.stdout is not None
                    line = await process.stdout.readline()
                    if line.strip() != b"started":
                        raise RuntimeError(f"client worker did not start: {line!r}")
        except BaseException:
            await workers.stop()
            raise
        return workers

    async def _ask_all(self, commands: list[str]) -> list[bytes]:
        """Send one command to each worker, all at once; return their answer lines."""
        for process, command in zip(self.processes, commands, strict=True):
            assert process.stdin is not None
            process.stdin.write(f"{command}\n".encode())
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            return list(
                await asyncio.gather(*(self._answer(p) for p in self.processes))
            )

    @staticmethod
    async def _answer(process: asyncio.subprocess.Process) -> bytes:
        assert process.stdout is not None
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"client worker exited with {await process.wait()}")
        return line

    def _shares(self, total: int) -> list[int]:
        return [
            total // len(self.processes) + (1 if n < total % len(self.processes) else 0)
            for n in range(len(self.processes))
        ]

    def uids(self, total: int) -> list[str]:
        """The uids of the connections a first ``open(total)`` authenticates."""
        return [
            f"{self.uid_prefix}w{worker}-{n}"
            for worker, share in enumerate(self._shares(total))
            for n in range(share)
        ]

    async def open(self, total: int) -> Opened:
        """Open ``total`` more connections, shared evenly, every worker at once."""
        lines = await self._ask_all([f"open {share}" for share in self._shares(total)])
        answers = [msgspec.json.decode(line, type=OpenAnswer) for line in lines]
        errors: Counter[str] = Counter()
        for answer in answers:
            errors.update(answer.errors)
        return Opened(
            ready=sum(a.ready for a in answers),
            failed=sum(a.failed for a in answers),
            compressed=sum(a.compressed for a in answers),
            duration_s=max(a.finished for a in answers)
            - min(a.started for a in answers),
            errors=dict(errors),
        )

    async def _status(self) -> list[StatusAnswer]:
        lines = await self._ask_all(["status"] * len(self.processes))
        return [msgspec.json.decode(line, type=StatusAnswer) for line in lines]

    async def count_open(self) -> int:
        return sum(answer.open for answer in await self._status())

    async def count_with_message(self) -> int:
        """Connections that have received a ``message`` frame."""
        return sum(answer.with_message for answer in await self._status())

    async def storm(self, within_s: float) -> Storm:
        """Wait, at most ``within_s``, for every connection to come back after its close."""
        lines = await self._ask_all([f"storm {within_s}"] * len(self.processes))
        answers = [msgspec.json.decode(line, type=StormAnswer) for line in lines]
        errors: Counter[str] = Counter()
        for answer in answers:
            errors.update(answer.errors)
        return Storm(
            sorted(when for answer in answers for when in answer.back),
            sorted(when for answer in answers for when in answer.ready),
            sum(answer.attempts for answer in answers),
            dict(errors),
        )

    async def stop(self) -> None:
        """Ask every worker to leave; kill one that does not within the deadline."""
        for process in self.processes:
            if process.returncode is None and process.stdin is not None:
                process.stdin.write(b"exit\n")
                process.stdin.close()
        for process in self.processes:
            try:
                async with asyncio.timeout(EXIT_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


if __name__ == "__main__":
    worker_main()
