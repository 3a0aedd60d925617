"""Schema migrations against the real PostgreSQL: applied once, in order, each in a transaction of
its own, under the stores' lock; and ``switchboard migrate`` creates what a starting store creates.
"""

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from offline_store.migration_plan import Migration, MigrationsInvalid
from offline_store.migrator import check_at_startup, load, migrate
from proto import env
from proto.env import DEFAULT_POSTGRES_DSN
from proto.errors import SettingsError
from proto.names import Names
from tests.support.processes import REPO_ROOT
from tests.support.stack import Stack, new_namespace
from tests.support.timing import scaled

pytestmark = pytest.mark.integration

CREATE = Migration(1, "create_notes", "CREATE TABLE notes (id integer PRIMARY KEY);")
ADD = Migration(2, "add_text", "ALTER TABLE notes ADD COLUMN text text;")
BROKEN = Migration(3, "broken", "ALTER TABLE notes ADD COLUMN more text; SELECT 1/0;")


@pytest.fixture
async def connection(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's PostgreSQL; the stack removes the namespace's schema."""
    connection = await asyncpg.connect(DEFAULT_POSTGRES_DSN)
    try:
        yield connection
    finally:
        await connection.close()


async def applied(
    connection: asyncpg.Connection, names: Names
) -> list[tuple[int, str]]:
    rows = await connection.fetch(
        f'SELECT number, name FROM "{names.schema}".schema_migrations ORDER BY number'
    )
    return [(row["number"], row["name"]) for row in rows]


async def columns(connection: asyncpg.Connection, names: Names) -> list[str]:
    rows = await connection.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = 'notes' ORDER BY ordinal_position",
        names.schema,
    )
    return [row["column_name"] for row in rows]


async def test_migrations_are_applied_once_in_order_in_the_namespace(
    stack: Stack, connection: asyncpg.Connection
) -> None:
    names = stack.names
    assert await migrate(connection, names, [CREATE]) == (CREATE,)
    assert await migrate(connection, names, [CREATE, ADD]) == (ADD,)
    assert await migrate(connection, names, [CREATE, ADD]) == ()

    assert await applied(connection, names) == [(1, "create_notes"), (2, "add_text")]
    assert await columns(connection, names) == ["id", "text"]
    # search_path was set for the migration's transaction only
    assert await connection.fetchval("SHOW search_path") == '"$user", public'


async def test_a_failing_migration_is_rolled_back_alone(
    stack: Stack, connection: asyncpg.Connection
) -> None:
    names = stack.names
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(connection, names, [CREATE, ADD, BROKEN])

    assert await applied(connection, names) == [(1, "create_notes"), (2, "add_text")]
    assert await columns(connection, names) == ["id", "text"]
    # the lock was given back: another run goes ahead at once
    async with asyncio.timeout(scaled(5)):
        assert await migrate(connection, names, [CREATE, ADD]) == ()


async def test_a_database_migrated_by_a_newer_release_is_refused(
    stack: Stack, connection: asyncpg.Connection
) -> None:
    await migrate(connection, stack.names, [CREATE, ADD])
    with pytest.raises(MigrationsInvalid, match="newer release"):
        await migrate(connection, stack.names, [CREATE])


async def test_a_store_refuses_to_start_until_its_migrations_ran(
    stack: Stack, connection: asyncpg.Connection
) -> None:
    names = stack.names
    await migrate(connection, names, [CREATE])
    with pytest.raises(SettingsError, match="lacks the migrations 0002_add_text"):
        await check_at_startup(connection, names, [CREATE, ADD])
    await migrate(connection, names, [CREATE, ADD])
    await check_at_startup(connection, names, [CREATE, ADD])
    # A release whose migration 2 has another name is refused too.
    renamed = Migration(2, "add_title", ADD.sql)
    with pytest.raises(SettingsError, match="must never change"):
        await check_at_startup(connection, names, [CREATE, renamed])


async def test_a_store_starts_on_a_database_a_newer_release_migrated(
    stack: Stack, connection: asyncpg.Connection
) -> None:
    # As after a rollback: this release ships no migration numbered 9000.
    later = Migration(9000, "from_a_later_release", "SELECT 1;")
    await migrate(connection, stack.names, [*load(), later])
    store = await stack.start_store()
    seen = await store.wait_for_event("schema_newer")
    assert seen["migrations"] == [9000]


async def test_concurrent_runs_apply_each_migration_once(stack: Stack) -> None:
    connections = [await asyncpg.connect(DEFAULT_POSTGRES_DSN) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(migrate(c, stack.names, [CREATE, ADD]) for c in connections)
        )
        assert sorted(len(result) for result in results) == [0, 0, 2]
        assert await applied(connections[0], stack.names) == [
            (1, "create_notes"),
            (2, "add_text"),
        ]
    finally:
        for connection in connections:
            await connection.close()


async def tables(schema: str) -> set[str]:
    connection = await asyncpg.connect(DEFAULT_POSTGRES_DSN)
    try:
        rows = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            schema,
        )
    finally:
        await connection.close()
    return {row["table_name"] for row in rows}


@pytest.mark.parametrize("history", ["off", "on"])
async def test_switchboard_migrate_creates_what_a_starting_store_creates(
    stack: Stack, history: str
) -> None:
    migrated = Stack(new_namespace())
    try:
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
            **migrated.env(),
            env.HISTORY: history,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "switchboard",
            "migrate",
            cwd=REPO_ROOT,
            env=environ,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(scaled(30)):
            stdout, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        assert f"the schema {migrated.namespace} is up to date" in stdout.decode()

        await stack.start_store(**{env.HISTORY: history})
        created_by_store = await tables(stack.names.schema)
        created_by_migrate = await tables(migrated.names.schema)
        assert created_by_migrate == created_by_store | {"schema_migrations"}
        assert "undelivered" in created_by_store
        assert ("inbox" in created_by_store) == (history == "on")
    finally:
        await migrated.close()


async def test_switchboard_migrate_without_postgresql_exits_1(stack: Stack) -> None:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        **stack.env(),
        env.POSTGRES_DSN: "postgresql://postgres@127.0.0.1:1/postgres",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard",
        "migrate",
        cwd=REPO_ROOT,
        env=environ,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(scaled(30)):
        _, stderr = await process.communicate()
    assert process.returncode == 1
    assert "PostgreSQL is not reachable at 127.0.0.1:1" in stderr.decode()
