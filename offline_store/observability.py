"""The offline store's health and metrics: /livez, /readyz and /metrics over HTTP.

Served on ``SWITCHBOARD_METRICS_PORT`` (unset: not served) by a small aiohttp app. Ready means
holding the RabbitMQ connection and PostgreSQL answering. Metrics live in this process's own
``CollectorRegistry``; their names come from ``proto/metrics.py``. The consumers count what
they store, replay and delete; the backlog (rows in the table) is sampled periodically here.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import structlog
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)

from offline_store.store import Store
from proto import metrics as names

log = structlog.get_logger()

CHECK_TIMEOUT_S = 2.0
"""Deadline of one readiness probe of a dependency."""
HTTP_SHUTDOWN_TIMEOUT_S = 1.0
METRICS_HOST = "0.0.0.0"
BACKLOG_INTERVAL_S = 15.0
"""How often the rows of the undelivered table are counted (a count is a table scan)."""

REGISTRY = CollectorRegistry()
"""This process's metrics; nothing is registered in prometheus-client's global registry."""
ProcessCollector(registry=REGISTRY)
STORED = Counter(
    names.OFFLINE_STORED_TOTAL,
    "Messages handed to the offline store (rows inserted).",
    registry=REGISTRY,
)
REPLAYED = Counter(
    names.OFFLINE_REPLAYED_TOTAL, "Stored messages replayed.", registry=REGISTRY
)
ACKNOWLEDGED = Counter(
    names.OFFLINE_ACKNOWLEDGED_TOTAL,
    "Stored messages deleted after their client acknowledged them.",
    registry=REGISTRY,
)
REFUSED = Counter(
    names.OFFLINE_REFUSED_TOTAL,
    "Rows refused because their uid held SWITCHBOARD_OFFLINE_MAX_ROWS_PER_UID rows.",
    registry=REGISTRY,
)
EXPIRED = Counter(
    names.OFFLINE_EXPIRED_TOTAL,
    "Rows deleted unread after SWITCHBOARD_OFFLINE_RETENTION_S.",
    registry=REGISTRY,
)
BACKLOG = Gauge(
    names.OFFLINE_BACKLOG_MESSAGES,
    "Rows in the undelivered table (sampled).",
    registry=REGISTRY,
)
ERRORS = Counter(
    names.ERRORS_TOTAL, "Errors, by code.", [names.LABEL_CODE], registry=REGISTRY
)
BROKER_RECONNECTS = Counter(
    names.BROKER_RECONNECTS_TOTAL,
    "Times the RabbitMQ connection was re-established.",
    registry=REGISTRY,
)
READY = Gauge(names.READY, "1 while /readyz answers 200.", registry=REGISTRY)
for _code in (names.CODE_ENVELOPE_REJECTED, names.CODE_BATCH_FAILED):
    ERRORS.labels(_code)


def count_error(code: str) -> None:
    ERRORS.labels(code).inc()


async def sample_backlog(store: Store, interval_s: float = BACKLOG_INTERVAL_S) -> None:
    """Count the undelivered rows now and every ``interval_s``; a failed count is skipped."""
    while True:
        try:
            BACKLOG.set(await store.count_rows())
        except Exception as exc:
            log.warning("backlog_sample_failed", error=repr(exc))
        await asyncio.sleep(interval_s)


class Health:
    """What /readyz answers: serving, not draining, and every dependency check passes."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], Awaitable[bool]]] = {}
        self.is_serving = False
        self.is_draining = False
        """Set on SIGTERM: load balancers stop sending new connections here."""

    def add_check(self, name: str, probe: Callable[[], Awaitable[bool]]) -> None:
        self._checks[name] = probe

    def watch_broker(self, connection: AbstractRobustConnection) -> None:
        """Check the RabbitMQ connection, and count its reconnects."""
        connection.reconnect_callbacks.add(lambda *_: BROKER_RECONNECTS.inc())

        async def is_connected() -> bool:
            return not connection.is_closed and connection.connected.is_set()

        self.add_check("rabbitmq", is_connected)

    async def check(self) -> tuple[bool, Mapping[str, bool]]:
        results = dict(
            zip(
                self._checks,
                await asyncio.gather(*(_probe(p) for p in self._checks.values())),
                strict=True,
            )
        )
        is_ready = self.is_serving and not self.is_draining and all(results.values())
        READY.set(1 if is_ready else 0)
        return is_ready, results


async def _probe(probe: Callable[[], Awaitable[bool]]) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await probe()
    except Exception:
        return False


def _app(health: Health) -> web.Application:
    async def livez(request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def readyz(request: web.Request) -> web.Response:
        is_ready, checks = await health.check()
        body = {"ready": is_ready, "draining": health.is_draining, "checks": checks}
        return web.json_response(body, status=200 if is_ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


@asynccontextmanager
async def serve_observability(
    host: str, port: int | None, health: Health
) -> AsyncIterator[None]:
    """Serve /livez, /readyz and /metrics on ``port`` until exit; nothing when it is None."""
    if port is None:
        yield
        return
    runner = web.AppRunner(
        _app(health), access_log=None, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("metrics_serving", port=runner.addresses[0][1])
        yield
    finally:
        await runner.cleanup()
