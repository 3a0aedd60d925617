"""What the router counts, in the process's registry (``runtime/metrics.py``), and its readiness
probe of Redis.

Metric names come from ``proto/metrics.py``; ``runtime/health.py`` serves them on /metrics with
/livez and /readyz (ready: holding the RabbitMQ connection and Redis answering). The consumer
(consumer.py) calls the ``count_*`` functions; routing decisions stay in routing.py.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from prometheus_client import Counter, Histogram

from proto import metrics
from proto.envelopes import Outgoing
from router.redis_client import open_redis
from router.routing import Call, Inbound, Plan, outgoings_of
from router.settings import Settings
from runtime.metrics import HOP_BUCKETS_S, REGISTRY, ROUND_TRIP_BUCKETS_S

# consumer.py counts through here.
from runtime.metrics import count_error as count_error

ROUTED = Counter(
    metrics.MESSAGES_ROUTED_TOTAL,
    "Messages routed, by kind (direct, group, room, broadcast).",
    [metrics.LABEL_KIND],
    registry=REGISTRY,
)
UIDS_THROTTLED = Counter(
    metrics.UIDS_THROTTLED_TOTAL,
    "Times a uid went over its rate across gateways and its gateways were told to throttle it.",
    registry=REGISTRY,
)
REDIS_ROUND_TRIPS = Histogram(
    metrics.REDIS_SECONDS,
    "Redis round trips (one per pipeline), by operation.",
    [metrics.LABEL_OPERATION],
    buckets=ROUND_TRIP_BUCKETS_S,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    metrics.ROUTER_QUEUE_WAIT_SECONDS,
    "Age of a message (from its ts, in whole ms) when the router starts its batch.",
    buckets=HOP_BUCKETS_S,
    registry=REGISTRY,
)
BATCH_STAGES = Histogram(
    metrics.ROUTER_BATCH_SECONDS,
    "Stages of a routed batch: decode, plan (Redis and the decision), deliver (publishes "
    "to confirms), settle (to its ack).",
    [metrics.LABEL_STAGE],
    buckets=HOP_BUCKETS_S,
    registry=REGISTRY,
)
STAGE_DECODE, STAGE_PLAN, STAGE_DELIVER, STAGE_SETTLE = (
    BATCH_STAGES.labels(stage) for stage in metrics.ROUTER_STAGES
)
"""Bound once, observed once per batch each (consumer.py)."""
for _kind in metrics.ROUTE_KINDS:
    ROUTED.labels(_kind)  # every kind is exported from the start, at 0
REDIS_BY_OPERATION = {
    operation: REDIS_ROUND_TRIPS.labels(operation)
    for operation in metrics.REDIS_OPERATIONS
}
"""Bound once: presence.py observes each round trip into one of these."""


def route_kind(outgoing: Outgoing) -> str:
    """Which kind of message an ``Outgoing`` is, for the ``kind`` label."""
    if outgoing.broadcast:
        return "broadcast"
    if outgoing.room:
        return "room"
    if outgoing.group:
        return "group"
    return "direct"


def count_routed(batch: Sequence[Inbound], plan: Plan) -> None:
    """Count the messages of a routed batch by kind; dropped client retries are not counted."""
    dropped = {duplicate.mid for duplicate in plan.duplicates}
    for envelope in batch:
        # A backend's api.send or api.broadcast is routed like a client's send.
        messages = outgoings_of(envelope) if isinstance(envelope, Call) else [envelope]
        for message in messages:
            if isinstance(message, Outgoing) and message.mid not in dropped:
                ROUTED.labels(route_kind(message)).inc()


def count_queue_waits(batch: Sequence[Inbound], started_ms: int) -> None:
    """Observe the age of each message of a batch (from its ``ts``) when the batch started
    (``started_ms``, Unix ms rounded down like ``ts``: each age is within 1 ms, their mean
    right). Envelopes without a ``ts``, and backend commands (stamped by the router itself),
    are left out."""
    for envelope in batch:
        if isinstance(envelope, Outgoing) and envelope.ts:
            QUEUE_WAIT.observe(max(0, started_ms - envelope.ts) / 1000)


def count_throttled(plan: Plan) -> None:
    """Count the uids a routed batch throttled (over their rate across gateways)."""
    if plan.throttled:
        UIDS_THROTTLED.inc(len(plan.throttled))


@asynccontextmanager
async def redis_check(
    settings: Settings,
) -> AsyncIterator[Callable[[], Awaitable[bool]]]:
    """A readiness probe of Redis, on a connection of its own (closed on exit)."""
    timeout_s = settings.redis_timeout_s
    client = open_redis(
        settings, connect_timeout_s=timeout_s, reply_timeout_s=timeout_s
    )

    async def is_answering() -> bool:
        return bool(await client.ping())

    try:
        yield is_answering
    finally:
        await client.aclose()
