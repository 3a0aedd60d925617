"""The retention sweep: rows older than ``SWITCHBOARD_OFFLINE_RETENTION_S`` are deleted unread,
and group members removed more than a day ago (tombstones, ``group_store.py``) with them; with
history on, the inbox's entries, receipts and messages older than ``SWITCHBOARD_HISTORY_DAYS``
and the recent syncs past their time (``docs/history.md``, section 4.6).

Replays and history reads skip such rows at once (``store.py`` and ``query_tables.py`` read
only younger ones); this loop removes them from the tables, in bounded statements, so that no
writer waits behind it.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from offline_store import observability
from offline_store.group_store import GroupStore
from offline_store.queries import cutoff_mid
from offline_store.query_tables import QueryTables
from offline_store.store import Store
from proto.metrics import CODE_BATCH_FAILED
from runtime.metrics import count_error
from runtime.shutdown import stop_if_cancelled

log = structlog.get_logger()


class RetentionSweep:
    """Deletes rows older than the retention, in bounded statements, every ``interval_s``.

    Each statement deletes at most ``batch_max`` rows and commits: writers and acks never wait
    behind a long delete. Replays skip expired rows whether or not the sweep has reached them.
    """

    def __init__(
        self,
        store: Store,
        interval_s: float,
        batch_max: int,
        groups: GroupStore | None = None,
        history: QueryTables | None = None,
        history_days: float = 0.0,
    ) -> None:
        self._store = store
        self._interval_s = interval_s
        self._batch_max = batch_max
        self._groups = groups
        self._history = history
        """History on: the inbox tables, swept when ``history_days`` is not 0."""
        self._history_days = history_days

    async def run(self) -> None:
        """Sweep now and then every ``interval_s``, until cancelled; a failed pass is retried."""
        while True:
            try:
                await self.sweep()
            except Exception:
                stop_if_cancelled()
                log.exception("retention_sweep_failed")
                count_error(CODE_BATCH_FAILED)
            await asyncio.sleep(self._interval_s)

    async def sweep(self) -> int:
        """Delete every expired row, a batch per statement; return how many went."""
        total = 0
        while True:
            count = await self._store.expire_rows(self._batch_max)
            total += count
            observability.EXPIRED.inc(count)
            if count < self._batch_max:
                break
        if total:
            log.info("undelivered_expired", count=total)
        if self._groups is not None:
            await self.sweep_tombstones(self._groups)
        if self._history is not None:
            await self.sweep_history(self._history)
        return total

    async def sweep_history(self, tables: QueryTables) -> int:
        """Delete the inbox's expired entries, then receipts and messages, then past syncs,
        each a batch per statement; return how many entries went (0 while another store
        sweeps them)."""
        cutoff = cutoff_mid(int(time.time() * 1000), self._history_days)
        limit = self._batch_max
        counts: dict[str, int] = {}
        async with tables.sweeping() as connection:
            if connection is None:
                return 0
            if cutoff:
                # Entries before messages: a read never finds an entry without its message.
                counts["entries"] = await self._drain(
                    lambda: tables.expire_entries(connection, cutoff, limit)
                )
                counts["receipts"] = await self._drain(
                    lambda: tables.expire_receipts(connection, cutoff, limit)
                )
                counts["messages"] = await self._drain(
                    lambda: tables.expire_messages(connection, cutoff, limit)
                )
            counts["syncs"] = await self._drain(
                lambda: tables.expire_syncs(connection, limit)
            )
        if any(counts.values()):
            log.info("history_expired", **counts)
        return counts.get("entries", 0)

    async def _drain(self, expire: Callable[[], Awaitable[int]]) -> int:
        """Run one bounded delete until it deletes less than a batch; return the total."""
        total = 0
        while True:
            count = await expire()
            total += count
            if count < self._batch_max:
                return total

    async def sweep_tombstones(self, groups: GroupStore) -> int:
        """Delete every tombstone older than a day, a batch per statement; return how many."""
        total = 0
        while True:
            count = await groups.delete_tombstones(self._batch_max)
            total += count
            if count < self._batch_max:
                break
        if total:
            log.info("group_tombstones_deleted", count=total)
        return total
