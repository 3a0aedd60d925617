"""Scenario 3: group fan-out with a quarter of the members offline.

Switchboard only: the peers keep nothing for members who are not connected, so they have no
offline half to compare.

A backend puts 200 uids in a group. Three quarters of them connect, alternately to two
gateways; the others stay offline. One online member sends to the group at a fixed rate. Each
message is owed to every other online member (a delivery, acknowledged on arrival) and to every
offline member (a row in the offline store's ``<ns>.undelivered`` table, counted by polling
PostgreSQL). Then the offline members connect and ``init``: what the replay brings them is what
was kept for them.

Lost: online deliveries owed and not received within the drain timeout, plus messages owed to
offline members that their replay did not bring.
"""

import asyncio
import sys
import time

import asyncpg

from bench.harness import percentile
from bench.measuring_client import Member, body_now
from bench.report import SWITCHBOARD, Measurement
from bench.servers import bench_stack, close_stack
from bench.systems import RELAY_SETTINGS
from proto.env import DEFAULT_POSTGRES_DSN
from proto.names import Names
from tests.support.api import open_backend

NAME = "3 group fan-out, 1/4 offline"
MEMBERS = 200
OFFLINE_EVERY = 4
"""Every fourth member stays offline."""
RATE_PER_S = 20.0
DURATION_S = 10.0
QUICK_DURATION_S = 3.0
DRAIN_TIMEOUT_S = 15.0
POLL_S = 0.05
GROUP = "s3-group"


class RowCounter:
    """Follows the row count of the namespace's undelivered table while the phase runs."""

    def __init__(self, connection: asyncpg.Connection, names: Names) -> None:
        self._connection = connection
        # The namespace is a plain SQL identifier (see proto.names.NAMESPACE_PATTERN).
        self._count_sql = f"SELECT count(*) FROM {names.undelivered_table}"
        self.count = 0
        self.last_change_s = 0.0
        """When the count last grew, on the monotonic clock."""

    async def follow(self, expected: int, stop: asyncio.Event) -> None:
        """Poll until ``expected`` rows exist or ``stop`` is set."""
        while self.count < expected and not stop.is_set():
            count: int = await self._connection.fetchval(self._count_sql)
            if count > self.count:
                self.count, self.last_change_s = count, time.monotonic()
            try:
                async with asyncio.timeout(POLL_S):
                    await stop.wait()
            except TimeoutError:
                pass


async def connect_members(urls: list[str], uids: list[str]) -> list[Member]:
    """Open and ``init`` one connection per uid, alternating gateways."""
    members = await asyncio.gather(
        *(Member.open(urls[n % len(urls)], uid) for n, uid in enumerate(uids))
    )
    await asyncio.gather(*(member.init() for member in members))
    return list(members)


async def send_at_rate(sender: Member, count: int, rate_per_s: float) -> float:
    """Send ``count`` group messages on a fixed schedule; return when the first went."""
    started = time.monotonic()
    for n in range(count):
        delay_s = started + n / rate_per_s - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)  # the schedule is the point: an open loop
        await sender.send_to_group(GROUP, body_now(n))
    return started


async def run(quick: bool) -> list[Measurement]:
    duration_s = QUICK_DURATION_S if quick else DURATION_S
    messages = int(RATE_PER_S * duration_s)
    uids = [f"s3-member-{n}" for n in range(MEMBERS)]
    offline_uids = uids[::OFFLINE_EVERY]
    online_uids = [uid for n, uid in enumerate(uids) if n % OFFLINE_EVERY]
    stack = bench_stack(**RELAY_SETTINGS)
    database = await asyncpg.connect(DEFAULT_POSTGRES_DSN, timeout=10)
    members: list[Member] = []
    stop_counting = asyncio.Event()
    counting: asyncio.Task[None] | None = None
    try:
        await stack.start(gateways=2)
        urls = [gateway.url for gateway in stack.gateways]
        async with open_backend(stack.names) as backend:
            reply = await backend.call("group.add", {"group": GROUP, "uids": uids})
            if reply != {"ok": True}:
                raise RuntimeError(f"group.add refused: {reply}")
        members = await connect_members(urls, online_uids)
        sender, receivers = members[0], members[1:]
        owed_online = messages * len(receivers)
        owed_rows = messages * len(offline_uids)

        rows = RowCounter(database, stack.names)
        counting = asyncio.create_task(rows.follow(owed_rows, stop_counting))
        started = await send_at_rate(sender, messages, RATE_PER_S)
        sent_s = time.monotonic() - started

        await asyncio.gather(
            *(
                member.wait_for_messages(messages, DRAIN_TIMEOUT_S)
                for member in receivers
            )
        )
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await counting
        except TimeoutError:
            stop_counting.set()
            await counting
        delivered = sum(len(member.mids) for member in receivers)
        last_delivery_s = max(member.last_message_s for member in receivers)
        latencies_ns = [value for member in receivers for value in member.latencies_ns]
        refused = sender.refusals

        # The offline members come back: their replay must bring every message.
        returning = await connect_members(urls, offline_uids)
        members += returning
        await asyncio.gather(
            *(
                member.wait_for_messages(messages, DRAIN_TIMEOUT_S)
                for member in returning
            )
        )
        replayed = sum(len(member.mids) for member in returning)
    finally:
        stop_counting.set()
        if counting is not None:
            await counting
        # Dropped, not closed: the returning members' acks of replayed messages are still
        # queued at the gateways (one confirmed publish each), ahead of any close frame.
        await asyncio.gather(*(member.abort() for member in members))
        await database.close()
        await close_stack(stack)
    duplicates = sum(member.duplicates for member in members)
    print(
        f"  {messages} messages sent in {sent_s:.1f} s ({refused} refused); online "
        f"{delivered:,} of {owed_online:,}; rows {rows.count:,} of {owed_rows:,}; replayed "
        f"{replayed:,} of {owed_rows:,}; {duplicates} duplicates",
        file=sys.stderr,
    )
    offered = f"{RATE_PER_S:.0f} msg/s to {MEMBERS} members"
    return [
        Measurement(
            NAME,
            SWITCHBOARD,
            "deliveries/s to online members",
            delivered / (last_delivery_s - started),
            "msg/s",
            "higher",
            lost=owed_online - delivered,
            note=f"{offered}: {len(receivers)} online recipients on 2 gateways, each message "
            "acked; first send to last delivery",
        ),
        Measurement(
            NAME,
            SWITCHBOARD,
            "offline rows written/s",
            rows.count / (rows.last_change_s - started) if rows.count else 0.0,
            "rows/s",
            "higher",
            lost=owed_rows - replayed,
            note=f"{len(offline_uids)} offline members; lost = not brought by their replay",
        ),
        Measurement(
            NAME,
            SWITCHBOARD,
            "online delivery latency p50",
            percentile(latencies_ns, 0.50) / 1e6,
            "ms",
            "lower",
            note=offered,
        ),
        Measurement(
            NAME,
            SWITCHBOARD,
            "online delivery latency p99",
            percentile(latencies_ns, 0.99) / 1e6,
            "ms",
            "lower",
            note=offered,
        ),
    ]
