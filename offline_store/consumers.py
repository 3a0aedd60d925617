"""The consumers' work: batches of AMQP messages in, statements and confirmed publishes out.

Messages reach the store's queue ``<ns>.offline`` (and, history on, ``<ns>.inbox``) by the
ways that ``proto/topology.py`` declares in ``store_paths``, each with the exchange and routing
key it takes and who sends it: a router's undeliverable ``Delivery``, the alternate exchange of
``<ns>.deliveries``, a gateway's ``gateway.handover``, the dead-lettering of an expired delivery
in a gateway's queue, and (history on) a router's ``InboxBatch``. The topology binds the store's
queues from that declaration, so a way named there is a way bound.

Only the durable items of these deliveries become rows (``rows.py``): a replayed item that
comes back this way (``stored``) has its row already.

``runtime/batch_loop.py`` turns each consumer's messages into batches (up to
``SWITCHBOARD_BATCH_MAX``), and holds the backoff and the settling. ``UndeliveredWriter`` keeps
the offline queue's deliveries (each uid's rows capped; the senders of refused rows are told);
``ControlServer`` deletes acknowledged rows and replays (acks and replays come from two queues,
each with its own loop, so that acks never delay a replay). A message is acknowledged only after
its effect is durable (rows committed, publishes confirmed).

The decisions are pure modules: the rows to keep in ``rows.py``, what is announced about them in
``announcements.py``, the rows to delete in ``acked.py``, the replay windows in ``replay.py``.
SQL is in ``store.py``, AMQP calls in ``bus.py``; expired rows are deleted by ``retention.py``.
"""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from aio_pika.abc import AbstractIncomingMessage

from offline_store import observability, replay
from offline_store.acked import acked_from_body, acks_from_batch_body, key_pieces
from offline_store.announcements import message_offline_events, refusals, saved_envelope
from offline_store.bus import Bus
from offline_store.rows import (
    RowKey,
    StoredRow,
    UndeliveredRow,
    refused_row,
    rows_from_body,
    unique_rows,
)
from offline_store.store import (
    EXPECTED_FAILURES,
    MAX_KEYS_PER_DELETE,
    ROW_ERRORS,
    InsertOutcome,
    Store,
)
from offline_store.syncs import SyncServer
from offline_store.windows import sync_request_from_body
from proto.codes import ErrorCode
from proto.envelopes import Acked, ReplayRequest
from proto.errors import BadEnvelope
from proto.items import RefusedItem
from proto.metrics import CODE_ENVELOPE_REJECTED
from proto.names import (
    KEY_ACK,
    KEY_ACK_BATCH,
    KEY_REPLAY,
    KEY_REPLAY_BATCH,
    KEY_REPLAY_MORE,
    KEY_SYNC,
    KEY_SYNC_MORE,
)
from proto.sync import SyncRequest
from runtime.batch_loop import Backoff, ack_batch, log_batch_failed, requeue, settle
from runtime.metrics import count_error
from runtime.publish import confirm_all
from runtime.refusals import log_refused_item

log = structlog.get_logger()

Messages = list[AbstractIncomingMessage]
"""A batch: the messages a consumer took from its queue at once, in delivery order."""


