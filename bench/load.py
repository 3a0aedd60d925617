"""A load process: client connections to one system, and the phases the scenario sends it.

Started by ``bench/harness.py`` (``LoadWorker``), never by hand: ``python -m bench.load`` reads
one JSON line, its plan::

    {"dialect": "switchboard" | "switchboard-client" | "socketio" | "relay",
     "urls": [one WebSocket URL per server],
     "pairs": [[sender uid, sender's server index, partner uid, partner's server index], ...],
     "room": {"name": ROOM, "members": [[uid, server index], ...], "sender": uid}}

opens every connection (and joins the room), prints ``{"event": "ready"}``, then answers each
command line on stdin with one JSON line on stdout:

``{"cmd": "saturate", "window": W, "start_ns", "warmup_s", "measure_s"}``
    Closed loop: each pair's sender keeps ``W`` messages on their way to its partner.
``{"cmd": "rate", "rate": R, "start_ns", "warmup_s", "measure_s"}``
    Open loop: ``R`` messages per second in all, round robin over the pairs, each sent at its
    scheduled time whatever the replies (a late one carries its scheduled time).
``{"cmd": "room", "rate": R, "start_ns", "warmup_s", "measure_s"}``
    Open loop: the room's sender (in one worker) sends ``R`` room messages per second.
``{"cmd": "listen", "start_ns", "warmup_s", "measure_s"}``
    Sends nothing: the room members (a room without a name joins none) count what another
    process sends them in this phase, a backend's ``api.send`` (``bench/peers/api_send.py``).

Each answers ``{"sent": N}`` when its sending ends. Then ``{"cmd": "collect", "expected": N,
"drain_s": S}`` waits until every message owed arrived (room members are owed ``expected``
messages each; with ``"owed": N`` instead, N in all) or ``S`` seconds passed, and answers
with the counts and the latencies.
``{"cmd": "quit"}`` closes the connections.

Each body is ``{"k": phase, "n": sequence, "t": send time}``: ``time.monotonic_ns()``, one
clock for every process of the host, so the receiver computes the end-to-end latency.
Messages are counted once each (Switchboard delivers at least once); those of an earlier phase
are ignored.
"""

import abc
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from switchboard_client import Client
from tests.support.tokens import make_token

OPEN_TIMEOUT_S = 20.0
OPENING_AT_ONCE = 200
"""Connections opened concurrently: enough to be quick, few enough not to time out."""
CLOSE_TIMEOUT_S = 5.0

decode = msgspec.json.decode
OnBody = Callable[[dict[str, Any]], None]


def body_text(phase: int, n: int, t_ns: int) -> str:
    return f'{{"k":{phase},"n":{n},"t":{t_ns}}}'


# Dialects: one connection of one system, speaking its frames.


class Connection(abc.ABC):
    """One client connection; ``on_body`` gets the body of every message it receives."""

    def __init__(self, uid: str, on_body: OnBody) -> None:
        self.uid = uid
        self.on_body = on_body
        self.errors = 0
        self.closed_early = False
        self._reader: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def open(self, url: str) -> None:
        """Connect, authenticate, and start reading; return once the server is ready."""

    @abc.abstractmethod
    async def send_to(self, to: str, phase: int, n: int, t_ns: int) -> None:
        """Send message ``n`` of the phase to ``to``'s connections."""

    @abc.abstractmethod
    async def join(self, room: str) -> None:
        """Join the room; return once the server confirmed."""

    @abc.abstractmethod
    async def send_room(self, room: str, phase: int, n: int, t_ns: int) -> None:
        """Send message ``n`` of the phase to the room."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection and wait for its reader."""


