"""The inbox writer (``SWITCHBOARD_HISTORY`` on): batches of ``<ns>.inbox`` in, one transaction
each, then the deliveries with each copy's ``seq``, then ``Saved`` and ``message.offline``.

Persist, then deliver (``docs/history.md``, section 4.2): a batch's messages are committed and
numbered before any copy is published, and the batch is acknowledged once every publish is
confirmed. A batch that comes back after a failure (the store died after its commit) finds its
mids kept: its numbers are read back and its deliveries published again, with the same seqs;
gateways and clients drop what they have by mid.

What to write and what to publish is decided in ``inbox.py`` and ``numbering.py`` (pure), the
SQL is in ``inbox_tables.py``.
"""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from aio_pika.abc import AbstractIncomingMessage

from offline_store import observability
from offline_store.announcements import (
    message_offline_events,
    saved_envelope,
)
from offline_store.bus import Bus
from offline_store.consumers import dead_letter, log_refused, reject, tell_refused
from offline_store.inbox import (
    InboxRows,
    inbox_deliveries,
    rows_from_items,
)
from offline_store.inbox_tables import InboxTables, WrittenBatch
from offline_store.rows import RowKey, UndeliveredRow
from offline_store.store import EXPECTED_FAILURES, ROW_ERRORS
from offline_store.sync_tables import SyncTables
from proto.errors import BadEnvelope
from proto.inbox import InboxItem, decode_inbox_items, encode
from proto.items import Decoded, RefusedItem, wrap_items
from proto.names import KEY_INBOX
from runtime.batch_loop import Backoff, ack_batch, log_batch_failed, requeue
from runtime.publish import confirm_all

if TYPE_CHECKING:
    from offline_store.held_connection import PoolConnection

log = structlog.get_logger()


PIPELINED_BATCHES = 4
"""Batches written and waiting for their confirms at once."""


@dataclass(slots=True)
class Attempt:
    """One attempt at a batch: what its transaction did, and its deliveries on their way."""

    written: WrittenBatch | None = None
    unwritable: list[tuple[str, RefusedItem]] = field(default_factory=list)
    delivering: "asyncio.Task[None] | None" = None
    failure: Exception | None = None
    transaction_ms: float = 0.0
    published_at: float = 0.0
    """When its deliveries were published (``time.monotonic()``); 0 when they were not."""


async def confirmed(attempt: Attempt) -> Exception | None:
    """What failed in an attempt, once its deliveries are confirmed; None: nothing."""
    if attempt.failure is None and attempt.delivering is not None:
        try:
            await attempt.delivering
        except Exception as exc:
            return exc
    return attempt.failure


