"""What the offline store counts, in the process's registry (``runtime/metrics.py``).

Metric names come from ``proto/metrics.py``; ``runtime/health.py`` serves them on /metrics with
/livez and /readyz (ready: holding the RabbitMQ connection and PostgreSQL answering). The
consumers count what they store, replay and delete; the backlog (rows in the table) is sampled
periodically here.
"""

import asyncio

import structlog
from prometheus_client import Counter, Gauge

from offline_store.store import Store
from proto import metrics
from runtime.metrics import REGISTRY
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


async def sample_backlog(store: Store, interval_s: float = BACKLOG_INTERVAL_S) -> None:
    """Count the undelivered rows now and every ``interval_s``; a failed count is skipped."""
    while True:
        try:
            BACKLOG.set(await store.count_rows())
        except Exception as exc:
            stop_if_cancelled()
            log.warning("backlog_sample_failed", error=repr(exc))
        await asyncio.sleep(interval_s)
