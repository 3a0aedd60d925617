"""The numbered inbox end to end (``SWITCHBOARD_HISTORY=on``): the offline store writes each 1:1
and group message once, numbers every inbox it enters, then delivers each copy with its ``seq``.

Two gateways in every test. Each test reads PostgreSQL too, where the numbers live.
"""

import asyncio
from typing import Any

import aio_pika
import msgspec
import pytest

from proto import env, frames
from proto.envelopes import Origin
from proto.inbox import EntryTarget, InboxBatch, InboxEntry, InboxItem, encode
from proto.mids import MidFactory
from proto.names import EVENT_MESSAGE_OFFLINE, KEY_INBOX
from tests.support.api import Backend
from tests.support.clients import Frame, RawClient
from tests.support.postgres import query
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration


async def inbox_of(stack: Stack, uid: str) -> dict[str, int]:
    """mid -> seq of every entry of ``uid``'s inbox."""
    rows = await query(
        f"SELECT mid, seq FROM {stack.names.inbox_table} WHERE uid = $1 ORDER BY seq",
        uid,
    )
    return {row["mid"]: row["seq"] for row in rows}


async def send(client: RawClient, client_id: str, **fields: Any) -> str:
    """Send a message; return its mid."""
    await client.send_frame({"type": "send", "id": client_id, **fields})
    reply = await client.expect(
        lambda f: f.get("id") == client_id and f.get("type") in ("sent", "error")
    )
    assert reply["type"] == "sent", reply
    mid: str = reply["mid"]
    return mid


async def messages(
    client: RawClient, count: int, within_s: float = 10.0
) -> list[Frame]:
    """The next ``count`` messages this connection receives, in order."""
    return [await client.expect("message", within_s) for _ in range(count)]


async def test_seq_is_consecutive_per_uid_across_one_to_one_and_group_messages(
    history: Stack, backend: Backend
) -> None:
    stack = history
    await stack.start(gateways=2)
    await backend.call("group.add", {"group": "team", "uids": ["alice", "bob", "cat"]})
    alice = await stack.connect(0, uid="alice")
    alice_laptop = await stack.connect(1, uid="alice")
    bob = await stack.connect(1, uid="bob")
    cat = await stack.connect(0, uid="cat")

    sent = [
        (alice, await send(alice, "a1", to="bob", body=1)),
        (alice, await send(alice, "a2", group="team", body=2)),
        (bob, await send(bob, "b1", to="alice", body=3)),
        (cat, await send(cat, "c1", group="team", body=4)),
        (alice, await send(alice, "a3", to="cat", body=5)),
        (bob, await send(bob, "b2", group="team", body=6)),
    ]
    mids = [mid for _, mid in sent]
    # alice's inbox holds all six (four her own), bob's five, cat's four.
    laptop = await messages(alice_laptop, 6)
    assert [m["mid"] for m in laptop] == mids
    assert [m["seq"] for m in laptop] == [1, 2, 3, 4, 5, 6]
    # Her own messages reach her other connection, from her, and not the sending one.
    assert [m["from"] for m in laptop] == [
        "alice",
        "alice",
        "bob",
        "cat",
        "alice",
        "bob",
    ]
    to_alice = await messages(alice, 3)
    assert [(m["mid"], m["seq"]) for m in to_alice] == [
        (mids[2], 3),
        (mids[3], 4),
        (mids[5], 6),
    ]
    await alice.expect_nothing("message")

    expected = {"alice": 6, "bob": 5, "cat": 4}
    for uid, count in expected.items():
        inbox = await inbox_of(stack, uid)
        assert sorted(inbox.values()) == list(range(1, count + 1)), uid
        assert list(inbox) == [mid for mid in mids if mid in inbox], uid
    bob_inbox = await inbox_of(stack, "bob")
    to_bob = await messages(bob, 3)  # a1, a2, c1: b1 and b2 are his own
    assert [(m["mid"], m["seq"]) for m in to_bob] == [
        (mid, bob_inbox[mid]) for mid in (mids[0], mids[1], mids[3])
    ]
    to_cat = await messages(cat, 3)
    cat_inbox = await inbox_of(stack, "cat")
    assert [m["seq"] for m in to_cat] == [cat_inbox[m["mid"]] for m in to_cat]
    assert [m["seq"] for m in to_cat] == sorted(m["seq"] for m in to_cat)
    for client in (alice, alice_laptop, bob, cat):
        await client.expect_nothing("message", for_s=0.3)


