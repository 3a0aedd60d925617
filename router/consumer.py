"""The router's consumer: batches from its queue, routed, confirmed, then acknowledged.

The only place that awaits for a batch: it decodes (inbound.py), runs the requests of
lookups.py in Redis (presence.py), lets routing.py decide, publishes through bus.py and settles
the messages. A batch is acknowledged only once every publish of it is confirmed
(docs/architecture.md, step 3); on a failure it goes back to the queue. Backend
commands (``api.*``) travel in the same batches: their replies go out once the
batch's deliveries are confirmed.

A batch that reads group members while Redis has none (an empty restart; ``groups.py``) asks
the offline store for them (``group_changes.py``) and waits, as for Redis away, its messages
held. Group commands (``api.group.*``) reach this queue through ``api.#`` but are the offline
store's: they are acknowledged here and left to it.

Batches are pipelined: once a batch's deliveries are published, the next batch is
routed while the broker confirms them (a persistent message's confirm can take tens
of milliseconds). Up to ``PIPELINED_BATCHES`` batches wait for their confirms at once;
Redis sees the batches one after another, and what follows the confirms (replay
requests, replies, the ack or the requeue) happens strictly in batch order.
"""

import asyncio
import time
from collections.abc import Sequence

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError
from redis.exceptions import RedisError

from proto.errors import BadEnvelope
from proto.items import RefusedItem
from proto.metrics import CODE_ENVELOPE_REJECTED
from proto.mids import MidFactory
from proto.names import GROUP_COMMANDS, KEY_BATCH, KEY_RECEIPTS, QUERY_COMMANDS
from router import inbound, observability, routing
from router.bus import Bus
from router.group_changes import GroupApplier
from router.groups import GroupsNotLoaded, must_wait, should_ask_rebuild
from router.inbound import Call, Inbound, Refused, ReplyTo, ServedByStore
from router.limits import uid_rate
from router.lookups import BatchLookup, LookupRules
from router.presence import Presence, now_ms
from router.publications import Publication, dead_letter_publication
from router.receipts import decode_receipts_items
from router.requests import ReadGroupsLoaded
from router.results import GroupsLoaded, expect
from router.settings import Settings
from router.sweeping import Sweeper
from runtime.batch_loop import (
    Backoff,
    BatchLoop,
    ack_batch,
    log_batch_failed,
    requeue,
    settle,
)
from runtime.refusals import log_refused_item

log = structlog.get_logger()

EXPECTED_FAILURES = (RedisError, AMQPError, OSError, TimeoutError, GroupsNotLoaded)
"""Failures of a dependency: logged as a warning, not with a traceback."""
PIPELINED_BATCHES = 8
"""Batches routed and waiting for their confirms at once."""


