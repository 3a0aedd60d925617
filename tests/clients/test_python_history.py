"""The Python client's history, conversations, read markers, receipts and sync cursor.

Against a real stack of two gateways with ``SWITCHBOARD_HISTORY=on``; what the client sends at
``init`` (``since``) is checked against a stand-in gateway on a local socket, which records the
frames it gets and answers as a gateway would.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from switchboard_client import (
    Client,
    FileSeqStore,
    Message,
    Receipt,
    RequestFailed,
)
from tests.clients.test_python_client import client_for, next_message
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration


async def receive(client: Client, count: int) -> list[Message]:
    """The next ``count`` messages, handled (acknowledged) by the time this returns."""
    stream = client.messages()
    received = [await next_message(stream) for _ in range(count)]
    await client.ack(received[-1])  # the stream acks the others when asked for the next
    return received


async def test_history_pages_back_and_conversations_count_unread(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    async with (
        client_for(stack, "alice", 0) as alice,
        client_for(stack, "bob", 1) as bob,
    ):
        sent = [await alice.send(to="bob", body={"n": n}) for n in range(3)]
        await receive(bob, 3)
        reply = await bob.send(to="alice", body="ok")
        await receive(
            alice, 1
        )  # delivered once in the inboxes (sent comes before that)

        newest = await bob.history(with_="alice", limit=2)
        assert [m.mid for m in newest.messages] == [sent[2], reply]
        assert newest.more
        assert [m.seq for m in newest.messages] == [3, 4]
        assert (newest.messages[1].sender, newest.messages[1].to) == ("bob", "alice")
        older = await bob.history(with_="alice", before=newest.messages[0].seq)
        assert [m.mid for m in older.messages] == sent[:2]
        assert [m.body for m in older.messages] == [{"n": 0}, {"n": 1}]
        assert not older.more

        [talk] = await bob.conversations()
        assert (talk.with_, talk.group, talk.last.mid) == ("alice", None, reply)
        assert (talk.unread, talk.read) == (3, None)
        await bob.read(sent[2])
        [talk] = await bob.conversations()
        assert (talk.unread, talk.read) == (0, sent[2])
        assert await bob.conversations(before=talk.last.seq) == []

        # A mid that is not in bob's inbox.
        elsewhere = await alice.send(to="carol", body="not for bob")
        with pytest.raises(RequestFailed) as refused:
            await bob.read(elsewhere)
        assert refused.value.code == "not_found"


async def test_a_read_sends_receipts_to_the_peer_and_the_readers_other_device(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    laptop_receipts: list[Receipt] = []
    async with (
        client_for(stack, "alice", 0) as alice,
        client_for(stack, "bob", 1) as phone,
        client_for(stack, "bob", 0, on_receipt=laptop_receipts.append) as laptop,
    ):
        alice_receipts = alice.receipts()
        mids = [await alice.send(to="bob", body=n) for n in range(2)]
        await receive(phone, 2)
        await receive(laptop, 2)
        await phone.read(mids[1])

        async with asyncio.timeout(scaled(10)):
            seen = await anext(alice_receipts)
        # Alice's inbox: her two messages (seq 1 and 2), then the receipt.
        assert seen == Receipt(by="bob", mid=mids[1], seq=3)
        assert alice.seq == 3
        await eventually(lambda: asyncio.sleep(0, laptop_receipts or None), 10)
        assert laptop_receipts == [Receipt(by="bob", mid=mids[1], seq=3)]
        assert laptop.seq == 3


async def test_the_highest_seq_handled_is_written_to_the_seq_file(
    history: Stack, tmp_path: Path
) -> None:
    stack = history
    await stack.start(gateways=2)
    seq_file = tmp_path / "bob.seq"
    async with client_for(stack, "alice", 0) as alice:
        async with client_for(stack, "bob", 1, seq_store=seq_file) as bob:
            mids = [await alice.send(to="bob", body=n) for n in range(3)]
            stream = bob.messages()
            first = await next_message(stream)
            assert (first.mid, first.seq) == (mids[0], 1)
            assert not seq_file.exists()  # received, not handled yet
            await next_message(stream)  # the first one is handled now
            assert seq_file.read_text() == "1"
            await next_message(stream)
        # The last message was handled as the block exited.
        assert seq_file.read_text() == "3"
    assert FileSeqStore(seq_file).load() == 3


# What the client sends at init, against a stand-in gateway


class StandIn:
    """A local WebSocket server that answers ``init`` with ``ready`` and pushes frames."""

    def __init__(self) -> None:
        self.inits: list[dict[str, Any]] = []
        self.after_ready: list[list[dict[str, Any]]] = []
        """Per connection, in order: the frames pushed after ``ready``."""
        self.acks: list[str] = []
        self.url = ""

    async def handle(self, ws: ServerConnection) -> None:
        init = json.loads(await ws.recv())
        self.inits.append(init)
        await ws.send(json.dumps({"type": "ready", "uid": "bob"}))
        push = self.after_ready.pop(0) if self.after_ready else []
        for frame in push:
            if frame.get("type") == "close":
                await ws.close(1011, "stand-in closes")
                return
            await ws.send(json.dumps(frame))
        async for text in ws:
            frame = json.loads(text)
            if frame.get("type") == "ack":
                self.acks.extend(frame["mids"])
            elif frame.get("type") == "ping":
                await ws.send(json.dumps({"type": "pong", "id": frame["id"]}))


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    gateway = StandIn()
    async with serve(gateway.handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        gateway.url = f"ws://127.0.0.1:{port}/ws"
        yield gateway


def message(mid: str, seq: int) -> dict[str, Any]:
    return {
        "type": "message",
        "mid": mid,
        "from": "alice",
        "to": "bob",
        "body": seq,
        "ts": 1,
        "seq": seq,
    }


async def test_init_carries_the_stored_seq_as_since(
    stand_in: StandIn, tmp_path: Path
) -> None:
    seq_file = tmp_path / "seq"
    seq_file.write_text("41")
    async with Client(stand_in.url, "token", seq_store=seq_file):
        pass
    saved: list[int] = []
    async with Client(stand_in.url, "token", seq_store=(lambda: 7, saved.append)):
        pass
    async with Client(stand_in.url, "token"):  # memory, nothing known yet: no since
        pass
    assert [init.get("since") for init in stand_in.inits] == [41, 7, None]


async def test_every_reconnect_sends_the_highest_seq_handled(
    stand_in: StandIn,
) -> None:
    # The first connection pushes two messages, a receipt, then drops; the second reports
    # synced with a head below the cursor (a reset inbox).
    stand_in.after_ready = [
        [
            message("m1", 4),
            message("m2", 5),
            {"seq": 6, "type": "receipt", "by": "alice", "mid": "m0"},
        ],
        [{"type": "synced", "seq": 2}],
    ]
    heads: list[int] = []
    receipts: list[Receipt] = []
    async with Client(
        stand_in.url,
        "token",
        backoff_base_s=0.05,
        on_synced=heads.append,
        on_receipt=receipts.append,
    ) as client:
        stream = client.messages()
        await next_message(stream)
        await next_message(stream)
        await client.ack("m2")  # by mid: the seq rises with the receipt's, not this ack
        await eventually(lambda: asyncio.sleep(0, receipts or None))
        assert client.seq == 6
        # Drop the connection: the client reconnects with since.
        ws = client._ws
        assert ws is not None
        await ws.close()
        await eventually(lambda: asyncio.sleep(0, heads or None))
        assert heads == [2]
        assert client.seq == 2  # the server's head, lower than the cursor, replaces it
    assert [init.get("since") for init in stand_in.inits] == [None, 6]
    assert receipts == [Receipt(by="alice", mid="m0", seq=6)]


async def test_history_is_refused_with_history_off(no_history: Stack) -> None:
    stack = no_history
    await stack.start(gateways=2)
    async with client_for(stack, "alice", 0) as alice:
        for request in (
            alice.history(with_="bob"),
            alice.conversations(),
            alice.read("m1"),
        ):
            with pytest.raises(RequestFailed) as refused:
                await request
            assert refused.value.code == "history_off"


async def test_a_reconnect_syncs_what_another_device_took_meanwhile(
    history: Stack, tmp_path: Path
) -> None:
    """The phone keeps its seq in a file; the laptop takes and reads two messages while the
    phone is away; the phone's next init sends since and gets both, the receipt, synced."""
    stack = history
    await stack.start(gateways=2)
    seq_file = tmp_path / "bob.seq"
    heads: list[int] = []
    async with client_for(stack, "alice", 0) as alice:
        async with client_for(stack, "bob", 1, seq_store=seq_file) as phone:
            first = await alice.send(to="bob", body=0)
            assert [m.mid for m in await receive(phone, 1)] == [first]
        assert seq_file.read_text() == "1"
        async with client_for(stack, "bob", 0) as laptop:
            later = [await alice.send(to="bob", body=n) for n in (1, 2)]
            await receive(laptop, 2)
            await laptop.read(later[1])
        async with client_for(
            stack, "bob", 1, seq_store=seq_file, on_synced=heads.append
        ) as phone:
            receipts = phone.receipts()
            assert [m.mid for m in await receive(phone, 2)] == later
            receipt = await anext(receipts)
            assert (receipt.by, receipt.mid, receipt.seq) == ("bob", later[1], 4)

            async def synced() -> list[int] | None:
                return heads or None

            assert await eventually(synced) == [4]
    assert seq_file.read_text() == "4"
