"""The history frames and commands end to end, before the offline store serves them.

With ``SWITCHBOARD_HISTORY=off`` every gateway answers ``history``, ``read`` and
``conversations`` with ``history_off`` (one frame each against the rate limits), ignores
``init``'s ``since``, and every router answers ``api.history``, ``api.conversations`` and
``api.message`` with ``history_off``, while the traffic of other users flows. With it on, the
gateways publish the frames' envelopes, and ``since`` with the connection's ``ConnOpened``.
"""

import json
from typing import Any

import aio_pika
import pytest

from proto import env, envelopes, sync
from proto.codes import ErrorCode
from proto.names import (
    KEY_BATCH,
    KEY_CONN_OPENED,
    KEY_CONVERSATIONS,
    KEY_HISTORY,
    KEY_READ,
)
from tests.support.api import Backend
from tests.support.clients import Frame, RawClient
from tests.support.stack import Stack
from tests.support.timing import scaled
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration

MID = "018bcfe5680000000123456789"
HISTORY_FRAMES: list[dict[str, Any]] = [
    {"type": "history", "with": "bob"},
    {"type": "history", "group": "team", "before": 10, "limit": 100},
    {"type": "read", "mid": MID},
    {"type": "conversations"},
    {"type": "conversations", "limit": 1, "before": 3},
]


async def answer(client: RawClient, client_id: str, frame: dict[str, Any]) -> Frame:
    """Send a frame with this id; return the reply that carries the id."""
    await client.send_frame({**frame, "id": client_id})
    return await client.expect(lambda f: f.get("id") == client_id)


async def test_history_off_refuses_the_frames_and_the_commands_beside_other_traffic(
    no_history: Stack, backend: Backend
) -> None:
    stack = no_history
    # A small burst, nearly no refill: the history frames' cost is counted exactly.
    stack.settings.update({env.RATE_LIMIT_PER_S: "0.01", env.RATE_LIMIT_BURST: "12"})
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    carol = await stack.connect(0)
    ready = await answer_init(carol, since=41)  # since is ignored: an ordinary login
    assert ready["uid"] == "carol"
    carol_laptop = await stack.connect(1, uid="carol")

    for n, frame in enumerate(HISTORY_FRAMES):
        for device in (carol, carol_laptop):
            error = await answer(device, f"h{n}", frame)
            assert (error["type"], error["code"]) == ("error", ErrorCode.HISTORY_OFF)
        # Other users' messages flow between the two gateways meanwhile.
        sent = await alice.send_message("bob", {"n": n})
        await bob.expect_message(mid=sent["mid"], body={"n": n})
        await bob.ack(sent["mid"])

    # Bad fields are invalid_field at their path, whatever the switch.
    both = await answer(carol, "b1", {"type": "history", "with": "a", "group": "g"})
    assert both["code"] == ErrorCode.INVALID_FIELD
    assert both["message"].endswith("at `$`")
    limit = await answer(carol, "b2", {"type": "conversations", "limit": 101})
    assert limit["code"] == ErrorCode.INVALID_FIELD
    assert limit["message"].endswith("at `$.limit`")
    # carol's connection on gateway 0 spent 1 (init) + 5 + 2 frames; 4 more history frames
    # fill its burst of 12, and the next is refused for its rate.
    for n in range(4):
        error = await answer(carol, f"x{n}", HISTORY_FRAMES[n])
        assert error["code"] == ErrorCode.HISTORY_OFF
    refused = await answer(carol, "x4", HISTORY_FRAMES[0])
    assert refused["code"] == ErrorCode.RATE_LIMITED
    # Its other connection, and other users, are not affected.
    laptop = await answer(carol_laptop, "y1", HISTORY_FRAMES[3])
    assert laptop["code"] == ErrorCode.HISTORY_OFF
    sent = await bob.send_message("alice", "still flowing")
    await alice.expect_message(mid=sent["mid"])

    for name, body in (
        ("history", {"uid": "carol", "with": "alice"}),
        ("conversations", {"uid": "carol", "limit": 5}),
        ("message", {"mid": MID, "uid": "carol"}),
        ("message", {"mid": MID}),
    ):
        reply = await backend.call(name, body)
        assert reply["error"]["code"] == ErrorCode.HISTORY_OFF, (name, reply)
    invalid = await backend.call("history", {"uid": "carol"})
    assert invalid["error"]["code"] == ErrorCode.INVALID_FIELD
    assert (await backend.call("presence", {"uids": ["alice"]})) == {
        "online": ["alice"]
    }