async def test_an_offline_recipient_gets_its_messages_at_init_with_seq(
    history: Stack, backend: Backend
) -> None:
    stack = history
    await stack.start(gateways=2)
    events = await backend.events(EVENT_MESSAGE_OFFLINE)
    await backend.call("group.add", {"group": "crew", "uids": ["alice", "dave"]})
    alice = await stack.connect(0, uid="alice")
    direct = await send(alice, "a1", to="dave", body="hi")
    grouped = await send(alice, "a2", group="crew", body="all")

    received = [await backend.next_event(events) for _ in range(2)]
    bodies = sorted((body for _, body in received), key=lambda body: body["mid"])
    for body in bodies:
        assert isinstance(body.pop("ts"), int)
    assert bodies == [
        {"uid": "dave", "mid": direct, "sender": "alice", "with": "alice"},
        {"uid": "dave", "mid": grouped, "sender": "alice", "group": "crew"},
    ]
    # The rows for dave's next init hold no frame: they point at the message.
    rows = await query(
        f"SELECT mid, seq, frame FROM {stack.names.undelivered_table}"
        " WHERE uid = $1 ORDER BY mid",
        "dave",
    )
    assert [(r["mid"], r["seq"], r["frame"]) for r in rows] == [
        (direct, 1, None),
        (grouped, 2, None),
    ]

    dave = await stack.connect(1, uid="dave")
    replayed = await messages(dave, 2)
    assert [(m["mid"], m["seq"], m["from"]) for m in replayed] == [
        (direct, 1, "alice"),
        (grouped, 2, "alice"),
    ]
    assert (replayed[0]["to"], replayed[1]["group"]) == ("dave", "crew")
    await dave.ack(direct, grouped)

    async def emptied() -> bool | None:
        return True if not await stack.stored_mids("dave") else None

    await eventually(emptied, within_s=10.0)
    # Acknowledged rows leave the undelivered table; the inbox keeps the history.
    assert await inbox_of(stack, "dave") == {direct: 1, grouped: 2}


async def test_a_message_is_stored_once_whatever_its_recipients(
    history: Stack, backend: Backend
) -> None:
    stack = history
    await stack.start(gateways=2)
    members = ["alice", "bob", "cat", "dan", "eve"]
    await backend.call("group.add", {"group": "big", "uids": members})
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    mid = await send(alice, "a1", group="big", body={"text": "to five"})
    assert (await bob.expect_message(mid=mid))["seq"] == 1

    names = stack.names
    stored = await query(
        f"SELECT mid, sender, frame FROM {names.messages_table} WHERE mid = $1", mid
    )
    assert len(stored) == 1
    assert stored[0]["sender"] == "alice"
    assert b'"seq"' not in stored[0]["frame"].encode()
    entries = await query(
        f"SELECT uid, seq, conv, is_own FROM {names.inbox_table} WHERE mid = $1"
        " ORDER BY uid",
        mid,
    )
    assert [tuple(e) for e in entries] == [
        ("alice", 1, "g:big", True),
        ("bob", 1, "g:big", False),
        ("cat", 1, "g:big", False),
        ("dan", 1, "g:big", False),
        ("eve", 1, "g:big", False),
    ]
    conversations = await query(
        f"SELECT uid, conv, last_mid, received FROM {names.conversations_table}"
        " ORDER BY uid"
    )
    assert [tuple(c) for c in conversations] == [
        (uid, "g:big", mid, 0 if uid == "alice" else 1) for uid in members
    ]


async def test_a_redelivered_inbox_batch_is_numbered_once(
    history: Stack, backend: Backend
) -> None:
    stack = history
    await stack.start(gateways=2)
    bob = await stack.connect(1, uid="bob")
    assert bob.conn_id is not None
    mid = MidFactory("0123456789").next_mid(1_700_000_000_000)
    frame = frames.encode(
        frames.Message(mid=mid, sender="alice", body=msgspec.Raw(b"1"), ts=1, to="bob")
    )
    item = InboxItem(
        mid=mid,
        sender="alice",
        frame=msgspec.Raw(frame),
        entries=[
            InboxEntry(
                "bob", False, [EntryTarget(stack.gateways[1].gateway_id, bob.conn_id)]
            ),
            InboxEntry("alice", True, []),
        ],
        to="bob",
        origin=Origin("alice", "", "", ""),
    )
    body = encode(InboxBatch(items=[item]))
    # A router's batch that comes back (the router died before its ack): the same body again,
    # once the first is committed (its copy delivered). Published together, the two could meet
    # in one store batch, which writes and delivers a mid once.
    inbound = await backend.channel.get_exchange(
        stack.names.inbound_exchange, ensure=False
    )
    copies = []
    for _ in range(2):
        await inbound.publish(aio_pika.Message(body), KEY_INBOX, mandatory=True)
        copies += await messages(bob, 1)
    assert [(m["mid"], m["seq"]) for m in copies] == [(mid, 1), (mid, 1)]
    heads = await query(
        f"SELECT uid, head FROM {stack.names.inbox_heads_table} ORDER BY uid"
    )
    assert [tuple(h) for h in heads] == [("alice", 1), ("bob", 1)]


