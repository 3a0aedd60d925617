"""History and conversations end to end (``SWITCHBOARD_HISTORY=on``): the offline store reads
the numbered inbox and answers the ``history`` and ``conversations`` frames to the asking
connection through its gateway, and ``api.history``, ``api.conversations`` and ``api.message``
on the backend's ``reply_to``.

Two gateways in every test; the numbers are read from PostgreSQL to compare.
"""

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import pytest

from proto import env
from proto.codes import ErrorCode
from proto.names import api_key
from tests.support.api import Backend
from tests.support.clients import Frame, RawClient
from tests.support.postgres import query
from tests.support.stack import Stack, free_port
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration


async def inbox_of(stack: Stack, uid: str, conv: str) -> list[tuple[int, str]]:
    """(seq, mid) of every entry of ``uid``'s conversation, oldest first."""
    rows = await query(
        f"SELECT seq, mid FROM {stack.names.inbox_table}"
        " WHERE uid = $1 AND conv = $2 ORDER BY seq",
        uid,
        conv,
    )
    return [(row["seq"], row["mid"]) for row in rows]


async def written(stack: Stack, **heads: int) -> None:
    """Wait until the store committed this many entries in each uid's inbox (``sent`` comes
    from the router, before the store writes)."""

    async def reached() -> bool | None:
        rows = await query(
            f"SELECT uid, head FROM {stack.names.inbox_heads_table}"
            " WHERE uid = ANY($1::text[])",
            list(heads),
        )
        found = {row["uid"]: row["head"] for row in rows}
        return all(found.get(u, 0) >= n for u, n in heads.items()) or None

    await eventually(reached, within_s=10)


async def send(client: RawClient, **fields: Any) -> str:
    """Send a message; return its mid."""
    client_id = uuid.uuid4().hex[:12]
    await client.send_frame({"type": "send", "id": client_id, **fields})
    reply = await client.expect(
        lambda f: f.get("id") == client_id and f.get("type") in ("sent", "error")
    )
    assert reply["type"] == "sent", reply
    mid: str = reply["mid"]
    return mid


async def ask(client: RawClient, **frame: Any) -> Frame:
    """Send a history or conversations frame; return the answer carrying its id."""
    client_id = uuid.uuid4().hex[:12]
    await client.send_frame({**frame, "id": client_id})
    return await client.expect(lambda f: f.get("id") == client_id, within_s=10)


async def pages(client: RawClient, limit: int, **conversation: str) -> list[Frame]:
    """Every history page of a conversation, newest page first, following ``before``."""
    found: list[Frame] = []
    before: dict[str, int] = {}
    while True:
        page = await ask(client, type="history", limit=limit, **conversation, **before)
        assert page["type"] == "history", page
        found.append(page)
        if not page["more"]:
            return found
        before = {"before": page["messages"][0]["seq"]}


def assert_pages(
    found: list[Frame], entries: list[tuple[int, str]], limit: int
) -> None:
    """Every entry exactly once across the pages, oldest first within each, ``more`` on all
    but the last, and every page full but the last."""
    for page in found:
        seqs = [m["seq"] for m in page["messages"]]
        assert seqs == sorted(seqs)
    assert [p["more"] for p in found] == [True] * (len(found) - 1) + [False]
    assert all(len(p["messages"]) == limit for p in found[:-1])
    walked = [(m["seq"], m["mid"]) for p in reversed(found) for m in p["messages"]]
    assert walked == entries


