"""Read markers and receipts end to end (``SWITCHBOARD_HISTORY=on``): a ``read`` moves the
marker of its conversation in PostgreSQL, numbers a receipt entry in the party's inbox and the
reader's, answers ``marked``, and the routers deliver ``receipt`` frames to the connections
online now (``docs/history.md``, section 6.3).

Two gateways in every test. Each test reads PostgreSQL too, where the markers and the receipt
entries live.
"""

import asyncio
from typing import Any

import aio_pika
import pytest

from proto.codes import ErrorCode
from proto.names import KEY_READ
from tests.support.api import Backend
from tests.support.clients import Frame, RawClient
from tests.support.postgres import query
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration


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


async def test_reads_are_marked_in_batches_and_a_bad_read_sinks_no_other(
    history: Stack, backend: Backend
) -> None:
    stack = history
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    carol = await stack.connect(0, uid="carol")
    mids = [await send(alice, f"a{n}", to="bob", body=n) for n in range(3)]
    to_carol = await send(alice, "c", to="carol", body="c")
    await bob.expect_message(mid=mids[2])
    await carol.expect_message(mid=to_carol)

    # The store frozen, the reads wait in its prefetch and come in one batch.
    store = stack.stores[0]
    store.pause()
    try:
        for client_id, mid in (("r0", mids[0]), ("r2", mids[2]), ("r1", mids[1])):
            await bob.send_frame({"type": "read", "id": client_id, "mid": mid})
        await bob.send_frame({"type": "read", "id": "gone", "mid": to_carol})
        await carol.send_frame({"type": "read", "id": "rc", "mid": to_carol})
        inbound = await backend.channel.get_exchange(
            stack.names.inbound_exchange, ensure=False
        )
        await inbound.publish(aio_pika.Message(b'{"uid": 1}'), KEY_READ)
        queue = stack.names.store_reads_queue

        async def all_in() -> bool | None:
            return True if await messages_in(queue) == 6 else None

        await eventually(all_in, within_s=20.0)
    finally:
        store.resume()

    answers = {i: await answer(bob, i) for i in ("r0", "r2", "r1", "gone")}
    assert [a["type"] for a in answers.values()] == ["marked"] * 3 + ["error"]
    assert answers["gone"]["code"] == ErrorCode.NOT_FOUND
    assert (await answer(carol, "rc"))["type"] == "marked"
    # r1, behind r2 in the same batch, moved nothing; alice's receipts follow her 4 messages.
    seen = {(by, mid): seq for by, mid, seq in [await receipt(alice) for _ in range(3)]}
    assert seen.keys() == {("bob", mids[0]), ("bob", mids[2]), ("carol", to_carol)}
    assert sorted(seen.values()) == [5, 6, 7]
    assert seen["bob", mids[0]] < seen["bob", mids[2]]
    await alice.expect_nothing(is_receipt, for_s=0.3)
    assert (await conversation(stack, "bob", "u:alice"))["read_mid"] == mids[2]
    await store.wait_for_event("reads_marked", within_s=10.0)
    batches = [e for e in store.events if e.get("event") == "reads_marked"]
    # Taken from the prefetch as they are dispatched: in fewer transactions than reads.
    assert sum(b["reads"] for b in batches) == 5
    assert max(b["reads"] for b in batches) > 1
    assert sum(b["moved"] for b in batches) == 3
    assert sum(b["not_found"] for b in batches) == 1
    rejected = await store.wait_for_event("envelope_rejected", routing_key=KEY_READ)
    assert "uid" in rejected["reason"]


async def messages_in(queue: str) -> int:
    """The messages a queue holds, ready or delivered and not yet acknowledged."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "list_queues",
        "-q",
        "name",
        "messages",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(scaled(30)):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    for line in stdout.decode().splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    return 0


async def test_reads_and_messages_from_two_stores_keep_every_inbox_gap_free(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    await stack.start_store()
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    count = 25

    async def talk(me: RawClient, peer: RawClient, to: str) -> list[str]:
        """Send ``count`` messages, and read each one from the peer as it comes."""
        read_ids: list[str] = []
        for n in range(count):
            await me.send_frame({"type": "send", "id": f"s{n}", "to": to, "body": n})
            frame = await peer.expect("message", 10.0)
            await peer.send_frame({"type": "read", "id": f"r{n}", "mid": frame["mid"]})
            read_ids.append(f"r{n}")
        return read_ids

    alice_reads, bob_reads = await asyncio.gather(
        talk(alice, bob, "bob"), talk(bob, alice, "alice")
    )
    for reader, ids in ((bob, alice_reads), (alice, bob_reads)):
        for client_id in ids:
            assert (await answer(reader, client_id))["type"] == "marked"
    for uid in ("alice", "bob"):
        inbox = await entries(stack, uid)
        # 2 x count messages, and up to 2 x count receipts: numbered 1..head, no gap.
        assert [seq for seq, _, _ in inbox] == list(range(1, len(inbox) + 1)), uid
        heads = await query(
            f"SELECT head FROM {stack.names.inbox_heads_table} WHERE uid = $1", uid
        )
        assert heads[0]["head"] == len(inbox)
        assert sum(kind == "m" for _, kind, _ in inbox) == 2 * count
    for store in stack.stores:
        assert store.count_events("batch_failed") == 0, store.output()
