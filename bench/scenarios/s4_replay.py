"""Scenario 4: messages stored for an offline user, then replayed when it comes back.

Switchboard only: the peers keep nothing for a user who is not connected.

1. One client sends 10,000 messages to a uid that has never connected, keeping
   ``SENDS_IN_FLIGHT`` unanswered (a gateway pipelines a connection's sends into its batches).
   Write rate: from the first send until the 10,000th row of that uid exists in PostgreSQL
   (``<ns>.undelivered``, polled).
2. The uid connects to the other gateway; from the ``init`` frame to the last of the 10,000
   messages, each acknowledged as it arrives, as ``switchboard_client`` does.
3. For comparison, a backend sends as many messages to another offline uid with ``api.send``
   on ``<ns>.inbound`` (publisher confirms, 1,000 in flight): one broker message and one reply
   per message, where clients' frames travel in the gateways' batches.
4. With history on (``switchboard-history``, a stack of its own): 10,000 messages to an offline
   uid are written to its inbox (the router's ``InboxBatch`` envelopes published straight to
   ``<ns>.inbox``, ``bench/inbox_batches.py``, until its head reaches 10,000 and the store has
   announced every entry with its ``message.offline`` event), then the uid connects with
   ``init`` and ``"since": 0``: from the ``init`` frame to ``synced``, each message
   acknowledged as it arrives. Phases 1 to 3 keep history off: ``init`` without
   ``since`` replays what no device acknowledged, as before.

Lost: messages owed to the replayed or synced uid and not received within the drain timeout,
and rows of the writing phases missing after them.
"""

import asyncio
import sys
import time
import uuid
from collections.abc import Sequence

import aio_pika
import asyncpg

from bench.inbox_batches import inbox_bodies, one_to_one_items
from bench.inbox_feed import Heads, offline_events, publish_bodies
from bench.measuring_client import Member, body_now
from bench.report import SWITCHBOARD, SWITCHBOARD_HISTORY, Measurement
from bench.servers import bench_stack, close_stack
from bench.systems import HISTORY_SETTINGS, RELAY_SETTINGS
from proto.env import DEFAULT_AMQP_URL, DEFAULT_POSTGRES_DSN
from proto.mids import MidFactory
from proto.names import Names, api_key
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES

NAME = "4 offline replay"
STORED = 10_000
QUICK_STORED = 2_000
PUBLISHES_IN_FLIGHT = 1_000
SENDS_IN_FLIGHT = 200
"""A client's sends awaiting their ``sent`` receipt."""
ROWS_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 30.0
POLL_S = 0.02
READER = "s4-reader"
OTHER_READER = "s4-other-reader"
SYNCER = "s4-syncer"
SYNC_SENDER = "s4-sync-sender"
PER_BATCH = 500
"""Messages per ``InboxBatch``: a full router batch."""


class Rows:
    """Counts undelivered rows, of a uid or of every uid, straight from PostgreSQL."""

    def __init__(self, connection: asyncpg.Connection, names: Names) -> None:
        self._connection = connection
        # The namespace is a plain SQL identifier (see proto.names.NAMESPACE_PATTERN).
        self._count_all_sql = f"SELECT count(*) FROM {names.undelivered_table}"
        self._count_sql = f"{self._count_all_sql} WHERE uid = $1"

    async def count(self, uid: str | None) -> int:
        """Rows of ``uid``; of every uid in the namespace when None."""
        count: int
        if uid is None:
            count = await self._connection.fetchval(self._count_all_sql)
        else:
            count = await self._connection.fetchval(self._count_sql, uid)
        return count

    async def wait_for(
        self, uid: str | None, expected: int, within_s: float
    ) -> tuple[int, float]:
        """Poll until ``uid`` (every uid when None) has ``expected`` rows; return the count
        and when it was reached."""
        count = 0
        try:
            async with asyncio.timeout(within_s):
                # Polling what cannot be subscribed to; the deadline above synchronises.
                while (count := await self.count(uid)) < expected:  # noqa: ASYNC110
                    await asyncio.sleep(POLL_S)
        except TimeoutError:
            pass
        return count, time.monotonic()


