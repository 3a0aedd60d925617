"""A broker that stops answering for a while: the sender hears ``unavailable`` by the publish
timeout, every time, even for frames that waited behind others, and sends go through again once
the broker answers.

The gateway reaches RabbitMQ through a proxy that holds the link (``CuttableProxy.hold``): the
TCP connection stays open and nothing passes, as when RabbitMQ stalls (a quorum election, a
disk that does not keep up); after ``release`` what was held passes in order.
"""

import asyncio
from collections.abc import Callable

import pytest

from proto import env
from tests.chaos.faults import CuttableProxy
from tests.support.clients import Frame, RawClient
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

SILENT_HEARTBEAT_S = 120
"""Longer than the test: the stall is not taken for a dead link."""
PUBLISH_TIMEOUT_S = 2.0
ANSWER_WITHIN_S = PUBLISH_TIMEOUT_S + 3.0
"""The publish timeout, and time for the answer to be written and read."""
LARGE_TEXT_BYTES = 40_000
"""Two such frames do not fit one AMQP message of the smallest size allowed (64 KiB): each goes
in a ``Batch`` of its own, and each ``Batch`` waits for the confirm of the one before."""
LARGE_FRAMES = 5


def through(proxy: CuttableProxy) -> dict[str, str]:
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/?heartbeat={SILENT_HEARTBEAT_S}"
    return {env.AMQP_URL: url, env.PUBLISH_TIMEOUT_S: str(PUBLISH_TIMEOUT_S)}


def has_id(client_id: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("id") == client_id


async def answer(client: RawClient, client_id: str, to: str) -> dict[str, object]:
    await client.send_frame(
        {"type": "send", "id": client_id, "to": to, "body": {"text": client_id}}
    )
    return await client.expect(
        lambda f: f.get("id") == client_id and f.get("type") in ("sent", "error"),
        within_s=ANSWER_WITHIN_S,
    )


async def test_a_stalled_broker_gets_unavailable_answers_then_sends_go_through(
    stack: Stack, proxy: CuttableProxy
) -> None:
    await stack.start_router()
    await stack.start_store()
    stalled = await stack.start_gateway(**through(proxy))
    other = await stack.start_gateway()
    alice = await stack.connect(stalled, uid="alice")
    bob = await stack.connect(other, uid="bob")
    assert (await answer(alice, "before", "bob"))["type"] == "sent"
    await bob.expect_message(body={"text": "before"})

    proxy.hold()
    for attempt in range(3):
        reply = await answer(alice, f"held-{attempt}", "bob")
        assert reply["type"] == "error", reply
        assert reply["code"] == "unavailable", reply

    proxy.release()
    reply = await answer(alice, "after", "bob")
    assert reply["type"] == "sent", reply
    await bob.expect_message(body={"text": "after"})


async def test_frames_queued_behind_a_stalled_batch_are_answered_by_their_own_timeout(
    stack: Stack, proxy: CuttableProxy
) -> None:
    await stack.start_router()
    await stack.start_store()
    stalled = await stack.start_gateway(
        **through(proxy), **{env.MAX_AMQP_MESSAGE_BYTES: str(64 * 1024)}
    )
    alice = await stack.connect(stalled, uid="alice")
    await stack.connect(stalled, uid="bob")
    text = "x" * LARGE_TEXT_BYTES

    proxy.hold()
    client_ids = [f"large-{number}" for number in range(LARGE_FRAMES)]
    for client_id in client_ids:  # all at once: each waits for the Batch before it
        await alice.send_frame(
            {"type": "send", "id": client_id, "to": "bob", "body": {"text": text}}
        )
    # One deadline for them all, from the last send: the last Batch does not wait a whole
    # timeout more for each one before it (that would be LARGE_FRAMES timeouts in all).
    async with asyncio.timeout(ANSWER_WITHIN_S):
        for client_id in client_ids:
            reply = await alice.expect(has_id(client_id), within_s=ANSWER_WITHIN_S)
            assert reply["type"] == "error", reply
            assert reply["code"] == "unavailable", reply
    proxy.release()
