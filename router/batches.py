"""The router's loops: batches from its queue, routed, confirmed, then acknowledged;
and the debounced ``user.offline`` announcements.

The only place that awaits for a batch: it decodes (routing.py), asks Redis in one
pipeline (presence.py), lets routing.py decide, publishes through bus.py and settles
the messages. A batch is acknowledged only once every publish of it is confirmed
(docs/architecture.md, step 3); on a failure it goes back to the queue. Backend
commands (``api.*``) travel in the same batches: their replies go out once the
batch's deliveries are confirmed.
"""

import asyncio
from collections.abc import Awaitable, Sequence

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError
from redis.exceptions import RedisError

from proto.errors import BadEnvelope
from proto.metrics import CODE_BATCH_FAILED, CODE_ENVELOPE_REJECTED
from proto.mids import MidFactory
from router import observability, routing
from router.bus import Bus
from router.presence import Presence, now_ms
from router.routing import Call, Inbound, Refused, ReplyTo
from router.settings import Settings

log = structlog.get_logger()

RETRY_BACKOFF_MIN_S = 0.1
RETRY_BACKOFF_MAX_S = 5.0
"""A failed batch waits this long (doubling from the minimum) before it is requeued,
so that a broken Redis or broker is not hammered by the same batch in a loop."""
OFFLINE_CHECK_MAX_S = 0.5
"""Longest wait between two looks for due ``user.offline`` events (else debounce / 4)."""
EXPECTED_FAILURES = (RedisError, AMQPError, OSError, TimeoutError)
"""Failures of a dependency: logged as a warning, not with a traceback."""


