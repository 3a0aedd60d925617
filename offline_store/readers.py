"""The read markers' consumer (``SWITCHBOARD_HISTORY`` on): batches of ``<ns>.offline.reads`` in,
one transaction each, then the answers to the reading connections and the receipts for the
routers (``docs/history.md``, section 6.3).

The reads have a queue and a loop of their own: a read marker is a write, and a flood of
history queries must not delay it, nor it them. A batch is acknowledged once its transaction is
committed and every answer and ``Receipts`` is confirmed; a batch that fails is tried again
here, its messages held (as every store consumer does). A batch whose commit is followed by a
failure to publish publishes again what it decided, without deciding again. Receipts are not
durable deliveries: a party with no connection now gets its receipt entries at its next sync.

What a batch writes and answers is decided in ``markers.py`` (pure), the SQL is in
``marker_tables.py``.
"""

import time
from collections.abc import Sequence

import structlog
from aio_pika.abc import AbstractIncomingMessage

from offline_store.bus import Bus
from offline_store.consumers import dead_letter, log_refused, reject
from offline_store.marker_tables import MarkerTables
from offline_store.markers import ReadPlan, receipts_bodies, reply_deliveries
from offline_store.store import EXPECTED_FAILURES, ROW_ERRORS
from proto.errors import BadEnvelope
from proto.frames import Error
from proto.items import DECODE_ERRORS, RefusedItem, reason_of
from proto.names import KEY_READ
from proto.sync import ReadAsked, decode_read_asked, encode
from runtime.batch_loop import Backoff, ack_batch, log_batch_failed, requeue
from runtime.publish import confirm_all

log = structlog.get_logger()


class ReadServer:
    """Moves read markers, answers ``marked`` or ``not_found``, publishes ``Receipts``."""

    def __init__(
        self, tables: MarkerTables, bus: Bus, max_bytes: int, backoff: Backoff
    ) -> None:
        self._tables = tables
        self._bus = bus
        self._max_bytes = max_bytes
        self._backoff = backoff

    async def serve_batch(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        """Handle one batch of ``<ns>.offline.reads``; never raises for bad input."""
        accepted: list[AbstractIncomingMessage] = []
        reads: list[ReadAsked] = []
        for message in batch:
            try:
                if message.routing_key != KEY_READ:
                    raise BadEnvelope("unexpected routing key")
                try:
                    read = decode_read_asked(message.body)
                except DECODE_ERRORS as exc:
                    raise BadEnvelope(reason_of(exc)) from None
            except BadEnvelope as exc:
                await reject(message, exc)
                continue
            accepted.append(message)
            reads.append(read)
        if not accepted:
            return
        plan: ReadPlan | None = None
        unwritable: list[tuple[str, RefusedItem]] = []
        transaction_ms = 0.0
        while True:
            try:
                if (
                    plan is None
                ):  # decided and committed once, published until confirmed
                    started = time.perf_counter()
                    plan, unwritable = await self._mark(reads)
                    transaction_ms = (time.perf_counter() - started) * 1000
                await dead_letter(self._bus, unwritable)
                unwritable = []
                await self._publish(plan)
            except Exception as exc:
                log_batch_failed(exc, EXPECTED_FAILURES, messages=len(accepted))
                if await self._backoff.wait():
                    continue  # the same batch again, its messages still held
                await requeue(accepted)
                return
            break
        self._backoff.reset()
        await ack_batch(accepted)
        log.info(
            "reads_marked",
            reads=len(reads),
            moved=len(plan.items),
            receipts=len(plan.receipts),
            not_found=sum(isinstance(frame, Error) for _, frame in plan.replies),
            transaction_ms=round(transaction_ms, 2),
        )

    async def _mark(
        self, reads: list[ReadAsked]
    ) -> tuple[ReadPlan, list[tuple[str, RefusedItem]]]:
        """The batch in one transaction. Should PostgreSQL refuse it for what a read holds,
        each read alone: those it refuses are returned to be dead-lettered, unanswered."""
        try:
            return await self._tables.mark(reads), []
        except ROW_ERRORS as exc:
            log.warning("reads_batch_refused", reads=len(reads), error=repr(exc))
        merged = ReadPlan()
        unwritable: list[tuple[str, RefusedItem]] = []
        for index, read in enumerate(reads):
            try:
                one = await self._tables.mark([read])
            except ROW_ERRORS as exc:
                unwritable.append(
                    (KEY_READ, RefusedItem(encode(read), type(exc).__name__, index))
                )
                continue
            merged.replies += one.replies
            merged.moves += one.moves
            merged.receipts += one.receipts
            merged.heads.update(one.heads)
            merged.items += one.items
        log_refused(unwritable)
        return merged, unwritable

    async def _publish(self, plan: ReadPlan) -> None:
        """The answers to the reading connections and the receipts, confirmed."""
        await confirm_all(
            [
                *(
                    self._bus.publish_delivery(outbound.gateway_id, outbound.body)
                    for outbound in reply_deliveries(plan.replies, self._max_bytes)
                ),
                *(
                    self._bus.publish_receipts(body)
                    for body in receipts_bodies(plan.items, self._max_bytes)
                ),
            ]
        )
