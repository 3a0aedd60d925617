"""Several RabbitMQ nodes in ``SWITCHBOARD_AMQP_URL``: a service connects to the first that
answers, and moves on to the next when its node is lost (runtime/nodes.py).

The "nodes" here are the machine's broker, once directly and once through a proxy that can be
cut: what is checked is the service's side, the choice of a node. A whole cluster, with quorum
gateway queues, is in the chaos scenario "RabbitMQ cluster" (tests/chaos/scenarios.py).
"""

import asyncio

import pytest

from proto import env
from tests.chaos.faults import CuttableProxy
from tests.support.clients import RawClient
from tests.support.stack import Stack, free_port

pytestmark = pytest.mark.integration

AMQP_PORT = 5672
HEARTBEAT_S = 1
"""Short, so that the cut link is noticed within seconds (two missed heartbeats)."""
FAILOVER_WITHIN_S = 60.0
RETRY_PAUSE_S = 0.5


def node(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/?heartbeat={HEARTBEAT_S}"


async def send_until_delivered(
    sender: RawClient, recipient: RawClient, text: str
) -> None:
    """Send with the same id until it is ``sent``, then wait for its delivery."""
    frame = {"type": "send", "id": text, "to": recipient.uid, "body": {"text": text}}
    async with asyncio.timeout(FAILOVER_WITHIN_S):
        while True:
            await sender.send_frame(frame)
            reply = await sender.expect(
                lambda f: f.get("id") == text and f.get("type") in ("sent", "error"),
                within_s=FAILOVER_WITHIN_S,
            )
            if reply["type"] == "sent":
                break
            assert reply["code"] == "unavailable", reply
            await asyncio.sleep(RETRY_PAUSE_S)  # the gateway is between nodes
    await recipient.expect_message(body={"text": text}, within_s=FAILOVER_WITHIN_S)


async def test_a_gateway_skips_a_node_that_does_not_answer_and_takes_a_quorum_queue(
    stack: Stack,
) -> None:
    await stack.start_router()
    await stack.start_store()
    nowhere = free_port()  # nothing listens there
    first = await stack.start_gateway(
        **{
            env.AMQP_URL: f"{node(nowhere)},{node(AMQP_PORT)}",
            env.GATEWAY_QUEUE_TYPE: "quorum",
        }
    )
    second = await stack.start_gateway()
    alice = await stack.connect(first, uid="alice")
    bob = await stack.connect(second, uid="bob")
    await send_until_delivered(alice, bob, "to-bob")
    await send_until_delivered(bob, alice, "to-alice")


async def test_a_gateway_whose_node_is_lost_moves_to_the_next_one(
    stack: Stack, proxy: CuttableProxy
) -> None:
    await stack.start_router()
    await stack.start_store()
    moving = await stack.start_gateway(
        **{env.AMQP_URL: f"{node(proxy.port)},{node(AMQP_PORT)}"}
    )
    other = await stack.start_gateway()
    alice = await stack.connect(moving, uid="alice")
    bob = await stack.connect(other, uid="bob")
    await send_until_delivered(alice, bob, "before")

    proxy.cut()  # the first node is gone for good: it neither answers nor takes connections
    await moving.process.wait_for_event("amqp_node_next")
    await send_until_delivered(alice, bob, "after-from-alice")
    # The routers swept the gateway while it was cut; its heartbeats from the new node make
    # them ask for its connections again, so alice is reachable live again.
    await send_until_delivered(bob, alice, "after-to-alice")