async def answer_init(client: RawClient, **fields: Any) -> Frame:
    """``init`` as carol with these fields; return ``ready``."""
    token = make_token("carol")
    await client.send_frame({"type": "init", "token": token, **fields})
    ready = await client.expect(lambda f: f.get("type") in ("ready", "error"))
    assert ready["type"] == "ready", ready
    return ready


async def test_a_bad_since_is_refused_and_the_connection_may_init_again(
    stack: Stack,
) -> None:
    await stack.start(gateways=1)
    client = await stack.connect(0)
    for since in (-1, "5", True, 1.5):
        await client.send_frame(
            {"type": "init", "token": make_token("carol"), "since": since}
        )
        error = await client.expect("error")
        assert error["code"] == ErrorCode.INVALID_FIELD
        assert error["message"].endswith("`$.since`")
    assert (await answer_init(client, since=0))["uid"] == "carol"


async def test_history_on_publishes_the_frames_and_since(
    stack: Stack, backend: Backend
) -> None:
    stack.settings[env.HISTORY] = "on"
    await stack.start(gateways=2)
    # Nothing consumes most of these keys yet: a queue of the test's own stands for the
    # stores.
    watch = await backend.channel.declare_queue(exclusive=True)
    for key in (KEY_HISTORY, KEY_READ, KEY_CONVERSATIONS, KEY_CONN_OPENED, KEY_BATCH):
        await watch.bind(stack.names.inbound_exchange, key)
    carol = await stack.connect(1)
    ready = await answer_init(carol, since=41)
    alice = await stack.connect(0, uid="alice")

    for n, frame in enumerate(HISTORY_FRAMES):
        await carol.send_frame({**frame, "id": f"h{n}"})
    # The offline store serves the read (h2): MID is not in carol's inbox.
    not_found = await carol.expect(lambda f: f.get("id") == "h2", 10.0)
    assert not_found["code"] == ErrorCode.NOT_FOUND
    await carol.expect_nothing(lambda f: f.get("type") == "error", for_s=0.5)
    published = await collect(watch, count=len(HISTORY_FRAMES), opened=2)

    asked: dict[str, Any] = {
        "uid": "carol",
        "gateway_id": stack.gateways[1].gateway_id,
        "conn_id": ready["conn"],
    }
    assert published[KEY_HISTORY] == [
        sync.HistoryAsked(**asked, client_id="h0", peer="bob"),
        sync.HistoryAsked(**asked, client_id="h1", group="team", before=10, limit=100),
    ]
    assert published[KEY_READ] == [sync.ReadAsked(**asked, client_id="h2", mid=MID)]
    assert published[KEY_CONVERSATIONS] == [
        sync.ConversationsAsked(**asked, client_id="h3"),
        sync.ConversationsAsked(**asked, client_id="h4", before=3, limit=1),
    ]
    assert {(o.uid, o.since) for o in published[KEY_CONN_OPENED]} == {
        ("carol", 41),
        ("alice", None),
    }
    # Messages flow as before.
    sent = await alice.send_message("carol", "hi")
    await carol.expect_message(mid=sent["mid"])


async def collect(
    queue: aio_pika.abc.AbstractQueue, count: int, opened: int
) -> dict[str, list[Any]]:
    """Read the watched envelopes until ``count`` history ones and ``opened`` ConnOpened."""
    decoders = {
        KEY_HISTORY: sync.decode_history_asked,
        KEY_READ: sync.decode_read_asked,
        KEY_CONVERSATIONS: sync.decode_conversations_asked,
        KEY_CONN_OPENED: envelopes.decode_conn_opened,
    }
    found: dict[str, list[Any]] = {key: [] for key in decoders}

    def seen(key: str, body: bytes) -> None:
        if key in decoders:
            found[key].append(decoders[key](body))

    def is_done() -> bool:
        history = sum(len(v) for k, v in found.items() if k != KEY_CONN_OPENED)
        return history >= count and len(found[KEY_CONN_OPENED]) >= opened

    async with queue.iterator(timeout=scaled(10)) as messages:
        async for message in messages:
            await message.ack()
            key = message.routing_key or ""
            if key == KEY_BATCH:
                for item in envelopes.decode_batch(message.body).items:
                    seen(item.key, bytes(item.body))
            else:
                seen(key, message.body)
            if is_done():
                break
    for key in (KEY_HISTORY, KEY_READ, KEY_CONVERSATIONS):
        found[key].sort(key=lambda asked: json.dumps(asked.client_id))
    return found
