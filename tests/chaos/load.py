"""The load: many reconnecting clients sending 1:1 and group messages at a steady rate.

Clients are the library's ``switchboard_client.Client``, which resends an unconfirmed send with
the same id after a reconnect and drops duplicate mids. The checker must count duplicates, so
``RecordingClient`` writes every ``message`` frame to the ledger before the library looks at it.
A send answered ``unavailable`` or ``internal_error`` is retried with the same id, as the README
asks of clients.

``Probes`` measure service: two probe users, one pinned to each of two gateways, exchange a 1:1
message each way and a room message in rounds; a round is served when all three arrive live
within ``PROBE_ROUND_S``.
"""

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from switchboard_client import Client, RequestFailed
from tests.chaos.checker import Accepted, Arrival, Ledger
from tests.support.tokens import make_token

RETRYABLE = ("unavailable", "internal_error")
RETRY_PAUSE_S = 0.2
SEND_DEADLINE_S = 60.0
"""A single send (with its retries) that takes longer fails the run: service never came back."""
PROBE_ROOM = "chaos-probe"
PROBE_ROUND_S = 2.0
PROBE_PAUSE_S = 0.2
CLIENT_OPTIONS: dict[str, Any] = {
    "ping_interval_s": 3.0,
    "pong_timeout_s": 3.0,
    "backoff_base_s": 0.2,
    "backoff_max_s": 2.0,
    # The load spreads its users over the gateways itself (``_urls_for``).
    "shuffle_urls": False,
}


@dataclass(frozen=True, slots=True)
class LoadShape:
    users: int = 20
    group_size: int = 5
    rate_per_user: float = 1.0
    """Sends per second of each user."""
    group_every: int = 3
    """Every n-th send of a user goes to its group; the others are 1:1."""
    warmup_s: float = 5.0
    """Steady load before the fault."""
    after_s: float = 10.0
    """Load after the repair."""
    quiet_s: float = 3.0
    """The drain ends after this long without a new message."""


def token_for(uid: str) -> str:
    return make_token(uid, ttl_s=3600, rooms=["chaos-*"])


class RecordingClient(Client):
    """The library's client, reporting every ``message`` frame (duplicates too) first."""

    def __init__(
        self,
        urls: list[str],
        uid: str,
        on_frame: Callable[[str, dict[str, Any]], None],
    ) -> None:
        super().__init__(urls, token_for(uid), **CLIENT_OPTIONS)
        self.recipient = uid
        self._on_frame = on_frame

    async def _on_message(self, frame: dict[str, Any]) -> None:
        self._on_frame(self.recipient, frame)
        await super()._on_message(frame)


def group_of(index: int, shape: LoadShape) -> str:
    return f"g{index // shape.group_size}"


def members(shape: LoadShape) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for index in range(shape.users):
        groups.setdefault(group_of(index, shape), []).append(uid_of(index))
    return groups


def uid_of(index: int) -> str:
    return f"u{index:03d}"


@dataclass
class Load:
    urls: list[str]
    shape: LoadShape
    ledger: Ledger = field(default_factory=Ledger)
    clients: list[RecordingClient] = field(default_factory=list)
    is_draining: bool = False
    last_arrival_s: float = 0.0
    _stop_sending: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _senders: list[asyncio.Task[None]] = field(default_factory=list)

    def record(self, recipient: str, frame: dict[str, Any]) -> None:
        body = frame.get("body")
        if not isinstance(body, dict) or "n" not in body:
            return
        self.last_arrival_s = time.monotonic()
        self.ledger.arrive(
            Arrival(
                recipient,
                str(frame["mid"]),
                str(frame["from"]),
                int(body["n"]),
                self.last_arrival_s,
                self.is_draining,
            )
        )

    def _urls_for(self, index: int) -> list[str]:
        # Even users start on the first gateway, odd ones on the second; both know all.
        shift = index % len(self.urls)
        return self.urls[shift:] + self.urls[:shift]

    async def start(self) -> None:
        for index in range(self.shape.users):
            client = RecordingClient(self._urls_for(index), uid_of(index), self.record)
            await client.start()
            self.clients.append(client)
            self._tasks.append(asyncio.create_task(read_forever(client)))
        for index, client in enumerate(self.clients):
            self._senders.append(asyncio.create_task(self._send_forever(index, client)))

    async def _send_forever(self, index: int, client: RecordingClient) -> None:
        shape = self.shape
        uid = uid_of(index)
        group = group_of(index, shape)
        group_members = frozenset(members(shape)[group]) - {uid}
        others = itertools.cycle(uid_of(i) for i in range(shape.users) if i != index)
        period_s = 1.0 / shape.rate_per_user
        next_at = time.monotonic() + period_s * (index / shape.users)
        for seq in itertools.count(1):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self._stop_sending.is_set():
                return
            is_group = seq % shape.group_every == 0 and bool(group_members)
            to = None if is_group else next(others)
            recipients = group_members if is_group else frozenset({to or ""})
            body = {"n": seq}
            client_id = f"{uid}.{seq}"
            mid = await send_until_accepted(
                client, client_id, body, to, group if is_group else None
            )
            if mid is None:
                self.ledger.rejected += 1
            else:
                self.ledger.accept(Accepted(uid, seq, mid, recipients))
            next_at = max(next_at + period_s, time.monotonic())

    async def stop_sending(self) -> None:
        """Stop new sends; wait for those in flight to get their receipt."""
        self._stop_sending.set()
        await asyncio.gather(*self._senders)

    async def wait_quiet(self, within_s: float = 60.0) -> None:
        """Return once no message arrived for ``quiet_s`` (or after ``within_s``)."""
        deadline = time.monotonic() + within_s
        self.last_arrival_s = max(self.last_arrival_s, time.monotonic())
        while time.monotonic() < deadline:
            idle_s = time.monotonic() - self.last_arrival_s
            if idle_s >= self.shape.quiet_s:
                return
            await asyncio.sleep(self.shape.quiet_s - idle_s)  # a quiet period, measured

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for client in self.clients:
            await client.close()
        self.clients.clear()

    async def drain(self) -> None:
        """Log every user in once more and take what the offline store kept, until quiet."""
        self.is_draining = True
        for index in range(self.shape.users):
            client = RecordingClient(self._urls_for(index), uid_of(index), self.record)
            await client.start()
            self.clients.append(client)
            self._tasks.append(asyncio.create_task(read_forever(client)))
        await self.wait_quiet()
        await self.close()


