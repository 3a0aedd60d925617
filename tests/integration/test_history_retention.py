"""Retention of history (``SWITCHBOARD_HISTORY=on``, ``SWITCHBOARD_HISTORY_DAYS``): reads skip
entries older than the cutoff at once, and the offline store's sweep deletes them in bounded
batches, keeping unread counts exact, while writers keep flowing.

Two gateways in every test. History is kept a few seconds: messages written "old" enter the
inbox through ``<ns>.inbox`` with mids of that age, as a router would publish them.
"""

import time
import uuid
from typing import Any

import aio_pika
import asyncpg
import msgspec
import pytest

from proto import env, frames
from proto.codes import ErrorCode
from proto.envelopes import Origin
from proto.inbox import InboxBatch, InboxEntry, InboxItem, encode
from proto.mids import MidFactory
from proto.names import KEY_INBOX
from tests.support.api import Backend
from tests.support.clients import Frame, RawClient
from tests.support.postgres import query
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration

KEPT_S = 30.0
"""How long history is kept here."""
SWEEP_INTERVAL_S = "0.2"


@pytest.fixture
def history(stack: Stack) -> Stack:
    stack.settings.update(
        {
            env.HISTORY: "on",
            env.HISTORY_DAYS: repr(KEPT_S / 86_400),
            env.OFFLINE_SWEEP_INTERVAL_S: SWEEP_INTERVAL_S,
        }
    )
    return stack


async def send(client: RawClient, **fields: Any) -> str:
    client_id = uuid.uuid4().hex[:12]
    await client.send_frame({"type": "send", "id": client_id, **fields})
    reply = await client.expect(
        lambda f: f.get("id") == client_id and f.get("type") in ("sent", "error")
    )
    assert reply["type"] == "sent", reply
    mid: str = reply["mid"]
    return mid


async def ask(client: RawClient, **frame: Any) -> Frame:
    client_id = uuid.uuid4().hex[:12]
    await client.send_frame({**frame, "id": client_id})
    return await client.expect(lambda f: f.get("id") == client_id, within_s=10)


async def write_old(
    backend: Backend, stack: Stack, age_s: float, messages: list[dict[str, Any]]
) -> list[str]:
    """Write messages through ``<ns>.inbox`` with mids ``age_s`` old; return their mids."""
    factory = MidFactory("0123456789")
    at_ms = int((time.time() - age_s) * 1000)
    items = []
    for fields in messages:
        mid = factory.next_mid(at_ms)
        sender, uids = fields["from"], fields["uids"]
        frame = frames.Message(
            mid=mid,
            sender=sender,
            body=msgspec.Raw(b"0"),
            ts=at_ms,
            to=fields.get("to"),
            group=fields.get("group"),
        )
        items.append(
            InboxItem(
                mid=mid,
                sender=sender,
                frame=msgspec.Raw(frames.encode(frame)),
                entries=[InboxEntry(uid, uid == sender, []) for uid in uids],
                to=fields.get("to"),
                group=fields.get("group"),
                origin=Origin(sender, "", "", ""),
            )
        )
    inbound = await backend.channel.get_exchange(
        stack.names.inbound_exchange, ensure=False
    )
    body = encode(InboxBatch(items=items))
    await inbound.publish(aio_pika.Message(body), KEY_INBOX, mandatory=True)
    return [item.mid for item in items]


async def heads(stack: Stack) -> dict[str, int]:
    rows = await query(f"SELECT uid, head FROM {stack.names.inbox_heads_table}")
    return {row["uid"]: row["head"] for row in rows}