class InboxWriter:
    """Writes the routers' ``InboxBatch`` envelopes, numbers them, then delivers them.

    Batches are pipelined, as in the router: once a batch is committed and its deliveries
    published, the next batch's transaction runs while the broker confirms them. Up to
    ``PIPELINED_BATCHES`` batches wait for their confirms at once; what follows the confirms
    (``Saved``, the events, the ack or the requeue) happens strictly in batch order.
    """

    def __init__(
        self,
        tables: InboxTables,
        syncs: SyncTables,
        bus: Bus,
        max_bytes: int,
        backoff: Backoff,
    ) -> None:
        self._tables = tables
        self._syncs = syncs
        self._bus = bus
        self._max_bytes = max_bytes
        self._backoff = backoff
        self._slots = asyncio.Semaphore(PIPELINED_BATCHES)
        self._last_settling: asyncio.Task[None] | None = None
        """The latest batch still settling; each waits for the one before it."""

    async def write_batch(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        """Handle one batch of ``<ns>.inbox``; never raises for bad input.

        Returns once the batch is committed and its deliveries published (not yet confirmed):
        a task settles it, after the batch before it.
        """
        await self._slots.acquire()
        settling: asyncio.Task[None] | None = None
        try:
            settling = await self._start(batch)
        finally:
            if settling is None:
                self._slots.release()
            else:
                settling.add_done_callback(lambda _: self._slots.release())
                self._last_settling = settling

    async def drain(self) -> None:
        """Wait until every batch started is settled (acknowledged or given back), then give
        the writer's connection back to the pool."""
        if self._last_settling is not None:
            await asyncio.wait([self._last_settling])
        await self._tables.held.close()

    async def _start(
        self, batch: Sequence[AbstractIncomingMessage]
    ) -> "asyncio.Task[None] | None":
        # The stages of the batch, for observability.INBOX_STAGES: a clock read per stage.
        started_ms, started = time.time_ns() // 1_000_000, time.monotonic()
        accepted: list[AbstractIncomingMessage] = []
        items: list[InboxItem] = []
        refused: list[tuple[str, RefusedItem]] = []
        for message in batch:
            try:
                decoded = decode_inbox_items(message.body)
            except BadEnvelope as exc:
                await reject(message, exc)
                continue
            accepted.append(message)
            items += decoded.items
            refused += ((KEY_INBOX, item) for item in decoded.refused)
        if not accepted:
            return None
        rows = rows_from_items(Decoded(items, []))
        refused += ((KEY_INBOX, item) for item in rows.refused)
        log_refused(refused)
        observability.count_inbox_waits((item.mid for item in rows.items), started_ms)
        rows_made = time.monotonic()
        observability.STAGE_DECODE.observe(rows_made - started)
        attempt = await self._attempt(rows)
        if attempt.published_at:
            observability.STAGE_WRITE.observe(attempt.published_at - rows_made)
        return asyncio.create_task(
            self._settle(accepted, rows, refused, attempt, self._last_settling)
        )

    async def _attempt(self, rows: InboxRows) -> Attempt:
        """Write the batch and start publishing its deliveries; never raises."""
        attempt = Attempt()
        try:
            syncing: dict[str, list[tuple[str, str]]] = {}
            async with self._tables.held.use() as connection:
                started = time.perf_counter()
                attempt.written, attempt.unwritable = await self._write(
                    connection, rows
                )
                attempt.transaction_ms = (time.perf_counter() - started) * 1000
                # After the commit: connections whose sync registered before it (section
                # 5.2).
                uids = sorted({entry.uid for entry in rows.entries})
                for found in await self._syncs.connections_of(uids, connection):
                    syncing.setdefault(found.uid, []).append(
                        (found.gateway_id, found.conn_id)
                    )
            deliveries = inbox_deliveries(
                rows.items, attempt.written.seqs, self._max_bytes, syncing
            )
            attempt.published_at = time.monotonic()
            attempt.delivering = asyncio.create_task(
                confirm_all(
                    self._bus.publish_delivery(outbound.gateway_id, outbound.body)
                    for outbound in deliveries
                )
            )
        except Exception as exc:
            attempt.failure = exc
        return attempt

    async def _settle(
        self,
        accepted: Sequence[AbstractIncomingMessage],
        rows: InboxRows,
        refused: list[tuple[str, RefusedItem]],
        attempt: Attempt,
        previous: "asyncio.Task[None] | None",
    ) -> None:
        """Finish a batch once its deliveries are confirmed and the batch before it is
        settled: ``Saved``, the events, then the ack. Never raises.

        A batch that failed is tried again here, after a backoff, its messages held (as in
        ``consumers.UndeliveredWriter``): its mids are then kept, so it is not numbered again,
        and its deliveries go out again with the same seqs.

        The deliver and settle stages of a batch that went through at the first try are
        observed.
        """
        failure = await confirmed(attempt)
        delivered = 0.0
        if failure is None and attempt.published_at:
            delivered = time.monotonic()
            observability.STAGE_DELIVER.observe(delivered - attempt.published_at)
        if previous is not None:
            await asyncio.wait([previous])  # settles in order
        while True:
            if failure is None:
                try:
                    # Dead-lettered once: a retry of the batch does not publish them again.
                    await dead_letter(self._bus, [*refused, *attempt.unwritable])
                    refused, attempt.unwritable = [], []
                    await self._announce(rows, attempt.written)
                    break
                except Exception as exc:
                    failure = exc
            delivered = 0.0  # its settle would count the retries
            log_batch_failed(failure, EXPECTED_FAILURES, messages=len(accepted))
            if not await self._backoff.wait():
                await requeue(accepted)
                return
            attempt = await self._attempt(rows)
            failure = await confirmed(attempt)
        self._backoff.reset()
        await ack_batch(accepted)
        if delivered:
            observability.STAGE_SETTLE.observe(time.monotonic() - delivered)
        written = attempt.written
        assert written is not None  # an attempt that did not fail wrote the batch
        log.info(
            "inbox_written",
            messages=len(rows.messages),
            entries=len(rows.entries),
            fresh=len(written.fresh_mids),
            undelivered=len(written.kept),
            transaction_ms=round(attempt.transaction_ms, 2),
        )
        observability.STORED.inc(len(written.kept))

    async def _write(
        self, connection: "PoolConnection", rows: InboxRows
    ) -> tuple[WrittenBatch, list[tuple[str, RefusedItem]]]:
        """Write the batch at once. Should PostgreSQL refuse it for what an item holds, write
        the items one by one: those it refuses are returned to be dead-lettered.
        """
        if not rows.items:
            return WrittenBatch({}, set(), [], [], []), []
        try:
            return await self._tables.write_batch(connection, rows), []
        except ROW_ERRORS as exc:
            log.warning(
                "inbox_batch_refused", messages=len(rows.items), error=repr(exc)
            )
        merged = WrittenBatch({}, set(), [], [], [])
        unwritable: list[tuple[str, RefusedItem]] = []
        for index, item in enumerate(rows.items):
            try:
                one = await self._tables.write_batch(
                    connection, rows_from_items(Decoded([item], []))
                )
            except ROW_ERRORS as exc:
                body = wrap_items([encode(item)])
                unwritable.append(
                    (KEY_INBOX, RefusedItem(body, type(exc).__name__, index))
                )
                continue
            merged.seqs.update(one.seqs)
            merged.fresh_mids.update(one.fresh_mids)
            merged.kept.extend(one.kept)
            merged.refused.extend(one.refused)
            merged.retried.extend(one.retried)
        log_refused(unwritable)
        return merged, unwritable

    async def _announce(self, rows: InboxRows, written: WrittenBatch | None) -> None:
        """After the deliveries: ``Saved`` and the events, and the refusals, confirmed."""
        assert written is not None  # an attempt that did not fail wrote the batch
        new = [*written.kept, *written.retried]
        stored_ms = time.time_ns() // 1_000_000
        saved = saved_envelope(new)
        if saved is not None:
            await self._bus.publish_saved(saved.uids)
            await self._bus.publish_message_offline_events(
                message_offline_events(new, stored_ms, rows.items)
            )
        if written.refused:
            await self._refuse(rows.items, written.refused, stored_ms)

    async def _refuse(
        self, items: Sequence[InboxItem], refused: Sequence[RowKey], ts_ms: int
    ) -> None:
        """Tell the senders (and backends) of thin rows over their uid's cap, as
        ``consumers.UndeliveredWriter`` does for the rows it refuses."""
        origins = {item.mid: item.origin for item in items}
        refused_rows = [
            UndeliveredRow(key.uid, key.mid, "", origins.get(key.mid))
            for key in refused
        ]
        await tell_refused(self._bus, refused_rows, ts_ms, self._max_bytes)
