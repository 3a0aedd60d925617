"""PostgreSQL for sync at ``init`` (``SWITCHBOARD_HISTORY`` on, ``docs/history.md`` section 5):
the recent syncs, and the statement that reads one window of a uid's inbox.

Registering a sync commits its ``recent_syncs`` row before the window is read; the inbox writer
reads the rows of its batch's uids after its commit (``connections_of``). Of two such pairs of
"write, then read what the other wrote" at least one read sees the other's write, so a message
committed after a window's read reaches the connection live (section 5.2). This module only
runs SQL; the windows are shaped in ``windows.py``.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from offline_store.held_connection import HeldConnection
from offline_store.store import quoted_table
from offline_store.windows import WindowRow
from proto.names import Names
from proto.sync import SyncRequest

if TYPE_CHECKING:
    from offline_store.held_connection import PoolConnection


@dataclass(frozen=True, slots=True)
class SyncingConnection:
    """A connection that started a sync lately, for messages routed before it registered."""

    uid: str
    gateway_id: str
    conn_id: str


class SyncTables:
    """The recent syncs and the inbox reads of one namespace.

    Registering and reading windows run on one connection kept from the pool (the control
    queue's loop runs one at a time): a sync of 10,000 entries is 20 windows or more, and a
    connection acquired for each would cost a reset at each release.
    """

    def __init__(self, pool: asyncpg.Pool, names: Names) -> None:
        self._pool = pool
        self.held = HeldConnection(pool)
        """The connection the windows are read on; given back by ``held.close()``."""
        syncs = quoted_table(names.recent_syncs_table)
        inbox = quoted_table(names.inbox_table)
        messages = quoted_table(names.messages_table)
        receipts = quoted_table(names.receipts_table)
        heads = quoted_table(names.inbox_heads_table)
        # One statement, committed alone: the rows exist before any window is read.
        self._register_sql = (
            f"INSERT INTO {syncs} (uid, conn_id, gateway_id, until)"
            " SELECT uid, conn_id, gateway_id, now() + make_interval(secs => $4)"
            " FROM unnest($1::text[], $2::text[], $3::text[]) AS s(uid, conn_id, gateway_id)"
            " ORDER BY uid, conn_id"
            " ON CONFLICT (uid, conn_id) DO UPDATE SET"
            " gateway_id = excluded.gateway_id, until = excluded.until"
        )
        # A window: both bounds on the primary keys (seqs are consecutive), the head in the
        # same snapshot. Receipts share the numbering.
        self._window_sql = (
            "SELECT 'm' AS kind, i.seq, i.mid, m.frame, NULL AS reader"
            f" FROM {inbox} AS i JOIN {messages} AS m USING (mid)"
            " WHERE i.uid = $1 AND i.seq > $2 AND i.seq <= $3 AND i.mid >= $4"
            " UNION ALL"
            " SELECT 'r', r.seq, r.mid, NULL, r.reader FROM"
            f" {receipts} AS r"
            " WHERE r.uid = $1 AND r.seq > $2 AND r.seq <= $3 AND r.mid >= $4"
            " UNION ALL"
            f" SELECT 'h', head, '', NULL, NULL FROM {heads} WHERE uid = $1"
            " ORDER BY 2, 1"
        )
        self._recent_sql = (
            f"SELECT uid, conn_id, gateway_id FROM {syncs}"
            " WHERE uid = ANY($1::text[]) AND until > now()"
        )

    async def register(self, requests: Sequence[SyncRequest], grace_s: float) -> None:
        """Record these connections among their uids' recent syncs, until ``grace_s`` from now
        (again for one recorded already: a redelivered request), and commit."""
        if not requests:
            return
        async with self.held.use() as connection:
            await connection.execute(
                self._register_sql,
                [r.uid for r in requests],
                [r.conn_id for r in requests],
                [r.gateway_id for r in requests],
                grace_s,
            )

    async def read_window(
        self, uid: str, since: int, upper: int, cutoff_mid: str
    ) -> tuple[list[WindowRow], int]:
        """The entries of ``uid``'s inbox in ``(since, upper]`` with a mid from ``cutoff_mid``
        on, in ``seq`` order, and the head (0: no inbox yet), read in one snapshot."""
        async with self.held.use() as connection:
            records = await connection.fetch(
                self._window_sql, uid, since, upper, cutoff_mid
            )
        rows: list[WindowRow] = []
        head = 0
        for record in records:
            if record["kind"] == "h":
                head = record["seq"]
            else:
                rows.append(
                    WindowRow(
                        record["seq"], record["mid"], record["frame"], record["reader"]
                    )
                )
        return rows, head

    async def connections_of(
        self, uids: Sequence[str], connection: "PoolConnection"
    ) -> list[SyncingConnection]:
        """The connections of these uids that started a sync within their grace, read on this
        connection (the inbox writer's, after its batch's commit)."""
        if not uids:
            return []
        records = await connection.fetch(self._recent_sql, list(uids))
        return [
            SyncingConnection(r["uid"], r["gateway_id"], r["conn_id"]) for r in records
        ]
