"""PostgreSQL: the undelivered table, its creation, and the few statements run on it.

Every statement works on a whole batch (arrays through ``unnest``), so a batch costs one round
trip (an insert two: the uids' locks, then the rows, each uid's capped). Deletes of acknowledged
rows and of expired ones are bounded per statement. What to insert, delete or replay is decided
in rows.py, acked.py and replay.py; this module only runs SQL.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiormq
import asyncpg
import structlog

from offline_store.latency import postgres_block, postgres_call
from offline_store.rows import RowKey, StoredRow, UndeliveredRow
from offline_store.settings import (
    DEFAULT_MAX_ROWS_PER_UID,
    DEFAULT_RETENTION_S,
    Settings,
)
from proto.env import location
from proto.errors import DependencyUnavailable
from proto.names import Names
from runtime.startup import unavailable

log = structlog.get_logger()

POSTGRES_HINT = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
    " or point SWITCHBOARD_POSTGRES_DSN at a running server"
)
POSTGRES_AUTH_HINT = (
    "check the user and its password in SWITCHBOARD_POSTGRES_DSN"
    " (postgresql://USER:PASSWORD@HOST:5432/DATABASE), or give the password in PGPASSWORD"
    " or ~/.pgpass"
)
"""For a server that refused the login (a stock Debian PostgreSQL asks for a scram password)."""
ROW_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)
"""PostgreSQL refusing a statement for a value it was given (SQLSTATE classes 22, 23, 54),
not because it is away: retrying the same rows would fail the same way."""
EXPECTED_FAILURES = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    aiormq.exceptions.AMQPError,
)
"""A dependency away or slow: logged as a warning, without a traceback, and retried."""
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 8
"""One connection per consumer loop (four; six with history on: the inbox and the read
markers) and the retention sweep, and a spare for one being replaced."""
MAX_KEYS_PER_DELETE = 1000
"""Most (uid, mid) keys one DELETE of acknowledged rows names: a flood of acks becomes many
short statements, never one that holds a connection and row locks for long."""


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    """What an insert did: rows that were not there and now are, and rows over the cap."""

    inserted: list[RowKey]
    refused: list[RowKey]


def quote_identifier(name: str) -> str:
    """Quote a PostgreSQL identifier (doubling any embedded quote)."""
    return '"' + name.replace('"', '""') + '"'


def quoted_table(qualified: str) -> str:
    """A ``schema.table`` name of ``proto.names.Names`` with each part quoted, for SQL."""
    schema, _, table = qualified.partition(".")
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"


def table_identifier(names: Names, qualified: str = "") -> str:
    """The quoted, schema-qualified name of a table (by default the undelivered table)."""
    return quoted_table(qualified or names.undelivered_table)


class Store:
    """The undelivered table of one namespace."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        names: Names,
        max_rows_per_uid: int = DEFAULT_MAX_ROWS_PER_UID,
        retention_s: float = DEFAULT_RETENTION_S,
        history: bool = False,
    ) -> None:
        self._pool = pool
        self._names = names
        self._max_rows_per_uid = max_rows_per_uid
        self._retention_s = retention_s
        self._history = history
        table = table_identifier(names)
        self._create_table_sql = (
            f"CREATE TABLE IF NOT EXISTS {table} ("
            # Byte order ("C") makes mids compare in PostgreSQL as they do everywhere else,
            # whatever the database's default collation.
            ' uid text COLLATE "C" NOT NULL,'
            ' mid text COLLATE "C" NOT NULL,'
            " frame text NOT NULL,"
            " stored_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (uid, mid))"
        )
        self._index_sql = (
            "CREATE INDEX IF NOT EXISTS"
            f" {quote_identifier(names.undelivered_table.partition('.')[2] + '_stored_at')}"
            f" ON {table} (stored_at)"
        )
        # Rows of the same uid are inserted by one store at a time (advisory locks taken in one
        # order, so two stores never deadlock), so that the count below stays true until commit.
        self._lock_sql = (
            "SELECT count(pg_advisory_xact_lock(hashtext($1), key)) FROM"
            " (SELECT DISTINCT hashtext(uid) AS key FROM unnest($2::text[]) AS u(uid)"
            " ORDER BY key) AS keys"
        )
        # One statement for the whole batch: rows already there are left alone (a redelivery);
        # each uid's new rows are numbered after those it holds (counted up to the cap only),
        # and those past the cap ($4) are returned as refused instead of inserted.
        self._insert_sql = (
            "WITH incoming AS ("
            " SELECT uid, mid, frame, ord"
            " FROM unnest($1::text[], $2::text[], $3::text[])"
            " WITH ORDINALITY AS i(uid, mid, frame, ord)),"
            " fresh AS ("
            " SELECT * FROM incoming AS i WHERE NOT EXISTS"
            f" (SELECT 1 FROM {table} AS s WHERE s.uid = i.uid AND s.mid = i.mid)),"
            " held AS ("
            " SELECT u.uid, (SELECT count(*) FROM"
            f" (SELECT 1 FROM {table} AS s WHERE s.uid = u.uid LIMIT $4) AS c) AS n"
            " FROM (SELECT DISTINCT uid FROM fresh) AS u),"
            " ranked AS ("
            " SELECT f.uid, f.mid, f.frame, f.ord,"
            " held.n + row_number() OVER (PARTITION BY f.uid ORDER BY f.ord) AS position"
            " FROM fresh AS f JOIN held USING (uid)),"
            " inserted AS ("
            f" INSERT INTO {table} (uid, mid, frame)"
            " SELECT uid, mid, frame FROM ranked WHERE position <= $4 ORDER BY ord"
            " ON CONFLICT DO NOTHING RETURNING uid, mid)"
            " SELECT uid, mid, true AS is_kept FROM inserted"
            " UNION ALL SELECT uid, mid, false FROM ranked WHERE position > $4"
        )
        # Bounded batches of expired rows; rows locked by a concurrent delete are skipped.
        self._expire_sql = (
            f"DELETE FROM {table} AS stored USING ("
            f" SELECT uid, mid FROM {table}"
            " WHERE stored_at < now() - make_interval(secs => $1)"
            " LIMIT $2 FOR UPDATE SKIP LOCKED) AS old"
            " WHERE stored.uid = old.uid AND stored.mid = old.mid"
        )
        self._delete_sql = (
            f"DELETE FROM {table} AS stored"
            " USING unnest($1::text[], $2::text[]) AS acked(uid, mid)"
            " WHERE stored.uid = acked.uid AND stored.mid = acked.mid"
        )
        self._first_pages_sql = self._pages_statement(reads_thin_rows=history)
        self._count_sql = f"SELECT count(*) FROM {table}"
        self._holding_sql = (
            f"SELECT DISTINCT uid FROM {table} WHERE uid = ANY($1::text[])"
        )

    def _pages_statement(self, *, reads_thin_rows: bool) -> str:
        """The replay's statement: the first page of each of many uids, in one round trip.

        It takes parallel arrays (uids $1, from_mids $2, limits $3): a reconnect storm's
        thousands of logins are tens of statements, not one each. A page starts at its from_mid
        and walks the primary key's index (keyset pagination); rows older than the retention
        ($4 s) are never replayed, swept or not. With ``reads_thin_rows``, thin rows (no frame,
        history on) take their message's frame, and with history on carry their seq, to be
        written into it; rows with a frame (handed over by a gateway, or kept with history off)
        are replayed as they are. Rows come by request (``ord``, from 1), each page's in mid
        order.
        """
        table = table_identifier(self._names)
        messages = table_identifier(self._names, self._names.messages_table)
        # With history off, frames carry no seq, even those the history kept.
        seq = "CASE WHEN s.frame IS NULL THEN s.seq END" if self._history else "NULL"
        page = (
            (
                f"SELECT s.mid, coalesce(s.frame, m.frame) AS frame, {seq} AS seq"
                f" FROM {table} AS s LEFT JOIN {messages} AS m"
                " ON s.frame IS NULL AND m.mid = s.mid"
                " WHERE s.uid = r.uid AND s.mid >= r.from_mid"
                " AND s.stored_at >= now() - make_interval(secs => $4)"
                " AND (s.frame IS NOT NULL OR m.frame IS NOT NULL)"
                " ORDER BY s.mid LIMIT r.page_limit"
            )
            if reads_thin_rows
            else (
                f"SELECT s.mid, s.frame FROM {table} AS s"
                " WHERE s.uid = r.uid AND s.mid >= r.from_mid"
                " AND s.stored_at >= now() - make_interval(secs => $4)"
                " ORDER BY s.mid LIMIT r.page_limit"
            )
        )
        return (
            "SELECT r.ord, p.* FROM unnest($1::text[], $2::text[], $3::int[])"
            " WITH ORDINALITY AS r(uid, from_mid, page_limit, ord)"
            f" CROSS JOIN LATERAL ({page}) AS p ORDER BY r.ord, p.mid"
        )

    async def find_kept_history(self) -> None:
        """With history off, replay the thin rows that history left, if it was ever on.

        A namespace that kept history and turned it off holds undelivered rows without a frame
        (their message is in ``messages``, which the relay otherwise never reads): the replay
        takes their frames from there, without ``seq``, rather than fail on every login of
        their uids.
        """
        if self._history:
            return
        kept = await self._pool.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", self._names.messages_table
        )
        if kept:
            self._first_pages_sql = self._pages_statement(reads_thin_rows=True)

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool, shared with the group tables (``group_store.py``) and the inbox
        tables (``inbox_tables.py``)."""
        return self._pool

    async def create_table(self, extra: Sequence[str] = ()) -> None:
        """Create the namespace's schema and table unless they exist, then run ``extra``
        (the inbox tables' creation, with history on) under the same lock."""
        async with self._pool.acquire() as connection, connection.transaction():
            # CREATE ... IF NOT EXISTS is not safe against a concurrent CREATE (two stores
            # starting at once): serialise them on a lock named after the table.
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                self._names.undelivered_table,
            )
            await connection.execute(
                f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(self._names.schema)}"
            )
            await connection.execute(self._create_table_sql)
            await connection.execute(self._index_sql)
            for statement in extra:
                await connection.execute(statement)

    async def insert_rows(self, rows: Sequence[UndeliveredRow]) -> InsertOutcome:
        """Insert rows, none past ``max_rows_per_uid`` rows per uid, in one transaction.

        Two statements per batch, whatever its size: the uids' locks, then the insert.
        """
        if not rows:
            return InsertOutcome([], [])
        uids = [row.uid for row in rows]
        with postgres_block("insert"):
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    self._lock_sql, self._names.undelivered_table, uids
                )
                records = await connection.fetch(
                    self._insert_sql,
                    uids,
                    [row.mid for row in rows],
                    [row.frame for row in rows],
                    self._max_rows_per_uid,
                )
        outcome = InsertOutcome([], [])
        for record in records:
            kept = outcome.inserted if record["is_kept"] else outcome.refused
            kept.append(RowKey(record["uid"], record["mid"]))
        return outcome

    @postgres_call("delete")
    async def delete_rows(self, uids: Sequence[str], mids: Sequence[str]) -> int:
        """Delete the rows with these (uid, mid) keys, at most ``MAX_KEYS_PER_DELETE`` of them
        (``acked.key_pieces``), in one statement; return how many went."""
        assert len(mids) <= MAX_KEYS_PER_DELETE
        status = await self._pool.execute(self._delete_sql, uids, mids)
        return int(status.rpartition(" ")[2])  # "DELETE <count>"

    @postgres_call("expire")
    async def expire_rows(self, limit: int) -> int:
        """Delete up to ``limit`` rows older than the retention; return how many went."""
        status = await self._pool.execute(self._expire_sql, self._retention_s, limit)
        return int(status.rpartition(" ")[2])  # "DELETE <count>"

    @postgres_call("replay")
    async def fetch_first_pages(
        self, pages: Sequence[tuple[str, str, int]]
    ) -> list[list[StoredRow]]:
        """For each (uid, from_mid, limit), up to ``limit`` unexpired rows of ``uid`` by mid,
        from ``from_mid`` on, in one statement; the pages in the order asked."""
        if not pages:
            return []
        records = await self._pool.fetch(
            self._first_pages_sql,
            [uid for uid, _, _ in pages],
            [from_mid for _, from_mid, _ in pages],
            [limit for _, _, limit in pages],
            self._retention_s,
        )
        found: list[list[StoredRow]] = [[] for _ in pages]
        for record in records:
            found[record["ord"] - 1].append(
                StoredRow(record["mid"], record["frame"], record.get("seq"))
            )
        return found

    async def uids_with_rows(self, uids: Sequence[str]) -> set[str]:
        """Of these uids, those that have stored rows (one statement for a batch of logins)."""
        if not uids:
            return set()
        with postgres_block("holding"):
            records = await self._pool.fetch(self._holding_sql, list(set(uids)))
        return {record["uid"] for record in records}

    @postgres_call("count")
    async def count_rows(self) -> int:
        """Return the number of undelivered rows (the backlog; a scan of the table)."""
        count: int = await self._pool.fetchval(self._count_sql)
        return count

    async def ping(self) -> bool:
        """Tell whether PostgreSQL answers a trivial query (readiness)."""
        return bool(await self._pool.fetchval("SELECT 1"))


