"""The two consumer loops: batches of AMQP messages in, statements and confirmed publishes out.

``BatchLoop`` turns a consumer's messages into batches: it waits for one message and takes
whatever else has already arrived, up to ``SWITCHBOARD_BATCH_MAX``. ``UndeliveredWriter`` keeps
the offline queue's deliveries (each uid's rows capped; the senders of refused rows are told);
``ControlServer`` deletes acknowledged rows and replays (acks and replays come from two queues,
each with its own loop, so that acks never delay a replay); ``RetentionSweep`` deletes expired
rows. A message
is acknowledged only after its effect is durable (rows committed, publishes confirmed). Decisions
live in replay.py; SQL in store.py; AMQP calls in bus.py.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aio_pika.abc import AbstractIncomingMessage

from offline_store import observability, replay
from offline_store.bus import Bus
from offline_store.replay import RowKey, UndeliveredRow
from offline_store.store import Store
from proto.codes import ErrorCode
from proto.envelopes import Acked, ReplayRequest
from proto.errors import BadEnvelope
from proto.metrics import CODE_BATCH_FAILED, CODE_ENVELOPE_REJECTED
from proto.names import KEY_ACK, KEY_ACK_BATCH, KEY_REPLAY, KEY_REPLAY_MORE

log = structlog.get_logger()

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0

Batch = list[AbstractIncomingMessage]


class Backoff:
    """A growing pause before a failed batch is requeued, so a dead dependency is not hammered."""

    def __init__(self) -> None:
        self._next_s = BACKOFF_FIRST_S

    async def wait(self) -> None:
        await asyncio.sleep(self._next_s)
        self._next_s = min(self._next_s * 2, BACKOFF_MAX_S)

    def reset(self) -> None:
        self._next_s = BACKOFF_FIRST_S


class BatchLoop:
    """Feeds one consumer's messages, in arrival order and in batches, to ``process``."""

    def __init__(
        self, process: Callable[[Batch], Awaitable[None]], batch_max: int
    ) -> None:
        self._process = process
        self._batch_max = batch_max
        # None marks the end: put there by close(), after the broker consumer was cancelled.
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()

    async def accept(self, message: AbstractIncomingMessage) -> None:
        """The consumer callback: queue the message (the broker's prefetch bounds the queue)."""
        self._inbox.put_nowait(message)

    def close(self) -> None:
        """Let ``run`` finish what it has received, then return."""
        self._inbox.put_nowait(None)

    async def run(self) -> None:
        is_closing = False
        while not is_closing:
            first = await self._inbox.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._batch_max and not self._inbox.empty():
                message = self._inbox.get_nowait()
                if message is None:
                    is_closing = True
                    break
                batch.append(message)
            await self._process(batch)


class UndeliveredWriter:
    """Keeps the durable frames of the offline queue's deliveries as rows, then says ``Saved``."""

    def __init__(self, store: Store, bus: Bus) -> None:
        self._store = store
        self._bus = bus
        self._backoff = Backoff()

    async def store_batch(self, batch: Batch) -> None:
        accepted: Batch = []
        rows: list[UndeliveredRow] = []
        # Rows of redelivered messages: their insert may have committed before a failure, and
        # then returns nothing; they are announced again so that no Saved is lost.
        retried: list[RowKey] = []
        for message in batch:
            try:
                message_rows = replay.rows_from_body(message.body)
            except BadEnvelope as exc:
                await reject(message, exc)
                continue
            accepted.append(message)
            rows.extend(message_rows)
            if message.redelivered:
                retried.extend(RowKey(row.uid, row.mid) for row in message_rows)
        if not accepted:
            return
        try:
            unique = replay.unique_rows(rows)
            outcome = await self._store.insert_rows(unique)
            inserted = outcome.inserted
            saved = replay.saved_envelope([*inserted, *retried])
            stored_ms = time.time_ns() // 1_000_000
            if saved is not None:
                await self._bus.publish_saved(saved)
                events = replay.offline_events([*inserted, *retried], stored_ms)
                await self._bus.publish_offline_events(events)
            if outcome.refused:
                await self._refuse(unique, outcome.refused, stored_ms)
        except Exception:
            log.exception("batch_failed", messages=len(accepted))
            observability.count_error(CODE_BATCH_FAILED)
            await self._backoff.wait()
            await requeue(accepted)
            return
        self._backoff.reset()
        # One channel per consumer, handled in delivery order: every earlier message of this
        # channel is settled already, so one multiple ack covers exactly this batch.
        await settle(accepted[-1].ack(multiple=True))
        log.info(
            "undelivered_stored",
            count=len(inserted),
            rows=len(rows),
            messages=len(accepted),
        )
        observability.STORED.inc(len(inserted))

    async def _refuse(
        self, rows: Sequence[UndeliveredRow], refused: Sequence[RowKey], ts_ms: int
    ) -> None:
        """Tell the senders (and backends) of rows over their uid's cap; confirmed before the ack.

        Should this fail, the batch is handled again: its refused rows are refused again, and
        told again (at least once, like everything else).
        """
        keys = set(refused)
        refused_rows = [row for row in rows if RowKey(row.uid, row.mid) in keys]
        deliveries, events = replay.refusals(refused_rows, ts_ms)
        for outbound in deliveries:
            await self._bus.publish_delivery(outbound.gateway_id, outbound.delivery)
        await self._bus.publish_refused_events(events)
        for row in refused_rows:
            log.warning(
                "undelivered_refused",
                code=ErrorCode.RECIPIENT_FULL,
                uid=row.uid,
                mid=row.mid,
                sender=row.origin.uid if row.origin else "",
            )
        observability.REFUSED.inc(len(refused_rows))


