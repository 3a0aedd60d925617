"""Scenario 7: history pages from a table of 1,000,000 inbox rows (``SWITCHBOARD_HISTORY=on``).

Switchboard only. A history stack (1 router, 1 offline store, 2 gateways) starts and creates its
tables; a made-up history is loaded into them by ``COPY`` (``bench/history_rows.py``,
``bench/history_load.py``): 500,000 1:1 messages over the last day, 1,000,000 inbox rows, among
10,000 uids with about 20 conversations each, and 8 askers with 50 long conversations each
(25,000 entries per asker, some 500 per conversation), interleaved in time.

Each asker connects (4 per gateway) and asks for 250 pages in turn, one at a time: a page of
50 of one of its conversations at random, below a random ``before`` in its inbox. Latency runs
from the ``history`` frame to its reply, through the gateway, the store's queries queue, one
statement and the delivery back; 2,000 pages in all.

The note gives the pages answered per second and the CPU that the stack's processes and the
store's PostgreSQL backends spent per page meanwhile (``bench/cpu.py``). For comparison, the
same 2,000 pages are then read by the store's own statement
(``offline_store.query_tables.QueryTables.history``) from one connection, one at a time: what
PostgreSQL takes, without the broker hops and the processes on the way.

Lost: pages not answered (an error or no reply within the deadline).
"""

import asyncio
import random
import sys
import time
from dataclasses import dataclass

import asyncpg

from bench import cpu
from bench.harness import percentile
from bench.history_load import inbox_megabytes, load
from bench.history_rows import History, Shape, asker
from bench.measuring_client import Member
from bench.report import SWITCHBOARD_HISTORY, Measurement
from bench.servers import bench_stack, close_stack
from bench.systems import HISTORY_SETTINGS
from offline_store.queries import cutoff_mid
from offline_store.query_tables import QueryTables
from offline_store.settings import DEFAULT_HISTORY_DAYS
from proto.env import DEFAULT_POSTGRES_DSN
from proto.names import Names

NAME = "7 history page"
PAGE = 50
REPLY_TIMEOUT_S = 10.0
SEED = 7
QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))


@dataclass(frozen=True)
class Plan:
    shape: Shape
    pages_per_asker: int


FULL = Plan(
    Shape(
        askers=8,
        peers_per_asker=50,
        asker_messages=25_000,
        uids=10_000,
        peers_per_uid=10,
        other_messages=300_000,
    ),
    pages_per_asker=250,
)
QUICK = Plan(
    Shape(
        askers=8,
        peers_per_asker=20,
        asker_messages=2_500,
        uids=2_000,
        peers_per_uid=5,
        other_messages=30_000,
    ),
    pages_per_asker=50,
)


Ask = tuple[str, int]
"""A page asked for: the peer of the conversation, and ``before``."""


@dataclass
class Pages:
    """What one asker's pages took and brought."""

    latencies_ns: list[int]
    entries: int = 0
    unanswered: int = 0


def pages_to_ask(history: History, uid: str, count: int) -> list[Ask]:
    """``count`` pages of ``uid``'s conversations at random, below random places."""
    rng = random.Random(f"{SEED}-{uid}")
    head = history.tally.heads[uid]
    return [
        (rng.choice(history.peers[uid]), rng.randint(2, head + 1)) for _ in range(count)
    ]


async def ask(member: Member, asks: list[Ask]) -> Pages:
    """The pages, one at a time, as ``history`` frames."""
    pages = Pages([])
    for peer, before in asks:
        started = time.perf_counter_ns()
        try:
            reply = await member.history(peer, before, PAGE, REPLY_TIMEOUT_S)
        except TimeoutError:
            pages.unanswered += 1
            continue
        if reply.get("type") != "history":
            pages.unanswered += 1
            continue
        pages.latencies_ns.append(time.perf_counter_ns() - started)
        pages.entries += len(reply["messages"])
    return pages


