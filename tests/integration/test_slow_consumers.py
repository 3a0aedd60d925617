"""Slow clients beside innocent traffic: one that reads but never acknowledges; a large backlog.

A connection may leave at most ``SWITCHBOARD_MAX_UNACKED_PER_CONNECTION`` messages
unacknowledged: what passes the cap goes to the offline store, so that one client cannot pin the
gateway's AMQP deliveries (its consumer prefetch) while the others wait. Replays proceed in
windows that the client's acks open, so that a backlog larger than a connection's outbox reaches
a client that acknowledges as it goes, and a reconnect resumes after what was acknowledged.
"""

import asyncio
from collections.abc import Callable

import asyncpg
import msgspec
import pytest

from proto import env, frames
from proto.mids import MidFactory
from proto.names import Names
from tests.support.clients import Frame, RawClient
from tests.support.rates import UNLIMITED_RATE
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration

PREFETCH = 500
"""The gateways' consumer prefetch (``SWITCHBOARD_PREFETCH``; 1000 by default, halved to halve
the test's time). The flood is twice as many messages: the router combines a few of them into one
delivery, and more deliveries than the prefetch must reach the gateway."""
INNOCENT_BOUND_S = 2.0
"""How late an innocent message may arrive beside the abuse: generous for a loaded 2-core host."""


def table(names: Names) -> str:
    return names.undelivered_table


async def stored_mids(pg: asyncpg.Connection, names: Names, uid: str) -> list[str]:
    records = await pg.fetch(
        f"SELECT mid FROM {table(names)} WHERE uid = $1 ORDER BY mid", uid
    )
    return [record["mid"] for record in records]


async def receive_acking(
    client: RawClient, count: int, within_s: float, ack_every: int = 1
) -> list[str]:
    """Receive ``count`` distinct messages, acknowledging as they come; return mids in order.

    Duplicates (at least once) are acknowledged again and left out of the result.
    """
    seen: dict[str, None] = {}
    pending: list[str] = []
    async with asyncio.timeout(scaled(within_s)):
        while len(seen) < count:
            message = await client.expect("message", within_s=within_s)
            seen.setdefault(message["mid"], None)
            pending.append(message["mid"])
            if len(pending) >= ack_every or len(seen) == count:
                await client.ack(*pending)
                pending.clear()
    return list(seen)


async def send_one_by_one(client: RawClient, to: str, count: int) -> list[str]:
    """Send ``count`` messages, each after the previous one's ``sent``: one delivery each."""
    return [(await client.send_message(to, {"n": n}))["mid"] for n in range(count)]


def answers(client_id: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("id") == client_id


async def exchange_within_bound(sender: RawClient, recipient: RawClient) -> None:
    """Ten messages, each received (and acknowledged) within ``INNOCENT_BOUND_S``."""
    for n in range(10):
        client_id = f"innocent-{n}"
        await sender.send_frame(
            {"type": "send", "id": client_id, "to": recipient.uid, "body": n}
        )
        message = await recipient.expect_message(within_s=INNOCENT_BOUND_S, body=n)
        await recipient.ack(message["mid"])
        await sender.expect(answers(client_id))


async def test_a_client_that_never_acks_does_not_delay_others_on_its_gateway(
    stack: Stack,
) -> None:
    stack.settings.update(UNLIMITED_RATE)
    stack.settings[env.PREFETCH] = str(PREFETCH)
    await stack.start(gateways=2)
    hoarder = await stack.connect(0, uid="hoarder")  # reads everything, acks nothing
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(0, uid="bob")
    flooder = await stack.connect(1, uid="flooder")

    flooded = await send_one_by_one(flooder, "hoarder", 2 * PREFETCH)

    # Beside the abuse, on the same gateway: alice and bob talk, both ways, without delay.
    await exchange_within_bound(alice, bob)
    await exchange_within_bound(bob, alice)

    # The hoarder was not closed (its excess waits in the offline store), and nothing of its is
    # lost: it reconnects, acknowledges, and gets every message.
    assert hoarder.close_code is None
    await hoarder.close()
    hoarder = await stack.connect(1, uid="hoarder")
    received = await receive_acking(hoarder, len(flooded), within_s=60, ack_every=50)
    assert sorted(received) == sorted(flooded)
    assert hoarder.close_code is None
    assert stack.gateways[0].process.count_events("unacked_capped") > 0


async def test_stored_messages_never_overtake_an_earlier_one_still_waiting(
    stack: Stack,
) -> None:
    # A cap of 4: half of it acknowledged opens the next replay window.
    stack.settings[env.MAX_UNACKED_PER_CONNECTION] = "4"
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    mids = await send_one_by_one(alice, "bob", 5)
    pushed = [(await bob.expect("message"))["mid"] for _ in range(4)]
    assert pushed == mids[:4]
    # The fifth passed the cap: stored, and its replay window cut while bob holds four.
    await bob.expect_nothing("message", for_s=0.5)
    await bob.ack(mids[0])  # three held: not yet half of the cap free
    mids += await send_one_by_one(alice, "bob", 1)
    # The sixth is stored behind the fifth: its own replay window, which bob has room for
    # now, must not bring it first.
    await bob.expect_nothing("message", for_s=1.0)
    await bob.ack(mids[1])
    replayed = [(await bob.expect("message"))["mid"] for _ in range(2)]
    assert replayed == mids[4:]


HOARDERS = 6
"""Connections that read but never acknowledge, together over the prefetch: six at the cap of
100 pin 600 deliveries, more than the 500 RabbitMQ lets the gateway hold."""


@pytest.mark.parametrize("history", ["off", "on"])
async def test_many_clients_that_never_ack_do_not_stall_their_gateway(
    stack: Stack, history: str
) -> None:
    stack.settings.update(UNLIMITED_RATE)
    stack.settings[env.PREFETCH] = str(PREFETCH)
    stack.settings[env.HISTORY] = history
    await stack.start(gateways=2)
    hoarders = [await stack.connect(0, uid=f"hoarder-{n}") for n in range(HOARDERS)]
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(0, uid="bob")
    flooder = await stack.connect(1, uid="flooder")

    flooded: dict[str, list[str]] = {}
    for n in range(HOARDERS):
        uid = f"hoarder-{n}"
        flooded[uid] = await send_one_by_one(flooder, uid, 150)

    # Beside the abuse, on the same gateway: alice and bob talk, both ways, without delay.
    await exchange_within_bound(alice, bob)
    await exchange_within_bound(bob, alice)

    # Nothing of the hoarders' is lost: each reconnects, acknowledges, and gets every message
    # (some twice: what they were sent before is also in the store now).
    for hoarder in hoarders:
        assert hoarder.close_code is None
        await hoarder.close()
    for uid, mids in flooded.items():
        again = await stack.connect(1, uid=uid)
        received = await receive_acking(again, len(mids), within_s=60, ack_every=50)
        assert sorted(received) == sorted(mids)
        await again.close()
    # The relay's router publishes a delivery per message sent one by one, so the hoarders pin
    # more deliveries than three quarters of the prefetch and the gateway must relieve them.
    # With history on the store's deliveries carry what it wrote in one batch, as many as it
    # took (more on a busy machine): fewer deliveries, which may pin less than that.
    if history == "off":
        gateway = stack.gateways[0].process
        assert gateway.count_events("pinned_deliveries_relieved") > 0


# Replay in windows


mid_factory = MidFactory("0123456789")


def stored_frame(mid: str, to: str, n: int) -> str:
    message = frames.Message(
        mid=mid, sender="alice", to=to, body=msgspec.Raw(b'{"n":%d}' % n), ts=1
    )
    return frames.encode(message).decode()


async def store_backlog(stack: Stack, uid: str, count: int) -> list[str]:
    """Put ``count`` rows for ``uid`` in the table, as if the store had kept them earlier."""
    mids = [mid_factory.next_mid(1_700_000_000_000) for _ in range(count)]
    names = stack.names
    pg = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=scaled(10))
    try:
        await pg.copy_records_to_table(
            names.undelivered_table.partition(".")[2],
            schema_name=names.schema,
            columns=["uid", "mid", "frame"],
            records=[
                (uid, mid, stored_frame(mid, uid, n)) for n, mid in enumerate(mids)
            ],
        )
    finally:
        await pg.close()
    return mids


