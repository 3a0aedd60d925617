"""PostgreSQL for read markers (``SWITCHBOARD_HISTORY`` on): one transaction per batch of reads
(``docs/history.md``, section 6.3).

A batch costs a fixed number of round trips whatever its size: ``BEGIN``; the entries of the
mids read (``inbox`` joined to ``messages``, on ``inbox_mid``); the head rows of the readers and
their parties, locked in uid order as the inbox's writers take them; their conversations'
markers, locked; one statement that moves the markers, raises the heads and appends the receipt
entries; ``COMMIT``. The last three are skipped when nothing is found, or nothing moves. What
to write is decided in ``markers.py``; this module only runs SQL.
"""

from collections.abc import Sequence

import asyncpg

from offline_store.latency import postgres_call
from offline_store.markers import Found, ReadPlan, plan_reads, uids_to_lock
from offline_store.store import quoted_table
from proto.names import Names
from proto.sync import ReadAsked


class MarkerTables:
    """The read markers of one namespace."""

    def __init__(self, pool: asyncpg.Pool, names: Names) -> None:
        self._pool = pool
        messages = quoted_table(names.messages_table)
        inbox = quoted_table(names.inbox_table)
        heads = quoted_table(names.inbox_heads_table)
        conversations = quoted_table(names.conversations_table)
        receipts = quoted_table(names.receipts_table)
        # Each read's mid in its reader's inbox (docs/history.md, 4.3), by position.
        self._find_sql = (
            "SELECT k.ord, i.seq, i.conv, m.sender"
            " FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(uid, mid, ord)"
            f" JOIN {inbox} AS i ON i.mid = k.mid AND i.uid = k.uid"
            f" JOIN {messages} AS m ON m.mid = k.mid"
        )
        # Locked in uid order until the commit: a writer of these inboxes waits, and so does
        # another store's read of them, so the markers read next stay as read.
        self._lock_sql = (
            f"SELECT uid, head FROM {heads} WHERE uid = ANY($1::text[])"
            " ORDER BY uid FOR UPDATE"
        )
        self._markers_sql = (
            f"SELECT c.uid, c.conv, c.read_seq FROM {conversations} AS c"
            " WHERE (c.uid, c.conv) IN"
            " (SELECT * FROM unnest($1::text[], $2::text[]) AS k(uid, conv))"
            " ORDER BY c.uid, c.conv FOR UPDATE"
        )
        # read_received: `received` as it stood at the marker, that is without the entries
        # from others after it (an index range on inbox_conversation).
        self._write_sql = (
            "WITH raised AS ("
            f" UPDATE {heads} AS h SET head = v.head"
            " FROM unnest($1::text[], $2::int8[]) AS v(uid, head) WHERE h.uid = v.uid),"
            " appended AS ("
            f" INSERT INTO {receipts} (uid, seq, reader, mid)"
            " SELECT * FROM unnest($3::text[], $4::int8[], $5::text[], $6::text[])),"
            " moved AS ("
            f" UPDATE {conversations} AS c SET read_mid = v.mid, read_seq = v.seq,"
            " read_received = c.received - (SELECT count(*)"
            f" FROM {inbox} AS i WHERE i.uid = c.uid AND i.conv = c.conv"
            " AND i.seq > v.seq AND NOT i.is_own)"
            " FROM unnest($7::text[], $8::text[], $9::text[], $10::int8[])"
            " AS v(uid, conv, mid, seq)"
            " WHERE c.uid = v.uid AND c.conv = v.conv RETURNING 1)"
            " SELECT count(*) FROM moved"
        )

    @postgres_call("mark")
    async def mark(self, reads: Sequence[ReadAsked]) -> ReadPlan:
        """Decide and write a batch of reads in one transaction.

        Raises:
            asyncpg.PostgresError: the transaction failed (rolled back: nothing moved).
        """
        async with self._pool.acquire() as connection, connection.transaction():
            found: dict[int, Found] = {}
            for record in await connection.fetch(
                self._find_sql, [r.uid for r in reads], [r.mid for r in reads]
            ):
                found[record["ord"] - 1] = Found(
                    record["seq"], record["conv"], record["sender"]
                )
            heads: dict[str, int] = {}
            markers: dict[tuple[str, str], int | None] = {}
            if found:
                for record in await connection.fetch(
                    self._lock_sql, uids_to_lock(reads, found)
                ):
                    heads[record["uid"]] = record["head"]
                keys = sorted({(reads[i].uid, f.conv) for i, f in found.items()})
                for record in await connection.fetch(
                    self._markers_sql, [k[0] for k in keys], [k[1] for k in keys]
                ):
                    markers[(record["uid"], record["conv"])] = record["read_seq"]
            plan = plan_reads(reads, found, markers, heads)
            if plan.moves:
                await connection.fetchval(
                    self._write_sql,
                    list(plan.heads),
                    list(plan.heads.values()),
                    [r.uid for r in plan.receipts],
                    [r.seq for r in plan.receipts],
                    [r.reader for r in plan.receipts],
                    [r.mid for r in plan.receipts],
                    [m.uid for m in plan.moves],
                    [m.conv for m in plan.moves],
                    [m.mid for m in plan.moves],
                    [m.seq for m in plan.moves],
                )
        return plan