class WebSocketConnection(Connection):
    """A raw ``websockets`` connection: the same client code path for every system."""

    ws: ClientConnection

    def __init__(self, uid: str, on_body: OnBody) -> None:
        super().__init__(uid, on_body)
        self._replies: dict[str, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)
        self._closing = False

    async def _connect(self, url: str) -> None:
        self.ws = await connect(
            url, compression=None, open_timeout=OPEN_TIMEOUT_S, max_size=None
        )

    async def _open_with_hello(
        self, url: str, hello: dict[str, Any], what: str
    ) -> None:
        """Connect, send ``hello`` (named ``what`` in errors: it may hold a token), wait for a
        ``ready`` frame, then read in the background."""
        await self._connect(url)
        await self.ws.send(json.dumps(hello))
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            frame = decode(await self.ws.recv())
        if frame.get("type") != "ready":
            raise RuntimeError(f"{self.uid}: {what} answered {frame}")
        self._start_reading()

    def _start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                await self.on_frame(text)
        except ConnectionClosed:
            pass
        self.closed_early = not self._closing

    @abc.abstractmethod
    async def on_frame(self, text: str | bytes) -> None:
        """Handle one frame from the server."""

    async def _request(self, client_id: str, text: str) -> None:
        reply = asyncio.get_running_loop().create_future()
        self._replies[client_id] = reply
        await self.ws.send(text)
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            await reply

    def _answer(self, client_id: str, error: str | None = None) -> None:
        reply = self._replies.pop(client_id, None)
        if reply is None or reply.done():
            return
        if error is None:
            reply.set_result(None)
        else:
            reply.set_exception(RuntimeError(f"{self.uid}: {error}"))

    async def close(self) -> None:
        self._closing = True
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await self.ws.close()
        if self._reader is not None:
            await self._reader


class SwitchboardConnection(WebSocketConnection):
    """Switchboard's frames (proto/frames.py), acknowledging each message as it arrives."""

    def __init__(self, uid: str, on_body: OnBody, rooms: list[str]) -> None:
        super().__init__(uid, on_body)
        self._token = make_token(uid, ttl_s=3600, rooms=rooms)

    async def open(self, url: str) -> None:
        await self._open_with_hello(url, {"type": "init", "token": self._token}, "init")

    async def on_frame(self, text: str | bytes) -> None:
        frame = decode(text)
        kind = frame.get("type")
        if kind == "message":
            self.on_body(frame["body"])
            if "room" not in frame:  # room messages take no ack
                await self.ws.send(f'{{"type":"ack","mids":["{frame["mid"]}"]}}')
        elif kind == "joined":
            self._answer(frame["id"])
        elif kind == "error":
            self.errors += 1
            self._answer(frame.get("id") or "", f"{frame.get('code')}")

    async def send_to(self, to: str, phase: int, n: int, t_ns: int) -> None:
        body = body_text(phase, n, t_ns)
        await self.ws.send(
            f'{{"type":"send","id":"{phase}.{n}","to":"{to}","body":{body}}}'
        )

    async def join(self, room: str) -> None:
        client_id = f"j{next(self._ids)}"
        await self._request(
            client_id, f'{{"type":"join","id":"{client_id}","room":"{room}"}}'
        )

    async def send_room(self, room: str, phase: int, n: int, t_ns: int) -> None:
        body = body_text(phase, n, t_ns)
        await self.ws.send(
            f'{{"type":"send","id":"{phase}.{n}","room":"{room}","body":{body}}}'
        )


class SwitchboardClientConnection(Connection):
    """Switchboard through its Python client (``switchboard_client.Client``)."""

    def __init__(self, uid: str, on_body: OnBody, rooms: list[str]) -> None:
        super().__init__(uid, on_body)
        self._token = make_token(uid, ttl_s=3600, rooms=rooms)
        self._sends: set[asyncio.Task[None]] = set()
        self._closing = False

    async def open(self, url: str) -> None:
        self.client = Client(url, self._token, open_timeout_s=OPEN_TIMEOUT_S)
        await self.client.start(ready_timeout_s=OPEN_TIMEOUT_S)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.client.messages():  # acknowledges each one
            self.on_body(message.body)
        self.closed_early = not self._closing

    def _spawn(self, sending: Awaitable[str]) -> None:
        # The client waits for each ``sent``; a task per send keeps the pacing open loop.
        task = asyncio.ensure_future(self._count_errors(sending))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _count_errors(self, sending: Awaitable[str]) -> None:
        try:
            await sending
        except Exception:
            self.errors += 1

    async def send_to(self, to: str, phase: int, n: int, t_ns: int) -> None:
        self._spawn(
            self.client.send(
                to=to, body={"k": phase, "n": n, "t": t_ns}, client_id=f"{phase}.{n}"
            )
        )

    async def join(self, room: str) -> None:
        await self.client.join(room)

    async def send_room(self, room: str, phase: int, n: int, t_ns: int) -> None:
        self._spawn(
            self.client.send(
                room=room,
                body={"k": phase, "n": n, "t": t_ns},
                client_id=f"{phase}.{n}",
            )
        )

    async def close(self) -> None:
        self._closing = True
        if self._sends:
            await asyncio.wait(self._sends, timeout=CLOSE_TIMEOUT_S)
        await self.client.close()
        if self._reader is not None:
            await self._reader


