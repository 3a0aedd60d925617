"""Durable groups end to end: members kept in PostgreSQL survive an empty Redis, on two gateways.

The offline store serves ``api.group.add``, ``api.group.remove`` and ``api.group.members``; a
router applies each change to Redis with its version and answers the backend. After an empty
Redis (the namespace's keys deleted while every service runs; the shared Redis is never
restarted) a router asks the store for every member row, and group sends wait until the pages
are applied.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest
import redis.asyncio as redis

from proto import env
from proto.envelopes import encode
from proto.groups import GroupChanged
from proto.names import KEY_GROUP_CHANGED
from tests.support.api import Backend
from tests.support.cleanup import remove_redis_keys
from tests.support.clients import Frame, RawClient
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration

SMALL_MESSAGES = {env.MAX_AMQP_MESSAGE_BYTES: "65536"}
"""Rebuild pages of about 200 rows: a rebuild of a few hundred members takes several."""


@pytest.fixture
async def redis_client() -> AsyncIterator["redis.Redis"]:
    client = redis.Redis.from_url(env.DEFAULT_REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


async def send_to_group(
    client: RawClient, client_id: str, group: str, body: Any
) -> Frame:
    """Send a group message; return its ``sent`` or ``error`` reply."""
    await client.send_frame(
        {"type": "send", "id": client_id, "group": group, "body": body}
    )
    return await client.expect(
        lambda f: f.get("id") == client_id and f.get("type") in ("sent", "error"),
        within_s=15.0,
    )


async def routers_logged(stack: Stack, event: str) -> list[dict[str, Any]] | None:
    """The lines of ``event`` that any router logged; None: none did."""
    lines = [e for r in stack.routers for e in r.events if e.get("event") == event]
    return lines or None


async def members(backend: Backend, group: str) -> list[str]:
    reply = await backend.call("group.members", {"group": group})
    uids: list[str] = reply["uids"]
    return uids


async def test_members_survive_an_empty_redis_and_a_group_send_reaches_every_member(
    stack: Stack, backend: Backend, redis_client: "redis.Redis"
) -> None:
    stack.settings.update(SMALL_MESSAGES)
    await stack.start(gateways=2)
    await stack.start_router()  # two routers share the rebuild's pages
    crowd = [f"u{n:04}" for n in range(700)]
    assert await backend.call("group.add", {"group": "crowd", "uids": crowd}) == {
        "ok": True
    }
    for uids in (["ann", "ben", "cat", "dan"], ["cat"]):
        command = "group.add" if len(uids) > 1 else "group.remove"
        assert await backend.call(command, {"group": "team", "uids": uids}) == {
            "ok": True
        }
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    dan_phone = await stack.connect(0, uid="dan")
    dan_laptop = await stack.connect(1, uid="dan")
    cat = await stack.connect(1, uid="cat")
    [store] = stack.stores

    # Redis loses everything while the store is frozen: nothing can be rebuilt yet.
    store.pause()
    try:
        await remove_redis_keys(stack.names)
        frame = {"type": "send", "id": "g1", "group": "team", "body": "after"}
        await ann.send_frame(frame)
        # The send waits for the members (neither refused, nor routed to nobody).
        await eventually(lambda: routers_logged(stack, "batch_failed"))
        await ben.expect_nothing("message", for_s=1.0)
        await ann.expect_nothing(lambda f: f.get("id") == "g1", for_s=0.1)
    finally:
        store.resume()
    sent = await ann.expect(lambda f: f.get("id") == "g1", within_s=15.0)
    assert sent["type"] == "sent", sent

    for member in (ben, dan_phone, dan_laptop):
        message = await member.expect_message(mid=sent["mid"], within_s=15.0)
        assert (message["from"], message["group"]) == ("ann", "team")
    await cat.expect_nothing("message", for_s=0.5)
    assert await members(backend, "team") == ["ann", "ben", "dan"]
    assert await members(backend, "crowd") == crowd

    # Redis's copy is whole again, removed members as tombstones with their version.
    names = stack.names
    assert await redis_client.smembers(names.group_key("team")) == {"ann", "ben", "dan"}
    assert await redis_client.scard(names.group_key("crowd")) == len(crowd)
    versions = await redis_client.hgetall(names.group_version_key("team"))
    assert versions == {"ann": "1", "ben": "1", "dan": "1", "cat": "2"}
    assert await redis_client.smembers(names.member_of_key("ann")) == {"team"}
    assert await redis_client.exists(names.groups_loaded_key) == 1
    assert await routers_logged(stack, "groups_loaded"), "no router marked them loaded"
    pages = await routers_logged(stack, "groups_page_applied")
    assert pages is not None
    assert max(e["count"] for e in pages) > 1, "the rebuild fit one page"


async def test_add_remove_add_ends_in_the_right_state(
    stack: Stack, backend: Backend, redis_client: "redis.Redis"
) -> None:
    await stack.start(gateways=1)
    names = stack.names
    # Commands published back to back, replies awaited together.
    steps = [
        ("group.add", ["ann", "ben"]),
        ("group.remove", ["ann"]),
        ("group.add", ["ann"]),
        ("group.remove", ["ben"]),
    ]
    replies = await asyncio.gather(
        *(backend.call(c, {"group": "g", "uids": uids}) for c, uids in steps)
    )
    assert replies == [{"ok": True}] * len(steps)
    assert await members(backend, "g") == ["ann"]
    assert await redis_client.smembers(names.group_key("g")) == {"ann"}
    assert await redis_client.smembers(names.member_of_key("ben")) == set()

    # Changes applied out of order, each in a batch of its own (posing as the store): a
    # change with a lower version than Redis holds for a member leaves it alone.
    connection = await aio_pika.connect(env.DEFAULT_AMQP_URL, timeout=scaled(10))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        inbound = await channel.get_exchange(names.inbound_exchange, ensure=False)
        for version, is_added, is_member in (
            (11, False, False),
            (10, True, False),
            (12, True, True),
            (9, False, True),
        ):
            changed = GroupChanged(
                group="late", uids=["zed"], is_added=is_added, version=version
            )
            await inbound.publish(aio_pika.Message(encode(changed)), KEY_GROUP_CHANGED)
            await stack.routers[0].wait_for_event(
                "group_change_applied", group="late", version=version
            )
            group_set = await redis_client.smembers(names.group_key("late"))
            assert group_set == ({"zed"} if is_member else set())
            reverse = await redis_client.smembers(names.member_of_key("zed"))
            assert reverse == ({"late"} if is_member else set())
    versions = await redis_client.hgetall(names.group_version_key("late"))
    assert versions == {"zed": "12"}


async def test_a_group_send_right_after_the_add_reaches_the_new_member(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    await backend.call("group.add", {"group": "club", "uids": ["ann"]})
    ann = await stack.connect(0, uid="ann")
    for n in range(6):
        uid = f"new{n}"
        newcomer = await stack.connect(n % 2, uid=uid)
        assert await backend.call("group.add", {"group": "club", "uids": [uid]}) == {
            "ok": True
        }
        sent = await send_to_group(ann, f"c{n}", "club", n)
        assert sent["type"] == "sent", sent
        message = await newcomer.expect_message(mid=sent["mid"])
        assert message["body"] == n
    reply = await backend.call("send", {"group": "club", "body": "to all"})
    await newcomer.expect_message(mid=reply["mid"])


async def test_group_members_refuses_bad_input_and_lists_an_unknown_group_empty(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=1)
    cases: list[tuple[bytes, str, str]] = [
        (b"{}", "invalid_field", "`group`"),
        (b'{"group": "a:b"}', "invalid_field", "$.group"),
        (b'{"group": 7}', "invalid_field", "$.group"),
        (b'{"group": ""}', "invalid_field", "$.group"),
        (b"[]", "invalid_field", "object"),
        (b"{not json", "invalid_json", ""),
        (b'{"group": "' + b"g" * 2_000_000 + b'"}', "too_large", ""),
    ]
    for body, code, path in cases:
        reply = await backend.call("group.members", body)
        assert reply["error"]["code"] == code, (body[:40], reply)
        assert path in reply["error"]["message"]
    assert await members(backend, "nobody-here") == []

    # Without reply_to, a bad command goes to the dead-letter queue.
    channel = backend.channel
    dead = await channel.get_queue(stack.names.dead_letter_queue, ensure=True)
    await backend.publish("group.members", b'{"group": 7}')
    message = await eventually(lambda: dead.get(no_ack=True, fail=False))
    assert (message.routing_key, message.body) == ("api.group.members", b'{"group": 7}')


async def test_a_huge_or_bad_group_command_beside_innocent_traffic(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    many = [f"m{n:05}" for n in range(20_000)]
    huge = {"group": "g", "uids": [f"x{n:07}" for n in range(200_000)]}

    calls = [
        backend.call("group.add", huge),
        backend.call("group.add", {"group": "g", "uids": ["ok", "not ok"]}),
        backend.call("group.remove", {"group": "g", "uids": "ann"}),
        backend.call("group.add", {"group": "g", "uids": many}, within_s=20.0),
        backend.call("group.add", {"group": "pair", "uids": ["ann", "ben"]}),
    ]
    replies = await asyncio.gather(*calls)
    sent = await ann.send_message("ben", "innocent")
    await ben.expect_message(mid=sent["mid"])

    assert replies[0]["error"]["code"] == "too_large"
    assert replies[1]["error"]["code"] == "invalid_field"
    assert "$.uids[1]" in replies[1]["error"]["message"]
    assert replies[2]["error"]["code"] == "invalid_field"
    assert replies[3:] == [{"ok": True}, {"ok": True}]
    assert await members(backend, "g") == many
    group_sent = await send_to_group(ann, "p1", "pair", "hello")
    await ben.expect_message(mid=group_sent["mid"])


async def test_removed_members_are_kept_a_day_then_deleted(
    stack: Stack, backend: Backend
) -> None:
    await stack.start_store(**{env.OFFLINE_SWEEP_INTERVAL_S: "0.2"})
    await stack.start_router()
    await backend.call("group.add", {"group": "g", "uids": ["ann", "ben"]})
    await backend.call("group.remove", {"group": "g", "uids": ["ben"]})
    table = stack.names.group_members_table
    pg = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=scaled(10))
    try:
        rows = await pg.fetch(
            f"SELECT uid, is_member, version FROM {table} ORDER BY uid"
        )
        assert [tuple(r) for r in rows] == [("ann", True, 1), ("ben", False, 2)]
        await pg.execute(
            f"UPDATE {table} SET changed = now() - interval '2 days' WHERE uid = 'ben'"
        )

        async def swept() -> list[str] | None:
            left = [r["uid"] for r in await pg.fetch(f"SELECT uid FROM {table}")]
            return left if left == ["ann"] else None

        await eventually(swept, within_s=10.0)
    finally:
        await pg.close()
    assert await members(backend, "g") == ["ann"]


async def test_shared_group_presence_sees_peers_again_after_an_empty_redis(
    stack: Stack, backend: Backend
) -> None:
    stack.settings[env.PRESENCE_POLICY] = "shared_group"
    await stack.start(gateways=2)
    await backend.call("group.add", {"group": "team", "uids": ["ann", "ben"]})
    ann = await stack.connect(0, uid="ann")
    await stack.connect(1, uid="ben")
    await stack.connect(1, uid="cat")
    asked = iter(range(1_000_000))

    async def online_seen() -> list[str] | None:
        client_id = f"p{next(asked)}"
        await ann.send_frame(
            {"type": "presence", "id": client_id, "uids": ["ben", "cat"]}
        )
        reply = await ann.expect(lambda f: f.get("id") == client_id, within_s=15.0)
        online: list[str] = reply["online"]
        return online or None

    assert await eventually(online_seen) == ["ben"]
    await remove_redis_keys(stack.names)
    # The groups (and presence, re-announced by the gateways) come back: ben is seen again,
    # cat, who shares no group with ann, never.
    assert await eventually(online_seen, within_s=15.0) == ["ben"]