class BatchRouter:
    """Routes the messages handed to ``receive``, in batches of up to ``batch_max``."""

    def __init__(
        self, settings: Settings, bus: Bus, presence: Presence, mids: MidFactory
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._presence = presence
        self._mids = mids
        """Makes the mids of the messages backend commands send."""
        self._gateway_ttl_ms = round(settings.gateway_ttl_s * 1000)
        # Filled by the consumer callback; holds at most the prefetch.
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._backoff_s = RETRY_BACKOFF_MIN_S

    async def receive(self, message: AbstractIncomingMessage) -> None:
        """The consumer callback: queue the message for the next batch."""
        self._inbox.put_nowait(message)

    async def run(self, stop: asyncio.Event) -> None:
        """Route batches until ``stop`` is set; a batch already started is finished."""
        stopping = asyncio.create_task(stop.wait())
        receiving: asyncio.Task[AbstractIncomingMessage] | None = None
        try:
            # Checked as well as awaited: with messages waiting, `receiving` is done
            # as soon as `stopping`, and the loop would go on draining the inbox.
            while not stop.is_set():
                receiving = asyncio.create_task(self._inbox.get())
                await asyncio.wait(
                    (receiving, stopping), return_when=asyncio.FIRST_COMPLETED
                )
                if not receiving.done():
                    return  # what is left in the inbox goes back with the channel
                batch = [receiving.result()]
                while len(batch) < self._settings.batch_max and not self._inbox.empty():
                    batch.append(self._inbox.get_nowait())
                await self.route(batch)
        finally:
            stopping.cancel()
            if receiving is not None:
                receiving.cancel()

    async def route(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        """Route one batch and settle every message of it; never raises for bad input."""
        accepted: list[AbstractIncomingMessage] = []
        batch: list[Inbound] = []
        for message in messages:
            envelope = await self._accept(message)
            if envelope is not None:
                accepted.append(message)
                batch.append(envelope)
        if not batch:
            return
        try:
            await self._route_batch(batch)
        except EXPECTED_FAILURES as exc:
            log.warning("batch_failed", size=len(batch), error=repr(exc))
            observability.count_error(CODE_BATCH_FAILED)
            await self._requeue(accepted)
            return
        except Exception:
            log.exception("batch_failed", size=len(batch))
            observability.count_error(CODE_BATCH_FAILED)
            await self._requeue(accepted)
            return
        self._backoff_s = RETRY_BACKOFF_MIN_S
        # Batches are strictly sequential and the inbox keeps delivery order, so every
        # earlier delivery on this channel is settled already: one ack covers the batch.
        await _settle(accepted[-1].ack(multiple=True))

    async def _accept(self, message: AbstractIncomingMessage) -> Inbound | None:
        """Decode a message; reject it (no requeue) when it cannot be routed."""
        routing_key = message.routing_key or ""
        if routing.is_command(routing_key):
            return await self._accept_command(message, routing_key)
        try:
            return routing.decode_inbound(routing_key, message.body)
        except BadEnvelope as exc:
            log.info("envelope_rejected", routing_key=routing_key, reason=exc.reason)
            observability.count_error(CODE_ENVELOPE_REJECTED)
            await _settle(message.reject(requeue=False))
            return None

    async def _accept_command(
        self, message: AbstractIncomingMessage, routing_key: str
    ) -> Call | Refused | None:
        """Decode a command; one refused without a reply_to is dead-lettered."""
        reply_to = None
        if message.reply_to:
            reply_to = ReplyTo(message.reply_to, message.correlation_id or "")
        at_ms = now_ms()
        command = routing.decode_command(
            routing_key,
            message.body,
            reply_to,
            mid=self._mids.next_mid(at_ms),
            ts=at_ms,
            max_bytes=self._settings.max_command_bytes,
        )
        if isinstance(command, Refused):
            log.info(
                "command_rejected",
                routing_key=routing_key,
                code=command.code,
                reason=command.reason,
                replied=reply_to is not None,
            )
            if reply_to is None:
                await _settle(message.reject(requeue=False))
                return None
        return command

    async def _route_batch(self, batch: Sequence[Inbound]) -> None:
        at_ms = now_ms()
        lookups = await self._presence.exchange_batch(batch, at_ms)
        plan = routing.route_batch(
            self._settings.names,
            batch,
            lookups,
            last_seen_ms=self._presence.last_seen_ms,
            now_ms=at_ms,
            gateway_ttl_ms=self._gateway_ttl_ms,
        )
        await self._bus.publish_all((*plan.deliveries, *plan.events))
        await self._presence.remove_connections(plan.removals, at_ms)
        # After the deliveries are queued: ready before stored messages, and a sent
        # (or a command's reply) only for what was routed.
        await self._bus.publish_all((*plan.replays, *plan.replies))
        observability.count_routed(batch, plan)
        for gateway_id in plan.sweeps:
            await self._presence.sweep_gateway(gateway_id, stale_before_ms=None)
        for duplicate in plan.duplicates:
            log.info(
                "duplicate_dropped",
                mid=duplicate.mid,
                client_id=duplicate.client_id,
                first_mid=duplicate.first_mid,
            )
        log.debug(
            "batch_routed",
            size=len(batch),
            deliveries=len(plan.deliveries),
            replays=len(plan.replays),
            replies=len(plan.replies),
        )

    async def _requeue(self, accepted: Sequence[AbstractIncomingMessage]) -> None:
        """Give a failed batch back to the queue after a backoff."""
        await asyncio.sleep(self._backoff_s)  # a backoff, not a synchronisation
        self._backoff_s = min(self._backoff_s * 2, RETRY_BACKOFF_MAX_S)
        await _settle(accepted[-1].nack(multiple=True, requeue=True))


async def _settle(settling: Awaitable[None]) -> None:
    """Send an ack, nack or reject; when the channel is gone, the broker redelivers."""
    try:
        await settling
    except (AMQPError, OSError) as exc:
        log.warning("settle_failed", error=repr(exc))


async def announce_offline_forever(
    settings: Settings, bus: Bus, presence: Presence
) -> None:
    """Publish ``user.offline`` for the uids whose debounce is over (routing.py explains
    the debounce); a failed round is logged and retried at the next tick."""
    interval_s = min(OFFLINE_CHECK_MAX_S, settings.presence_debounce_s / 4)
    names = settings.names
    while True:
        try:
            at_ms = now_ms()
            uids = await presence.take_due_offline(at_ms)
            await bus.publish_all(routing.offline_events(names, uids, at_ms))
            for uid in uids:
                log.info("user_offline_published", uid=uid)
        except EXPECTED_FAILURES as exc:
            log.warning("offline_announcement_failed", error=repr(exc))
        except Exception:
            log.exception("offline_announcement_failed")
        await asyncio.sleep(interval_s)  # a schedule, not a synchronisation
