"""Sync at ``init`` (``SWITCHBOARD_HISTORY=on``): a connection that sends ``init`` with ``since``
gets its uid's inbox after ``since`` in ``seq`` order, then ``synced``, then live messages.

Two gateways in every test. Every syncing connection's frames are checked the same way: the
``seq``s it got follow its ``since`` one by one (none missed, none twice, in order), up to
``synced`` and after it.
"""

import asyncio
import contextlib
from typing import Any

import asyncpg
import pytest

from proto import env
from tests.support.cleanup import remove_redis_keys
from tests.support.clients import Frame, RawClient
from tests.support.rates import UNLIMITED_RATE
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration


class Device:
    """One syncing connection, and the seqs it got in the order it got them."""

    def __init__(self, client: RawClient, since: int) -> None:
        self.client = client
        self.since = since
        self.seqs: list[int] = []
        self.mids: list[str] = []
        self.synced: int | None = None

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else self.since

    async def next_frame(self, within_s: float = 10.0) -> Frame:
        """The next message (acknowledged) or ``synced``, recorded."""
        frame = await self.client.expect(
            lambda f: f.get("type") in ("message", "synced"), within_s
        )
        if frame["type"] == "synced":
            assert self.synced is None, "synced came twice"
            self.synced = frame["seq"]
            if not self.seqs and self.synced < self.since:
                self.since = self.synced  # a head below since: the client's new cursor
        else:
            self.seqs.append(frame["seq"])
            self.mids.append(frame["mid"])
            await self.client.ack(frame["mid"])
        return frame

    async def until_synced(self, within_s: float = 10.0) -> int:
        while self.synced is None:
            await self.next_frame(within_s)
        return self.synced

    async def until_seq(self, seq: int, within_s: float = 10.0) -> None:
        while self.last < seq:
            await self.next_frame(within_s)

    def check_order(self, sent_here: frozenset[int] = frozenset()) -> None:
        """Every seq after ``since`` once, in order, with no gap, but those of the messages
        this connection sent (``sent_here``: it has their ``sent``)."""
        expected = [
            seq for seq in range(self.since + 1, self.last + 1) if seq not in sent_here
        ]
        assert self.seqs == expected, (self.since, self.seqs)


async def sync(stack: Stack, gateway: int, uid: str, since: int) -> Device:
    """Open a connection and ``init`` it with ``since``."""
    client = await RawClient.open(stack.gateways[gateway].url)
    stack.clients.append(client)
    await client.send_frame({"type": "init", "token": make_token(uid), "since": since})
    ready = await client.expect(lambda f: f.get("type") in ("ready", "error"))
    assert ready["type"] == "ready", ready
    return Device(client, since)


async def head_reaches(stack: Stack, uid: str, seq: int) -> None:
    """Wait until ``uid``'s inbox is committed up to ``seq`` (a ``sent`` comes before)."""

    async def probe() -> bool | None:
        pg = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=scaled(10))
        try:
            head = await pg.fetchval(
                f"SELECT head FROM {stack.names.inbox_heads_table} WHERE uid = $1", uid
            )
        finally:
            await pg.close()
        return True if head is not None and head >= seq else None

    await eventually(probe)


async def send(client: RawClient, client_id: str, **fields: Any) -> str:
    await client.send_frame({"type": "send", "id": client_id, **fields})
    reply = await client.expect(
        lambda f: f.get("id") == client_id and f.get("type") in ("sent", "error")
    )
    assert reply["type"] == "sent", reply
    mid: str = reply["mid"]
    return mid


