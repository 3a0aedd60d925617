"""Wiring of a gateway process: the bus, the hub, the WebSocket server, and a clean shutdown."""

import asyncio
import secrets
import time
from contextlib import AsyncExitStack

import structlog

from gateway import observability
from gateway.bus import open_bus
from gateway.http_api import serve_api
from gateway.hub import Hub
from gateway.jwks import JwksClient, open_jwks
from gateway.keyset import KeySet
from gateway.settings import Settings
from gateway.ws import serve_clients
from proto.logs import READY_EVENT
from proto.mids import NODE_HEX_DIGITS, MidFactory
from runtime.health import Health, serve_health
from runtime.shutdown import stop_on_signals

log = structlog.get_logger()


async def main(settings: Settings) -> None:
    structlog.contextvars.bind_contextvars(
        gateway_id=settings.gateway_id, namespace=settings.names.namespace
    )
    stop = stop_on_signals(settings.shutdown_timeout_s)
    mids = MidFactory(secrets.token_hex(NODE_HEX_DIGITS // 2))
    health = Health()
    async with AsyncExitStack() as stack:
        # First in, last out: /readyz answers 503 for the whole drain.
        await stack.enter_async_context(
            serve_health(settings.host, settings.metrics_port, health)
        )
        bus = await stack.enter_async_context(open_bus(settings))
        health.watch_broker(bus.connection)
        hub = Hub(
            bus,
            settings.gateway_id,
            settings.ack_timeout_s,
            time.monotonic,
            settings.max_unacked_per_connection,
            settings.max_amqp_message_bytes,
            max_pinned=settings.prefetch * 3 // 4,
            history=settings.history,
            sync_gap_wait_s=settings.sync_gap_wait_s,
            sync_window=settings.sync_window,
        )
        observability.count_connections(hub.connections)
        stack.push_async_callback(hub.close)
        jwks: JwksClient | None = None
        if settings.jwks_url is not None:
            keyset = KeySet(settings.jwt_algorithm, settings.jwks_min_fetch_interval_s)
            # A provider that is down at startup is logged, not fatal: the refresh retries.
            jwks = await stack.enter_async_context(
                open_jwks(settings.jwks_url, keyset, settings.jwks_timeout_s)
            )
        async with asyncio.TaskGroup() as tasks:
            loops = [
                tasks.create_task(hub.handover.run()),
                tasks.create_task(hub.run_ack_timeouts()),
                tasks.create_task(
                    hub.liveness.run_heartbeat(settings.heartbeat_interval_s)
                ),
                tasks.create_task(bus.watch_consumer(settings.consumer_check_s)),
                tasks.create_task(hub.liveness.run_pings(settings.ping_interval_s)),
            ]
            if jwks is not None:
                loops.append(
                    tasks.create_task(jwks.run_refresh(settings.jwks_refresh_s))
                )
            await bus.consume(hub.on_delivery)
            async with (
                serve_clients(settings, bus, hub, mids, jwks) as server,
                AsyncExitStack() as http,
            ):
                port = next(iter(server.sockets)).getsockname()[1]
                http_port = None
                if settings.http_port is not None:
                    http_port = await http.enter_async_context(serve_api(settings))
                health.is_serving = True
                log.info(READY_EVENT, service="gateway", port=port, http_port=http_port)
                await stop.wait()
                health.is_draining = True
                log.info("shutdown_started")
                await bus.stop_consuming()
                # Leaving the HTTP stack first lets commands in flight get their replies.
                await http.aclose()
                # Leaving serve_clients closes every connection with 1001 (going away); each
                # connection hands its unacknowledged messages to the offline store as it closes.
            try:
                async with asyncio.timeout(settings.shutdown_timeout_s):
                    await hub.handover.wait_idle()
            except TimeoutError:
                # Still in the gateway's queue: redelivered or dead-lettered by its TTL.
                log.error("handover_unfinished")
            await hub.liveness.announce_stopped()
            for task in loops:
                task.cancel()
    log.info("service_stopped")