async def read_forever(client: Client) -> None:
    """Take every message; ``messages()`` acknowledges each when the next is asked for."""
    async for _ in client.messages():
        pass


async def send_until_accepted(
    client: Client,
    client_id: str,
    body: dict[str, int],
    to: str | None,
    group: str | None,
) -> str | None:
    """Send with retries (same id) until ``sent``; None when refused for good."""
    async with asyncio.timeout(SEND_DEADLINE_S):
        while True:
            try:
                return await client.send(
                    body=body, to=to, group=group, client_id=client_id
                )
            except RequestFailed as failed:
                if failed.code not in RETRYABLE:
                    return None
            await asyncio.sleep(RETRY_PAUSE_S)  # a retry pause, not a synchronisation


@dataclass(frozen=True, slots=True)
class Round:
    started_s: float
    ended_s: float
    is_served: bool


class Probes:
    """Rounds of live messages between two users pinned to two gateways (see module doc)."""

    def __init__(self, url_a: str, url_b: str) -> None:
        self._received: dict[str, asyncio.Queue[str]] = {}
        self.a = self._client(url_a, "probe-a")
        self.b = self._client(url_b, "probe-b")
        self.rounds: list[Round] = []
        self._task: asyncio.Task[None] | None = None
        self._readers: list[asyncio.Task[None]] = []

    def _client(self, url: str, uid: str) -> RecordingClient:
        self._received[uid] = asyncio.Queue()
        return RecordingClient([url], uid, self._on_frame)

    def _on_frame(self, recipient: str, frame: dict[str, Any]) -> None:
        body = frame.get("body")
        if isinstance(body, dict) and "probe" in body:
            self._received[recipient].put_nowait(str(body["probe"]))

    async def start(self) -> None:
        for client in (self.a, self.b):
            await client.start()
            await client.join(PROBE_ROOM)
            self._readers.append(asyncio.create_task(read_forever(client)))
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        for number in itertools.count():
            started = time.monotonic()
            try:
                async with asyncio.timeout(PROBE_ROUND_S):
                    await self._round(number)
                is_served = True
            except TimeoutError:
                is_served = False
            except RequestFailed:
                is_served = False
            self.rounds.append(Round(started, time.monotonic(), is_served))
            await asyncio.sleep(PROBE_PAUSE_S if is_served else PROBE_PAUSE_S / 2)

    async def _round(self, number: int) -> None:
        tag = f"r{number}"
        for queue in self._received.values():
            while not queue.empty():
                queue.get_nowait()
        await asyncio.gather(
            self.a.send(body={"probe": tag + "ab"}, to="probe-b"),
            self.b.send(body={"probe": tag + "ba"}, to="probe-a"),
            self.a.send(body={"probe": tag + "room"}, room=PROBE_ROOM),
        )
        await asyncio.gather(
            wait_for_tag(self._received["probe-b"], {tag + "ab", tag + "room"}),
            wait_for_tag(self._received["probe-a"], {tag + "ba"}),
        )

    def recovery_s(self, fault_at: float, repaired_at: float) -> float | None:
        """From the fault to the end of the first served round started after the repair."""
        for probe_round in self.rounds:
            if probe_round.started_s >= repaired_at and probe_round.is_served:
                return probe_round.ended_s - fault_at
        return None

    async def wait_served(self, since_s: float, within_s: float) -> bool:
        """Wait for a served round started after ``since_s``."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if any(r.started_s >= since_s and r.is_served for r in self.rounds):
                return True
            await asyncio.sleep(0.1)  # polling the round log under the deadline above
        return False

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._readers) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in (self.a, self.b):
            await client.close()


async def wait_for_tag(queue: asyncio.Queue[str], tags: set[str]) -> None:
    missing = set(tags)
    while missing:
        missing.discard(await queue.get())