async def test_the_phone_offline_while_the_laptop_reads_gets_everything_in_order_at_sync(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    laptop = await sync(stack, 1, "alice", 0)
    assert await laptop.until_synced() == 0
    bob = await stack.connect(0, uid="bob")
    from_bob = [await send(bob, f"b{i}", to="alice", body=i) for i in range(5)]
    await laptop.until_seq(5)
    own = [await send(laptop.client, f"a{i}", to="bob", body=i) for i in range(2)]
    for mid in own:
        await bob.expect_message(mid=mid)
    # The laptop read and acknowledged bob's messages and got none of its own back.
    await laptop.client.expect_nothing("message", for_s=0.5)
    laptop.check_order()
    assert laptop.mids == from_bob

    await head_reaches(stack, "alice", 7)
    phone = await sync(stack, 0, "alice", 0)
    assert await phone.until_synced() == 7
    phone.check_order()
    assert phone.mids == [*from_bob, *own]  # its own messages, sent from the laptop
    # Live after synced, with the next seq.
    later = await send(bob, "b-later", to="alice", body="later")
    await phone.until_seq(8)
    await laptop.until_seq(8)
    assert phone.mids[-1] == later == laptop.mids[-1]
    phone.check_order()
    laptop.check_order(sent_here=frozenset({6, 7}))


async def test_a_sent_message_reaches_the_other_device_and_a_later_sync_not_the_sender(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    phone = await sync(stack, 0, "alice", 0)
    laptop = await sync(stack, 1, "alice", 0)
    await phone.until_synced()
    await laptop.until_synced()
    mid = await send(laptop.client, "a1", to="bob", body="hi")
    await phone.until_seq(1)
    assert phone.mids == [mid]
    await laptop.client.expect_nothing("message", for_s=0.5)
    # A device that was offline gets it at its next sync.
    tablet = await sync(stack, 1, "alice", 0)
    assert await tablet.until_synced() == 1
    assert tablet.mids == [mid]


async def test_a_since_above_the_head_gets_synced_with_the_head(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    bob = await stack.connect(0, uid="bob")
    await send(bob, "b1", to="alice", body=1)
    await head_reaches(stack, "alice", 1)
    device = await sync(stack, 1, "alice", 1000)
    assert await device.until_synced() == 1
    assert device.seqs == []
    await send(bob, "b2", to="alice", body=2)
    await device.until_seq(2)
    assert device.seqs == [2]


async def test_reconnects_in_a_loop_while_a_sender_floods_see_every_seq_once_in_order(
    history: Stack,
) -> None:
    stack = history
    # No gap is filled by waiting: the boundary alone must bring every message.
    stack.settings[env.SYNC_GAP_WAIT_S] = "600"
    for limit in (
        env.RATE_LIMIT_PER_S,
        env.RATE_LIMIT_BURST,
        env.RATE_LIMIT_PER_UID_PER_S,
        env.RATE_LIMIT_PER_UID_BURST,
    ):
        stack.settings[limit] = "1000"  # a flood, not an abuse
    await stack.start(gateways=2)
    bob = await stack.connect(0, uid="bob")
    total = 150
    devices: list[Device] = []

    async def flood() -> None:
        for i in range(total):
            await send(bob, f"f{i}", to="alice", body=i)

    flooding = asyncio.create_task(flood())
    since = 0
    try:
        for round_ in range(8):
            device = await sync(stack, round_ % 2, "alice", since)
            devices.append(device)
            # Some connections close before synced, some after a few live messages.
            with contextlib.suppress(TimeoutError):
                for _ in range(5 + 7 * round_):
                    await device.next_frame(within_s=2)
            device.check_order()
            since = device.last
            await device.client.close()
        await flooding
    finally:
        flooding.cancel()
    final = await sync(stack, 1, "alice", since)
    await final.until_synced()
    await final.until_seq(total)
    final.check_order()
    seen = [seq for device in [*devices, final] for seq in device.seqs]
    assert seen == list(range(1, total + 1))


async def test_messages_routed_while_init_is_in_flight_arrive_once_in_order(
    history: Stack,
) -> None:
    stack = history
    # No gap is filled by waiting: the boundary alone must bring every message.
    stack.settings[env.SYNC_GAP_WAIT_S] = "600"
    await stack.start(gateways=2)
    bob = await stack.connect(0, uid="bob")
    # Routed (sent) before alice's connection registers, written after her sync began: the
    # store is stopped, so both wait in its queues.
    stack.stores[0].pause()
    try:
        for i in range(100):
            await send(bob, f"b{i}", to="alice", body=i)
        device = await sync(stack, 1, "alice", 0)
    finally:
        stack.stores[0].resume()
    await device.until_synced(within_s=20)
    await device.until_seq(100, within_s=20)
    device.check_order()
    await device.client.expect_nothing("message", for_s=0.5)


async def test_copies_held_during_a_sync_of_many_windows_follow_synced(
    history: Stack,
) -> None:
    stack = history
    stack.settings[env.SYNC_PAGE] = "7"
    stack.settings[env.MAX_UNACKED_PER_CONNECTION] = "10"
    await stack.start(gateways=2)
    bob = await stack.connect(0, uid="bob")
    for i in range(40):
        await send(bob, f"b{i}", to="alice", body=i)
    await head_reaches(stack, "alice", 40)
    device = await sync(stack, 1, "alice", 0)

    async def more() -> None:
        for i in range(40, 60):
            await send(bob, f"b{i}", to="alice", body=i)

    sending = asyncio.create_task(more())
    await device.until_synced(within_s=20)
    await sending
    await device.until_seq(60)
    device.check_order()


async def test_a_syncing_connection_holds_a_sync_window_then_the_cap(
    history: Stack,
) -> None:
    stack = history
    stack.settings.update(UNLIMITED_RATE)
    stack.settings[env.MAX_UNACKED_PER_CONNECTION] = "10"
    stack.settings[env.SYNC_WINDOW] = "30"
    await stack.start(gateways=2)
    bob = await stack.connect(0, uid="bob")
    for i in range(50):
        await send(bob, f"b{i}", to="alice", body=i)
    await head_reaches(stack, "alice", 50)
    client = await RawClient.open(stack.gateways[1].url)
    stack.clients.append(client)
    await client.send_frame({"type": "init", "token": make_token("alice"), "since": 0})
    await client.expect("ready")
    # Unacknowledged, the sync stops at the window: 30, not the cap of 10.
    window = [await client.expect("message") for _ in range(30)]
    assert [m["seq"] for m in window] == list(range(1, 31))
    await client.expect_nothing("message", for_s=0.5)
    await client.ack(*(m["mid"] for m in window))
    rest = [await client.expect("message") for _ in range(20)]
    assert [m["seq"] for m in rest] == list(range(31, 51))
    assert (await client.expect("synced"))["seq"] == 50
    # Synced: the connection's cap applies again.
    await client.ack(*(m["mid"] for m in rest))
    for i in range(50, 65):
        await send(bob, f"b{i}", to="alice", body=i)
    live = [await client.expect("message") for _ in range(10)]
    assert [m["seq"] for m in live] == list(range(51, 61))
    await client.expect_nothing("message", for_s=0.5)
    await client.ack(*(m["mid"] for m in live))
    after = [await client.expect("message") for _ in range(5)]
    assert [m["seq"] for m in after] == list(range(61, 66))


async def test_a_store_killed_mid_sync_loses_nothing(history: Stack) -> None:
    stack = history
    stack.settings[env.SYNC_PAGE] = "5"
    stack.settings[env.MAX_UNACKED_PER_CONNECTION] = "10"
    await stack.start(gateways=2)
    bob = await stack.connect(0, uid="bob")
    for i in range(60):
        await send(bob, f"b{i}", to="alice", body=i)
    await head_reaches(stack, "alice", 60)
    device = await sync(stack, 1, "alice", 0)
    await device.until_seq(10)
    await stack.stores[0].kill()
    await stack.start_store()
    await device.until_synced(within_s=30)
    device.check_order()
    assert device.synced == 60 == device.last


async def test_a_router_killed_before_the_sync_request_loses_nothing(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    bob = await stack.connect(0, uid="bob")
    for i in range(5):
        await send(bob, f"b{i}", to="alice", body=i)
    await head_reaches(stack, "alice", 5)
    await stack.routers[0].kill()
    client = await RawClient.open(stack.gateways[1].url)
    stack.clients.append(client)
    await client.send_frame({"type": "init", "token": make_token("alice"), "since": 2})
    await asyncio.sleep(scaled(0.5))  # the ConnOpened waits in the router's queue
    await stack.start_router()
    ready = await client.expect("ready", within_s=20)
    assert ready["type"] == "ready"
    device = Device(client, 2)
    assert await device.until_synced(within_s=20) == 5
    device.check_order()
    assert device.seqs == [3, 4, 5]


async def test_a_gateway_killed_mid_sync_loses_nothing(history: Stack) -> None:
    stack = history
    stack.settings[env.SYNC_PAGE] = "5"
    stack.settings[env.MAX_UNACKED_PER_CONNECTION] = "10"
    await stack.start(gateways=2)
    bob = await stack.connect(0, uid="bob")
    for i in range(40):
        await send(bob, f"b{i}", to="alice", body=i)
    await head_reaches(stack, "alice", 40)
    device = await sync(stack, 1, "alice", 0)
    await device.until_seq(8)
    await stack.gateways[1].process.kill()
    again = await sync(stack, 0, "alice", device.last)
    assert await again.until_synced(within_s=20) == 40
    again.check_order()
    assert [*device.seqs, *again.seqs] == list(range(1, 41))


async def test_an_empty_redis_during_live_traffic_loses_nothing(
    history: Stack,
) -> None:
    stack = history
    # No gap is filled by waiting: the re-announced connection's sync must bring what was
    # routed while its presence was lost.
    stack.settings[env.SYNC_GAP_WAIT_S] = "600"
    # And the sync's registration no longer adds the connection to alice's messages.
    stack.settings[env.SYNC_GRACE_S] = "0.2"
    await stack.start(gateways=2)
    device = await sync(stack, 1, "alice", 0)
    await device.until_synced()
    await asyncio.sleep(0.5)  # past the grace
    bob = await stack.connect(0, uid="bob")
    for i in range(10):
        await send(bob, f"before{i}", to="alice", body=i)
    await device.until_seq(10)
    await remove_redis_keys(stack.names)
    # Routed while the routers know no connection of alice's (until the gateways' next
    # heartbeat makes them ask for their connections again).
    for i in range(10):
        await send(bob, f"lost{i}", to="alice", body=i)
    await stack.gateways[1].process.wait_for_event("presence_reannounced")
    for i in range(10):
        await send(bob, f"after{i}", to="alice", body=i)
    await device.until_seq(30, within_s=20)
    device.check_order()
    await device.client.expect_nothing("synced", for_s=0.5)


async def test_a_closed_syncing_connection_gets_no_copy_handed_over(
    history: Stack,
) -> None:
    stack = history
    await stack.start(gateways=2)
    laptop = await sync(stack, 0, "alice", 0)
    phone = await sync(stack, 1, "alice", 0)
    await laptop.until_synced()
    await phone.until_synced()
    await phone.client.close()
    bob = await stack.connect(0, uid="bob")
    mids = [await send(bob, f"b{i}", to="alice", body=i) for i in range(3)]
    await laptop.until_seq(3)
    assert laptop.mids == mids
    # The store still lists the phone for its sync's grace: its gateway drops those copies
    # (history has them) rather than keep them for alice's next init without since.
    await asyncio.sleep(0.5)
    assert await stack.stored_mids("alice") == []
    assert stack.gateways[1].process.count_events("handover_published") == 0
