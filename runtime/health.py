"""/livez, /readyz and /metrics over HTTP, and the checks behind /readyz.

Served on ``SWITCHBOARD_METRICS_PORT`` (unset: not served) by a small aiohttp app, apart from any
port the service itself listens on. /metrics is prometheus-client's own aiohttp handler over
``runtime.metrics.REGISTRY`` (the text format, or OpenMetrics when the scraper asks for it).
What each service counts is in its ``observability.py``; this module decides nothing else.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import structlog
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from runtime.metrics import BROKER_RECONNECTS, READINESS, REGISTRY

log = structlog.get_logger()

METRICS_HOST = "0.0.0.0"
"""Where a service without a host setting of its own serves these endpoints."""
CHECK_TIMEOUT_S = 2.0
"""Deadline of one readiness probe of a dependency."""
HTTP_SHUTDOWN_TIMEOUT_S = 1.0

Probe = Callable[[], Awaitable[bool]]


class Health:
    """What /readyz answers: serving, not draining, and every dependency check passes."""

    def __init__(self) -> None:
        self._checks: dict[str, Probe] = {}
        self.is_serving = False
        self.is_draining = False
        """Set on SIGTERM: load balancers stop sending new connections here."""

    def add_check(self, name: str, probe: Probe) -> None:
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
        READINESS.set(1 if is_ready else 0)
        return is_ready, results


async def _probe(probe: Probe) -> bool:
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

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(REGISTRY))
    return app


@asynccontextmanager
async def serve_health(
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
