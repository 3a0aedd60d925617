"""Every AMQP message a service builds fits the broker's ``max_message_size``.

A router's offline delivery, a replay page and a gateway's handover of many large messages are
larger than one message may be: against a broker that refuses them, they must be split
(``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``), or the batch would fail at every retry. The broker is a
throwaway node of this test's own (tests/support/small_broker.py): the shared one keeps its
configuration.
"""

import asyncio
from collections.abc import Callable
from typing import Any

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
"""30 messages of 20 kB: about 600 kB in one batch, more than twice what the broker takes.
Each round's bodies start with its name: a message of an earlier round may come again."""


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
                # The sender is the test, not the subject: its 20 kB bodies pass at once.
                env.RATE_LIMIT_BYTES_PER_S: "0",
            }
        )
        try:
            await stack.start(gateways=2)
            alice = await stack.connect(0, uid="alice")
            # carol is offline: the router's offline deliveries, then one replay page of 30
            # rows, are about 600 kB each.
            await _send_all(alice, "first")
            carol = await stack.connect(1, uid="carol")
            await carol.ack(*await _messages(carol, "first"))

            # carol is online: the router's delivery to her gateway is about 600 kB; she does
            # not acknowledge, and closing hands all 30 to the store in one handover.
            await _send_all(alice, "second")
            live = await _messages(carol, "second")
            await carol.close()
            carol = await stack.connect(0, uid="carol")
            assert await _messages(carol, "second") == live
            await carol.ack(*live)

            for process in stack.processes:
                assert process.is_running, process.name
        finally:
            # Stopped while their broker runs; the fixture's close finds them stopped.
            problems = await stack.close()
        assert not problems, problems


async def _send_all(alice: RawClient, prefix: str) -> None:
    """Send ``COUNT`` messages to carol without waiting, then wait for every receipt."""
    for number in range(COUNT):
        await alice.send_frame(
            {
                "type": "send",
                "id": f"{prefix}{number}",
                "to": "carol",
                "body": prefix + BODY,
            }
        )
    for number in range(COUNT):
        receipt = await alice.expect(_has_id(f"{prefix}{number}"), within_s=20)
        assert receipt["type"] == "sent", receipt


def _has_id(client_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("id") == client_id


async def _messages(client: RawClient, prefix: str) -> set[str]:
    """The mids of ``COUNT`` distinct messages of this round the client received."""
    mids: set[str] = set()
    async with asyncio.timeout(scaled(30)):
        while len(mids) < COUNT:
            message = await client.expect(
                lambda f: f.get("type") == "message" and f.get("body") == prefix + BODY,
                within_s=30,
            )
            mids.add(message["mid"])
    return mids