class ControlServer:
    """Deletes acknowledged rows and replays stored rows to connections."""

    def __init__(self, store: Store, bus: Bus, replay_page: int) -> None:
        self._store = store
        self._bus = bus
        self._replay_page = replay_page
        self._backoff = Backoff()

    async def serve_batch(self, batch: Batch) -> None:
        acks: list[tuple[AbstractIncomingMessage, list[Acked]]] = []
        replays: list[tuple[AbstractIncomingMessage, ReplayRequest]] = []
        for message in batch:
            try:
                if message.routing_key == KEY_ACK:
                    acks.append((message, [replay.acked_from_body(message.body)]))
                elif message.routing_key == KEY_ACK_BATCH:
                    batch_acks, reasons = replay.acks_from_batch_body(message.body)
                    for reason in reasons:  # the batch's other acks are still handled
                        observability.count_error(CODE_ENVELOPE_REJECTED)
                        log.warning(
                            "envelope_rejected",
                            reason=reason,
                            routing_key=message.routing_key,
                        )
                    acks.append((message, batch_acks))
                elif message.routing_key in (KEY_REPLAY, KEY_REPLAY_MORE):
                    replays.append(
                        (message, replay.replay_request_from_body(message.body))
                    )
                else:
                    raise BadEnvelope("unexpected routing key")
            except BadEnvelope as exc:
                await reject(message, exc)
        unsettled = [message for message, _ in acks] + [m for m, _ in replays]
        try:
            # Deletes go first: a row acknowledged in this batch need not be replayed.
            if acks:
                await self._delete_acked([a for _, each in acks for a in each])
                for message, _ in acks:
                    await settle(message.ack())
                    unsettled.remove(message)
            # Most logins find nothing stored: one statement tells which uids to page through.
            holding = await self._store.uids_with_rows([r.uid for _, r in replays])
            for message, request in replays:
                await self._replay(request, request.uid in holding)
                await settle(message.ack())
                unsettled.remove(message)
        except Exception:
            log.exception("batch_failed", messages=len(unsettled))
            observability.count_error(CODE_BATCH_FAILED)
            await self._backoff.wait()
            await requeue(unsettled)
            return
        self._backoff.reset()

    async def _delete_acked(self, acks: Sequence[Acked]) -> None:
        uids, mids = replay.acked_keys(acks)
        count = await self._store.delete_rows(uids, mids)
        log.info("undelivered_deleted", count=count, acks=len(acks))
        observability.ACKNOWLEDGED.inc(count)

    async def _replay(self, request: ReplayRequest, has_rows: bool) -> None:
        """Publish one window of the uid's rows; the gateways ask for the next as clients ack."""
        with structlog.contextvars.bound_contextvars(uid=request.uid):
            gateways = replay.targets_by_gateway(request)
            rows = 0
            next_mid = ""
            if gateways and has_rows:
                limit = replay.window_rows(request.limit, self._replay_page)
                # One row more than the window tells whether rows remain, and where.
                page = await self._store.fetch_page(
                    request.uid, request.from_mid, is_first=True, limit=limit + 1
                )
                window, next_mid = replay.split_window(page, limit)
                for outbound in replay.replay_deliveries(window, gateways, next_mid):
                    await self._bus.publish_delivery(
                        outbound.gateway_id, outbound.delivery
                    )
                rows = len(window)
            log.info(
                "replay_finished",
                rows=rows,
                gateways=len(gateways),
                is_complete=not next_mid,
            )
            observability.REPLAYED.inc(rows)


class RetentionSweep:
    """Deletes rows older than the retention, in bounded statements, every ``interval_s``.

    Each statement deletes at most ``batch_max`` rows and commits: writers and acks never wait
    behind a long delete. Replays skip expired rows whether or not the sweep has reached them.
    """

    def __init__(self, store: Store, interval_s: float, batch_max: int) -> None:
        self._store = store
        self._interval_s = interval_s
        self._batch_max = batch_max

    async def run(self) -> None:
        """Sweep now and then every ``interval_s``, until cancelled; a failed pass is retried."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("retention_sweep_failed")
                observability.count_error(CODE_BATCH_FAILED)
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
        return total


async def reject(message: AbstractIncomingMessage, exc: BadEnvelope) -> None:
    """Drop a message that can never be handled, and say why (never what it carried)."""
    observability.count_error(CODE_ENVELOPE_REJECTED)
    log.warning(
        "envelope_rejected",
        reason=exc.reason,
        routing_key=message.routing_key,
        exchange=message.exchange,
    )
    await settle(message.reject(requeue=False))


async def requeue(messages: Sequence[AbstractIncomingMessage]) -> None:
    """Give messages back to the broker, to be handled again (here or by another store)."""
    for message in messages:
        await settle(message.nack(requeue=True))


async def settle(outcome: Awaitable[None]) -> None:
    """Await an ack, nack or reject; if the channel is gone, the broker redelivers anyway."""
    try:
        await outcome
    except Exception:
        log.warning("settle_failed", exc_info=True)
