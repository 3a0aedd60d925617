"""Read markers and receipts end to end (``SWITCHBOARD_HISTORY=on``): a ``read`` moves the
marker of its conversation in PostgreSQL, numbers a receipt entry in the party's inbox and the
reader's, answers ``marked``, and the routers deliver ``receipt`` frames to the connections
online now (``docs/history.md``, section 6.3).

Two gateways in every test. Each test reads PostgreSQL too, where the markers and the receipt
entries live.
"""

from typing import Any

import asyncpg
import pytest

from proto import env
from proto.codes import ErrorCode
from tests.support.api import Backend
from tests.support.clients import Frame, RawClient
from tests.support.stack import Stack
from tests.support.timing import scaled

pytestmark = pytest.mark.integration


@pytest.fixture
def history(stack: Stack) -> Stack:
    stack.settings[env.HISTORY] = "on"
    return stack


async def query(sql: str, *args: object) -> list[asyncpg.Record]:
    pg = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=scaled(10))
    try:
        return await pg.fetch(sql, *args)
    finally:
        await pg.close()


async def send(client: RawClient, client_id: str, **fields: Any) -> str:
    """Send a message; return its mid."""
    await client.send_frame({"type": "send", "id": client_id, **fields})
    reply = await client.expect(
        lambda f: f.get("id") == client_id and f.get("type") in ("sent", "error")
    )
    assert reply["type"] == "sent", reply
    mid: str = reply["mid"]
    return mid


async def read(client: RawClient, client_id: str, mid: str) -> Frame:
    """Send a ``read``; return its answer (``marked`` or an ``error``)."""
    await client.send_frame({"type": "read", "id": client_id, "mid": mid})
    return await answer(client, client_id)


async def answer(client: RawClient, client_id: str) -> Frame:
    """The reply that carries this id."""
    return await client.expect(lambda f: f.get("id") == client_id, 10.0)


def is_receipt(frame: Frame) -> bool:
    return frame.get("type") == "receipt"


async def receipt(client: RawClient) -> tuple[str, str, int]:
    frame = await client.expect(is_receipt, 10.0)
    return frame["by"], frame["mid"], frame["seq"]


async def entries(stack: Stack, uid: str) -> list[tuple[int, str, str]]:
    """``uid``'s inbox in seq order: (seq, "m" or "r:<reader>", mid)."""
    names = stack.names
    rows = await query(
        f"SELECT seq, 'm' AS kind, mid FROM {names.inbox_table} WHERE uid = $1"
        f" UNION ALL SELECT seq, 'r:' || reader, mid FROM {names.receipts_table}"
        " WHERE uid = $1 ORDER BY seq",
        uid,
    )
    return [(row["seq"], row["kind"], row["mid"]) for row in rows]


async def conversation(stack: Stack, uid: str, conv: str) -> dict[str, Any]:
    """A conversation's row, with its unread count as the design computes it."""
    names = stack.names
    rows = await query(
        "SELECT c.read_mid, c.read_seq, c.read_received, c.received,"
        " c.received - greatest(c.read_received, coalesce(x.expired, 0)) AS unread"
        f" FROM {names.conversations_table} AS c"
        f" LEFT JOIN {names.conversation_expired_table} AS x"
        " ON x.uid = c.uid AND x.conv = c.conv"
        " WHERE c.uid = $1 AND c.conv = $2",
        uid,
        conv,
    )
    assert len(rows) == 1, (uid, conv)
    return dict(rows[0])