ACK_EVERY = 50
"""The replaying client acknowledges 50 mids per ``ack`` frame: fast enough for the windows
(half of ``SWITCHBOARD_MAX_UNACKED_PER_CONNECTION``), slow enough in frames for the default
rate limit (50 frames/s) at a few thousand messages a second."""
REPLAY_SETTINGS = {env.OUTBOX_FRAMES: "300"}
"""A client that reads slower than the store replays is here a gateway whose outbox holds less
than a replay page (``SWITCHBOARD_REPLAY_PAGE``, 500): replayed all at once, the backlog would
overflow it, and the client would be closed as a slow consumer (4006)."""


def is_message(frame: Frame) -> bool:
    return frame.get("type") == "message"


async def test_a_backlog_of_5000_reaches_a_client_that_acks_as_it_goes(
    stack: Stack,
) -> None:
    stack.settings.update(REPLAY_SETTINGS)
    await stack.start(gateways=2)
    backlog = await store_backlog(stack, "dave", 5000)
    alice = await stack.connect(0, uid="alice")
    carol = await stack.connect(0, uid="carol")

    dave = await stack.connect(0, uid="dave")
    replaying = asyncio.create_task(
        receive_acking(dave, len(backlog), within_s=120, ack_every=ACK_EVERY)
    )
    # Beside the replay, on the same gateway: alice and carol talk without delay.
    await exchange_within_bound(alice, carol)
    received = await replaying

    assert received == backlog  # all, in order, no duplicates
    assert dave.close_code is None
    assert not [f for f in dave.unread() if is_message(f)]

    async def emptied() -> bool | None:
        return True if not await stack.stored_mids("dave") else None

    await eventually(emptied, within_s=30)


async def test_a_replay_resumes_after_what_was_acknowledged(stack: Stack) -> None:
    stack.settings.update(REPLAY_SETTINGS)
    await stack.start(gateways=2)
    backlog = await store_backlog(stack, "erin", 5000)

    erin = await stack.connect(0, uid="erin")
    first = await receive_acking(erin, 1500, within_s=60, ack_every=ACK_EVERY)
    assert first == backlog[:1500]
    assert erin.close_code is None  # never closed as a slow consumer
    await erin.close()

    async def acked_gone() -> list[str] | None:
        left = await stack.stored_mids("erin")
        return left if len(left) == len(backlog) - 1500 else None

    assert await eventually(acked_gone, within_s=30) == backlog[1500:]

    # Reconnected (to the other gateway): the rest, and nothing that was acknowledged.
    erin = await stack.connect(1, uid="erin")
    rest = await receive_acking(
        erin, len(backlog) - 1500, within_s=120, ack_every=ACK_EVERY
    )
    assert rest == backlog[1500:]
    assert erin.close_code is None
