"""The offline store's query server (``SWITCHBOARD_HISTORY`` on): the queue
``<ns>.offline.queries`` in batches.

A client's ``history`` and ``conversations`` frames (``gateway.history``,
``gateway.conversations``) are answered to the asking connection through its gateway: a
``Delivery`` of one frame to the gateway's queue, for that connection alone, as replay windows
are. Backends' ``api.history``, ``api.conversations`` and ``api.message`` are answered on their
``reply_to`` with their ``correlation_id``. A command that cannot be served gets its error
reply (or is dead-lettered without a ``reply_to``), a gateway's envelope that does not decode is
dead-lettered, alone: the rest of the batch is served.

The batch's reads run a few at a time, on the connections ``query_tables.py`` keeps, every
answer is published, and the batch is acknowledged once all are confirmed; a few batches are
answered at once (``BATCHES_IN_FLIGHT``), acknowledged in order. When PostgreSQL or the broker
fails, the batch is tried again after a backoff, its messages held: a query has no effect, so an
answer given twice costs only a duplicate the client drops by its id. Decisions are in
``queries.py``, SQL in ``query_tables.py``.
"""

import asyncio
import time
from collections.abc import Sequence

import structlog
from aio_pika.abc import AbstractIncomingMessage

from offline_store.bus import Bus
from offline_store.consumers import reject
from offline_store.queries import (
    Asker,
    Caller,
    Query,
    ReadConversations,
    ReadHistory,
    ReadMessage,
    conversation_items,
    conversations_answer,
    cutoff_mid,
    decode_query,
    delivery_to,
    error_answer,
    history_answer,
    history_page,
    message_answer,
    page_budget,
)
from offline_store.query_tables import QueryTables
from offline_store.store import EXPECTED_FAILURES
from proto.commands import RefusedCommand
from proto.errors import BadEnvelope
from runtime.batch_loop import Backoff, ack_batch, log_batch_failed, requeue, settle
from runtime.metrics import count_error
from runtime.publish import confirm_all

log = structlog.get_logger()

BATCHES_IN_FLIGHT = 4
"""Batches answered at once: a query that arrives while a batch waits for its confirms (or for
a reading connection) is read at once, not after that batch. Their acks keep the queue's order."""


class QueryServer:
    """Answers the history queries of ``<ns>.offline.queries``."""

    def __init__(
        self,
        tables: QueryTables,
        bus: Bus,
        history_days: float,
        max_command_bytes: int,
        max_message_bytes: int,
        backoff: Backoff,
    ) -> None:
        self._tables = tables
        self._bus = bus
        self._history_days = history_days
        self._max_command_bytes = max_command_bytes
        self._budget = page_budget(max_message_bytes)
        self._backoff = backoff
        self._slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        self._last: asyncio.Task[None] | None = None
        """The latest batch being answered; each is acknowledged after the one before it."""

    async def serve_batch(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        """Decode a batch and start answering it; returns once it is started (or, with
        ``BATCHES_IN_FLIGHT`` batches under way, once one of them is done)."""
        accepted: list[AbstractIncomingMessage] = []
        queries: list[Query] = []
        for message in batch:
            try:
                query = decode_query(
                    message.routing_key or "",
                    message.body,
                    message.reply_to or "",
                    message.correlation_id or "",
                    self._max_command_bytes,
                )
            except BadEnvelope as exc:
                await reject(message, exc)
                continue
            if isinstance(query.read, RefusedCommand):
                log.info(
                    "command_rejected",
                    routing_key=message.routing_key,
                    code=query.read.code,
                    reason=query.read.reason,
                    replied=query.to is not None,
                )
                count_error(query.read.code)
                if query.to is None:
                    await reject(message, BadEnvelope(query.read.reason))
                    continue
            if query.to is None:
                await settle(message.ack())  # nobody waits for its answer
                continue
            accepted.append(message)
            queries.append(query)
        if not accepted:
            return
        await self._slots.acquire()
        answering = asyncio.create_task(
            self._answer_batch(accepted, queries, self._last)
        )
        answering.add_done_callback(lambda _: self._slots.release())
        self._last = answering

    async def drain(self) -> None:
        """Wait until every batch started is answered and settled."""
        if self._last is not None:
            await asyncio.wait([self._last])

    async def _answer_batch(
        self,
        accepted: list[AbstractIncomingMessage],
        queries: list[Query],
        previous: "asyncio.Task[None] | None",
    ) -> None:
        """Answer a batch's queries, then settle it once the batch before it is settled (one
        multiple ack covers exactly this batch)."""
        is_answered = False
        while True:
            cutoff = cutoff_mid(int(time.time() * 1000), self._history_days)
            try:
                await confirm_all(
                    [self._answer(query, cutoff) for query in queries]  # all at once
                )
                is_answered = True
            except Exception as exc:
                log_batch_failed(exc, EXPECTED_FAILURES, messages=len(accepted))
                if await self._backoff.wait():
                    continue  # the batch again, its messages held
            break
        if previous is not None:
            await asyncio.wait([previous])
        if not is_answered:
            await requeue(accepted)
            return
        self._backoff.reset()
        await ack_batch(accepted)
        log.info("queries_answered", count=len(accepted))

    async def _answer(self, query: Query, cutoff: str) -> None:
        """Read what ``query`` asks and publish its answer; returns once confirmed."""
        to = query.to
        assert to is not None  # serve_batch keeps only queries with someone to answer
        match query.read:
            case ReadHistory(uid=uid, conv=conv, before=before, limit=limit):
                rows = await self._tables.history(uid, conv, before, limit + 1, cutoff)
                page, more = history_page(rows, limit, self._budget)
                answer = history_answer(to, page, more)
            case ReadConversations(uid=uid, before=before, limit=limit):
                found = await self._tables.conversations(uid, before, limit, cutoff)
                answer = conversations_answer(
                    to, conversation_items(found, self._budget)
                )
            case ReadMessage(mid=mid, uid=uid):
                frame, seq = await self._tables.message(mid, uid, cutoff)
                answer = message_answer(frame, seq)
            case RefusedCommand() as refused:
                answer = error_answer(to, refused)
        await self._publish(to, answer)

    async def _publish(self, to: Asker | Caller, answer: bytes) -> None:
        if isinstance(to, Asker):
            await self._bus.publish_answer(to.gateway_id, delivery_to(to, answer))
        else:
            await self._bus.publish_reply(to.reply_to, to.correlation_id, answer)
