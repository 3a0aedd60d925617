"""Scenario 6: the offline store writing history (``SWITCHBOARD_HISTORY=on``), alone.

Switchboard only: the peers keep no history. One offline store, no router and no gateway: the
``InboxBatch`` envelopes a router would publish for 100,000 1:1 messages, 500 per batch (a
router batch), are built ahead (``bench/inbox_batches.py``, the router's own items) and
published straight to ``<ns>.inbox``, 8 awaiting their confirm. The rate runs from the first
publish until the last entry is committed (the sum of ``<ns>.inbox_heads``, polled; the store
raises the heads in the transaction that writes the entries).

Every uid is online on one gateway (a queue that takes the deliveries, ``inbox_feed.sink``), as
the pairs of scenario 1 are: each batch is written (messages, entries, conversations, heads),
then its copies and the senders' ``advance`` items are published and confirmed, as in
production. Two sets of pairs, each in a fresh namespace:

* the 64 pairs of scenario 1: each batch holds each pair about 8 times (the target);
* 5,000 pairs of 10,000 uids: each batch touches 1,000 uids, and each uid's rows spread over
  more pages of the indexes (reported without a target).

Each note gives the CPU that the store process and its PostgreSQL backends used per message
meanwhile (``bench/cpu.py``), and their share of the interval: on a busy machine, the rate
that CPU would allow when the two have their cores.

Lost: messages whose entries were not all committed within the deadline.
"""

import sys
import time
import uuid
from dataclasses import dataclass

import asyncpg

from bench import cpu
from bench.inbox_batches import Pair, inbox_bodies, one_to_one_items, pairs_of
from bench.inbox_feed import Heads, publish_bodies, sink
from bench.report import SWITCHBOARD_HISTORY, Measurement
from bench.servers import bench_stack, close_stack
from bench.systems import HISTORY_SETTINGS
from proto.env import DEFAULT_POSTGRES_DSN
from proto.mids import MidFactory
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES

NAME = "6 history writes"
PER_BATCH = 500
"""Items per ``InboxBatch``: a full router batch (``SWITCHBOARD_BATCH_MAX``)."""
COMMIT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Case:
    pairs: int
    messages: int
    target: bool

    @property
    def metric(self) -> str:
        return f"msg/s writing {self.messages:,} between {self.pairs:,} pairs"


FULL = (Case(64, 100_000, True), Case(5_000, 100_000, False))
QUICK = (Case(64, 20_000, True), Case(5_000, 20_000, False))


async def run(quick: bool) -> list[Measurement]:
    return [await measure(case) for case in (QUICK if quick else FULL)]


async def measure(case: Case) -> Measurement:
    stack = bench_stack(**HISTORY_SETTINGS)
    database = await asyncpg.connect(DEFAULT_POSTGRES_DSN, timeout=10)
    try:
        await stack.start_store()
        heads = Heads(database, stack.names)
        async with sink(stack) as gateway_id:
            pairs: list[Pair] = pairs_of(case.pairs, "w")
            mids = MidFactory(uuid.uuid4().hex[:10])
            items = one_to_one_items(
                pairs, case.messages, mids, time.time_ns() // 1_000_000, gateway_id
            )
            bodies = inbox_bodies(
                stack.names, items, PER_BATCH, DEFAULT_MAX_AMQP_MESSAGE_BYTES
            )
            expected = 2 * case.messages  # the recipient's entry and the sender's
            before = await cpu.sample(stack)
            started = await publish_bodies(stack.names, bodies)
            published_s = time.monotonic() - started
            committed, committed_at = await heads.wait_for(expected, COMMIT_TIMEOUT_S)
            spent = cpu.used(before, await cpu.sample(stack))
        kept: int = await database.fetchval(
            f"SELECT count(*) FROM {stack.names.messages_table}"
        )
    finally:
        await database.close()
        await close_stack(stack)
    elapsed_s = committed_at - started
    print(
        f"  {case.pairs:,} pairs: {len(bodies)} envelopes published in "
        f"{published_s:.2f} s; {committed:,} of {expected:,} entries committed after "
        f"{elapsed_s:.2f} s; CPU: store {spent['store']:.1f} s, its PostgreSQL backends "
        f"{spent[cpu.POSTGRES]:.1f} s",
        file=sys.stderr,
    )
    shares = ", ".join(
        f"{role} {seconds / elapsed_s:.0%}"
        for role, seconds in spent.items()
        if seconds > 0
    )
    used = f"{cpu.per_message(spent, committed // 2)} ({shares} of a core)"
    target = "target >= 10,000; " if case.target else "no target; "
    return Measurement(
        NAME,
        SWITCHBOARD_HISTORY,
        case.metric,
        committed / 2 / elapsed_s,
        "msg/s",
        "higher",
        lost=case.messages - kept,
        note=f"{target}1 offline store alone; InboxBatch of {PER_BATCH} 1:1 messages "
        f"published straight to <ns>.inbox, {len(bodies)} of them; every uid online "
        "(copies delivered and confirmed); first publish to last entry committed "
        f"(inbox_heads polled); {used}",
    )
