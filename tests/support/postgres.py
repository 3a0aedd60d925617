"""One-off SQL against the machine's PostgreSQL, for tests that check what a store wrote."""

import asyncpg

from proto import env
from tests.support.timing import scaled


async def query(sql: str, *args: object) -> list[asyncpg.Record]:
    """Run one statement on a connection of its own and return its rows."""
    pg = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=scaled(10))
    try:
        return await pg.fetch(sql, *args)
    finally:
        await pg.close()