async def test_expired_entries_leave_history_and_conversations(
    history: Stack, backend: Backend
) -> None:
    stack = history
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    # Old enough to expire a few seconds from now.
    old = await write_old(
        backend,
        stack,
        KEPT_S - scaled(4),
        [
            *({"from": "alice", "to": "bob", "uids": ["bob", "alice"]},) * 3,
            {"from": "cat", "to": "bob", "uids": ["bob", "cat"]},
            {"from": "alice", "group": "team", "uids": ["alice", "bob"]},
        ],
    )
    new = [await send(alice, to="bob", body=n) for n in range(2)]

    async def written() -> bool | None:
        found = await heads(stack)
        return (found.get("bob", 0) >= 7 and found.get("alice", 0) >= 6) or None

    await eventually(written, within_s=10)
    page = await ask(bob, type="history", **{"with": "alice"})
    assert [m["mid"] for m in page["messages"]] == [*old[:3], *new]
    listed = await backend.call("conversations", {"uid": "bob"})
    assert [(i.get("with") or i["group"], i["unread"]) for i in listed["items"]] == [
        ("alice", 5),
        ("team", 1),
        ("cat", 1),
    ]

    async def expired() -> Frame | None:
        page = await ask(bob, type="history", **{"with": "alice"})
        return page if len(page["messages"]) == 2 else None

    page = await eventually(expired, within_s=scaled(4) + 10)
    assert ([m["mid"] for m in page["messages"]], page["more"]) == (new, False)
    # Ended conversations leave the list at once; unread counts drop once the sweep has
    # counted what expired (within a sweep interval).
    listed = await backend.call("conversations", {"uid": "bob"})
    assert [i.get("with") for i in listed["items"]] == ["alice"]

    async def recounted() -> bool | None:
        listed = await backend.call("conversations", {"uid": "bob"})
        return [i["unread"] for i in listed["items"]] == [2] or None

    await eventually(recounted, within_s=10)
    team = await backend.call("history", {"uid": "alice", "group": "team"})
    assert team == {"messages": [], "more": False}
    gone = await backend.call("message", {"mid": old[0]})
    assert gone["error"]["code"] == ErrorCode.NOT_FOUND
    kept = await backend.call("message", {"mid": new[0], "uid": "bob"})
    assert kept["message"]["mid"] == new[0]

    # The sweep deleted the rows: entries, messages, conversations that ended; the expired
    # entries from others are counted where the conversation lives on.
    names = stack.names

    async def swept() -> bool | None:
        rows = await query(f"SELECT uid, mid FROM {names.inbox_table}")
        return {row["mid"] for row in rows} == set(new) or None

    await eventually(swept, within_s=10)
    conversations = await query(
        f"SELECT uid, conv, received FROM {names.conversations_table} ORDER BY uid"
    )
    assert [tuple(row) for row in conversations] == [
        ("alice", "u:bob", 0),
        ("bob", "u:alice", 5),
    ]
    counted = await query(
        f"SELECT uid, conv, expired FROM {names.conversation_expired_table}"
    )
    assert [tuple(row) for row in counted] == [("bob", "u:alice", 3)]
    messages = await query(f"SELECT mid FROM {names.messages_table} ORDER BY mid")
    assert [row["mid"] for row in messages] == new
    # The conversation goes on: a new message is counted after what expired.
    await send(alice, to="bob", body="later")
    await bob.expect_message(body="later")
    listed = await backend.call("conversations", {"uid": "bob"})
    assert [(i.get("with"), i["unread"]) for i in listed["items"]] == [("alice", 3)]


OLD_ROWS = 40_000
OLD_UIDS = 100


async def test_a_busy_writer_keeps_flowing_while_the_sweep_deletes(
    history: Stack,
) -> None:
    stack = history
    stack.settings[env.BATCH_MAX] = "100"  # many statements for the sweep
    await stack.start(gateways=2)
    dave = await stack.connect(0, uid="dave")
    erin = await stack.connect(1, uid="erin")
    names = stack.names
    # Entries of a year ago, for a hundred uids, with their messages and conversations.
    old_mid = "lpad(to_hex(1700000000000 + g), 12, '0') || lpad(to_hex(g), 14, '0')"
    pg = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=scaled(10))
    try:
        await pg.execute(
            f"INSERT INTO {names.messages_table} (mid, sender, frame)"
            f" SELECT {old_mid}, 'x', '{{\"type\":\"message\"}}'"
            f" FROM generate_series(0, {OLD_ROWS - 1}) AS g;"
            f"INSERT INTO {names.inbox_table} (uid, seq, conv, mid, is_own)"
            f" SELECT 'old' || (g % {OLD_UIDS}), g / {OLD_UIDS} + 1, 'u:x', {old_mid},"
            f" false FROM generate_series(0, {OLD_ROWS - 1}) AS g;"
            f"INSERT INTO {names.conversations_table}"
            " (uid, conv, last_seq, last_mid, received)"
            f" SELECT uid, 'u:x', max(seq), max(mid), count(*) FROM {names.inbox_table}"
            " WHERE uid LIKE 'old%' GROUP BY uid"
        )
    finally:
        await pg.close()

    async def remaining() -> int:
        rows = await query(
            f"SELECT count(*) AS n FROM {names.inbox_table} WHERE uid LIKE 'old%'"
        )
        count: int = rows[0]["n"]
        return count

    latencies: list[float] = []
    overlapped = 0
    for n in range(200):
        started = time.monotonic()
        mid = await send(dave, to="erin", body=n)
        await erin.expect_message(mid=mid)
        await erin.ack(mid)
        latencies.append(time.monotonic() - started)
        if n % 20 == 0 and await remaining() > 0:
            overlapped += 1
        if overlapped >= 2 and await remaining() == 0:
            break
    # The writer's messages flowed while the sweep was deleting, each within a bound.
    assert overlapped >= 2
    assert max(latencies) < scaled(2.0), max(latencies)

    async def swept() -> bool | None:
        return await remaining() == 0 or None

    await eventually(swept, within_s=60)
    left = await query(
        f"SELECT count(*) AS n FROM {names.conversations_table} WHERE uid LIKE 'old%'"
    )
    assert left[0]["n"] == 0

    async def messages_swept() -> bool | None:
        rows = await query(f"SELECT count(*) AS n FROM {names.messages_table}")
        return rows[0]["n"] == len(latencies) or None

    await eventually(messages_swept, within_s=60)
    assert (await heads(stack))["erin"] == len(latencies)
