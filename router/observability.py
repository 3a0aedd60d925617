"""The router's health and metrics: /livez, /readyz and /metrics over HTTP, and what they count.

Served on ``SWITCHBOARD_METRICS_PORT`` (unset: not served) by a small aiohttp app. Ready means
holding the RabbitMQ connection and Redis answering. Metrics live in this process's own
``CollectorRegistry``; their names come from ``proto/metrics.py``. The batch loop calls the
``count_*`` functions; routing decisions stay in routing.py.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import redis.asyncio as redis
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

from proto import metrics as names
from proto.envelopes import Outgoing
from router.routing import Call, Inbound, Plan, outgoing_of

log = structlog.get_logger()

CHECK_TIMEOUT_S = 2.0
"""Deadline of one readiness probe of a dependency."""
HTTP_SHUTDOWN_TIMEOUT_S = 1.0
METRICS_HOST = "0.0.0.0"

REGISTRY = CollectorRegistry()
"""This process's metrics; nothing is registered in prometheus-client's global registry."""
ProcessCollector(registry=REGISTRY)
ROUTED = Counter(
    names.MESSAGES_ROUTED_TOTAL,
    "Messages routed, by kind (direct, group, room, broadcast).",
    [names.LABEL_KIND],
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
UIDS_THROTTLED = Counter(
    names.UIDS_THROTTLED_TOTAL,
    "Times a uid went over its rate across gateways and its gateways were told to throttle it.",
    registry=REGISTRY,
)
for _kind in names.ROUTE_KINDS:
    ROUTED.labels(_kind)  # every kind is exported from the start, at 0
for _code in (names.CODE_ENVELOPE_REJECTED, names.CODE_BATCH_FAILED):
    ERRORS.labels(_code)


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
        message = outgoing_of(envelope) if isinstance(envelope, Call) else envelope
        if isinstance(message, Outgoing) and message.mid not in dropped:
            ROUTED.labels(route_kind(message)).inc()


def count_error(code: str) -> None:
    ERRORS.labels(code).inc()


def count_throttled(plan: Plan) -> None:
    """Count the uids a routed batch throttled (over their rate across gateways)."""
    if plan.throttled:
        UIDS_THROTTLED.inc(len(plan.throttled))


@asynccontextmanager
async def redis_check(
    redis_url: str, timeout_s: float
) -> AsyncIterator[Callable[[], Awaitable[bool]]]:
    """A readiness probe of Redis, on a connection of its own (closed on exit)."""
    client = redis.Redis.from_url(
        redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )

    async def is_answering() -> bool:
        return bool(await client.ping())

    try:
        yield is_answering
    finally:
        await client.aclose()


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