class BatchRouter:
    """Routes the messages handed to ``receive``, in batches of up to ``batch_max``."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        presence: Presence,
        mids: MidFactory,
        stopping: asyncio.Event,
        groups: GroupApplier,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._presence = presence
        self._groups = groups
        self._mids = mids
        """Makes the mids of the messages backend commands send."""
        self._gateway_ttl_ms = round(settings.gateway_ttl_s * 1000)
        self._sweeper = Sweeper(presence, settings)
        self._lookup_rules = LookupRules(
            dedup_ttl_ms=settings.dedup_ttl_s * 1000,
            debounce_ms=round(settings.presence_debounce_s * 1000),
            max_connections_per_uid=settings.max_connections_per_uid,
            presence_policy=settings.presence_policy,
            uid_rate=uid_rate(
                settings.rate_limit_per_uid_per_s, settings.rate_limit_per_uid_burst
            ),
            history=settings.history,
        )
        self._loop = BatchLoop(self._start_batch, settings.batch_max)
        # Set when the router stops: a failing batch is then requeued, not retried.
        self._backoff = Backoff(settings.retry_backoff_max_s, stopping)
        self._slots = asyncio.Semaphore(PIPELINED_BATCHES)
        self._last_settling: asyncio.Task[None] | None = None
        """The latest batch still settling; each waits for the one before it."""

    async def receive(self, message: AbstractIncomingMessage) -> None:
        """The consumer callback: queue the message for the next batch."""
        await self._loop.accept(message)

    def close(self) -> None:
        """Let ``run`` route what it has received, then return (after consuming stopped)."""
        self._loop.close()

    async def run(self) -> None:
        """Route batches until ``close``; every batch started is finished."""
        try:
            await self._loop.run()
        finally:
            # The batches started are finished: confirmed and acknowledged, or requeued.
            if self._last_settling is not None:
                await asyncio.wait([self._last_settling])

    async def _start_batch(self, batch: list[AbstractIncomingMessage]) -> None:
        await self._slots.acquire()
        await self.route(batch)

    async def route(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        """Route one batch and start settling it; never raises for bad input.

        Returns once the batch's deliveries are published (not yet confirmed): the task that
        settles the batch waits for their confirms, then for the batch before it.
        """
        # The stages of the batch, for observability.BATCH_STAGES: a clock read per stage.
        started_ms, started = time.time_ns() // 1_000_000, time.monotonic()
        accepted: list[AbstractIncomingMessage] = []
        batch: list[Inbound] = []
        dead_letters: list[Publication] = []
        for message in messages:
            envelopes = await self._accept(message, dead_letters)
            if envelopes:
                accepted.append(message)
                batch += envelopes
        if not batch:
            self._slots.release()
            return
        observability.count_queue_waits(batch, started_ms)
        decoded = time.monotonic()
        observability.STAGE_DECODE.observe(decoded - started)
        at_ms = now_ms()
        try:
            plan = await self._plan(batch, at_ms)
            planned = time.monotonic()
            observability.STAGE_PLAN.observe(planned - decoded)
            delivering: asyncio.Task[None] | None = asyncio.create_task(
                self._bus.publish_all((*plan.deliveries, *plan.events, *dead_letters))
            )
        except Exception as exc:
            plan, delivering, planned = None, None, 0.0
            failure: Exception | None = exc
        else:
            failure = None
        settling = asyncio.create_task(
            self._settle_batch(
                accepted,
                batch,
                dead_letters,
                plan,
                delivering,
                failure,
                at_ms,
                self._last_settling,
                planned,
            )
        )
        settling.add_done_callback(lambda _: self._slots.release())
        self._last_settling = settling

    async def _settle_batch(
        self,
        accepted: Sequence[AbstractIncomingMessage],
        batch: Sequence[Inbound],
        dead_letters: Sequence[Publication],
        plan: routing.Plan | None,
        delivering: "asyncio.Task[None] | None",
        failure: Exception | None,
        at_ms: int,
        previous: "asyncio.Task[None] | None",
        planned: float,
    ) -> None:
        """Finish a batch once its deliveries are confirmed and the batch before it is settled;
        acknowledge it. Never raises.

        Only the deliveries overlap with other batches. What follows them (replay requests,
        replies) goes out in batch order: a replay asked by a ``store.saved`` must not overtake
        the one asked by the login before it, or a client would see stored messages out of order.

        A batch that failed because a dependency is away (Redis, the broker) is tried again
        here, after a backoff, its messages held: a requeue would count against the queue's
        delivery limit (``proto.topology.DELIVERY_LIMIT``), and an outage of a few minutes
        would dead-letter messages already answered ``sent``. It is requeued only when the
        router is stopping, or when the failure is unexpected (a bug: the delivery limit then
        ends a loop).

        ``planned``: when the deliveries were published (``time.monotonic()``); the deliver
        and settle stages of a batch that went through at the first try are observed.
        """
        delivered = 0.0
        if failure is None and delivering is not None:
            try:
                await delivering
            except Exception as exc:
                failure = exc
            else:
                delivered = time.monotonic()
                observability.STAGE_DELIVER.observe(delivered - planned)
        if previous is not None:
            await asyncio.wait([previous])  # settles in order
        if failure is None and plan is not None:
            try:
                await self._after_confirms(batch, plan, at_ms)
            except Exception as exc:
                failure = exc
        if failure is not None:
            delivered = 0.0  # its settle would count the retries
        while failure is not None:
            log_batch_failed(failure, EXPECTED_FAILURES, size=len(batch))
            if (
                not isinstance(failure, EXPECTED_FAILURES)
                or not await self._backoff.wait()
            ):
                await requeue(accepted)
                return
            failure = await self._route_again(batch, dead_letters)
        self._backoff.reset()
        # The batch before this one is settled already: settles are in delivery order.
        await ack_batch(accepted)
        if delivered:
            observability.STAGE_SETTLE.observe(time.monotonic() - delivered)

    async def _route_again(
        self, batch: Sequence[Inbound], dead_letters: Sequence[Publication]
    ) -> Exception | None:
        """Route a failed batch again, start to finish; return what failed, if anything."""
        at_ms = now_ms()
        try:
            plan = await self._plan(batch, at_ms)
            await self._bus.publish_all((*plan.deliveries, *plan.events, *dead_letters))
            await self._after_confirms(batch, plan, at_ms)
        except Exception as exc:
            return exc
        return None

    async def _accept(
        self, message: AbstractIncomingMessage, dead_letters: list[Publication]
    ) -> list[Inbound]:
        """Decode a message into its envelopes (a ``gateway.batch`` holds several); reject it
        (no requeue) when none can be routed. The items of a batch that cannot be routed are
        added to ``dead_letters``, each alone with its reason; the others are routed."""
        routing_key = message.routing_key or ""
        if inbound.is_command(routing_key):
            name = inbound.command_name(routing_key)
            if name in GROUP_COMMANDS or (
                self._settings.history and name in QUERY_COMMANDS
            ):
                # The offline store's (<ns>.offline.groups, <ns>.offline.queries): it
                # answers, bad input included, or has a router answer once a group change
                # is applied (group_changes.py).
                await settle(message.ack())
                return []
            command = await self._accept_command(message, routing_key)
            return [] if command is None else [command]
        refused: list[RefusedItem] = []
        try:
            if routing_key == KEY_BATCH:
                envelopes, refused = inbound.decode_gateway_batch(message.body)
            elif routing_key == KEY_RECEIPTS:
                receipts, refused = decode_receipts_items(message.body)
                envelopes = [] if receipts is None else [receipts]
            else:
                envelopes = [inbound.decode_inbound(routing_key, message.body)]
        except BadEnvelope as exc:
            log.info("envelope_rejected", routing_key=routing_key, reason=exc.reason)
            observability.count_error(CODE_ENVELOPE_REJECTED)
            envelopes = []
        for item in refused:
            log_refused_item(routing_key, item)
            observability.count_error(CODE_ENVELOPE_REJECTED)
        if not envelopes:
            # Nothing to route: the message goes to the dead-letter queue whole.
            await settle(message.reject(requeue=False))
            return []
        names = self._settings.names
        dead_letters += (
            dead_letter_publication(names, routing_key, item) for item in refused
        )
        return envelopes

    async def _accept_command(
        self, message: AbstractIncomingMessage, routing_key: str
    ) -> Call | Refused | None:
        """Decode a command; one refused without a reply_to is dead-lettered, one the offline
        stores serve is acknowledged."""
        reply_to = None
        if message.reply_to:
            reply_to = ReplyTo(message.reply_to, message.correlation_id or "")
        at_ms = now_ms()
        command = inbound.decode_command(
            routing_key,
            message.body,
            reply_to,
            mid=self._mids.next_mid(at_ms),
            ts=at_ms,
            max_bytes=self._settings.max_command_bytes,
            is_history_on=self._settings.history,
        )
        if isinstance(command, ServedByStore):
            await settle(message.ack())
            return None
        if isinstance(command, Call):
            uids = inbound.multicast_uids(command) or []
            if uids:  # one message per uid, each with its own mid
                mids = [self._mids.next_mid(at_ms) for _ in uids]
                command = inbound.with_mids(command, mids)
        if isinstance(command, Refused):
            log.info(
                "command_rejected",
                routing_key=routing_key,
                code=command.code,
                reason=command.reason,
                replied=reply_to is not None,
            )
            observability.count_error(command.code)
            if reply_to is None:
                await settle(message.reject(requeue=False))
                return None
        return command

    async def _plan(self, batch: Sequence[Inbound], at_ms: int) -> routing.Plan:
        """Run the batch's requests against Redis and decide its publishes."""
        lookup = BatchLookup(batch, at_ms, self._lookup_rules)
        # The first round also reads whether Redis holds the group members.
        requests = lookup.requests()
        loaded, *results = await self._presence.execute(
            [ReadGroupsLoaded(), *requests], operation="route"
        )
        is_loaded = expect(GroupsLoaded, loaded).is_loaded
        if should_ask_rebuild(is_loaded):
            await self._groups.ask_rebuild()
        if must_wait(is_loaded, requests):
            raise GroupsNotLoaded("the group members are being rebuilt")
        lookup.receive(results)
        while not lookup.is_done:  # each round in one pipeline
            lookup.receive(
                await self._presence.execute(lookup.requests(), operation="route")
            )
        return routing.route_batch(
            self._settings.names,
            batch,
            lookup.answers(),
            last_seen_ms=self._presence.last_seen_ms,
            now_ms=at_ms,
            gateway_ttl_ms=self._gateway_ttl_ms,
            debounce_ms=self._lookup_rules.debounce_ms,
            max_message_bytes=self._settings.max_amqp_message_bytes,
            history=self._settings.history,
        )

    async def _after_confirms(
        self, batch: Sequence[Inbound], plan: routing.Plan, at_ms: int
    ) -> None:
        """What follows the confirms of a batch's deliveries."""
        await self._presence.execute(plan.known, operation="settle")
        await self._presence.execute(plan.removals, operation="settle")
        # After the deliveries are queued: ready before stored messages, and a sent
        # (or a command's reply) only for what was routed.
        await self._bus.publish_all((*plan.replays, *plan.replies))
        observability.count_routed(batch, plan)
        observability.count_throttled(plan)
        for throttled in plan.throttled:
            log.info(
                "uid_throttled", uid=throttled.uid, throttle_ms=throttled.throttle_ms
            )
        for gateway_id in plan.sweeps:
            await self._sweeper.sweep_gateway(gateway_id, stale_before_ms=None)
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
