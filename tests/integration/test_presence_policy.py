"""Who may learn whose presence (``SWITCHBOARD_PRESENCE_POLICY``), and what a presence flood
costs: the router decides from the groups in Redis, backends always see, and a flood of
queries from one connection is held to its rate limit beside an innocent pair."""

import time
from collections.abc import Callable
from typing import Any

import pytest

from proto import env, limits
from proto.codes import ErrorCode
from proto.frames import MAX_PRESENCE_UIDS
from tests.support.api import Backend
from tests.support.clients import Frame, RawClient
from tests.support.stack import Stack
from tests.support.timing import scaled

pytestmark = pytest.mark.integration


async def ask_presence(client: RawClient, uids: list[str], client_id: str) -> Any:
    """Send a ``presence`` frame; return its answer (``presence`` or ``error``)."""
    await client.send_frame({"type": "presence", "id": client_id, "uids": uids})
    return await client.expect(
        lambda f: f.get("id") == client_id and f.get("type") in ("presence", "error")
    )


def has_id(client_id: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("id") == client_id


async def assert_pair_talks(sender: RawClient, receiver: RawClient, text: str) -> None:
    assert receiver.uid is not None
    sent = await sender.send_message(receiver.uid, text)
    message = await receiver.expect_message(mid=sent["mid"])
    await receiver.ack(message["mid"])


async def test_shared_group_shows_group_peers_and_tells_a_stranger_nothing(
    stack: Stack, backend: Backend
) -> None:
    stack.settings[env.PRESENCE_POLICY] = "shared_group"
    await stack.start(gateways=2)
    await backend.call("group.add", {"group": "team", "uids": ["ann", "ben"]})
    await backend.call("group.add", {"group": "club", "uids": ["cat", "eve"]})
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    await stack.connect(1, uid="cat")
    eve = await stack.connect(0, uid="eve")
    mallory = await stack.connect(1, uid="mallory")
    everyone = ["ann", "ben", "cat", "eve", "mallory", "dan"]

    # A peer sees its peers (and itself); online uids it shares no group with look offline.
    reply = await ask_presence(ann, everyone, "p1")
    assert reply == {"type": "presence", "id": "p1", "online": ["ann", "ben"]}
    reply = await ask_presence(eve, everyone, "p2")
    assert reply == {"type": "presence", "id": "p2", "online": ["cat", "eve"]}
    # A stranger learns nothing about anyone: the same answer as if all were offline.
    reply = await ask_presence(mallory, everyone, "p3")
    assert reply == {"type": "presence", "id": "p3", "online": ["mallory"]}

    # Leaving the group ends the view.
    await backend.call("group.remove", {"group": "team", "uids": ["ben"]})
    reply = await ask_presence(ann, ["ben"], "p4")
    assert reply == {"type": "presence", "id": "p4", "online": []}

    # Backends see everyone, whatever the policy.
    assert await backend.call("presence", {"uids": everyone}) == {
        "online": ["ann", "ben", "cat", "eve", "mallory"]
    }
    await assert_pair_talks(ann, ben, "the pair still talks")


async def test_nobody_refuses_every_client_query_and_backends_still_see(
    stack: Stack, backend: Backend
) -> None:
    stack.settings[env.PRESENCE_POLICY] = "nobody"
    await stack.start(gateways=2)
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")

    reply = await ask_presence(ann, ["ben", "ann"], "p1")
    assert (reply["type"], reply["code"]) == ("error", ErrorCode.FORBIDDEN)
    assert await backend.call("presence", {"uids": ["ann", "ben"]}) == {
        "online": ["ann", "ben"]
    }
    await assert_pair_talks(ann, ben, "the pair still talks")


async def test_a_presence_flood_is_held_to_the_rate_limit_beside_an_innocent_pair(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)  # the default limits: 50 frames/s, a burst of 100
    mallory = await stack.connect(0, uid="mallory")
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    asked = [f"u{n}" for n in range(MAX_PRESENCE_UIDS)]

    # Over the limit of uids per frame: refused at the edge.
    too_many = [*asked, "one-more"]
    reply = await ask_presence(mallory, too_many, "big")
    assert (reply["type"], reply["code"]) == ("error", ErrorCode.INVALID_FIELD)

    # A flood of full queries, back to back, while alice talks to bob.
    frames = 40
    started = time.monotonic()
    for n in range(frames):
        await mallory.send_frame({"type": "presence", "id": f"q{n}", "uids": asked})
    latencies = []
    for n in range(10):
        before = time.monotonic()
        await assert_pair_talks(alice, bob, f"innocent {n}")
        latencies.append(time.monotonic() - before)
    answers = [await mallory.expect(has_id(f"q{n}")) for n in range(frames)]
    elapsed_s = time.monotonic() - started

    answered = [a for a in answers if a["type"] == "presence"]
    limited = [a for a in answers if a.get("code") == ErrorCode.RATE_LIMITED]
    assert len(answered) + len(limited) == frames
    # A full query costs as many tokens as MAX_PRESENCE_UIDS / PRESENCE_UIDS_PER_TOKEN frames.
    cost = limits.frame_cost(MAX_PRESENCE_UIDS)
    assert cost > 1
    bound = (100 + 50 * elapsed_s) / cost + 1
    assert len(answered) <= bound, (len(answered), bound)
    assert limited
    assert max(latencies) < scaled(2.0), latencies
    assert mallory.close_code is None
    await assert_pair_talks(alice, bob, "after the flood")