async def publish_from_backend(names: Names, recipients: Sequence[str]) -> float:
    """Send one message to each of ``recipients`` (a uid may repeat) with ``api.send``,
    keeping some in flight; return the start."""
    connection = await aio_pika.connect(DEFAULT_AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        inbound = await channel.get_exchange(names.inbound_exchange, ensure=False)
        in_flight = asyncio.Semaphore(PUBLISHES_IN_FLIGHT)

        async def publish(n: int, to: str) -> None:
            async with in_flight:
                body = b'{"to":"%b","from":"backend","body":%b}' % (
                    to.encode(),
                    body_now(n),
                )
                message = aio_pika.Message(body, content_type="application/json")
                await inbound.publish(
                    message, api_key("send"), mandatory=True, timeout=30
                )

        started = time.monotonic()
        await asyncio.gather(*(publish(n, to) for n, to in enumerate(recipients)))
    return started


async def send_from_client(sender: Member, to: str, count: int) -> None:
    """Send ``count`` messages from one connection, with a window of unanswered sends."""
    for n in range(count):
        if n - sender.answered >= SENDS_IN_FLIGHT:
            await sender.wait_for_answers(n - SENDS_IN_FLIGHT + 1, DRAIN_TIMEOUT_S)
        await sender.send_to_uid(to, body_now(n))


async def run(quick: bool) -> list[Measurement]:
    stored = QUICK_STORED if quick else STORED
    stack = bench_stack(**RELAY_SETTINGS)
    database = await asyncpg.connect(DEFAULT_POSTGRES_DSN, timeout=10)
    members: list[Member] = []
    try:
        await stack.start(gateways=2)
        rows = Rows(database, stack.names)

        # 1. Store, from one client.
        sender = await Member.open(stack.gateways[0].url, "s4-sender")
        members.append(sender)
        await sender.init()
        started = time.monotonic()
        await send_from_client(sender, READER, stored)
        written, written_at = await rows.wait_for(READER, stored, ROWS_TIMEOUT_S)
        write_rate = written / (written_at - started)

        # 2. Replay.
        reader = await Member.open(stack.gateways[1].url, READER)
        members.append(reader)
        init_sent = time.monotonic()
        await reader.init(wait=False)
        await reader.wait_for_messages(stored, DRAIN_TIMEOUT_S)
        replay_s = (reader.last_message_s or time.monotonic()) - init_sent
        replay_lost = stored - len(reader.mids)
        ready_ms = ((reader.first_frame_s or init_sent) - init_sent) * 1000
        rows_left = await rows.count(READER)

        # 3. Store from a backend.
        backend_started = await publish_from_backend(
            stack.names, [OTHER_READER] * stored
        )
        backend_written, backend_written_at = await rows.wait_for(
            OTHER_READER, stored, ROWS_TIMEOUT_S
        )
        backend_rate = backend_written / (backend_written_at - backend_started)
    finally:
        # Dropped, not closed: the reader's acks are still queued at its gateway (one
        # confirmed publish to the store each), and a close frame would wait behind them.
        await asyncio.gather(*(member.abort() for member in members))
        await database.close()
        await close_stack(stack)
    synced = await measure_sync(stored)
    print(
        f"  stored {written:,} of {stored:,}; replay: ready after {ready_ms:.0f} ms, "
        f"{len(reader.mids):,} received, {reader.duplicates} duplicates, {rows_left:,} rows "
        f"not yet deleted by their acks; one client: {sender.refusals} refused",
        file=sys.stderr,
    )
    return [
        Measurement(
            NAME,
            SWITCHBOARD,
            f"rows/s storing {stored:,} for one offline uid",
            write_rate,
            "rows/s",
            "higher",
            lost=stored - written,
            note=f"target >= 5,000; one client, {SENDS_IN_FLIGHT} sends in flight; first "
            "send to last row in PostgreSQL",
        ),
        Measurement(
            NAME,
            SWITCHBOARD,
            f"replay of {stored:,} on init",
            replay_s,
            "s",
            "lower",
            lost=replay_lost,
            note="target < 1 s; init sent to last message received, each acked on arrival",
        ),
        Measurement(
            NAME,
            SWITCHBOARD,
            f"rows/s storing {stored:,} from a backend (api.send)",
            backend_rate,
            "rows/s",
            "higher",
            lost=stored - backend_written,
            note=f"{PUBLISHES_IN_FLIGHT:,} publishes in flight; one broker message and one "
            "reply per message",
        ),
        synced,
    ]


async def measure_sync(stored: int) -> Measurement:
    """Phase 4: ``stored`` entries in an offline uid's inbox, then ``init`` with ``since: 0``."""
    stack = bench_stack(**HISTORY_SETTINGS)
    database = await asyncpg.connect(DEFAULT_POSTGRES_DSN, timeout=10)
    members: list[Member] = []
    try:
        await stack.start(gateways=2)
        items = one_to_one_items(
            [(SYNC_SENDER, SYNCER)],
            stored,
            MidFactory(uuid.uuid4().hex[:10]),
            time.time_ns() // 1_000_000,
            gateway_id=None,
        )
        bodies = inbox_bodies(
            stack.names, items, PER_BATCH, DEFAULT_MAX_AMQP_MESSAGE_BYTES
        )
        async with offline_events(stack.names) as events:
            await publish_bodies(stack.names, bodies)
            entries, _ = await Heads(database, stack.names).wait_for(
                stored, ROWS_TIMEOUT_S, SYNCER
            )
            # The entries are committed; the store is done with them once it has announced
            # them (one message.offline event each, confirmed before the batch's ack). The
            # sync starts then: what it measures is the sync, not the tail of the writes.
            announced = await events.wait_for(stored, ROWS_TIMEOUT_S)
        syncer = await Member.open(stack.gateways[1].url, SYNCER)
        members.append(syncer)
        init_sent = time.monotonic()
        await syncer.init(wait=False, since=0)
        await syncer.wait_for(lambda: syncer.synced_s is not None, DRAIN_TIMEOUT_S)
        sync_s = (syncer.synced_s or time.monotonic()) - init_sent
        received = len(syncer.mids)
        duplicates = syncer.duplicates
    finally:
        # As in phase 2: dropped, its acks may still be on their way.
        await asyncio.gather(*(member.abort() for member in members))
        await database.close()
        await close_stack(stack)
    print(
        f"  history: {entries:,} of {stored:,} entries written, {announced:,} announced; "
        f"sync: {received:,} "
        f"received before synced, {duplicates} duplicates",
        file=sys.stderr,
    )
    return Measurement(
        NAME,
        SWITCHBOARD_HISTORY,
        f"sync of {stored:,} on init (since 0)",
        sync_s,
        "s",
        "lower",
        lost=stored - received,
        note="target < 1 s; entries of an offline uid (InboxBatch envelopes published "
        "straight to <ns>.inbox), then init with since 0: init sent to synced received, "
        "each message acked on arrival",
    )
