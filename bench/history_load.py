"""Loading a made-up history (``history_rows.py``) into a namespace's inbox tables by ``COPY``.

The tables are the offline store's, created at its startup (history on); the rows go in as
the writer would have left them, in send order, and the tables are then vacuumed and analysed,
as autovacuum would have done to tables that grew over days.
"""

import time
import uuid
from collections.abc import Sequence

import asyncpg

from bench.history_rows import (
    CONVERSATION_COLUMNS,
    HEAD_COLUMNS,
    INBOX_COLUMNS,
    MESSAGE_COLUMNS,
    History,
)
from proto.mids import MidFactory
from proto.names import Names

CHUNK = 20_000
"""Messages per ``COPY`` of ``messages`` and of ``inbox``."""
SPREAD_MS = 86_400_000
"""The messages were made over the last day (well within the retention)."""


async def copy(
    connection: asyncpg.Connection,
    qualified: str,
    columns: tuple[str, ...],
    rows: Sequence[tuple[object, ...]],
) -> None:
    """``COPY`` the rows into a table named ``<schema>.<table>``."""
    schema, _, table = qualified.partition(".")
    await connection.copy_records_to_table(
        table, schema_name=schema, columns=list(columns), records=rows
    )


async def load(connection: asyncpg.Connection, names: Names, history: History) -> float:
    """Write the history's rows into the namespace's tables; return the seconds it took."""
    started = time.monotonic()
    now_ms = time.time_ns() // 1_000_000
    first_ms = now_ms - SPREAD_MS
    step_ms = SPREAD_MS / history.shape.messages
    mids = MidFactory(uuid.uuid4().hex[:10])
    for messages, entries in history.chunks(mids, first_ms, step_ms, CHUNK):
        await copy(connection, names.messages_table, MESSAGE_COLUMNS, messages)
        await copy(connection, names.inbox_table, INBOX_COLUMNS, entries)
    await copy(
        connection,
        names.conversations_table,
        CONVERSATION_COLUMNS,
        history.tally.conversation_records(),
    )
    await copy(
        connection,
        names.inbox_heads_table,
        HEAD_COLUMNS,
        history.tally.head_records(),
    )
    for table in (
        names.messages_table,
        names.inbox_table,
        names.conversations_table,
        names.inbox_heads_table,
    ):
        await connection.execute(f"VACUUM (ANALYZE) {table}")
    return time.monotonic() - started


async def inbox_megabytes(connection: asyncpg.Connection, names: Names) -> float:
    """The size of ``inbox`` with its indexes, in MB."""
    size: int = await connection.fetchval(
        "SELECT pg_total_relation_size($1::regclass)", names.inbox_table
    )
    return size / 1e6
