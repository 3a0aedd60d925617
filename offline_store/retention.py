"""The retention sweep: rows older than ``SWITCHBOARD_OFFLINE_RETENTION_S`` are deleted unread,
and group members removed more than a day ago (tombstones, ``group_store.py``) with them.

Replays skip such rows at once (``store.py`` reads only younger ones); this loop removes them
from the table, in bounded statements, so that no writer waits behind it.
"""

import asyncio

import structlog

from offline_store import observability
from offline_store.group_store import GroupStore
from offline_store.store import Store
from proto.metrics import CODE_BATCH_FAILED
from runtime.metrics import count_error

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
    ) -> None:
        self._store = store
        self._interval_s = interval_s
        self._batch_max = batch_max
        self._groups = groups

    async def run(self) -> None:
        """Sweep now and then every ``interval_s``, until cancelled; a failed pass is retried."""
        while True:
            try:
                await self.sweep()
            except Exception:
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
