"""A retry of a send is answered with the mid the recipient got, on the same connection or
after a reconnect to another gateway, and the recipient gets the message once."""

import pytest

from tests.support.stack import Stack
from tests.support.stored import wait_for_rows_stored

pytestmark = pytest.mark.integration


async def test_a_retry_after_a_lost_receipt_gets_the_original_mid_on_another_gateway(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")

    # Accepted on gateway A (bob has it), but the receipt is lost: the connection goes.
    await alice.send_frame({"type": "send", "id": "r1", "to": "bob", "body": "hi"})
    delivered = await bob.expect_message(body="hi")
    await alice.close()

    # The client reconnects to gateway B and sends the same id again.
    again = await stack.connect(1, uid="alice")
    sent = await again.send_message("bob", "hi", client_id="r1")
    assert sent["mid"] == delivered["mid"]
    # On the same connection too, however often.
    for _ in range(3):
        sent = await again.send_message("bob", "hi", client_id="r1")
        assert sent["mid"] == delivered["mid"]

    await bob.ack(delivered["mid"])
    await bob.expect_nothing("message", for_s=0.5)
    # Traffic beside it is untouched: a new id is a new message with a new mid.
    fresh = await ann.send_message("ben", "fresh", client_id="r1")
    assert fresh["mid"] != delivered["mid"]
    await ben.expect_message(mid=fresh["mid"], body="fresh")
    other = await again.send_message("bob", "next", client_id="r2")
    assert other["mid"] > delivered["mid"]
    await bob.expect_message(mid=other["mid"], body="next")


async def test_a_retry_to_an_offline_recipient_gets_the_stored_mid(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    first = await alice.send_message("carol", "stored", client_id="s1")
    await alice.close()
    again = await stack.connect(1, uid="alice")
    retry = await again.send_message("carol", "stored", client_id="s1")
    assert retry["mid"] == first["mid"]

    # Logged in once the message is stored: a login during the write may get it twice (in its
    # replay, and in the one the store's announcement asks for), as at-least-once allows.
    await wait_for_rows_stored(stack.stores[0])
    carol = await stack.connect(1, uid="carol")
    message = await carol.expect_message(body="stored")
    assert message["mid"] == first["mid"]
    await carol.ack(message["mid"])
    await carol.expect_nothing("message", for_s=0.5)