async def test_a_one_to_one_read_sends_receipts_to_the_peer_and_the_readers_devices(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    phone = await stack.connect(1, uid="bob")
    laptop = await stack.connect(0, uid="bob")
    first = await send(alice, "a1", to="bob", body=1)
    second = await send(alice, "a2", to="bob", body=2)
    for device in (phone, laptop):
        await device.expect_message(mid=second, seq=2)

    marked = await read(phone, "r1", second)
    assert marked == {"type": "marked", "id": "r1"}
    # The peer and the reader's other device get a receipt with their entry's seq; the
    # reading connection has its marked, and no receipt.
    assert await receipt(alice) == ("bob", second, 3)
    assert await receipt(laptop) == ("bob", second, 3)
    await phone.expect_nothing(is_receipt, for_s=0.5)
    assert await entries(stack, "alice") == [
        (1, "m", first),
        (2, "m", second),
        (3, "r:bob", second),
    ]
    assert await entries(stack, "bob") == [
        (1, "m", first),
        (2, "m", second),
        (3, "r:bob", second),
    ]
    assert await conversation(stack, "bob", "u:alice") == {
        "read_mid": second,
        "read_seq": 2,
        "read_received": 2,
        "received": 2,
        "unread": 0,
    }

    # An older mid: marked, and nothing changes (no receipt, no entry).
    assert await read(laptop, "r2", first) == {"type": "marked", "id": "r2"}
    for client in (alice, phone, laptop):
        await client.expect_nothing(is_receipt, for_s=0.3)
    assert len(await entries(stack, "bob")) == 3

    # The next messages are numbered after the receipts; the unread count follows them.
    third = await send(alice, "a3", to="bob", body=3)
    fourth = await send(alice, "a4", to="bob", body=4)
    await phone.expect_message(mid=fourth, seq=5)
    assert (await laptop.expect_message(mid=third))["seq"] == 4
    assert (await conversation(stack, "bob", "u:alice"))["unread"] == 2
    # Reading the third leaves one unread; alice has nothing unread: she sent them all.
    assert await read(laptop, "r3", third) == {"type": "marked", "id": "r3"}
    assert await receipt(alice) == ("bob", third, 6)
    assert await receipt(phone) == ("bob", third, 6)
    assert await conversation(stack, "bob", "u:alice") == {
        "read_mid": third,
        "read_seq": 4,
        "read_received": 3,
        "received": 4,
        "unread": 1,
    }
    assert (await conversation(stack, "alice", "u:bob"))["unread"] == 0
    heads = await query(
        f"SELECT uid, head FROM {stack.names.inbox_heads_table} ORDER BY uid"
    )
    assert [tuple(h) for h in heads] == [("alice", 6), ("bob", 6)]


async def test_a_group_read_sends_a_receipt_to_the_sender_of_the_mid_only(
    history: Stack, backend: Backend
) -> None:
    stack = history
    await stack.start(gateways=2)
    await backend.call("group.add", {"group": "team", "uids": ["alice", "bob", "cat"]})
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    bob_laptop = await stack.connect(0, uid="bob")
    cat = await stack.connect(1, uid="cat")
    cat_laptop = await stack.connect(0, uid="cat")
    from_alice = await send(alice, "a1", group="team", body=1)
    from_cat = await send(cat, "c1", group="team", body=2)
    await bob.expect_message(mid=from_cat, seq=2)

    assert await read(bob, "r1", from_alice) == {"type": "marked", "id": "r1"}
    assert await receipt(alice) == ("bob", from_alice, 3)
    assert await receipt(bob_laptop) == ("bob", from_alice, 3)
    for client in (bob, cat, cat_laptop):
        await client.expect_nothing(is_receipt, for_s=0.3)

    # cat reads its own message: only cat's other devices learn of it.
    assert await read(cat, "r2", from_cat) == {"type": "marked", "id": "r2"}
    assert await receipt(cat_laptop) == ("cat", from_cat, 3)
    for client in (alice, bob, bob_laptop, cat):
        await client.expect_nothing(is_receipt, for_s=0.3)

    receipts = await query(
        f"SELECT uid, seq, reader, mid FROM {stack.names.receipts_table}"
        " ORDER BY uid, seq"
    )
    assert [tuple(r) for r in receipts] == [
        ("alice", 3, "bob", from_alice),
        ("bob", 3, "bob", from_alice),
        ("cat", 3, "cat", from_cat),
    ]
    assert (await conversation(stack, "bob", "g:team"))["unread"] == 1
    assert (await conversation(stack, "cat", "g:team"))["unread"] == 0
    # A later message takes the next seq of each inbox, receipts counted.
    later = await send(alice, "a2", group="team", body=3)
    assert (await bob.expect_message(mid=later))["seq"] == 4
    assert (await cat.expect_message(mid=later))["seq"] == 4
    assert (await bob_laptop.expect_message(mid=later))["seq"] == 4


async def test_a_mid_not_in_the_readers_inbox_is_not_found_beside_other_traffic(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    carol = await stack.connect(0, uid="carol")
    dave = await stack.connect(1, uid="dave")
    to_carol = await send(alice, "a1", to="carol", body="for carol only")
    to_bob = await send(alice, "a2", to="bob", body="for bob")
    await carol.expect_message(mid=to_carol)
    await bob.expect_message(mid=to_bob)

    # bob asks for another user's message, and for a mid nobody sent, while carol reads her
    # own and dave and alice keep talking.
    await bob.send_frame({"type": "read", "id": "x1", "mid": to_carol})
    await bob.send_frame(
        {"type": "read", "id": "x2", "mid": "018bcfe5680000000123456789"}
    )
    await carol.send_frame({"type": "read", "id": "ok", "mid": to_carol})
    chat = await send(dave, "d1", to="alice", body="still flowing")
    await alice.expect_message(mid=chat)
    for client_id in ("x1", "x2"):
        error = await answer(bob, client_id)
        assert (error["type"], error["code"]) == ("error", ErrorCode.NOT_FOUND)
    assert await answer(carol, "ok") == {
        "type": "marked",
        "id": "ok",
    }
    # Numbered after dave's message, or before it: the two raced.
    by, mid, seq = await receipt(alice)
    assert (by, mid, (seq, "r:carol", to_carol)) == (
        "carol",
        to_carol,
        (await entries(stack, "alice"))[seq - 1],
    )
    await bob.expect_nothing(is_receipt, for_s=0.3)
    # bob's refused reads wrote nothing; his read of his own message works.
    assert (await conversation(stack, "bob", "u:alice"))["read_mid"] is None
    assert await read(bob, "x3", to_bob) == {"type": "marked", "id": "x3"}
    assert await receipt(alice) == ("bob", to_bob, 5)
    readers = await query(
        f"SELECT DISTINCT reader FROM {stack.names.receipts_table} ORDER BY reader"
    )
    assert [r["reader"] for r in readers] == ["bob", "carol"]