class UndeliveredWriter:
    """Keeps the durable frames of the offline queue's deliveries as rows, then says ``Saved``."""

    def __init__(
        self, store: Store, bus: Bus, max_bytes: int, backoff: Backoff
    ) -> None:
        self._store = store
        self._bus = bus
        self._max_bytes = max_bytes
        self._backoff = backoff

    async def store_batch(self, batch: Messages) -> None:
        accepted: Messages = []
        rows: list[UndeliveredRow] = []
        # Rows of redelivered messages: their insert may have committed before a failure, and
        # then returns nothing; they are announced again so that no Saved is lost.
        retried: list[RowKey] = []
        refused: list[tuple[str, RefusedItem]] = []  # (routing key, item)
        for message in batch:
            try:
                kept = rows_from_body(message.body)
            except BadEnvelope as exc:
                await reject(message, exc)
                continue
            accepted.append(message)
            rows.extend(kept.rows)
            refused.extend((message.routing_key or "", item) for item in kept.refused)
            if message.redelivered:
                retried.extend(RowKey(row.uid, row.mid) for row in kept.rows)
        if not accepted:
            return
        log_refused(refused)
        # Kept across attempts: an insert that committed before a failure returns nothing when
        # tried again, and its rows must still be announced.
        inserted: list[RowKey] = []
        while True:
            try:
                outcome, unstorable = await self._insert(rows)
                inserted += outcome.inserted
                # Dead-lettered once: a retry of the batch does not publish them again.
                await dead_letter(self._bus, [*refused, *unstorable])
                refused = []
                new = [*inserted, *retried]
                stored_ms = time.time_ns() // 1_000_000
                saved = saved_envelope(new)
                events = message_offline_events(new, stored_ms)
                if saved is not None:
                    await self._bus.publish_saved(saved.uids)
                    await self._bus.publish_message_offline_events(events)
                if outcome.refused:
                    await self._refuse(rows, outcome.refused, stored_ms)
            except Exception as exc:
                log_batch_failed(exc, EXPECTED_FAILURES, messages=len(accepted))
                if await self._backoff.wait():
                    continue  # the same batch again, its messages still held
                await requeue(accepted)
                return
            break
        self._backoff.reset()
        # One channel per consumer, handled in delivery order by its BatchLoop.
        await ack_batch(accepted)
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
        await tell_refused(self._bus, refused_rows, ts_ms, self._max_bytes)

    async def _insert(
        self, rows: list[UndeliveredRow]
    ) -> tuple[InsertOutcome, list[tuple[str, RefusedItem]]]:
        """Insert the rows in one statement. Should PostgreSQL refuse the statement for what a
        row holds, insert them one by one: the rows it refuses are returned to be dead-lettered.
        (Rows over their uid's cap are not errors: the outcome lists them as refused.)
        """
        unique = unique_rows(rows)
        try:
            return await self._store.insert_rows(unique), []
        except ROW_ERRORS as exc:
            log.warning("batch_insert_refused", rows=len(unique), error=repr(exc))
        outcome = InsertOutcome([], [])
        unstorable: list[tuple[str, RefusedItem]] = []
        for index, row in enumerate(unique):
            try:
                one = await self._store.insert_rows([row])
            except ROW_ERRORS as exc:
                item = refused_row(row, type(exc).__name__, index)
                unstorable.append(("", item))
                continue
            outcome.inserted.extend(one.inserted)
            outcome.refused.extend(one.refused)
        log_refused(unstorable)
        return outcome, unstorable


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """One replay request's window, read and not yet published."""

    uid: str
    deliveries: list[replay.GatewayDelivery]
    rows: int
    gateways: int
    is_complete: bool
    is_whole: bool = False
    """Every row of the uid from its first, in one message per gateway: it may share its
    messages with other whole windows (``replay.merge_whole_windows``)."""

    @property
    def size_bytes(self) -> int:
        return sum(len(outbound.body) for outbound in self.deliveries)


