"""Every AMQP message a service builds fits the broker's ``max_message_size``.

A router's offline delivery, a replay page and a gateway's handover of many large messages are
larger than one message may be: against a broker that refuses them, they must be split
(``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``), or the batch would fail at every retry. The broker is a
throwaway node of this test's own (tests/support/small_broker.py): the shared one keeps its
configuration.
"""

import asyncio

import pytest

from proto import env
from tests.support.clients import RawClient
from tests.support.small_broker import missing_requirement, small_broker
from tests.support.stack import Stack
from tests.support.timing import scaled

pytestmark = pytest.mark.integration

BROKER_MAX_MESSAGE_SIZE = 256 * 1024
MAX_AMQP_MESSAGE_BYTES = 128 * 1024
COUNT = 30
BODY = "x" * 20_000
"""30 messages of 20 kB: about 600 kB in one batch, more than twice what the broker takes."""


async def test_large_batches_are_split_to_fit_a_broker_with_a_small_message_size(
    stack: Stack,
) -> None:
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    async with small_broker(BROKER_MAX_MESSAGE_SIZE) as url:
        stack.settings.update(
            {
                env.AMQP_URL: url,
                env.MAX_AMQP_MESSAGE_BYTES: str(MAX_AMQP_MESSAGE_BYTES),
            }
        )
        await stack.start(gateways=2)
        alice = await stack.connect(0, uid="alice")
        # Sent without waiting: the router routes them in a few batches, each with one
        # offline delivery of many of them for carol (who is not connected).
        for number in range(COUNT):
            await alice.send_frame(
                {"type": "send", "id": f"c{number}", "to": "carol", "body": BODY}
            )
        for number in range(COUNT):
            client_id = f"c{number}"
            receipt = await alice.expect(
                lambda f, cid=client_id: f.get("id") == cid, within_s=20
            )
            assert receipt["type"] == "sent", receipt

        # The store replays them in one page of 30 rows (about 600 kB): in several messages.
        carol = await stack.connect(1, uid="carol")
        first = await _messages(carol)
        # Not acknowledged: closing hands all 30 back to the store in one handover.
        await carol.close()
        carol = await stack.connect(0, uid="carol")
        again = await _messages(carol)
        assert again == first
        await carol.ack(*again)

        for process in stack.processes:
            assert process.is_running, process.name
        # Stopped while their broker still runs; the fixture's close finds them stopped.
        problems = await stack.close()
        assert not problems, problems


async def _messages(client: RawClient) -> set[str]:
    """The mids of ``COUNT`` distinct messages the client received."""
    mids: set[str] = set()
    async with asyncio.timeout(scaled(30)):
        while len(mids) < COUNT:
            message = await client.expect("message", within_s=30)
            assert message["body"] == BODY
            mids.add(message["mid"])
    return mids
