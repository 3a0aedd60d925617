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


PAIRS = 64
MESSAGES = 60


async def test_acks_of_many_clients_finishing_out_of_order_never_ack_a_delivery_twice(
    stack: Stack,
) -> None:
    """Deliveries finish in every order across turns of the loop; a multiple ack sent ahead
    of a single one it covers would be a channel error, and the gateway's channel would close."""
    stack.settings[env.HISTORY] = "off"
    await stack.start(gateways=2)
    senders = [await stack.connect(n % 2, uid=f"sender{n}") for n in range(PAIRS)]
    receivers = [
        await stack.connect((n + 1) % 2, uid=f"receiver{n}") for n in range(PAIRS)
    ]

    async def send_all(n: int) -> None:
        for m in range(MESSAGES):
            await senders[n].send_frame(
                {"type": "send", "id": f"c{m}", "to": f"receiver{n}", "body": m}
            )

    async def receive_all(n: int) -> list[int]:
        bodies = []
        for _ in range(MESSAGES):
            message = await receivers[n].expect_message(within_s=30)
            bodies.append(message["body"])
            await receivers[n].ack(message["mid"])
        return bodies

    received, _ = await asyncio.gather(
        asyncio.gather(*(receive_all(n) for n in range(PAIRS))),
        asyncio.gather(*(send_all(n) for n in range(PAIRS))),
    )
    assert all(sorted(bodies) == list(range(MESSAGES)) for bodies in received)
    # Every delivery was acknowledged once: none comes again, and the channels stayed open.
    await receivers[0].expect_nothing(lambda f: f.get("type") == "message", for_s=1.0)
    for gateway in stack.gateways:
        assert not [
            line for line in gateway.process.lines if "delivery_ack_failed" in line
        ]
