"""A drain has a deadline: SIGTERM ends a process within ``SWITCHBOARD_SHUTDOWN_TIMEOUT_S`` plus
``DRAIN_MARGIN_S``, even when the broker behind it stopped answering (runtime/shutdown.py).

Each service reaches RabbitMQ through a proxy that is cut just before the SIGTERM: the link
looks open and carries nothing, so the broker answers no cancel, no publish and no close.
"""

import asyncio
import signal
import time

import pytest

from proto import env
from runtime.shutdown import DRAIN_MARGIN_S, EXIT_OVERRAN
from tests.chaos.faults import CuttableProxy
from tests.support.processes import ServiceProcess
from tests.support.stack import TEST_SETTINGS, Stack
from tests.support.timing import scaled

pytestmark = pytest.mark.integration

SILENT_HEARTBEAT_S = 120
"""Longer than the test: the client never finds out, by heartbeat, that the link is dead."""
DEADLINE_S = float(TEST_SETTINGS[env.SHUTDOWN_TIMEOUT_S]) + DRAIN_MARGIN_S
EXIT_SLACK_S = 3.0
"""Beyond the deadline: the process's own exit and the reading of its last lines."""


async def cut_and_stop(proxy: CuttableProxy, *processes: ServiceProcess) -> float:
    """Cut the link, SIGTERM the processes; return the seconds until the last one exited."""
    proxy.cut()
    started = time.monotonic()
    for process in processes:
        process.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(scaled(DEADLINE_S + EXIT_SLACK_S)):
        await asyncio.gather(*(process.wait_exit() for process in processes))
    return time.monotonic() - started


def through(proxy: CuttableProxy) -> dict[str, str]:
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/?heartbeat={SILENT_HEARTBEAT_S}"
    return {env.AMQP_URL: url}


async def test_a_gateway_cut_from_the_broker_exits_by_its_deadline(
    stack: Stack, proxy: CuttableProxy
) -> None:
    gateway = await stack.start_gateway(**through(proxy))
    await cut_and_stop(proxy, gateway.process)
    # Cancelling the consumer, the last heartbeat, the stop announcement and the close each
    # wait their whole timeout: together longer than the deadline.
    assert gateway.process.process.returncode == EXIT_OVERRAN
    overran = await gateway.process.wait_for_event("shutdown_overran")
    waits = [where for task in overran["tasks"].values() for where in task]
    assert any("announce_stopped" in where for where in waits), overran


async def test_a_router_and_a_store_cut_from_the_broker_exit_by_their_deadline(
    stack: Stack, proxy: CuttableProxy
) -> None:
    router = await stack.start_router(**through(proxy))
    store = await stack.start_store(**through(proxy))
    await cut_and_stop(proxy, router, store)
    for process in (router, store):
        code = process.process.returncode
        assert code in (0, EXIT_OVERRAN), process.output()
        if code == EXIT_OVERRAN:
            await process.wait_for_event("shutdown_overran")
