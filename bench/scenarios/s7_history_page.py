"""Scenario 7: history pages from a table of 1,000,000 inbox rows (``SWITCHBOARD_HISTORY=on``).

Switchboard only. A history stack (1 router, 1 offline store, 2 gateways) starts and creates its
tables; a made-up history is loaded into them by ``COPY`` (``bench/history_rows.py``,
``bench/history_load.py``): 500,000 1:1 messages over the last day, 1,000,000 inbox rows, among
10,000 uids with about 20 conversations each, and 8 askers with 50 long conversations each
(25,000 entries per asker, some 500 per conversation), interleaved in time.

Each asker connects (4 per gateway) and asks for pages of 50 of one of its conversations at
random, below a random ``before`` in its inbox. Latency runs from the ``history`` frame to its
reply, through the gateway, the store's queries queue, one statement and the delivery back.
Two kinds of phase:

- Saturation: each asker asks for 250 pages in turn, one at a time, all 8 at once (2,000
  pages). The stack is never idle, so a page's latency is mostly the 7 pages asked before it:
  the figure to read is pages/s.
- Open loop, at 100 and then 250 pages/s offered by the 8 askers together (4 s each), every
  page asked at its scheduled time whatever the replies, and timed from that time, as ``s1``
  times messages: the latency of a page at a load below capacity. The target is read at 250
  pages/s, half of what the saturation reached on this machine.

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
RATES = (100, 250)
"""The open-loop phases: pages per second offered by all the askers together."""


@dataclass(frozen=True)
class Plan:
    shape: Shape
    pages_per_asker: int
    """In the saturation phase."""
    rate_s: float
    """The length of each open-loop phase."""


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
    rate_s=4.0,
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
    rate_s=1.0,
)


Ask = tuple[str, int]
"""A page asked for: the peer of the conversation, and ``before``."""


@dataclass
class Pages:
    """What one asker's pages took and brought."""

    latencies_ns: list[int]
    entries: int = 0
    unanswered: int = 0


def pages_to_ask(history: History, uid: str, count: int, phase: str) -> list[Ask]:
    """``count`` pages of ``uid``'s conversations at random, below random places (other
    pages in each phase)."""
    rng = random.Random(f"{SEED}-{phase}-{uid}")
    head = history.tally.heads[uid]
    return [
        (rng.choice(history.peers[uid]), rng.randint(2, head + 1)) for _ in range(count)
    ]


async def ask_page(member: Member, page: Ask, since_ns: int, pages: Pages) -> None:
    """Ask for one page as a ``history`` frame; count it in ``pages``, timed from
    ``since_ns`` (``time.perf_counter_ns()``)."""
    peer, before = page
    try:
        reply = await member.history(peer, before, PAGE, REPLY_TIMEOUT_S)
    except TimeoutError:
        pages.unanswered += 1
        return
    if reply.get("type") != "history":
        pages.unanswered += 1
        return
    pages.latencies_ns.append(time.perf_counter_ns() - since_ns)
    pages.entries += len(reply["messages"])


async def ask(member: Member, asks: list[Ask], pages: Pages) -> None:
    """The pages, one at a time."""
    for page in asks:
        await ask_page(member, page, time.perf_counter_ns(), pages)


