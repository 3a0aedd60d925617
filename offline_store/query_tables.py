"""PostgreSQL for history, conversations and messages by mid (``SWITCHBOARD_HISTORY`` on), and
the retention of the inbox tables (``docs/history.md``, sections 4.3 and 4.6).

Every read is one statement that starts from an index whose leading columns are its equality
columns, reads the range it returns and stops; every read skips what the retention's cutoff
leaves out (``mid >= cutoff``), whether or not the sweep has reached it. The sweep deletes in
statements of at most ``limit`` rows, each committed alone, and skips rows that others hold
locked: writers insert new keys and never wait behind it. What to read and how to answer is
decided in ``queries.py``; this module only runs SQL. One store sweeps at a time (an advisory
lock): two sweeps would count the same conversation's expired entries against each other.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from offline_store.held_connection import HeldConnection
from offline_store.latency import postgres_call
from offline_store.queries import ConversationRow, HistoryRow
from offline_store.store import table_identifier
from proto.names import Names

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    SweepConnection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    from offline_store.held_connection import PoolConnection

READERS = 2
"""PostgreSQL connections the queries keep and read on, one query at a time each: the rest of
the pool stays for the writers, the replays and the acks."""


class QueryTables:
    """The inbox tables of one namespace, as queries and the retention sweep see them.

    Queries read on ``READERS`` connections kept from the pool (``held_connection.py``): a
    connection acquired per page would cost a reset on its release (one more round trip and
    four statements per page, a third of the store's time per page).
    """

    def __init__(
        self, pool: asyncpg.Pool, names: Names, readers: int = READERS
    ) -> None:
        self._pool = pool
        self._readers: asyncio.Queue[HeldConnection] = asyncio.Queue()
        self._all_readers = [HeldConnection(pool) for _ in range(readers)]
        for reader in self._all_readers:
            self._readers.put_nowait(reader)
        self._sweep_lock = names.conversation_expired_table
        """Names the advisory lock that lets one store at a time sweep the inbox tables."""
        messages = table_identifier(names, names.messages_table)
        inbox = table_identifier(names, names.inbox_table)
        conversations = table_identifier(names, names.conversations_table)
        expired = table_identifier(names, names.conversation_expired_table)
        receipts = table_identifier(names, names.receipts_table)
        syncs = table_identifier(names, names.recent_syncs_table)
        # A page of one conversation, newest first, on inbox_conversation (uid, conv, seq).
        self._history_sql = (
            f"SELECT i.seq, m.frame FROM {inbox} AS i JOIN {messages} AS m USING (mid)"
            " WHERE i.uid = $1 AND i.conv = $2 AND i.seq < $3 AND i.mid >= $5"
            " ORDER BY i.seq DESC LIMIT $4"
        )
        # A page of conversations: one uid's rows, the top ones by last_seq (a top-N sort).
        self._conversations_sql = (
            "SELECT c.conv, c.last_seq, m.frame, c.read_mid, c.received,"
            " c.read_received, coalesce(x.expired, 0) AS expired"
            f" FROM (SELECT * FROM {conversations}"
            " WHERE uid = $1 AND last_seq < $2 AND last_mid >= $4"
            " ORDER BY last_seq DESC LIMIT $3) AS c"
            f" JOIN {messages} AS m ON m.mid = c.last_mid"
            f" LEFT JOIN {expired} AS x ON x.uid = c.uid AND x.conv = c.conv"
            " ORDER BY c.last_seq DESC"
        )
        self._message_sql = f"SELECT frame FROM {messages} WHERE mid = $1 AND mid >= $2"
        self._inbox_message_sql = (
            f"SELECT i.seq, m.frame FROM {inbox} AS i JOIN {messages} AS m USING (mid)"
            " WHERE i.mid = $1 AND i.uid = $2 AND i.mid >= $3"
        )
        # Retention, 1: expired entries, oldest mids first (on inbox_mid). Entries from others
        # are counted per conversation; a conversation whose last entry went is deleted with
        # its count (a conversation a writer holds locked is alive: skipped).
        self._expire_entries_sql = (
            "WITH doomed AS ("
            f" SELECT uid, seq FROM {inbox} WHERE mid < $1 ORDER BY mid LIMIT $2"
            " FOR UPDATE SKIP LOCKED),"
            " gone AS ("
            f" DELETE FROM {inbox} AS i USING doomed AS d"
            " WHERE i.uid = d.uid AND i.seq = d.seq"
            " RETURNING i.uid, i.conv, i.seq, i.is_own),"
            " ending AS ("
            f" SELECT c.uid, c.conv FROM {conversations} AS c"
            " JOIN gone AS g ON c.uid = g.uid AND c.conv = g.conv AND c.last_seq = g.seq"
            " FOR UPDATE OF c SKIP LOCKED),"
            " ended AS ("
            f" DELETE FROM {conversations} AS c USING ending AS e"
            " WHERE c.uid = e.uid AND c.conv = e.conv RETURNING c.uid, c.conv),"
            " cleared AS ("
            f" DELETE FROM {expired} AS x USING ended AS e"
            " WHERE x.uid = e.uid AND x.conv = e.conv),"
            " counted AS ("
            f" INSERT INTO {expired} AS x (uid, conv, expired)"
            " SELECT g.uid, g.conv, count(*) FROM gone AS g"
            " WHERE NOT g.is_own AND NOT EXISTS"
            " (SELECT 1 FROM ending AS e WHERE e.uid = g.uid AND e.conv = g.conv)"
            " GROUP BY g.uid, g.conv ORDER BY g.uid, g.conv"
            " ON CONFLICT (uid, conv) DO UPDATE SET expired = x.expired + excluded.expired)"
            " SELECT count(*) FROM gone"
        )
        # Retention, 2 and 3: receipts and messages below the cutoff, past syncs.
        self._expire_receipts_sql = _bounded_delete(receipts, "mid < $1")
        self._expire_messages_sql = _bounded_delete(messages, "mid < $1")
        self._expire_syncs_sql = _bounded_delete(syncs, "until < now()")

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator["PoolConnection"]:
        """A kept connection, for one query (waits while every one is in use)."""
        reader = await self._readers.get()
        try:
            async with reader.use() as connection:
                yield connection
        finally:
            self._readers.put_nowait(reader)

    async def close(self) -> None:
        """Give the kept connections back to the pool (before the pool closes)."""
        for reader in self._all_readers:
            await reader.close()

    @postgres_call("history")
    async def history(
        self, uid: str, conv: str, before: int, limit: int, cutoff: str
    ) -> list[HistoryRow]:
        """Up to ``limit`` entries of ``uid``'s conversation below ``before``, newest first."""
        async with self._reading() as connection:
            records = await connection.fetch(
                self._history_sql, uid, conv, before, limit, cutoff
            )
        return [HistoryRow(record["seq"], record["frame"]) for record in records]

    @postgres_call("history")
    async def conversations(
        self, uid: str, before: int, limit: int, cutoff: str
    ) -> list[ConversationRow]:
        """Up to ``limit`` of ``uid``'s conversations last active below ``before``, the most
        recent first."""
        async with self._reading() as connection:
            records = await connection.fetch(
                self._conversations_sql, uid, before, limit, cutoff
            )
        return [
            ConversationRow(
                record["conv"],
                record["last_seq"],
                record["frame"],
                record["read_mid"],
                record["received"],
                record["read_received"],
                record["expired"],
            )
            for record in records
        ]

    @postgres_call("history")
    async def message(
        self, mid: str, uid: str | None, cutoff: str
    ) -> tuple[str | None, int | None]:
        """A message's frame, and its ``seq`` in ``uid``'s inbox when a uid is given; the
        frame is None when there is no such message (or not in that inbox)."""
        async with self._reading() as connection:
            if uid is None:
                frame: str | None = await connection.fetchval(
                    self._message_sql, mid, cutoff
                )
                return frame, None
            record = await connection.fetchrow(
                self._inbox_message_sql, mid, uid, cutoff
            )
        if record is None:
            return None, None
        return record["frame"], record["seq"]

    @asynccontextmanager
    async def sweeping(self) -> AsyncIterator["SweepConnection | None"]:
        """A connection to sweep with, while no other store sweeps (a session advisory lock);
        None when another one does: it sweeps for all."""
        async with self._pool.acquire() as connection:
            if not await connection.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", self._sweep_lock
            ):
                yield None
                return
            try:
                yield connection
            finally:
                await connection.execute(
                    "SELECT pg_advisory_unlock(hashtext($1))", self._sweep_lock
                )

    @postgres_call("expire")
    async def expire_entries(
        self, connection: "SweepConnection", cutoff: str, limit: int
    ) -> int:
        """Delete up to ``limit`` inbox entries below ``cutoff``; return how many went."""
        count: int = await connection.fetchval(self._expire_entries_sql, cutoff, limit)
        return count

    @postgres_call("expire")
    async def expire_receipts(
        self, connection: "SweepConnection", cutoff: str, limit: int
    ) -> int:
        """Delete up to ``limit`` receipt entries below ``cutoff``; return how many went."""
        return _deleted(
            await connection.execute(self._expire_receipts_sql, cutoff, limit)
        )

    @postgres_call("expire")
    async def expire_messages(
        self, connection: "SweepConnection", cutoff: str, limit: int
    ) -> int:
        """Delete up to ``limit`` messages below ``cutoff``; return how many went."""
        return _deleted(
            await connection.execute(self._expire_messages_sql, cutoff, limit)
        )

    @postgres_call("expire")
    async def expire_syncs(self, connection: "SweepConnection", limit: int) -> int:
        """Delete up to ``limit`` recent syncs past their ``until``; return how many went."""
        return _deleted(await connection.execute(self._expire_syncs_sql, limit))


def _bounded_delete(table: str, condition: str) -> str:
    """A delete of at most ``$2`` (or ``$1`` without a cutoff) rows matching ``condition``,
    skipping rows locked by others."""
    limit = "$2" if "$1" in condition else "$1"
    return (
        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {table} WHERE {condition} LIMIT {limit}"
        " FOR UPDATE SKIP LOCKED))"
    )


def _deleted(status: str) -> int:
    return int(status.rpartition(" ")[2])  # "DELETE <count>"
