"""One pool connection kept across a loop's calls, instead of one acquired for each.

The inbox writer runs a statement or two per batch, back to back: a connection acquired for each
batch costs a reset on its release (asyncpg's ``Connection.reset``: one more round trip, four
statements) and a wait for the pool. Kept, it costs neither. Calls are serialised (a batch tried
again after a failure may run beside the next one). A call that fails gives the connection back
to the pool, which replaces it when it is broken; the next call takes another.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    PoolConnection: TypeAlias = PoolConnectionProxy[asyncpg.Record]


class HeldConnection:
    """A connection of ``pool`` kept between calls, used by one call at a time."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._connection: PoolConnection | None = None
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def use(self) -> AsyncIterator["PoolConnection"]:
        """The kept connection (taken from the pool at the first call, or after a failure)."""
        async with self._lock:
            if self._connection is None:
                self._connection = await self._pool.acquire()
            try:
                yield self._connection
            except BaseException:
                await self._give_back()
                raise

    async def close(self) -> None:
        """Give the connection back to the pool (before the pool closes)."""
        async with self._lock:
            await self._give_back()

    async def _give_back(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.release(connection)
