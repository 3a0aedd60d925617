"""``api.send`` to a list of uids, end to end on two gateways: one message per uid, each with its
own mid, online on either gateway or replayed at init; retries, refusals and history."""

import asyncio
from typing import Any

import pytest

from proto import env
from proto.frames import MAX_SEND_UIDS
from tests.support.api import Backend
from tests.support.clients import RawClient
from tests.support.stack import Stack
from tests.support.timing import eventually

pytestmark = pytest.mark.integration


def message_mids(client: RawClient) -> list[str]:
    """The mids of every message frame the client received, in order."""
    return [f["mid"] for f in client.received if f.get("type") == "message"]


async def stored(stack: Stack, uid: str, mid: str) -> bool | None:
    return True if mid in await stack.stored_mids(uid) else None


async def expect_each(
    clients: dict[str, RawClient], mids: dict[str, str], body: Any, sender: str
) -> None:
    """Each client gets the message of its uid's mid, 1:1 from ``sender`` (and acknowledges
    it)."""
    for uid, client in clients.items():
        message = await client.expect_message(mid=mids[uid])
        assert (message["to"], message["from"], message["body"]) == (uid, sender, body)
        assert "group" not in message
        await client.ack(mids[uid])


@pytest.mark.parametrize("history", ["on", "off"])
async def test_each_recipient_gets_its_own_message_once_online_or_replayed(
    stack: Stack, backend: Backend, history: str
) -> None:
    stack.settings[env.HISTORY] = history
    await stack.start(gateways=2)
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    command = {
        "to": ["ann", "ben", "cat"],
        "body": {"text": "digest"},
        "from": "billing",
        "id": "digest-1",
    }

    reply = await backend.call("send", command)

    mids = reply["mids"]
    assert set(reply) == {"mids"}
    assert sorted(mids) == ["ann", "ben", "cat"]
    assert len(set(mids.values())) == 3
    await expect_each({"ann": ann, "ben": ben}, mids, {"text": "digest"}, "billing")
    # Stored before cat connects: a row committed while it connects is pushed to it by the
    # store's announcement as well as by its init's replay (clients dedupe by mid).
    await eventually(lambda: stored(stack, "cat", mids["cat"]))
    cat = await stack.connect(1, uid="cat")  # offline until now: replayed at init
    await expect_each({"cat": cat}, mids, {"text": "digest"}, "billing")

    # A retry with the same id gets the same mids and delivers nothing: each recipient's
    # next message is the one sent after it.
    assert await backend.call("send", command) == reply
    after = await backend.call(
        "send", {"to": ["ann", "ben", "cat"], "body": "after", "from": "billing"}
    )
    clients = {"ann": ann, "ben": ben, "cat": cat}
    await expect_each(clients, after["mids"], "after", "billing")
    for uid, client in clients.items():
        assert message_mids(client) == [mids[uid], after["mids"][uid]]

    if history == "on":  # each message is in its recipient's conversation with billing
        for uid in clients:
            page = await backend.call("history", {"uid": uid, "with": "billing"})
            assert [m["mid"] for m in page["messages"]] == [
                mids[uid],
                after["mids"][uid],
            ]


async def test_a_bad_list_is_refused_alone_and_a_good_one_delivered(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    too_many = [f"u{i}" for i in range(MAX_SEND_UIDS + 1)]
    bad_bodies: list[dict[str, object]] = [
        {"to": too_many, "body": 1},
        {"to": ["ann", "not a uid"], "body": 1},
        {"to": ["ann", "ben", "ann"], "body": 1},
        {"to": [], "body": 1},
        {"to": ["ann"], "group": "team", "body": 1},
    ]

    # Published together, so that they share the router's batches.
    *refusals, good = await asyncio.gather(
        *(backend.call("send", body) for body in bad_bodies),
        backend.call("send", {"to": ["ann", "ben"], "body": "fine"}),
    )

    for refusal in refusals:
        assert refusal["error"]["code"] == "invalid_field", refusal
    await expect_each({"ann": ann, "ben": ben}, good["mids"], "fine", "system")
    assert message_mids(ann) == [good["mids"]["ann"]]
    assert message_mids(ben) == [good["mids"]["ben"]]


async def test_the_most_uids_are_sent_in_one_command(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    uids = ["ann", "ben", *(f"u{i}" for i in range(MAX_SEND_UIDS - 2))]

    reply = await backend.call("send", {"to": uids, "body": "many"}, within_s=30)

    assert list(reply["mids"]) == uids
    assert len(set(reply["mids"].values())) == MAX_SEND_UIDS
    await expect_each({"ann": ann, "ben": ben}, reply["mids"], "many", "system")
