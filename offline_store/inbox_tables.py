"""PostgreSQL for the numbered inbox (``SWITCHBOARD_HISTORY`` on): its tables, and the one
statement that writes a batch (``docs/history.md``, sections 4.1 and 4.2).

A batch costs a fixed number of round trips whatever its size, on a connection the writer keeps
(``held_connection.py``): one statement writes ``messages``, raises ``inbox_heads``, numbers the
entries (``numbering.py``'s rule, in SQL) and writes ``inbox``, ``conversations`` and the thin
undelivered rows, committed alone. When the batch has recipients without a connection, it runs
in a transaction after a statement that takes their advisory locks (the same locks as
``store.py``'s capped insert), so that its snapshot sees every row of those uids committed
before. A redelivered batch's numbers are read back after (only when some mid was kept before).
Every statement takes arrays (``unnest``). What to write is decided in ``inbox.py``; this module
only runs SQL.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from offline_store.held_connection import HeldConnection
from offline_store.inbox import InboxRows
from offline_store.latency import postgres_call
from offline_store.numbering import EntryKey, batch_seqs
from offline_store.rows import RowKey
from offline_store.store import quote_identifier, quoted_table
from proto.names import Names

if TYPE_CHECKING:
    from offline_store.held_connection import PoolConnection


@dataclass(frozen=True, slots=True)
class WrittenBatch:
    """What one batch's transaction did."""

    seqs: dict[EntryKey, int]
    """The ``seq`` of every entry written (or written before, for a redelivered batch)."""
    fresh_mids: set[str]
    """The mids this transaction inserted; the others were kept before."""
    kept: list[RowKey]
    """Thin undelivered rows inserted for recipients without a connection."""
    refused: list[RowKey]
    """Thin rows over their uid's cap (``recipient_full``)."""
    retried: list[RowKey]
    """Thin rows of mids kept before: announced again, since a ``Saved`` may have been lost."""


def creation_statements(names: Names) -> tuple[str, ...]:
    """The statements that create the inbox tables and thin the undelivered table, unless done
    (``store.py`` runs them in its creation transaction, under its lock)."""
    messages = quoted_table(names.messages_table)
    inbox = quoted_table(names.inbox_table)
    heads = quoted_table(names.inbox_heads_table)
    conversations = quoted_table(names.conversations_table)
    undelivered = quoted_table(names.undelivered_table)
    receipts = quoted_table(names.receipts_table)
    expired = quoted_table(names.conversation_expired_table)
    syncs = quoted_table(names.recent_syncs_table)
    prefix = names.inbox_table.partition(".")[2]
    return (
        f"CREATE TABLE IF NOT EXISTS {messages} ("
        ' mid text COLLATE "C" PRIMARY KEY,'
        ' sender text COLLATE "C" NOT NULL,'
        " frame text NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {inbox} ("
        ' uid text COLLATE "C" NOT NULL,'
        " seq bigint NOT NULL,"
        ' conv text COLLATE "C" NOT NULL,'
        ' mid text COLLATE "C" NOT NULL,'
        " is_own boolean NOT NULL,"
        " PRIMARY KEY (uid, seq))",
        f"CREATE INDEX IF NOT EXISTS {quote_identifier(prefix + '_conversation')}"
        f" ON {inbox} (uid, conv, seq)",
        f"CREATE UNIQUE INDEX IF NOT EXISTS {quote_identifier(prefix + '_mid')}"
        f" ON {inbox} (mid, uid)",
        f"CREATE TABLE IF NOT EXISTS {heads} ("
        ' uid text COLLATE "C" PRIMARY KEY,'
        " head bigint NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {conversations} ("
        ' uid text COLLATE "C" NOT NULL,'
        ' conv text COLLATE "C" NOT NULL,'
        " last_seq bigint NOT NULL,"
        ' last_mid text COLLATE "C" NOT NULL,'
        " received bigint NOT NULL,"
        ' read_mid text COLLATE "C",'
        " read_seq bigint,"
        " read_received bigint NOT NULL DEFAULT 0,"
        " PRIMARY KEY (uid, conv)) WITH (fillfactor = 80)",
        # A receipt entry: numbered in the reader's or the party's inbox like a message, in
        # a table of its own (a receipt for a mid would collide with the message's inbox row).
        f"CREATE TABLE IF NOT EXISTS {receipts} ("
        ' uid text COLLATE "C" NOT NULL,'
        " seq bigint NOT NULL,"
        ' reader text COLLATE "C" NOT NULL,'
        ' mid text COLLATE "C" NOT NULL,'
        " PRIMARY KEY (uid, seq))",
        f"CREATE INDEX IF NOT EXISTS {quote_identifier(prefix + '_receipts_mid')}"
        f" ON {receipts} (mid)",
        # Entries from others that retention deleted, per conversation (writers never touch it).
        f"CREATE TABLE IF NOT EXISTS {expired} ("
        ' uid text COLLATE "C" NOT NULL,'
        ' conv text COLLATE "C" NOT NULL,'
        " expired bigint NOT NULL,"
        " PRIMARY KEY (uid, conv))",
        f"CREATE TABLE IF NOT EXISTS {syncs} ("
        ' uid text COLLATE "C" NOT NULL,'
        ' conn_id text COLLATE "C" NOT NULL,'
        ' gateway_id text COLLATE "C" NOT NULL,'
        " until timestamptz NOT NULL,"
        " PRIMARY KEY (uid, conn_id))",
        f"CREATE INDEX IF NOT EXISTS {quote_identifier(prefix + '_recent_syncs_until')}"
        f" ON {syncs} (until)",
        # Thin rows: (uid, mid, seq) pointing at messages, no frame of their own.
        f"ALTER TABLE {undelivered} ALTER COLUMN frame DROP NOT NULL,"
        " ADD COLUMN IF NOT EXISTS seq bigint",
    )


