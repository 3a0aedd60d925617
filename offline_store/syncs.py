"""Sync at ``init`` (``SWITCHBOARD_HISTORY`` on): ``SyncRequest``s in, sync windows out.

A router asks at a syncing connection's ``init`` (``router.sync``, ``register``), its gateway for
the next windows and for gaps (``gateway.sync``); both come on ``<ns>.offline.control`` beside
the replays (``consumers.ControlServer`` hands them here). For a request with ``register`` the
connection's ``recent_syncs`` row is committed first, then the window is read and published to
the connection's gateway, confirmed, and only then is the request acknowledged: a store that
dies meanwhile leaves it to another, which upserts the same row and reads the same window (the
gateway drops what it pushed already, by ``seq``).
"""

import time
from collections.abc import Sequence

import structlog

from offline_store import observability
from offline_store.bus import Bus
from offline_store.sync_tables import SyncTables
from offline_store.windows import (
    cutoff_mid,
    upper_bound,
    window_deliveries,
    window_of,
    window_size,
)
from proto.sync import SyncRequest

log = structlog.get_logger()

WINDOW_BYTES_SHARE = 4
"""A window carries frames up to this fraction of ``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``."""


class SyncServer:
    """Registers syncing connections and sends them windows of their uid's inbox."""

    def __init__(
        self,
        tables: SyncTables,
        bus: Bus,
        page: int,
        grace_s: float,
        history_days: float,
        max_bytes: int,
    ) -> None:
        self._tables = tables
        self._bus = bus
        self._page = page
        self._grace_s = grace_s
        self._history_days = history_days
        self._max_bytes = max_bytes

    async def register(self, requests: Sequence[SyncRequest]) -> None:
        """Commit the recent syncs of the requests that register (one statement)."""
        await self._tables.register([r for r in requests if r.register], self._grace_s)

    async def send_window(self, request: SyncRequest) -> None:
        """Read one window for the request's connection and publish it, confirmed."""
        size = window_size(request.limit, self._page)
        cutoff = cutoff_mid(time.time_ns() // 1_000_000, self._history_days)
        rows, head = await self._tables.read_window(
            request.uid, request.since, upper_bound(request.since, size), cutoff
        )
        window = window_of(
            rows, request.since, size, head, self._max_bytes // WINDOW_BYTES_SHARE
        )
        for outbound in window_deliveries(request, window, self._max_bytes):
            await self._bus.publish_delivery(outbound.gateway_id, outbound.body)
        log.info(
            "sync_window_sent",
            uid=request.uid,
            conn_id=request.conn_id,
            since=request.since,
            to_seq=window.to_seq,
            entries=len(window.rows),
            more=window.more,
            register=request.register,
        )
        observability.REPLAYED.inc(len(window.rows))
