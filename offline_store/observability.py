"""What the offline store counts, in the process's registry (``runtime/metrics.py``).

Metric names come from ``proto/metrics.py``; ``runtime/health.py`` serves them on /metrics with
/livez and /readyz (ready: holding the RabbitMQ connection and PostgreSQL answering). The
consumers count what they store, replay and delete; the backlog (rows in the table) is sampled
periodically here.
"""

import asyncio
from collections.abc import Iterable

import structlog
from prometheus_client import Counter, Gauge, Histogram

from offline_store.store import Store
from proto import metrics
from proto.mids import mid_time_ms
from runtime.metrics import HOP_BUCKETS_S, REGISTRY
from runtime.shutdown import stop_if_cancelled

log = structlog.get_logger()

BACKLOG_INTERVAL_S = 15.0
"""How often the rows of the undelivered table are counted (a count is a table scan)."""

STORED = Counter(
    metrics.OFFLINE_STORED_TOTAL,
    "Messages handed to the offline store (rows inserted).",
    registry=REGISTRY,
)
REPLAYED = Counter(
    metrics.OFFLINE_REPLAYED_TOTAL, "Stored messages replayed.", registry=REGISTRY
)
ACKNOWLEDGED = Counter(
    metrics.OFFLINE_ACKNOWLEDGED_TOTAL,
    "Stored messages deleted after their client acknowledged them.",
    registry=REGISTRY,
)
REFUSED = Counter(
    metrics.OFFLINE_REFUSED_TOTAL,
    "Rows refused because their uid held SWITCHBOARD_OFFLINE_MAX_ROWS_PER_UID rows.",
    registry=REGISTRY,
)
EXPIRED = Counter(
    metrics.OFFLINE_EXPIRED_TOTAL,
    "Rows deleted unread after SWITCHBOARD_OFFLINE_RETENTION_S.",
    registry=REGISTRY,
)
BACKLOG = Gauge(
    metrics.OFFLINE_BACKLOG_MESSAGES,
    "Rows in the undelivered table (sampled).",
    registry=REGISTRY,
)

INBOX_WAIT = Histogram(
    metrics.OFFLINE_INBOX_WAIT_SECONDS,
    "Age of a message (from its mid's time, in whole ms) when the offline store starts the "
    "inbox batch that numbers it.",
    buckets=HOP_BUCKETS_S,
    registry=REGISTRY,
)
INBOX_STAGES = Histogram(
    metrics.OFFLINE_INBOX_BATCH_SECONDS,
    "Stages of an inbox batch: decode, write (its transaction and the read of the syncing "
    "connections), deliver (publishes to confirms), settle (to its ack).",
    [metrics.LABEL_STAGE],
    buckets=HOP_BUCKETS_S,
    registry=REGISTRY,
)
STAGE_DECODE, STAGE_WRITE, STAGE_DELIVER, STAGE_SETTLE = (
    INBOX_STAGES.labels(stage) for stage in metrics.INBOX_STAGES
)
"""Bound once, observed once per batch each (``inbox_writer.py``)."""


def count_inbox_waits(mids: Iterable[str], started_ms: int) -> None:
    """Observe the age of each message of an inbox batch (from its mid's time) when the batch
    started (``started_ms``, Unix ms rounded down like a mid's: each age is within 1 ms, their
    mean right). A mid without a time in it (no router makes one) is left out."""
    for mid in mids:
        try:
            made_ms = mid_time_ms(mid)
        except ValueError:
            continue
        INBOX_WAIT.observe(max(0, started_ms - made_ms) / 1000)


async def sample_backlog(store: Store, interval_s: float = BACKLOG_INTERVAL_S) -> None:
    """Count the undelivered rows now and every ``interval_s``; a failed count is skipped."""
    while True:
        try:
            BACKLOG.set(await store.count_rows())
        except Exception as exc:
            stop_if_cancelled()
            log.warning("backlog_sample_failed", error=repr(exc))
        await asyncio.sleep(interval_s)
