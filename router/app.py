"""Wiring of the router: open RabbitMQ and Redis, run the consumer (consumer.py), the
group changes' consumer (group_changes.py), the sweeper (sweeping.py) and the ``user.offline``
announcer (going_offline.py), wait for
SIGTERM or SIGINT, then stop consuming, finish the batches received and close.
"""

import asyncio
import secrets
from contextlib import AsyncExitStack

import structlog

from proto.logs import NAMESPACE, READY_EVENT
from proto.mids import NODE_HEX_DIGITS, MidFactory
from router import observability
from router.bus import open_bus
from router.consumer import EXPECTED_FAILURES, BatchRouter
from router.going_offline import announce_offline_forever
from router.group_changes import GroupApplier
from router.presence import open_presence
from router.settings import Settings
from router.sweeping import Sweeper
from runtime.batch_loop import Backoff, BatchLoop
from runtime.health import METRICS_HOST, Health, serve_health
from runtime.shutdown import stop_on_signals

log = structlog.get_logger()

SERVICE = "router"


async def main(settings: Settings) -> None:
    """Run the router until SIGTERM or SIGINT."""
    structlog.contextvars.bind_contextvars(**{NAMESPACE: settings.namespace})
    stop = stop_on_signals(settings.shutdown_timeout_s)
    health = Health()
    async with AsyncExitStack() as stack:  # closes in reverse order of opening
        await stack.enter_async_context(
            serve_health(METRICS_HOST, settings.metrics_port, health)
        )
        bus = await stack.enter_async_context(open_bus(settings))
        health.watch_broker(bus.connection)
        presence = await stack.enter_async_context(open_presence(settings))
        health.add_check(
            "redis",
            await stack.enter_async_context(observability.redis_check(settings)),
        )
        # The node part of the mids of backend sends: random per router process.
        mids = MidFactory(secrets.token_hex(NODE_HEX_DIGITS // 2))
        # Set at shutdown: a batch failing then is given back to the queue, not retried here.
        stopping = asyncio.Event()
        groups = GroupApplier(
            settings.names,
            bus,
            presence,
            Backoff(settings.retry_backoff_max_s, stopping),
            EXPECTED_FAILURES,
        )
        group_loop = BatchLoop(groups.apply_batch, settings.batch_max)
        router = BatchRouter(settings, bus, presence, mids, stopping, groups)
        async with asyncio.TaskGroup() as tasks:
            sweeper = tasks.create_task(
                Sweeper(presence, settings).sweep_forever(settings.heartbeat_interval_s)
            )
            announcer = tasks.create_task(
                announce_offline_forever(settings, bus, presence)
            )
            routing = tasks.create_task(router.run())
            applying = tasks.create_task(group_loop.run())
            await bus.consume_groups(group_loop.accept)
            await bus.consume(router.receive)
            health.is_serving = True
            log.info(READY_EVENT, service=SERVICE)
            await stop.wait()
            health.is_draining = True
            log.info("shutdown_started")
            stopping.set()
            await bus.stop_consuming(settings.shutdown_timeout_s)
            router.close()
            group_loop.close()
            sweeper.cancel()
            announcer.cancel()
            try:
                async with asyncio.timeout(settings.shutdown_timeout_s):
                    await routing  # the batches received, confirmed and acknowledged
                    await applying
            except TimeoutError:
                # Its messages are not acknowledged: the broker redelivers them.
                log.warning("shutdown_timed_out", timeout_s=settings.shutdown_timeout_s)
    log.info("service_stopped", service=SERVICE)