class SocketIOConnection(WebSocketConnection):
    """Socket.IO v5 over Engine.IO v4 on a WebSocket, written directly (no client library)."""

    async def open(self, url: str) -> None:
        await self._connect(f"{url}/socket.io/?EIO=4&transport=websocket")
        async with asyncio.timeout(OPEN_TIMEOUT_S):
            opened = await self.ws.recv()  # Engine.IO open packet: 0{"sid": ...}
            if not str(opened).startswith("0"):
                raise RuntimeError(f"{self.uid}: Engine.IO answered {opened!r}")
            await self.ws.send("40" + json.dumps({"uid": self.uid}))
            connected = await self.ws.recv()
        if not str(connected).startswith("40"):
            raise RuntimeError(f"{self.uid}: Socket.IO connect answered {connected!r}")
        self._start_reading()

    async def on_frame(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            return
        if text.startswith("42"):
            event = decode(text[2:])
            if event[0] == "message":
                self.on_body(event[1]["body"])
        elif text == "2":  # Engine.IO ping
            await self.ws.send("3")
        elif text.startswith("43"):  # an event's ack: 43<id>[...]
            self._answer(text[2 : text.index("[")])
        elif text.startswith("44"):
            self.errors += 1

    async def send_to(self, to: str, phase: int, n: int, t_ns: int) -> None:
        body = body_text(phase, n, t_ns)
        await self.ws.send(f'42["send",{{"to":"{to}","body":{body}}}]')

    async def join(self, room: str) -> None:
        ack_id = str(next(self._ids))
        await self._request(ack_id, f'42{ack_id}["join",{{"room":"{room}"}}]')

    async def send_room(self, room: str, phase: int, n: int, t_ns: int) -> None:
        body = body_text(phase, n, t_ns)
        await self.ws.send(f'42["room_send",{{"room":"{room}","body":{body}}}]')


class RelayConnection(WebSocketConnection):
    """The websockets relay's frames (bench/peers/ws_relay.py)."""

    async def open(self, url: str) -> None:
        await self._open_with_hello(url, {"uid": self.uid}, "relay")

    async def on_frame(self, text: str | bytes) -> None:
        frame = decode(text)
        kind = frame.get("type")
        if kind == "message":
            self.on_body(frame["body"])
        elif kind == "joined":
            self._answer(frame["room"])
        elif kind == "error":
            self.errors += 1

    async def send_to(self, to: str, phase: int, n: int, t_ns: int) -> None:
        body = body_text(phase, n, t_ns)
        await self.ws.send(f'{{"type":"send","to":"{to}","body":{body}}}')

    async def join(self, room: str) -> None:
        await self._request(room, f'{{"type":"join","room":"{room}"}}')

    async def send_room(self, room: str, phase: int, n: int, t_ns: int) -> None:
        body = body_text(phase, n, t_ns)
        await self.ws.send(f'{{"type":"room_send","room":"{room}","body":{body}}}')


def new_connection(
    dialect: str, uid: str, on_body: OnBody, rooms: list[str]
) -> Connection:
    if dialect == "switchboard":
        return SwitchboardConnection(uid, on_body, rooms)
    if dialect == "switchboard-client":
        return SwitchboardClientConnection(uid, on_body, rooms)
    if dialect == "socketio":
        return SocketIOConnection(uid, on_body)
    if dialect == "relay":
        return RelayConnection(uid, on_body)
    raise ValueError(f"unknown dialect {dialect!r}")


# Phases: what was sent, what arrived, and when.


@dataclass
class Phase:
    """One phase's counters; the window (monotonic ns) is the measured part, after the warmup."""

    number: int
    window_start_ns: int
    window_end_ns: int
    latencies_us: list[int] = field(default_factory=list)
    in_window: int = 0
    """Messages received (once each) inside the window: the throughput's numerator."""
    unique: int = 0
    duplicates: int = 0
    owed: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    errors_before: int = 0
    """Error frames the connections had received before the phase."""
    cpu_start_s: float = field(default_factory=time.process_time)
    """This process's CPU time when the phase began: what the load itself cost."""

    def on_arrival(self, seen: set[int], body: dict[str, Any]) -> None:
        if body.get("k") != self.number:
            return  # a straggler of an earlier phase
        n = body["n"]
        if n in seen:
            self.duplicates += 1
            return
        seen.add(n)
        self.unique += 1
        now = time.monotonic_ns()
        sent_ns = body["t"]
        if self.window_start_ns <= sent_ns <= self.window_end_ns:
            self.latencies_us.append((now - sent_ns) // 1000)
        if self.window_start_ns <= now <= self.window_end_ns:
            self.in_window += 1
        if self.owed and self.unique >= self.owed:
            self.done.set()


@dataclass(eq=False)
class Pair:
    """A sender and its partner, on two different servers."""

    sender: Connection
    receiver: Connection
    sent: int = 0
    seen: set[int] = field(default_factory=set)
    has_room: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when fewer than the window's messages are on their way (closed loop)."""


@dataclass(eq=False)
class Member:
    """A connection in the room, and the room messages it received in this phase."""

    connection: Connection
    seen: set[int] = field(default_factory=set)


def ignore(body: dict[str, Any]) -> None:
    """Senders of 1:1 pairs receive nothing."""


class Worker:
    """The connections of one load process, and the phases it plays on them."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.dialect: str = plan["dialect"]
        urls: list[str] = plan["urls"]
        room = plan.get("room") or {}
        self.room: str = room.get("name", "")
        rooms = [self.room] if self.room else []
        self.phase = Phase(0, 0, 0)
        # Numbered from the process's start in Unix milliseconds: a phase's number is also its
        # messages' client ids (``<phase>.<n>``), and a load process started later for the same
        # uids must not send ids that the router's dedup window still holds from an earlier one
        # (it would answer them ``sent`` and deliver nothing).
        self.phase_numbers = itertools.count(time.time_ns() // 1_000_000)
        self.window = 1
        self.pairs: list[Pair] = []
        self.members: list[Member] = []
        self.room_sender: Connection | None = None
        self.opening: list[tuple[Connection, str]] = []
        for sender_uid, sender_side, receiver_uid, receiver_side in plan.get(
            "pairs", []
        ):
            sender = new_connection(self.dialect, sender_uid, ignore, rooms)
            pair = Pair(sender, sender)  # the receiver's callback needs the pair
            pair.receiver = new_connection(
                self.dialect, receiver_uid, partial(self._on_pair_body, pair), rooms
            )
            self.pairs.append(pair)
            self.opening += [
                (sender, urls[sender_side]),
                (pair.receiver, urls[receiver_side]),
            ]
        for uid, side in room.get("members", []):
            member = Member(new_connection(self.dialect, uid, ignore, rooms))
            member.connection.on_body = partial(self._on_member_body, member)
            self.members.append(member)
            self.opening.append((member.connection, urls[side]))
            if uid == room.get("sender"):
                self.room_sender = member.connection

    @property
    def connections(self) -> list[Connection]:
        return [connection for connection, _ in self.opening]

    def _errors(self) -> int:
        return sum(connection.errors for connection in self.connections)

    def _on_member_body(self, member: Member, body: dict[str, Any]) -> None:
        self.phase.on_arrival(member.seen, body)

    def _on_pair_body(self, pair: Pair, body: dict[str, Any]) -> None:
        self.phase.on_arrival(pair.seen, body)
        if pair.sent - len(pair.seen) < self.window:
            pair.has_room.set()

    async def open(self) -> None:
        at_once = asyncio.Semaphore(OPENING_AT_ONCE)

        async def open_one(connection: Connection, url: str) -> None:
            async with at_once:
                await connection.open(url)
                if self.room:
                    await connection.join(self.room)

        await asyncio.gather(*(open_one(c, url) for c, url in self.opening))

    def _new_phase(self, command: dict[str, Any]) -> tuple[int, int]:
        """Start counting a new phase; return its start and end (monotonic ns)."""
        start_ns: int = command["start_ns"]
        window_start_ns = start_ns + int(command["warmup_s"] * 1e9)
        end_ns = window_start_ns + int(command["measure_s"] * 1e9)
        self.phase = Phase(next(self.phase_numbers), window_start_ns, end_ns)
        self.phase.errors_before = self._errors()
        for pair in self.pairs:
            pair.sent = 0
            pair.seen = set()
        for member in self.members:
            member.seen = set()
        return start_ns, end_ns

    async def saturate(self, command: dict[str, Any]) -> dict[str, Any]:
        start_ns, end_ns = self._new_phase(command)
        self.window = command["window"]
        phase = self.phase.number
        end_s = asyncio.get_running_loop().time() + (end_ns - time.monotonic_ns()) / 1e9

        async def keep_sending(pair: Pair) -> None:
            while True:
                if pair.sent - len(pair.seen) >= self.window:
                    pair.has_room.clear()
                    try:
                        async with asyncio.timeout_at(end_s):
                            await pair.has_room.wait()
                    except TimeoutError:
                        return
                    continue
                now_ns = time.monotonic_ns()
                if now_ns >= end_ns:
                    return
                n = pair.sent
                pair.sent += 1
                await pair.sender.send_to(pair.receiver.uid, phase, n, now_ns)

        await asyncio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        await asyncio.gather(*(keep_sending(pair) for pair in self.pairs))
        return self._sent(sum(pair.sent for pair in self.pairs))

    async def rate(self, command: dict[str, Any]) -> dict[str, Any]:
        start_ns, end_ns = self._new_phase(command)
        phase = self.phase.number
        pairs = self.pairs

        async def send_one(k: int, t_ns: int) -> None:
            pair = pairs[k % len(pairs)]
            n = pair.sent
            pair.sent += 1
            await pair.sender.send_to(pair.receiver.uid, phase, n, t_ns)

        return self._sent(await pace(command["rate"], start_ns, end_ns, send_one))

    async def room_rate(self, command: dict[str, Any]) -> dict[str, Any]:
        start_ns, end_ns = self._new_phase(command)
        phase = self.phase.number
        sender = self.room_sender
        if sender is None:
            await asyncio.sleep(max(0.0, (end_ns - time.monotonic_ns()) / 1e9))
            return {"sent": 0}

        async def send_one(k: int, t_ns: int) -> None:
            await sender.send_room(self.room, phase, k, t_ns)

        return {"sent": await pace(command["rate"], start_ns, end_ns, send_one)}

    async def listen(self, command: dict[str, Any]) -> dict[str, Any]:
        _, end_ns = self._new_phase(command)
        await asyncio.sleep(max(0.0, (end_ns - time.monotonic_ns()) / 1e9))
        return {"sent": 0}

    def _sent(self, sent: int) -> dict[str, Any]:
        self.phase.owed = sent
        if self.phase.unique >= sent:
            self.phase.done.set()
        return {"sent": sent}

    async def collect(self, command: dict[str, Any]) -> dict[str, Any]:
        phase = self.phase
        if "owed" in command:
            phase.owed = command["owed"]
        elif self.members:
            phase.owed = command["expected"] * len(self.members)
        if phase.owed:
            if phase.unique >= phase.owed:
                phase.done.set()
            try:
                async with asyncio.timeout(command["drain_s"]):
                    await phase.done.wait()
            except TimeoutError:
                pass
        return {
            "owed": phase.owed,
            "received": phase.unique,
            "lost": max(0, phase.owed - phase.unique),
            "duplicates": phase.duplicates,
            "in_window": phase.in_window,
            "window_s": (phase.window_end_ns - phase.window_start_ns) / 1e9,
            "latencies_us": phase.latencies_us,
            "errors": self._errors() - phase.errors_before,
            "closed_early": sum(c.closed_early for c in self.connections),
            "cpu_s": time.process_time() - phase.cpu_start_s,
        }

    async def close(self) -> None:
        await asyncio.gather(
            *(c.close() for c in self.connections), return_exceptions=True
        )


async def pace(
    rate: float,
    start_ns: int,
    end_ns: int,
    send_one: Callable[[int, int], Awaitable[None]],
) -> int:
    """Call ``send_one(k, scheduled_ns)`` for message k at ``start + k / rate``; return k."""
    interval_ns = 1e9 / rate
    k = 0
    while True:
        due_ns = start_ns + int(k * interval_ns)
        if due_ns >= end_ns:
            return k
        wait_ns = due_ns - time.monotonic_ns()
        if wait_ns > 0:
            await asyncio.sleep(wait_ns / 1e9)
        await send_one(k, due_ns)
        k += 1


async def stdin_lines() -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1 << 24)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    return reader


def answer(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


async def main() -> None:
    commands = await stdin_lines()
    worker = Worker(json.loads(await commands.readline()))
    try:
        await worker.open()
        answer({"event": "ready"})
        while line := await commands.readline():
            command = json.loads(line)
            match command["cmd"]:
                case "saturate":
                    answer(await worker.saturate(command))
                case "rate":
                    answer(await worker.rate(command))
                case "room":
                    answer(await worker.room_rate(command))
                case "listen":
                    answer(await worker.listen(command))
                case "collect":
                    answer(await worker.collect(command))
                case "quit":
                    break
    finally:
        await worker.close()
    answer({"event": "closed"})


if __name__ == "__main__":
    asyncio.run(main())
