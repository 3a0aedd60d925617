"""Apply the offline store's numbered schema migrations (``switchboard migrate``).

Reads ``offline_store/migrations/*.sql``, and the namespace's ``<ns>.schema_migrations`` table
(created here), lets ``migration_plan.py`` decide what is pending, and applies each pending
migration in a transaction of its own with ``search_path`` set to the namespace's schema,
recording it in the same transaction. The whole run holds the advisory lock that serialises the
stores' ``CREATE ... IF NOT EXISTS`` at startup, so that two runs, or a run and a starting
store, never interleave.

``check`` is what a starting store asks: which of the release's migrations the database lacks
(``check_at_startup`` refuses to start then). ``run`` is the whole of ``switchboard migrate``:
the tables a store creates at startup (as ``app.py`` does; tests/integration/test_migrations.py
compares the two), then the migrations.
"""

from collections.abc import Sequence
from pathlib import Path

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from offline_store.group_store import GroupStore
from offline_store.inbox_tables import creation_statements
from offline_store.migration_plan import (
    Migration,
    MigrationsInvalid,
    SchemaState,
    compare,
    parse,
    pending,
    startup_problem,
)
from offline_store.settings import Settings
from offline_store.store import open_store, quote_identifier, table_identifier
from proto.errors import SettingsError
from proto.names import Names

log = structlog.get_logger()

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def load(directory: Path = MIGRATIONS_DIR) -> tuple[Migration, ...]:
    """The release's migrations: every ``*.sql`` file of ``directory``, checked."""
    files = {
        path.name: path.read_text(encoding="utf-8") for path in directory.glob("*.sql")
    }
    return parse(files)


async def migrate(
    connection: "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]",
    names: Names,
    migrations: Sequence[Migration],
) -> tuple[Migration, ...]:
    """Apply what is pending; return what was applied (nothing when up to date).

    Raises:
        MigrationsInvalid: the database's record does not match the release's files.
        asyncpg.PostgresError: a migration failed; it was rolled back, those before it stay.
    """
    schema = quote_identifier(names.schema)
    table = table_identifier(names, names.schema_migrations_table)
    lock = names.undelivered_table
    await connection.execute("SELECT pg_advisory_lock(hashtext($1))", lock)
    try:
        async with connection.transaction():
            await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await connection.execute(
                f"CREATE TABLE IF NOT EXISTS {table} ("
                " number integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        rows = await connection.fetch(f"SELECT number, name FROM {table}")
        todo = pending(tuple(migrations), {row["number"]: row["name"] for row in rows})
        for migration in todo:
            async with connection.transaction():
                await connection.execute(f"SET LOCAL search_path TO {schema}")
                await connection.execute(migration.sql)
                await connection.execute(
                    f"INSERT INTO {table} (number, name) VALUES ($1, $2)",
                    migration.number,
                    migration.name,
                )
            log.info(
                "migration_applied", number=migration.number, migration=migration.name
            )
        return todo
    finally:
        await connection.execute("SELECT pg_advisory_unlock(hashtext($1))", lock)


async def check(
    connection: "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]",
    names: Names,
    migrations: Sequence[Migration],
) -> SchemaState:
    """The database's migrations against ``migrations`` (a database never migrated has none).

    Raises:
        MigrationsInvalid: the database's record does not match the release's files.
    """
    table = table_identifier(names, names.schema_migrations_table)
    exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    rows = await connection.fetch(f"SELECT number, name FROM {table}") if exists else []
    return compare(tuple(migrations), {row["number"]: row["name"] for row in rows})


async def check_at_startup(
    connection: "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]",
    names: Names,
    migrations: Sequence[Migration] | None = None,
) -> None:
    """Refuse to start on a database that lacks a migration of this release.

    Raises:
        SettingsError: a migration is pending (run ``switchboard migrate`` with this release
            first), or the database's record does not match the release's files.
    """
    try:
        state = await check(
            connection, names, load() if migrations is None else migrations
        )
    except MigrationsInvalid as exc:
        raise SettingsError(f"schema {names.schema}: {exc}") from None
    problem = startup_problem(state)
    if problem is not None:
        raise SettingsError(
            f"schema {names.schema}: {problem}; run `switchboard migrate` with this "
            'release\'s settings first (docs/operations.md, "Schema migrations")'
        )
    if state.newer:
        log.warning(
            "schema_newer",
            migrations=list(state.newer),
            hint="a newer release migrated this database; this one runs on it",
        )


async def run(
    settings: Settings, migrations: Sequence[Migration] | None = None
) -> tuple[Migration, ...]:
    """Create the store's tables as a starting store does, then apply the pending migrations.

    Raises:
        DependencyUnavailable: PostgreSQL cannot be reached, refuses the login, or the tables
            cannot be created.
        MigrationsInvalid: the database's record does not match the release's files.
    """
    names = settings.names
    history_tables = creation_statements(names) if settings.history else ()
    async with open_store(settings, history_tables) as store:
        await GroupStore(store.pool, names).create_tables()
        async with store.pool.acquire() as connection:
            return await migrate(
                connection, names, load() if migrations is None else migrations
            )
