"""Wiring of the router: open RabbitMQ and Redis, run the batch loop and the sweeper,
wait for SIGTERM or SIGINT, then stop consuming, finish the batch in flight and close.
"""

import asyncio
import signal
from contextlib import AsyncExitStack

import structlog

from proto.logs import NAMESPACE, READY_EVENT
from router.batches import BatchRouter
from router.bus import open_bus
from router.presence import open_presence
from router.settings import Settings

log = structlog.get_logger()

SERVICE = "router"


async def main(settings: Settings) -> None:
    """Run the router until SIGTERM or SIGINT."""
    structlog.contextvars.bind_contextvars(**{NAMESPACE: settings.namespace})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:  # closes in reverse order of opening
        bus = await stack.enter_async_context(open_bus(settings))
        presence = await stack.enter_async_context(open_presence(settings))
        router = BatchRouter(settings, bus, presence)
        async with asyncio.TaskGroup() as tasks:
            sweeper = tasks.create_task(
                presence.sweep_forever(
                    settings.heartbeat_interval_s, round(settings.gateway_ttl_s * 1000)
                )
            )
            routing = tasks.create_task(router.run(stop))
            await bus.start_consuming(router.receive)
            log.info(READY_EVENT, service=SERVICE)
            await stop.wait()
            log.info("shutdown_started")
            await bus.stop_consuming(settings.shutdown_timeout_s)
            sweeper.cancel()
            try:
                async with asyncio.timeout(settings.shutdown_timeout_s):
                    await routing  # the batch in flight, confirmed and acknowledged
            except TimeoutError:
                # Its messages are not acknowledged: the broker redelivers them.
                log.warning("shutdown_timed_out", timeout_s=settings.shutdown_timeout_s)
    log.info("service_stopped", service=SERVICE)