class ControlServer:
    """Deletes acknowledged rows and replays stored rows to connections; with history on,
    sends sync windows too (``syncs.py``)."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        replay_page: int,
        max_bytes: int,
        backoff: Backoff,
        syncs: SyncServer | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._replay_page = replay_page
        self._max_bytes = max_bytes
        self._backoff = backoff
        self._syncs = syncs

    async def serve_batch(self, batch: Messages) -> None:
        acks: list[tuple[AbstractIncomingMessage, list[Acked]]] = []
        replays: list[tuple[AbstractIncomingMessage, list[ReplayRequest]]] = []
        syncs: list[tuple[AbstractIncomingMessage, SyncRequest]] = []
        refused: list[tuple[str, RefusedItem]] = []  # (routing key, item)
        for message in batch:
            try:
                if message.routing_key == KEY_ACK:
                    acks.append((message, [acked_from_body(message.body)]))
                elif message.routing_key == KEY_ACK_BATCH:
                    # A bad item is refused alone; the batch's other acks are still handled.
                    batch_acks, bad = acks_from_batch_body(message.body)
                    refused.extend((KEY_ACK_BATCH, item) for item in bad)
                    acks.append((message, batch_acks))
                elif message.routing_key in (KEY_REPLAY, KEY_REPLAY_MORE):
                    replays.append(
                        (message, [replay.replay_request_from_body(message.body)])
                    )
                elif message.routing_key == KEY_REPLAY_BATCH:
                    # A bad request is refused alone; the batch's others are replayed.
                    requests, bad = replay.replay_requests_from_batch_body(message.body)
                    refused.extend((KEY_REPLAY_BATCH, item) for item in bad)
                    replays.append((message, requests))
                elif self._syncs is not None and message.routing_key in (
                    KEY_SYNC,
                    KEY_SYNC_MORE,
                ):
                    syncs.append((message, sync_request_from_body(message.body)))
                else:
                    raise BadEnvelope("unexpected routing key")
            except BadEnvelope as exc:
                await reject(message, exc)
            # One message decoded per turn of the loop: a batch of ack floods (thousands of
            # mids a message) never holds the replays of the other loops for its whole decode.
            await asyncio.sleep(0)
        log_refused(refused)
        while True:
            try:
                # Dead-lettered once: a retry of the batch does not publish them again.
                await dead_letter(self._bus, refused)
                refused = []
                # Deletes go first: a row acknowledged in this batch need not be replayed.
                if acks:
                    await self._delete_acked([a for _, each in acks for a in each])
                    await ack_done([m for m, _ in acks], is_last=not (replays or syncs))
                    acks = []
                if replays:
                    await self._replay([r for _, each in replays for r in each])
                    await ack_done([m for m, _ in replays], is_last=not syncs)
                    replays = []
                if syncs:
                    await self._sync([r for _, r in syncs], syncs)
            except Exception as exc:
                log_batch_failed(
                    exc,
                    EXPECTED_FAILURES,
                    messages=len(acks) + len(replays) + len(syncs),
                )
                if await self._backoff.wait():
                    continue  # what is left of the batch again, its messages still held
                await requeue(
                    [m for m, _ in acks]
                    + [m for m, _ in replays]
                    + [m for m, _ in syncs]
                )
                return
            break
        self._backoff.reset()

    async def _sync(
        self,
        requests: list[SyncRequest],
        pending: list[tuple[AbstractIncomingMessage, SyncRequest]],
    ) -> None:
        """Register the syncing connections (committed), then send each request's window and
        acknowledge it; ``pending`` keeps what is left should one fail."""
        assert self._syncs is not None
        await self._syncs.register(requests)
        while pending:
            message, request = pending[0]
            await self._syncs.send_window(request)
            await settle(message.ack())
            pending.pop(0)

    async def _delete_acked(self, acks: Sequence[Acked]) -> None:
        count = keys = 0
        for uids, mids in key_pieces(acks, MAX_KEYS_PER_DELETE):
            count += await self._store.delete_rows(uids, mids)
            keys += len(mids)
        log.info("undelivered_deleted", count=count, acks=len(acks), mids=keys)
        observability.ACKNOWLEDGED.inc(count)

    async def _replay(self, requests: Sequence[ReplayRequest]) -> None:
        """Publish one window of each request's uid; the gateways ask for the next as
        clients ack.

        The windows are read in order and published together, up to ``max_bytes`` of them
        awaiting their confirms at a time: a confirm awaited per request made a reconnect
        storm's thousands of replays one broker round trip each. Should a publish fail, the
        batch's replays go again, whole: a window published twice is dropped by the client,
        which remembers the mids it saw.
        """
        # Most logins find nothing stored: one statement tells which uids to page.
        holding = await self._store.uids_with_rows([r.uid for r in requests])
        # One row more than the window tells whether rows remain, and where.
        limits = [
            replay.window_rows(r.limit, self._replay_page) + 1
            if r.uid in holding and r.targets
            else 0
            for r in requests
        ]
        read: list[ReplayWindow] = []
        read_bytes = 0
        for piece in replay.read_pieces(limits, replay.MAX_ROWS_PER_READ):
            asked = [index for index in piece if limits[index]]
            pages = await self._store.fetch_first_pages(
                [(requests[i].uid, requests[i].from_mid, limits[i]) for i in asked]
            )
            read_pages = dict(zip(asked, pages, strict=True))
            for index in piece:
                window = self._window(
                    requests[index], read_pages.get(index), limits[index] - 1
                )
                read.append(window)
                read_bytes += window.size_bytes
                if read_bytes >= self._max_bytes:
                    await self._publish_windows(read)
                    read, read_bytes = [], 0
        await self._publish_windows(read)

    async def _publish_windows(self, windows: Sequence[ReplayWindow]) -> None:
        """Publish the windows in order; consecutive whole windows share their messages."""
        outbound: list[replay.GatewayDelivery] = []
        whole: list[list[replay.GatewayDelivery]] = []
        for window in windows:
            if window.is_whole:
                whole.append(window.deliveries)
                continue
            outbound += replay.merge_whole_windows(whole, self._max_bytes)
            whole = []
            outbound += window.deliveries
        outbound += replay.merge_whole_windows(whole, self._max_bytes)
        await confirm_all(
            self._bus.publish_delivery(delivery.gateway_id, delivery.body)
            for delivery in outbound
        )
        for window in windows:
            log.info(
                "replay_finished",
                uid=window.uid,
                rows=window.rows,
                gateways=window.gateways,
                is_complete=window.is_complete,
            )
            observability.REPLAYED.inc(window.rows)

    def _window(
        self, request: ReplayRequest, page: Sequence[StoredRow] | None, limit: int
    ) -> ReplayWindow:
        """The deliveries of one window of the uid's rows, one per gateway; ``page``: the rows
        read for it (up to ``limit`` and one more), None when there was nothing to read."""
        gateways = replay.targets_by_gateway(request)
        if not gateways or page is None:
            return ReplayWindow(request.uid, [], 0, len(gateways), is_complete=True)
        window, next_mid = replay.split_window(page, limit)
        deliveries = replay.replay_deliveries(
            window, gateways, next_mid, self._max_bytes, request.from_mid
        )
        return ReplayWindow(
            request.uid,
            list(deliveries),
            len(window),
            len(gateways),
            is_complete=not next_mid,
            is_whole=(
                not request.from_mid
                and not next_mid
                and len(deliveries) == len(gateways)
            ),
        )


async def ack_done(
    messages: Sequence[AbstractIncomingMessage], *, is_last: bool
) -> None:
    """Acknowledge the messages of a batch that are done.

    With one multiple ack when they are the last of their batch still held (the messages
    before them are settled, as every batch before this one): a reconnect storm's replay
    requests are one ack a batch, not one each. Otherwise one by one, so that the batch's
    messages still to be done stay held.
    """
    if is_last:
        await ack_batch(messages)
    else:
        for message in messages:
            await settle(message.ack())


async def tell_refused(
    bus: Bus, refused_rows: Sequence[UndeliveredRow], ts_ms: int, max_bytes: int
) -> None:
    """Tell the sending connections (``recipient_full``) and backends (``message.refused``)
    of rows over their uid's cap, confirmed; one log line and count per row."""
    deliveries, events = refusals(refused_rows, ts_ms, max_bytes)
    for outbound in deliveries:
        await bus.publish_delivery(outbound.gateway_id, outbound.body)
    await bus.publish_message_refused_events(events)
    for row in refused_rows:
        log.warning(
            "undelivered_refused",
            code=ErrorCode.RECIPIENT_FULL,
            uid=row.uid,
            mid=row.mid,
            sender=row.origin.uid if row.origin else "",
        )
    observability.REFUSED.inc(len(refused_rows))


def log_refused(refused: Sequence[tuple[str, RefusedItem]]) -> None:
    """One line and one count per refused item (never what it carried)."""
    for routing_key, item in refused:
        count_error(CODE_ENVELOPE_REJECTED)
        log_refused_item(routing_key, item)


async def dead_letter(bus: Bus, refused: Sequence[tuple[str, RefusedItem]]) -> None:
    """Dead-letter refused items, each alone with its reason; returns once all are confirmed."""
    await confirm_all(
        bus.publish_dead_letter(routing_key, item.body, item.reason)
        for routing_key, item in refused
    )


async def reject(message: AbstractIncomingMessage, exc: BadEnvelope) -> None:
    """Drop a message that can never be handled, and say why (never what it carried)."""
    count_error(CODE_ENVELOPE_REJECTED)
    log.warning(
        "envelope_rejected",
        reason=exc.reason,
        routing_key=message.routing_key,
        exchange=message.exchange,
    )
    await settle(message.reject(requeue=False))