class InboxTables:
    """The inbox tables of one namespace, written on a connection kept between batches."""

    def __init__(self, pool: asyncpg.Pool, names: Names, max_rows_per_uid: int) -> None:
        self.held = HeldConnection(pool)
        """The writer's connection: its batches' statements, and its reads after them."""
        self._names = names
        self._max_rows_per_uid = max_rows_per_uid
        messages = quoted_table(names.messages_table)
        inbox = quoted_table(names.inbox_table)
        heads = quoted_table(names.inbox_heads_table)
        conversations = quoted_table(names.conversations_table)
        undelivered = quoted_table(names.undelivered_table)
        # Keep the new messages; raise the heads of their entries' uids, in uid order (one
        # lock order for every store), by their number of entries; number each uid's entries
        # in batch order up to its new head; write them, the conversations, and the thin rows
        # of recipients without a connection (store.py's capped insert, with seq instead of
        # frame). A mid kept before (a redelivered batch) is not fresh: its entries are not
        # counted, so not numbered again. Returns each fresh entry with its seq, each fresh
        # mid (uid NULL), and each thin row kept or refused for its uid's cap.
        self._write_sql = (
            "WITH incoming AS ("
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
            " AS m(mid, sender, frame)),"
            " fresh AS ("
            f" INSERT INTO {messages} (mid, sender, frame)"
            " SELECT mid, sender, frame FROM incoming ORDER BY mid"
            " ON CONFLICT (mid) DO NOTHING RETURNING mid),"
            " entries AS ("
            " SELECT * FROM unnest($4::text[], $5::text[], $6::text[], $7::bool[],"
            " $8::bool[]) WITH ORDINALITY AS e(uid, mid, conv, is_own, is_absent, ord)"
            " WHERE e.mid IN (SELECT mid FROM fresh)),"
            " counts AS (SELECT uid, count(*) AS n FROM entries GROUP BY uid),"
            " raised AS ("
            f" INSERT INTO {heads} AS h (uid, head)"
            " SELECT uid, n FROM counts ORDER BY uid"
            " ON CONFLICT (uid) DO UPDATE SET head = h.head + excluded.head"
            " RETURNING uid, head),"
            " numbered AS ("
            " SELECT e.uid, e.mid, e.conv, e.is_own, e.is_absent, e.ord,"
            " r.head - c.n + row_number() OVER (PARTITION BY e.uid ORDER BY e.ord) AS seq"
            " FROM entries AS e JOIN raised AS r USING (uid) JOIN counts AS c USING (uid)),"
            " kept AS ("
            f" INSERT INTO {inbox} (uid, seq, conv, mid, is_own)"
            " SELECT uid, seq, conv, mid, is_own FROM numbered),"
            " talks AS ("
            f" INSERT INTO {conversations} AS c (uid, conv, last_seq, last_mid, received)"
            " SELECT uid, conv, max(seq), (array_agg(mid ORDER BY seq DESC))[1],"
            " count(*) FILTER (WHERE NOT is_own)"
            " FROM numbered GROUP BY uid, conv ORDER BY uid, conv"
            " ON CONFLICT (uid, conv) DO UPDATE SET"
            " last_seq = excluded.last_seq, last_mid = excluded.last_mid,"
            " received = c.received + excluded.received),"
            " absent AS ("
            " SELECT * FROM numbered AS i WHERE i.is_absent AND NOT EXISTS"
            f" (SELECT 1 FROM {undelivered} AS s WHERE s.uid = i.uid AND s.mid = i.mid)),"
            " held AS ("
            " SELECT u.uid, (SELECT count(*) FROM"
            f" (SELECT 1 FROM {undelivered} AS s WHERE s.uid = u.uid LIMIT $9) AS c) AS n"
            " FROM (SELECT DISTINCT uid FROM absent) AS u),"
            " ranked AS ("
            " SELECT a.uid, a.mid, a.seq, a.ord,"
            " held.n + row_number() OVER (PARTITION BY a.uid ORDER BY a.ord) AS position"
            " FROM absent AS a JOIN held USING (uid)),"
            " inserted AS ("
            f" INSERT INTO {undelivered} (uid, mid, seq)"
            " SELECT uid, mid, seq FROM ranked WHERE position <= $9 ORDER BY ord"
            " ON CONFLICT DO NOTHING RETURNING uid, mid)"
            " SELECT 'e' AS kind, uid, mid, seq FROM numbered"
            " UNION ALL SELECT 'f', NULL, mid, NULL FROM fresh"
            " UNION ALL SELECT 'k', uid, mid, NULL FROM inserted"
            " UNION ALL SELECT 'r', uid, mid, NULL FROM ranked WHERE position > $9"
        )
        # The numbers a redelivered batch's entries were given.
        self._read_seqs_sql = (
            f"SELECT i.uid, i.mid, i.seq FROM {inbox} AS i"
            " JOIN unnest($1::text[], $2::text[]) AS k(uid, mid)"
            " ON i.mid = k.mid AND i.uid = k.uid"
        )
        # The same locks as store.py's capped insert, so that a uid's rows stay within its cap
        # whichever writer inserts them.
        self._lock_sql = (
            "SELECT count(pg_advisory_xact_lock(hashtext($1), key)) FROM"
            " (SELECT DISTINCT hashtext(uid) AS key FROM unnest($2::text[]) AS u(uid)"
            " ORDER BY key) AS keys"
        )

    @postgres_call("inbox_write")
    async def write_batch(
        self, connection: "PoolConnection", rows: InboxRows
    ) -> WrittenBatch:
        """Write one batch and number its entries, committed (``held.use()``'s connection).

        Raises:
            asyncpg.PostgresError: the write failed (it was rolled back: no head moved).
        """
        messages, entries = rows.messages, rows.entries
        arguments = (
            [m.mid for m in messages],
            [m.sender for m in messages],
            [m.frame for m in messages],
            [e.uid for e in entries],
            [e.mid for e in entries],
            [e.conv for e in entries],
            [e.is_own for e in entries],
            [e.is_absent for e in entries],
            self._max_rows_per_uid,
        )
        if rows.absent:
            async with connection.transaction():
                # Granted before the write's snapshot: it sees every row of these uids that
                # the writers holding them before committed.
                await connection.execute(
                    self._lock_sql,
                    self._names.undelivered_table,
                    [a.uid for a in rows.absent],
                )
                records = await connection.fetch(self._write_sql, *arguments)
        else:
            records = await connection.fetch(self._write_sql, *arguments)
        numbered: dict[EntryKey, int] = {}
        fresh_mids: set[str] = set()
        kept: list[RowKey] = []
        refused: list[RowKey] = []
        for kind, uid, mid, seq in records:
            if kind == "e":
                numbered[EntryKey(uid, mid)] = seq
            elif kind == "f":
                fresh_mids.add(mid)
            elif kind == "k":
                kept.append(RowKey(uid, mid))
            else:
                refused.append(RowKey(uid, mid))
        kept_seqs: dict[EntryKey, int] = {}
        old = [e for e in entries if e.mid not in fresh_mids]
        if old:
            for record in await connection.fetch(
                self._read_seqs_sql, [e.uid for e in old], [e.mid for e in old]
            ):
                kept_seqs[EntryKey(record["uid"], record["mid"])] = record["seq"]
        seqs = batch_seqs(numbered, kept_seqs)
        retried = [
            RowKey(a.uid, a.mid)
            for a in rows.absent
            if a.mid not in fresh_mids and a in seqs
        ]
        return WrittenBatch(seqs, fresh_mids, kept, refused, retried)