async def read_directly(names: Names, asks: dict[str, list[Ask]]) -> list[int]:
    """The same pages read by the store's statement from one connection, one at a time;
    return each one's latency (ns)."""
    latencies: list[int] = []
    pool = await asyncpg.create_pool(DEFAULT_POSTGRES_DSN, min_size=1, max_size=1)
    tables = QueryTables(pool, names, readers=1)
    try:
        cutoff = cutoff_mid(time.time_ns() // 1_000_000, DEFAULT_HISTORY_DAYS)
        for uid, pages in asks.items():
            for peer, before in pages:
                started = time.perf_counter_ns()
                # One row more than the page, as the store reads it (``more``).
                await tables.history(uid, f"u:{peer}", before, PAGE + 1, cutoff)
                latencies.append(time.perf_counter_ns() - started)
    finally:
        await tables.close()  # its kept connection goes back first
        await pool.close()
    return latencies


async def run(quick: bool) -> list[Measurement]:
    plan = QUICK if quick else FULL
    shape = plan.shape
    history = History(shape, random.Random(SEED))
    stack = bench_stack(**HISTORY_SETTINGS)
    database = await asyncpg.connect(DEFAULT_POSTGRES_DSN, timeout=10)
    members: list[Member] = []
    try:
        await stack.start(gateways=2)
        load_s = await load(database, stack.names, history)
        inbox_mb = await inbox_megabytes(database, stack.names)
        for index in range(shape.askers):
            gateway = stack.gateways[index % len(stack.gateways)]
            members.append(await Member.open(gateway.url, asker(index)))
        await asyncio.gather(*(member.init() for member in members))
        asks = {
            member.uid: pages_to_ask(history, member.uid, plan.pages_per_asker)
            for member in members
        }
        before = await cpu.sample(stack)
        started = time.monotonic()
        results = await asyncio.gather(
            *(ask(member, asks[member.uid]) for member in members)
        )
        asked_s = time.monotonic() - started
        spent = cpu.used(before, await cpu.sample(stack))
        direct = await read_directly(stack.names, asks)
    finally:
        await asyncio.gather(*(member.abort() for member in members))
        await database.close()
        await close_stack(stack)
    latencies = [value for pages in results for value in pages.latencies_ns]
    answered = len(latencies)
    unanswered = sum(pages.unanswered for pages in results)
    mean_entries = sum(pages.entries for pages in results) / max(1, answered)
    print(
        f"  {shape.inbox_rows:,} inbox rows loaded in {load_s:.1f} s ({inbox_mb:.0f} MB "
        f"with indexes); {answered:,} pages answered, {unanswered} not, "
        f"{mean_entries:.1f} entries per page, {answered / asked_s:.0f} pages/s",
        file=sys.stderr,
    )
    per_page = ", ".join(
        f"{role} {seconds * 1e3 / max(1, answered):.2f}"
        for role, seconds in spent.items()
        if seconds > 0
    )
    note = (
        f"{shape.inbox_rows:,} inbox rows ({shape.messages:,} 1:1 messages) loaded by COPY; "
        f"{len(members)} clients, {plan.pages_per_asker} pages each, one at a time; "
        f"random conversation and before, {mean_entries:.0f} entries per page on average; "
        f"history frame to reply; {answered / asked_s:.0f} pages/s, {per_page} ms "
        "CPU/page"
    )
    rows = f"({shape.inbox_rows:,} rows)"
    return [
        Measurement(
            NAME,
            SWITCHBOARD_HISTORY,
            f"{label} ms of a page of {PAGE} {rows}",
            percentile(latencies, quantile) / 1e6,
            "ms",
            "lower",
            lost=unanswered,
            note=("target < 20 ms; " if label == "p99" else "") + note,
        )
        for label, quantile in QUANTILES
    ] + [
        Measurement(
            NAME,
            SWITCHBOARD_HISTORY,
            f"{label} ms of a page's statement alone {rows}",
            percentile(direct, quantile) / 1e6,
            "ms",
            "lower",
            note="the same pages read with the store's statement (QueryTables.history) "
            "from one connection, one at a time",
        )
        for label, quantile in QUANTILES[:2]
    ]
