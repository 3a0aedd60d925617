"""Transient sends end to end: only the connections online now get them, nothing is stored.

A ``send`` with ``"transient": true`` (typing indicators, "seen" pings, game moves) reaches the
recipients' connections online now, needs no ``ack``, and never enters the offline store: not
when the recipient is offline, not when it leaves without acknowledging. Each test sends a
durable message beside the transient one and waits for the durable one in the store, so that
"nothing stored" is checked after the store had every chance to write it.
"""

from typing import Any

import pytest

from proto.codes import ErrorCode
from tests.support.api import Backend
from tests.support.clients import Frame, RawClient
from tests.support.stack import Stack
from tests.support.timing import eventually

pytestmark = pytest.mark.integration


async def send(client: RawClient, client_id: str, **fields: Any) -> Frame:
    """Send a ``send`` frame with these fields; return its ``sent`` or ``error`` reply."""
    await client.send_frame({"type": "send", "id": client_id, **fields})
    return await client.expect(
        lambda f: f.get("id") == client_id and f.get("type") in ("sent", "error")
    )


async def wait_stored(stack: Stack, uid: str, mid: str) -> list[str]:
    """Wait until ``mid`` is stored for ``uid``; return every mid stored for it then."""

    async def probe() -> list[str] | None:
        mids = await stack.stored_mids(uid)
        return mids if mid in mids else None

    return await eventually(probe, within_s=10.0)


async def test_an_online_recipient_gets_it_without_acking_and_nothing_is_stored(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    alice_laptop = await stack.connect(1, uid="alice")
    bob = await stack.connect(1, uid="bob")
    bob_phone = await stack.connect(0, uid="bob")

    sent = await send(alice, "t1", to="bob", body={"typing": True}, transient=True)
    assert sent["type"] == "sent"
    for device in (bob, bob_phone):
        message = await device.expect_message(mid=sent["mid"])
        assert (message["from"], message["to"]) == ("alice", "bob")
        assert (message["body"], message["transient"]) == ({"typing": True}, True)
        assert "seq" not in message
    # A retry with the same id is answered with the first mid and delivers nothing again.
    again = await send(alice, "t1", to="bob", body={"typing": True}, transient=True)
    assert again == sent
    await alice_laptop.expect_nothing("message")
    await bob.expect_nothing("message")

    # bob leaves without acknowledging either message: the durable one is handed over to
    # the offline store, the transient one is not.
    durable = await alice.send_message("bob", "durable")
    await bob.expect_message(mid=durable["mid"])
    await bob_phone.expect_message(mid=durable["mid"])
    await bob.close()
    await bob_phone.close()
    assert await wait_stored(stack, "bob", durable["mid"]) == [durable["mid"]]

    back = await stack.connect(1, uid="bob")
    await back.expect_message(mid=durable["mid"])
    await back.expect_nothing(lambda f: f.get("mid") == sent["mid"])


async def test_an_offline_recipient_gets_nothing_at_login_either(stack: Stack) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")

    sent = await send(alice, "t1", to="carol", body="seen", transient=True)
    assert sent["type"] == "sent"
    durable = await alice.send_message("carol", "durable")
    assert await wait_stored(stack, "carol", durable["mid"]) == [durable["mid"]]

    carol = await stack.connect(1, uid="carol")
    await carol.expect_message(mid=durable["mid"])
    await carol.expect_nothing(lambda f: f.get("mid") == sent["mid"])


async def test_a_group_send_reaches_the_members_online_now_only(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    await backend.call("group.add", {"group": "team", "uids": ["ann", "ben", "cat"]})
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")

    sent = await send(ann, "t1", group="team", body="move e4", transient=True)
    assert sent["type"] == "sent"
    message = await ben.expect_message(mid=sent["mid"])
    assert (message["group"], message["transient"]) == ("team", True)
    await ann.expect_nothing("message")  # the sender's connection has `sent`

    durable = await send(ann, "d1", group="team", body="durable")
    assert await wait_stored(stack, "cat", durable["mid"]) == [durable["mid"]]
    cat = await stack.connect(1, uid="cat")
    await cat.expect_message(mid=durable["mid"])
    await cat.expect_nothing(lambda f: f.get("mid") == sent["mid"])


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
async def test_a_transient_that_is_not_a_boolean_is_refused_beside_innocent_traffic(
    stack: Stack, value: object
) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    dan = await stack.connect(0, uid="dan")
    erin = await stack.connect(1, uid="erin")

    error = await send(alice, "bad", to="bob", body="x", transient=value)
    assert (error["type"], error["code"]) == ("error", ErrorCode.INVALID_FIELD)
    assert "$.transient" in error["message"]
    innocent = await dan.send_message("erin", "hello")
    await erin.expect_message(mid=innocent["mid"])

    # The refused frame routed nothing, and the connection keeps working.
    sent = await send(alice, "good", to="bob", body="typing", transient=True)
    message = await bob.expect_message(mid=sent["mid"])
    assert message["body"] == "typing"
    await bob.expect_nothing("message")