@asynccontextmanager
async def open_store(
    settings: Settings, extra_tables: Sequence[str] = ()
) -> AsyncIterator[Store]:
    """Connect to PostgreSQL, create the table (and ``extra_tables``: the statements that create
    the inbox tables, with history on), and close the pool on exit.

    Raises:
        DependencyUnavailable: PostgreSQL cannot be reached or refuses the connection.
    """
    try:
        async with asyncio.timeout(settings.connect_timeout_s):
            pool = await asyncpg.create_pool(
                settings.postgres_dsn,
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                timeout=settings.connect_timeout_s,
                command_timeout=settings.query_timeout_s,
            )
    except Exception as exc:
        refused = isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError)
        hint = POSTGRES_AUTH_HINT if refused else POSTGRES_HINT
        raise unavailable("PostgreSQL", settings.postgres_dsn, exc, hint) from exc
    try:
        store = Store(
            pool,
            settings.names,
            settings.max_rows_per_uid,
            settings.retention_s,
            settings.history,
        )
        try:
            await store.create_table(extra_tables)
            await store.find_kept_history()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DependencyUnavailable(
                "PostgreSQL",
                location(settings.postgres_dsn),
                f"cannot create {settings.names.undelivered_table}: {exc}",
            ) from exc
        yield store
    finally:
        await _close_pool(pool, settings.shutdown_timeout_s)


async def _close_pool(pool: asyncpg.Pool, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await pool.close()
    except TimeoutError:
        log.warning("pool_close_timed_out")
        pool.terminate()