async def test_a_store_killed_and_restarted_loses_nothing_and_keeps_its_seqs(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    count = 60
    mids: list[str] = []

    async def flood() -> None:
        for index in range(count):
            mids.append(await send(alice, f"f{index}", to="bob", body=index))

    flooding = asyncio.create_task(flood())
    await stack.stores[0].wait_for_event("inbox_written")
    await stack.stores[0].kill()
    await stack.start_store()
    await flooding

    seen: dict[str, set[int]] = {}

    async def everything() -> bool | None:
        while bob.unread():
            frame = await bob.expect("message")
            seen.setdefault(frame["mid"], set()).add(frame["seq"])
        return True if set(seen) == set(mids) else None

    await eventually(everything, within_s=20.0)
    inbox = await inbox_of(stack, "bob")
    # Every message once in the inbox, numbered 1..count; a copy delivered twice (its
    # batch redelivered to the new store) has the same seq both times.
    assert sorted(inbox.values()) == list(range(1, count + 1))
    assert {mid: {seq} for mid, seq in inbox.items()} == seen
    heads = await query(
        f"SELECT head FROM {stack.names.inbox_heads_table} WHERE uid = $1", "bob"
    )
    assert heads[0]["head"] == count


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(scaled(30)):
        _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()


async def test_a_store_killed_after_its_commit_and_before_its_deliveries_keeps_the_seqs(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    first = await send(alice, "a1", to="bob", body=1)
    assert (await bob.expect_message(mid=first))["seq"] == 1
    # bob's gateway queue refuses every message for a while: the store commits the next
    # messages, then cannot deliver them (nack) and retries, holding its batch.
    queue = stack.names.gateway_queue(stack.gateways[1].gateway_id)
    policy = f"{stack.namespace}-refuse"
    await rabbitmqctl(
        "set_policy",
        policy,
        f"^{queue}$".replace(".", r"\."),
        '{"max-length": 0, "overflow": "reject-publish"}',
        "--apply-to",
        "queues",
    )
    try:
        later = [await send(alice, f"a{n}", to="bob", body=n) for n in (2, 3)]

        async def committed() -> dict[str, int] | None:
            inbox = await inbox_of(stack, "bob")
            return inbox if later[0] in inbox else None

        # The batch holding a2 is committed (a3 waits behind it in the queue).
        assert (await eventually(committed, within_s=10.0))[later[0]] == 2
        await stack.stores[0].wait_for_event("batch_failed")
        await bob.expect_nothing("message", for_s=0.3)
        await stack.stores[0].kill()
    finally:
        await rabbitmqctl("clear_policy", policy)
    await stack.start_store()  # the batch comes back to it: found, not numbered again

    copies = await messages(bob, 2)
    assert [(m["mid"], m["seq"]) for m in copies] == [(later[0], 2), (later[1], 3)]
    heads = await query(
        f"SELECT uid, head FROM {stack.names.inbox_heads_table} ORDER BY uid"
    )
    assert [tuple(h) for h in heads] == [("alice", 3), ("bob", 3)]


async def test_an_offline_recipients_cap_refuses_its_rows_but_not_its_inbox(
    history: Stack, backend: Backend
) -> None:
    stack = history
    stack.settings[env.OFFLINE_MAX_ROWS_PER_UID] = "2"
    await stack.start(gateways=2)
    refusals = await backend.events("message.refused")
    alice = await stack.connect(0, uid="alice")
    mids = [await send(alice, f"a{n}", to="dave", body=n) for n in range(3)]

    full = await alice.expect(lambda f: f.get("code") == "recipient_full", 10.0)
    assert (full["id"], full["mid"], full["to"]) == ("a2", mids[2], "dave")
    _, refused = await backend.next_event(refusals)
    assert (refused["uid"], refused["mid"], refused["sender"]) == (
        "dave",
        mids[2],
        "alice",
    )
    assert await stack.stored_mids("dave") == mids[:2]
    # The cap is the undelivered table's, for init without since: the inbox has all three.
    assert await inbox_of(stack, "dave") == {mid: n + 1 for n, mid in enumerate(mids)}
    dave = await stack.connect(1, uid="dave")
    assert [(m["mid"], m["seq"]) for m in await messages(dave, 2)] == [
        (mids[0], 1),
        (mids[1], 2),
    ]
    await dave.expect_nothing("message", for_s=0.3)