async def ask_at_rate(
    members: list[Member], asks: dict[str, list[Ask]], rate: float
) -> Pages:
    """The askers' pages in turn, one every ``1 / rate`` s whatever the replies (an open
    loop), each timed from its scheduled time: a queue that builds up shows in the latency."""
    pages = Pages([])
    count = min(len(asks[member.uid]) for member in members) * len(members)
    asking: list[asyncio.Task[None]] = []
    started = time.perf_counter_ns()
    for index in range(count):
        member = members[index % len(members)]
        page = asks[member.uid][index // len(members)]
        scheduled = started + round(index * 1e9 / rate)
        delay_s = (scheduled - time.perf_counter_ns()) / 1e9
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        asking.append(asyncio.create_task(ask_page(member, page, scheduled, pages)))
    await asyncio.gather(*asking)
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
            member.uid: pages_to_ask(
                history, member.uid, plan.pages_per_asker, "saturation"
            )
            for member in members
        }
        saturated = Pages([])
        before = await cpu.sample(stack)
        started = time.monotonic()
        await asyncio.gather(
            *(ask(member, asks[member.uid], saturated) for member in members)
        )
        asked_s = time.monotonic() - started
        spent = cpu.used(before, await cpu.sample(stack))
        at_rates: dict[int, Pages] = {}
        for rate in RATES:
            per_asker = round(rate * plan.rate_s / len(members))
            rate_asks = {
                member.uid: pages_to_ask(history, member.uid, per_asker, f"{rate}/s")
                for member in members
            }
            at_rates[rate] = await ask_at_rate(members, rate_asks, rate)
        direct = await read_directly(stack.names, asks)
    finally:
        await asyncio.gather(*(member.abort() for member in members))
        await database.close()
        await close_stack(stack)
    answered = len(saturated.latencies_ns)
    pages_per_s = answered / asked_s
    mean_entries = saturated.entries / max(1, answered)
    print(
        f"  {shape.inbox_rows:,} inbox rows loaded in {load_s:.1f} s ({inbox_mb:.0f} MB "
        f"with indexes); {answered:,} pages answered at saturation, "
        f"{saturated.unanswered} not, {mean_entries:.1f} entries per page, "
        f"{pages_per_s:.0f} pages/s",
        file=sys.stderr,
    )
    per_page = ", ".join(
        f"{role} {seconds * 1e3 / max(1, answered):.2f}"
        for role, seconds in spent.items()
        if seconds > 0
    )
    loaded = f"{shape.inbox_rows:,} inbox rows ({shape.messages:,} 1:1 messages) loaded by COPY"
    saturation_note = (
        f"{loaded}; {len(members)} clients, {plan.pages_per_asker} pages each, one at a "
        f"time, all at once; random conversation and before, {mean_entries:.0f} entries "
        f"per page on average; history frame to reply; {per_page} ms CPU/page"
    )
    rows = f"({shape.inbox_rows:,} rows)"

    def latencies(
        what: str,
        latencies_ns: list[int],
        quantiles: tuple[tuple[str, float], ...],
        note: str,
        lost: int = 0,
        target: str = "",
    ) -> list[Measurement]:
        """One row per quantile of ``latencies_ns``, ``target`` in front of the p99's note."""
        return [
            Measurement(
                NAME,
                SWITCHBOARD_HISTORY,
                f"{label} ms of {what} {rows}",
                percentile(latencies_ns, quantile) / 1e6,
                "ms",
                "lower",
                lost=lost,
                note=(target if label == "p99" else "") + note,
            )
            for label, quantile in quantiles
        ]

    measurements = [
        Measurement(
            NAME,
            SWITCHBOARD_HISTORY,
            f"pages/s, {len(members)} askers one page at a time {rows}",
            pages_per_s,
            "pages/s",
            "higher",
            lost=saturated.unanswered,
            note=saturation_note,
        ),
        *latencies(
            f"a page of {PAGE} at saturation",
            saturated.latencies_ns,
            QUANTILES[:2],
            saturation_note,
            lost=saturated.unanswered,
        ),
    ]
    for rate, pages in at_rates.items():
        rate_note = (
            f"{loaded}; open loop, {rate} pages/s offered by {len(members)} clients for "
            f"{plan.rate_s:g} s, each page timed from its scheduled time; "
            f"{len(pages.latencies_ns):,} answered"
        )
        measurements += latencies(
            f"a page of {PAGE} at {rate}/s",
            pages.latencies_ns,
            QUANTILES,
            rate_note,
            lost=pages.unanswered,
            target="target < 20 ms; ",
        )
    measurements += latencies(
        "a page's statement alone",
        direct,
        QUANTILES[:2],
        "the same pages read with the store's statement (QueryTables.history) from one "
        "connection, one at a time",
    )
    return measurements
