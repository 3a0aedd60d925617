"""PostgreSQL: the undelivered table, its creation, and the few statements run on it.

Every statement works on a whole batch (arrays through ``unnest``), so a batch costs one round
trip. What to insert, delete or replay is decided in replay.py; this module only runs SQL.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiormq
import asyncpg
import structlog

from offline_store.replay import RowKey, StoredRow, UndeliveredRow
from offline_store.settings import Settings, mask_password
from proto.env import location
from proto.errors import DependencyUnavailable
from proto.names import Names

log = structlog.get_logger()

POSTGRES_HINT = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
    " or point SWITCHBOARD_POSTGRES_DSN at a running server"
)
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
POOL_MAX_SIZE = 4
"""One connection per consumer loop, and spares for a connection being replaced."""


def quote_identifier(name: str) -> str:
    """Quote a PostgreSQL identifier (doubling any embedded quote)."""
    return '"' + name.replace('"', '""') + '"'


def table_identifier(names: Names) -> str:
    """The quoted, schema-qualified name of the undelivered table."""
    schema, _, table = names.undelivered_table.partition(".")
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"


class Store:
    """The undelivered table of one namespace."""

    def __init__(self, pool: asyncpg.Pool, names: Names) -> None:
        self._pool = pool
        self._names = names
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
        self._insert_sql = (
            f"INSERT INTO {table} (uid, mid, frame)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
            " ON CONFLICT DO NOTHING RETURNING uid, mid"
        )
        self._delete_sql = (
            f"DELETE FROM {table} AS stored"
            " USING unnest($1::text[], $2::text[]) AS acked(uid, mid)"
            " WHERE stored.uid = acked.uid AND stored.mid = acked.mid"
        )
        # Keyset pagination: the first page includes from_mid, the next ones start after the
        # last mid seen; both walk the primary key's index.
        self._first_page_sql = (
            f"SELECT mid, frame FROM {table}"
            " WHERE uid = $1 AND mid >= $2 ORDER BY mid LIMIT $3"
        )
        self._next_page_sql = (
            f"SELECT mid, frame FROM {table}"
            " WHERE uid = $1 AND mid > $2 ORDER BY mid LIMIT $3"
        )
        self._count_sql = f"SELECT count(*) FROM {table}"
        self._holding_sql = (
            f"SELECT DISTINCT uid FROM {table} WHERE uid = ANY($1::text[])"
        )

    async def create_table(self) -> None:
        """Create the namespace's schema and table unless they exist."""
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

    async def insert_rows(self, rows: Sequence[UndeliveredRow]) -> list[RowKey]:
        """Insert rows in one statement; return the keys of those that were not there."""
        if not rows:
            return []
        records = await self._pool.fetch(
            self._insert_sql,
            [row.uid for row in rows],
            [row.mid for row in rows],
            [row.frame for row in rows],
        )
        return [RowKey(record["uid"], record["mid"]) for record in records]

    async def delete_rows(self, uids: Sequence[str], mids: Sequence[str]) -> int:
        """Delete the rows with these (uid, mid) keys in one statement; return how many went."""
        if not uids:
            return 0
        status = await self._pool.execute(self._delete_sql, uids, mids)
        return int(status.rpartition(" ")[2])  # "DELETE <count>"

    async def fetch_page(
        self, uid: str, from_mid: str, *, is_first: bool, limit: int
    ) -> list[StoredRow]:
        """Return up to ``limit`` rows of ``uid`` by mid: from ``from_mid``, or after it."""
        sql = self._first_page_sql if is_first else self._next_page_sql
        records = await self._pool.fetch(sql, uid, from_mid, limit)
        return [StoredRow(record["mid"], record["frame"]) for record in records]

    async def uids_with_rows(self, uids: Sequence[str]) -> set[str]:
        """Of these uids, those that have stored rows (one statement for a batch of logins)."""
        if not uids:
            return set()
        records = await self._pool.fetch(self._holding_sql, list(set(uids)))
        return {record["uid"] for record in records}

    async def count_rows(self) -> int:
        """Return the number of undelivered rows (the backlog; a scan of the table)."""
        count: int = await self._pool.fetchval(self._count_sql)
        return count

    async def ping(self) -> bool:
        """Tell whether PostgreSQL answers a trivial query (readiness)."""
        return bool(await self._pool.fetchval("SELECT 1"))


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """Connect to PostgreSQL, create the table, and close the pool on exit.

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
        raise DependencyUnavailable(
            "PostgreSQL",
            location(settings.postgres_dsn),
            f"{_reason(exc, settings.postgres_dsn)}; {POSTGRES_HINT}",
        ) from exc
    try:
        store = Store(pool, settings.names)
        try:
            await store.create_table()
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


def _reason(exc: Exception, dsn: str) -> str:
    """The first line of a connection error, with the DSN's password masked."""
    reason = str(exc).strip() or type(exc).__name__
    return mask_password(reason.splitlines()[0], dsn)
