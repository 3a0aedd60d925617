"""A gateway acknowledges the deliveries its clients finish together with one multiple ack."""

import asyncio

import pytest

from proto import env, metrics
from tests.integration.test_observability import grows, scrape, value
from tests.support.stack import Stack, free_port

pytestmark = pytest.mark.integration

DELIVERIES = 5


@pytest.mark.parametrize("history", ["on", "off"])
async def test_deliveries_a_client_acks_at_once_leave_as_one_multiple_ack(
    stack: Stack, history: str
) -> None:
    stack.settings[env.HISTORY] = history
    port = free_port()
    await asyncio.gather(stack.start_router(), stack.start_store())
    senders, receivers = await asyncio.gather(
        stack.start_gateway(), stack.start_gateway(**{env.METRICS_PORT: str(port)})
    )
    alice = await stack.connect(senders, uid="alice")
    bob = await stack.connect(receivers, uid="bob")
    before = await scrape(port)
    mids = []
    for n in range(DELIVERIES):  # one at a time: each message its own delivery
        await alice.send_message("bob", n)
        mids.append((await bob.expect_message(body=n))["mid"])
    delivered = await scrape(port)
    assert value(delivered, metrics.DELIVERIES_TOTAL) - value(
        before, metrics.DELIVERIES_TOTAL
    ) == pytest.approx(DELIVERIES)
    # Held until bob acknowledges: no ack has left for them.
    multiple, single = (
        value(delivered, metrics.GATEWAY_DELIVERY_ACKS_TOTAL, multiple=flag)
        for flag in ("true", "false")
    )

    await bob.ack(*mids)

    after = await grows(
        port, metrics.GATEWAY_DELIVERY_ACKS_TOTAL, delivered, multiple="true"
    )
    assert value(after, metrics.GATEWAY_DELIVERY_ACKS_TOTAL, multiple="true") == (
        multiple + 1
    )
    assert value(after, metrics.GATEWAY_DELIVERY_ACKS_TOTAL, multiple="false") == single
    # The channel took the ack (an unknown tag would have closed it): deliveries go on.
    await alice.send_message("bob", "after")
    await bob.expect_message(body="after")
    await bob.expect_nothing(lambda f: f.get("type") == "message", for_s=1.0)
    assert not [
        line for line in receivers.process.lines if "delivery_ack_failed" in line
    ]