async def test_history_pages_hold_every_entry_once_in_both_directions(
    history: Stack, backend: Backend
) -> None:
    stack = history
    await stack.start(gateways=2)
    await backend.call("group.add", {"group": "team", "uids": ["alice", "bob", "cat"]})
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    cat = await stack.connect(1, uid="cat")
    dave = await stack.connect(0, uid="dave")
    erin = await stack.connect(1, uid="erin")

    # 1:1 both ways, group messages from all three and another peer, interleaved; another
    # user's traffic flows meanwhile.
    for n in range(5):
        await send(alice, to="bob", body={"n": n})
        await send(bob, to="alice", body={"n": n})
        await send([alice, bob, cat][n % 3], group="team", body={"g": n})
        await send(cat, to="alice", body={"c": n})
        await send(dave, to="erin", body={"d": n})
    await written(stack, alice=20, bob=15, cat=10, erin=5)
    one_to_one = await inbox_of(stack, "alice", "u:bob")
    assert len(one_to_one) == 10
    for limit in (1, 3, 10, 9):
        assert_pages(await pages(alice, limit, **{"with": "bob"}), one_to_one, limit)
    # The other direction: bob's inbox has its own seqs for the same mids.
    bobs = await inbox_of(stack, "bob", "u:alice")
    assert [mid for _, mid in bobs] == [mid for _, mid in one_to_one]
    assert_pages(await pages(bob, 4, **{"with": "alice"}), bobs, 4)
    group = await inbox_of(stack, "cat", "g:team")
    assert len(group) == 5
    assert_pages(await pages(cat, 2, group="team"), group, 2)
    assert_pages(
        await pages(alice, 50, group="team"),
        await inbox_of(stack, "alice", "g:team"),
        50,
    )
    # Frames are the messages as pushed, with the asker's seq.
    (newest,) = (await ask(bob, type="history", limit=1, **{"with": "alice"}))[
        "messages"
    ]
    assert newest == {
        "type": "message",
        "seq": bobs[-1][0],
        "mid": bobs[-1][1],
        "from": "bob",
        "to": "alice",
        "body": {"n": 4},
        "ts": newest["ts"],
    }
    # A conversation never held, and a page before the first entry, are empty.
    empty = await ask(alice, type="history", group="nobody")
    assert (empty["messages"], empty["more"]) == ([], False)
    first = await ask(alice, type="history", before=one_to_one[0][0], **{"with": "bob"})
    assert (first["messages"], first["more"]) == ([], False)
    for n in range(5):
        await erin.expect_message(body={"d": n})


