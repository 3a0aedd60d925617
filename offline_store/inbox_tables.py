"""PostgreSQL for the numbered inbox (``SWITCHBOARD_HISTORY`` on): its tables, and the one
transaction that writes a batch (``docs/history.md``, sections 4.1 and 4.2).

A batch costs a fixed number of round trips whatever its size: ``BEGIN``, the numbering
statement (``messages`` and ``inbox_heads``), the read-back of a redelivered batch's numbers
(only when some mid was kept before), the advisory locks of the recipients without a connection
(only when there are some: the same locks as ``store.py``'s capped insert), the entries
statement (``inbox``, ``conversations`` and the thin undelivered rows), ``COMMIT``. Every
statement takes arrays (``unnest``). What to write is decided in ``inbox.py`` and
``numbering.py``; this module only runs SQL.
"""

from dataclasses import dataclass

import asyncpg

from offline_store.inbox import InboxRows
from offline_store.numbering import EntryKey, batch_seqs
from offline_store.rows import RowKey
from offline_store.store import quote_identifier
from proto.names import Names


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


def _table(qualified: str) -> str:
    schema, _, table = qualified.partition(".")
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"


def creation_statements(names: Names) -> tuple[str, ...]:
    """The statements that create the inbox tables and thin the undelivered table, unless done
    (``store.py`` runs them in its creation transaction, under its lock)."""
    messages = _table(names.messages_table)
    inbox = _table(names.inbox_table)
    heads = _table(names.inbox_heads_table)
    conversations = _table(names.conversations_table)
    undelivered = _table(names.undelivered_table)
    receipts = _table(names.receipts_table)
    expired = _table(names.conversation_expired_table)
    syncs = _table(names.recent_syncs_table)
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
    """The inbox tables of one namespace."""

    def __init__(self, pool: asyncpg.Pool, names: Names, max_rows_per_uid: int) -> None:
        self._pool = pool
        self._names = names
        self._max_rows_per_uid = max_rows_per_uid
        messages = _table(names.messages_table)
        inbox = _table(names.inbox_table)
        heads = _table(names.inbox_heads_table)
        conversations = _table(names.conversations_table)
        undelivered = _table(names.undelivered_table)
        # 1. Keep the new messages and raise their uids' heads, in uid order (one lock order
        # for every store). A mid kept before (a redelivered batch) is not fresh: its entries
        # are not counted, so not numbered again.
        self._number_sql = (
            "WITH incoming AS ("
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
            " AS m(mid, sender, frame)),"
            " fresh AS ("
            f" INSERT INTO {messages} (mid, sender, frame)"
            " SELECT mid, sender, frame FROM incoming ORDER BY mid"
            " ON CONFLICT (mid) DO NOTHING RETURNING mid),"
            " counts AS ("
            " SELECT e.uid, count(*) AS n FROM unnest($4::text[], $5::text[]) AS e(uid, mid)"
            " WHERE e.mid IN (SELECT mid FROM fresh) GROUP BY e.uid),"
            " raised AS ("
            f" INSERT INTO {heads} AS h (uid, head)"
            " SELECT uid, n FROM counts ORDER BY uid"
            " ON CONFLICT (uid) DO UPDATE SET head = h.head + excluded.head"
            " RETURNING uid, head)"
            " SELECT uid AS key, head FROM raised"
            " UNION ALL SELECT mid, NULL FROM fresh"
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
        # 2. The entries, the conversations, and the thin rows of recipients without a
        # connection (store.py's capped insert, with seq instead of frame).
        self._entries_sql = (
            "WITH entries AS ("
            " SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[],"
            " $5::bool[]) AS e(uid, seq, conv, mid, is_own)),"
            " kept AS ("
            f" INSERT INTO {inbox} (uid, seq, conv, mid, is_own)"
            " SELECT uid, seq, conv, mid, is_own FROM entries),"
            " talks AS ("
            f" INSERT INTO {conversations} AS c (uid, conv, last_seq, last_mid, received)"
            " SELECT uid, conv, max(seq), (array_agg(mid ORDER BY seq DESC))[1],"
            " count(*) FILTER (WHERE NOT is_own)"
            " FROM entries GROUP BY uid, conv ORDER BY uid, conv"
            " ON CONFLICT (uid, conv) DO UPDATE SET"
            " last_seq = excluded.last_seq, last_mid = excluded.last_mid,"
            " received = c.received + excluded.received),"
            " incoming AS ("
            " SELECT uid, mid, seq, ord"
            " FROM unnest($6::text[], $7::text[], $8::int8[])"
            " WITH ORDINALITY AS i(uid, mid, seq, ord)),"
            " fresh AS ("
            " SELECT * FROM incoming AS i WHERE NOT EXISTS"
            f" (SELECT 1 FROM {undelivered} AS s WHERE s.uid = i.uid AND s.mid = i.mid)),"
            " held AS ("
            " SELECT u.uid, (SELECT count(*) FROM"
            f" (SELECT 1 FROM {undelivered} AS s WHERE s.uid = u.uid LIMIT $9) AS c) AS n"
            " FROM (SELECT DISTINCT uid FROM fresh) AS u),"
            " ranked AS ("
            " SELECT f.uid, f.mid, f.seq, f.ord,"
            " held.n + row_number() OVER (PARTITION BY f.uid ORDER BY f.ord) AS position"
            " FROM fresh AS f JOIN held USING (uid)),"
            " inserted AS ("
            f" INSERT INTO {undelivered} (uid, mid, seq)"
            " SELECT uid, mid, seq FROM ranked WHERE position <= $9 ORDER BY ord"
            " ON CONFLICT DO NOTHING RETURNING uid, mid)"
            " SELECT uid, mid, true AS is_kept FROM inserted"
            " UNION ALL SELECT uid, mid, false FROM ranked WHERE position > $9"
        )

    async def write_batch(self, rows: InboxRows) -> WrittenBatch:
        """Write one batch in one transaction and number its entries.

        Raises:
            asyncpg.PostgresError: the transaction failed (it was rolled back: no head moved).
        """
        keys = rows.keys
        async with self._pool.acquire() as connection, connection.transaction():
            records = await connection.fetch(
                self._number_sql,
                [m.mid for m in rows.messages],
                [m.sender for m in rows.messages],
                [m.frame for m in rows.messages],
                [k.uid for k in keys],
                [k.mid for k in keys],
            )
            heads: dict[str, int] = {}
            fresh_mids: set[str] = set()
            for record in records:
                if record["head"] is None:
                    fresh_mids.add(record["key"])
                else:
                    heads[record["key"]] = record["head"]
            old = [k for k in keys if k.mid not in fresh_mids]
            kept_seqs: dict[EntryKey, int] = {}
            if old:
                for record in await connection.fetch(
                    self._read_seqs_sql, [k.uid for k in old], [k.mid for k in old]
                ):
                    kept_seqs[EntryKey(record["uid"], record["mid"])] = record["seq"]
            seqs = batch_seqs(keys, fresh_mids, heads, kept_seqs)
            fresh_entries = [e for e in rows.entries if e.mid in fresh_mids]
            absent = [a for a in rows.absent if a.mid in fresh_mids]
            if absent:
                await connection.execute(
                    self._lock_sql,
                    self._names.undelivered_table,
                    [a.uid for a in absent],
                )
            kept: list[RowKey] = []
            refused: list[RowKey] = []
            if fresh_entries:
                for record in await connection.fetch(
                    self._entries_sql,
                    [e.uid for e in fresh_entries],
                    [seqs[EntryKey(e.uid, e.mid)] for e in fresh_entries],
                    [e.conv for e in fresh_entries],
                    [e.mid for e in fresh_entries],
                    [e.is_own for e in fresh_entries],
                    [a.uid for a in absent],
                    [a.mid for a in absent],
                    [seqs[a] for a in absent],
                    self._max_rows_per_uid,
                ):
                    key = RowKey(record["uid"], record["mid"])
                    (kept if record["is_kept"] else refused).append(key)
        retried = [
            RowKey(a.uid, a.mid)
            for a in rows.absent
            if a.mid not in fresh_mids and a in seqs
        ]
        return WrittenBatch(seqs, fresh_mids, kept, refused, retried)
