"""The router on a Redis Cluster: 1:1, group and room messages, dedup, presence and the
debounced offline event, end to end on two gateways.

One cluster of three masters with a replica each (tests/support/redis_cluster.py) serves every
test of this module, each in its own namespace, and is removed at the end.
"""

import asyncio
from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot

from proto import env
from proto.names import EVENT_USER_OFFLINE, EVENT_USER_ONLINE
from tests.support.api import Backend
from tests.support.clients import RawClient
from tests.support.redis_cluster import RedisCluster
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration

ROOMS = ["live-*"]


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """Six Redis servers of their own, for the module (their processes hold no event loop's
    state, so each step runs in an event loop of its own)."""
    cluster = RedisCluster()
    try:
        asyncio.run(cluster.start())
        yield cluster
    finally:
        asyncio.run(cluster.close())


@pytest.fixture
def on_cluster(stack: Stack, redis_cluster: RedisCluster) -> Stack:
    """The stack with every router on the cluster (``SWITCHBOARD_REDIS_CLUSTER=true`` and a
    seed node in ``SWITCHBOARD_REDIS_URL``)."""
    stack.settings.update(redis_cluster.settings())
    return stack


async def reply_to(client: RawClient, frame: dict) -> dict:
    """Send a frame with an id and return the one reply carrying that id."""
    await client.send_frame(frame)
    return await client.expect(lambda f: f.get("id") == frame["id"])


async def test_messages_and_presence_on_a_redis_cluster(
    on_cluster: Stack, backend: Backend, redis_cluster: RedisCluster
) -> None:
    stack = on_cluster
    await stack.start(gateways=2)
    events = await backend.events(EVENT_USER_ONLINE, EVENT_USER_OFFLINE)
    ann = await stack.connect(0, token=make_token("ann", rooms=ROOMS))
    ben = await stack.connect(1, uid="ben")
    cat = await stack.connect(1, token=make_token("cat", rooms=ROOMS))

    # 1:1, across gateways; a retry with the same id is the same message.
    sent = await reply_to(
        ann, {"type": "send", "id": "d1", "to": "ben", "body": "hello"}
    )
    assert sent["type"] == "sent", sent
    message = await ben.expect_message(mid=sent["mid"])
    assert (message["from"], message["body"]) == ("ann", "hello")
    again = await reply_to(
        ann, {"type": "send", "id": "d1", "to": "ben", "body": "hello"}
    )
    assert again["mid"] == sent["mid"]

    # A group: members on both gateways, its sender apart.
    reply = await backend.call(
        "group.add", {"group": "team", "uids": ["ann", "ben", "cat"]}
    )
    assert reply == {"ok": True}
    sent = await reply_to(
        ben, {"type": "send", "id": "g1", "group": "team", "body": "standup"}
    )
    assert sent["type"] == "sent", sent
    for member in (ann, cat):
        message = await member.expect_message(mid=sent["mid"])
        assert (message["from"], message["group"]) == ("ben", "team")

    # A room: members on both gateways.
    for client, frame_id in ((ann, "j1"), (cat, "j2")):
        joined = await reply_to(
            client, {"type": "join", "id": frame_id, "room": "live-1"}
        )
        assert joined["type"] == "joined", joined
    assert await backend.call("room.count", {"room": "live-1"}) == {"count": 2}
    sent = await reply_to(
        cat, {"type": "send", "id": "r1", "room": "live-1", "body": "gg"}
    )
    assert sent["type"] == "sent", sent
    for member in (ann, cat):
        message = await member.expect_message(mid=sent["mid"])
        assert message["room"] == "live-1"

    # Presence, and the debounced events of a uid that leaves.
    answer = await reply_to(
        ann, {"type": "presence", "id": "p1", "uids": ["ben", "cat", "dan"]}
    )
    assert answer["online"] == ["ben", "cat"]
    seen = [(await backend.next_event(events))[1]["uid"] for _ in range(3)]
    assert sorted(seen) == ["ann", "ben", "cat"]
    await ben.close()

    async def ben_is_offline() -> bool | None:
        reply = await backend.call("presence", {"uids": ["ann", "ben", "cat"]})
        return True if reply["online"] == ["ann", "cat"] else None

    await eventually(ben_is_offline)
    key, event = await backend.next_event(events, within_s=10)
    assert (key, event["uid"]) == (EVENT_USER_OFFLINE, "ben")

    # Each key went to its hash tag's slot: a room's count and its gateways' members in one.
    keys = ClusterClient.from_url(
        redis_cluster.settings()[env.REDIS_URL],
        socket_timeout=scaled(5),
        decode_responses=True,
    )
    try:
        assert await keys.hgetall(stack.names.presence_key("ben")) == {}
        assert await keys.smembers(stack.names.member_of_key("cat")) == {"team"}
        room_slot = key_slot(stack.names.room_key("live-1").encode())
        assert await keys.cluster_countkeysinslot(room_slot) == 1 + len(
            stack.gateway_ids
        )
    finally:
        await keys.aclose()