async def test_conversations_are_ordered_by_activity_with_unread_counts(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    cat = await stack.connect(0, uid="cat")
    dave = await stack.connect(1, uid="dave")

    await send(bob, to="alice", body=1)
    await send(cat, to="alice", body=2)
    await send(cat, to="alice", body=3)
    await send(alice, to="dave", body=4)
    last_bob = await send(bob, to="alice", body=5)
    await send(alice, to="bob", body=6)  # her own: the conversation moves, unread stays
    last_cat = await send(cat, to="alice", body=7)
    await written(stack, alice=7, bob=3, cat=3, dave=1)

    listed = await ask(alice, type="conversations")
    assert listed["type"] == "conversations"
    items = listed["items"]
    assert [(i["with"], i["unread"], i["read"]) for i in items] == [
        ("cat", 3, None),
        ("bob", 2, None),
        ("dave", 0, None),
    ]
    assert items[0]["last"]["mid"] == last_cat
    assert items[0]["last"]["body"] == 7
    assert items[1]["last"]["body"] == 6
    seqs = [i["last"]["seq"] for i in items]
    assert seqs == sorted(seqs, reverse=True)
    # Paging with before = the last item's seq.
    first = await ask(alice, type="conversations", limit=2)
    assert [i["with"] for i in first["items"]] == ["cat", "bob"]
    rest = await ask(
        alice, type="conversations", limit=2, before=first["items"][-1]["last"]["seq"]
    )
    assert [i["with"] for i in rest["items"]] == ["dave"]
    # A read marker (written as the read frame will write it) lowers the unread count.
    await query(
        f"UPDATE {stack.names.conversations_table} SET read_mid = $1,"
        " read_seq = (SELECT seq FROM "
        f"{stack.names.inbox_table} WHERE uid = 'alice' AND mid = $1),"
        " read_received = 2 WHERE uid = 'alice' AND conv = 'u:bob'",
        last_bob,
    )
    items = (await ask(alice, type="conversations"))["items"]
    assert [(i["with"], i["unread"], i["read"]) for i in items] == [
        ("cat", 3, None),
        ("bob", 0, last_bob),
        ("dave", 0, None),
    ]
    # The same conversations, seen from the other side.
    bobs = (await ask(bob, type="conversations"))["items"]
    assert [(i["with"], i["unread"]) for i in bobs] == [("alice", 1)]
    assert (await ask(dave, type="conversations"))["items"][0]["unread"] == 1


async def test_backend_commands_answer_history_conversations_and_messages(
    history: Stack, backend: Backend
) -> None:
    stack = history
    await stack.start(gateways=2)
    await backend.call("group.add", {"group": "crew", "uids": ["alice", "bob"]})
    alice = await stack.connect(0, uid="alice")
    await stack.connect(1, uid="bob")
    mids = [await send(alice, to="bob", body=n) for n in range(3)]
    grouped = await send(alice, group="crew", body="all")
    await written(stack, alice=4, bob=4)
    bobs = await inbox_of(stack, "bob", "u:alice")

    page = await backend.call("history", {"uid": "bob", "with": "alice", "limit": 2})
    assert [(m["seq"], m["mid"]) for m in page["messages"]] == bobs[1:]
    assert page["more"] is True
    older = await backend.call(
        "history", {"uid": "bob", "with": "alice", "before": float(bobs[1][0])}
    )
    assert ([m["mid"] for m in older["messages"]], older["more"]) == ([mids[0]], False)
    listed = await backend.call("conversations", {"uid": "bob", "limit": 5})
    assert [(i.get("with"), i.get("group"), i["unread"]) for i in listed["items"]] == [
        (None, "crew", 1),
        ("alice", None, 3),
    ]

    alone = await backend.call("message", {"mid": mids[1]})
    assert alone["message"]["mid"] == mids[1]
    assert "seq" not in alone["message"]
    bobs_copy = await backend.call("message", {"mid": mids[1], "uid": "bob"})
    assert bobs_copy["message"]["seq"] == bobs[1][0]
    alices = await backend.call("message", {"mid": grouped, "uid": "alice"})
    assert alices["message"]["group"] == "crew"
    for body in (
        {"mid": mids[1], "uid": "cat"},  # not in cat's inbox
        {"mid": "018bcfe5680000000123456789"},  # no such message
    ):
        reply = await backend.call("message", body)
        assert reply["error"]["code"] == ErrorCode.NOT_FOUND, body

    # Bad input: one error reply each, with the path, from the store alone.
    replies = await backend.channel.declare_queue(exclusive=True)
    bad: list[tuple[str, bytes, str]] = [
        ("history", b'{"uid":"bob"}', ErrorCode.INVALID_FIELD),
        ("history", b'{"uid":"bob","with":"a","limit":101}', ErrorCode.INVALID_FIELD),
        ("conversations", b'{"uid":"b o b"}', ErrorCode.INVALID_FIELD),
        ("message", b'{"uid":"bob"}', ErrorCode.INVALID_FIELD),
        ("message", b"{nope", ErrorCode.INVALID_JSON),
    ]
    for n, (name, raw, _) in enumerate(bad):
        await backend.publish_key(
            api_key(name), raw, reply_to=replies.name, correlation_id=str(n)
        )
    answers: dict[str, list[dict[str, Any]]] = {}
    async with asyncio.timeout(scaled(10)):
        async with replies.iterator() as incoming:
            async for message in incoming:
                await message.ack()
                answers.setdefault(message.correlation_id or "", []).append(
                    json.loads(message.body)
                )
                if len(answers) == len(bad):
                    break
    await asyncio.sleep(scaled(0.5))  # room for a second reply, which must not come
    while (extra := await replies.get(fail=False)) is not None:
        await extra.ack()
        answers[extra.correlation_id or ""].append(json.loads(extra.body))
    for n, (_, _, code) in enumerate(bad):
        assert [a["error"]["code"] for a in answers[str(n)]] == [code], n
    assert answers["1"][0]["error"]["message"].endswith("`$.limit`")


async def test_a_page_is_cut_at_a_quarter_of_the_largest_message(
    history: Stack,
) -> None:
    stack = history
    stack.settings[env.MAX_AMQP_MESSAGE_BYTES] = "65536"  # pages of 16 KiB of frames
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    await stack.connect(1, uid="bob")
    for n in range(12):
        await send(alice, to="bob", body={"n": n, "pad": "x" * 3000})
    await written(stack, alice=12, bob=12)
    entries = await inbox_of(stack, "alice", "u:bob")
    found = await pages(alice, 100, **{"with": "bob"})
    assert len(found) >= 3
    for page in found:
        assert 0 < len(page["messages"]) < 6
        size = sum(len(json.dumps(m, separators=(",", ":"))) for m in page["messages"])
        assert size <= 16384
    assert [p["more"] for p in found] == [True] * (len(found) - 1) + [False]
    walked = [(m["seq"], m["mid"]) for p in reversed(found) for m in p["messages"]]
    assert walked == entries
    # Conversations are cut the same way (one item always fits).
    assert len((await ask(alice, type="conversations"))["items"]) == 1


async def test_queries_beside_another_users_traffic(
    history: Stack, backend: Backend
) -> None:
    stack = history
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    dave = await stack.connect(0, uid="dave")
    erin = await stack.connect(1, uid="erin")
    for n in range(3):
        await send(alice, to="bob", body=n)
    await written(stack, alice=3, bob=3)
    expected = await inbox_of(stack, "alice", "u:bob")

    async def flood() -> list[str]:
        return [await send(dave, to="erin", body=n) for n in range(60)]

    async def read() -> None:
        for _ in range(20):
            page = await ask(alice, type="history", **{"with": "bob"})
            assert [(m["seq"], m["mid"]) for m in page["messages"]] == expected
            listed = await ask(bob, type="conversations")
            assert [i["with"] for i in listed["items"]] == ["alice"]
            reply = await backend.call("history", {"uid": "bob", "with": "alice"})
            assert len(reply["messages"]) == 3

    async def receive() -> list[str]:
        received = []
        for _ in range(60):
            message = await erin.expect("message", within_s=10)
            await erin.ack(message["mid"])
            received.append(message["mid"])
        return received

    flooded, _, received = await asyncio.gather(flood(), read(), receive())
    assert received == flooded
    # erin's queries see only erin's inbox.
    items = (await ask(erin, type="conversations"))["items"]
    assert [(i["with"], i["unread"]) for i in items] == [("dave", 60)]


API_KEY = "test-api-key-0123456789abcdef"


async def test_the_http_api_passes_the_store_s_answers(history: Stack) -> None:
    stack = history
    await asyncio.gather(stack.start_router(), stack.start_store())
    port = free_port()
    await stack.start_gateway(**{env.HTTP_PORT: str(port), env.API_KEY: API_KEY})
    await stack.start_gateway()
    alice = await stack.connect(0, uid="alice")
    await stack.connect(1, uid="bob")
    mid = await send(alice, to="bob", body="hi")
    await written(stack, alice=1, bob=1)
    timeout = aiohttp.ClientTimeout(total=scaled(15))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:

        async def post(command: str, body: dict[str, Any]) -> tuple[int, Any]:
            url = f"http://127.0.0.1:{port}/api/{command}"
            async with session.post(url, json=body) as response:
                return response.status, await response.json()

        status, reply = await post("message", {"mid": mid, "uid": "bob"})
        assert (status, reply["message"]["seq"]) == (200, 1)
        status, reply = await post("history", {"uid": "alice", "with": "bob"})
        assert (status, [m["mid"] for m in reply["messages"]]) == (200, [mid])
        status, reply = await post("message", {"mid": mid, "uid": "cat"})
        assert (status, reply["error"]["code"]) == (404, ErrorCode.NOT_FOUND)
        status, reply = await post("conversations", {"uid": "bob", "limit": 0})
        assert (status, reply["error"]["code"]) == (400, ErrorCode.INVALID_FIELD)
