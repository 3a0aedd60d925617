"""1:1 chat end to end: gateways, router and offline store on RabbitMQ, Redis and PostgreSQL."""

import asyncio
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
import redis.asyncio as redis

from proto.env import DEFAULT_AMQP_URL, DEFAULT_REDIS_URL
from tests.support.clients import RawClient
from tests.support.rates import UNLIMITED_RATE
from tests.support.stack import Stack
from tests.support.stored import wait_for_rows_stored
from tests.support.timing import eventually
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration


async def presence_of(stack: Stack, uid: str) -> dict[str, str]:
    client = redis.Redis.from_url(DEFAULT_REDIS_URL, decode_responses=True)
    try:
        entries = await client.hgetall(stack.names.presence_key(uid))
        return {
            str(conn_id): str(gateway_id) for conn_id, gateway_id in entries.items()
        }
    finally:
        await client.aclose()


async def receive_all(
    client: RawClient, count: int, within_s: float = 10.0
) -> list[dict]:
    """Receive ``count`` distinct messages (by mid), acknowledging each; duplicates are allowed."""
    seen: dict[str, dict] = {}
    async with asyncio.timeout(within_s):
        while len(seen) < count:
            message = await client.expect("message", within_s=within_s)
            seen.setdefault(message["mid"], message)
            await client.ack(message["mid"])
    return list(seen.values())


async def test_messages_cross_gateways_in_both_directions(stack: Stack) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")

    sent = await alice.send_message("bob", {"text": "hi bob"})
    message = await bob.expect_message(mid=sent["mid"])
    assert message["from"] == "alice"
    assert message["to"] == "bob"
    assert message["body"] == {"text": "hi bob"}
    assert isinstance(message["ts"], int)
    await bob.ack(message["mid"])

    reply = await bob.send_message("alice", ["hi", "alice", 1.5, None])
    message = await alice.expect_message(mid=reply["mid"])
    assert (message["from"], message["body"]) == ("bob", ["hi", "alice", 1.5, None])


async def test_every_connection_of_a_uid_gets_the_message(stack: Stack) -> None:
    await stack.start(gateways=2)
    phone = await stack.connect(0, uid="bob")
    laptop = await stack.connect(1, uid="bob")
    tablet = await stack.connect(1, uid="bob")
    alice = await stack.connect(0, uid="alice")

    sent = await alice.send_message("bob", "to every device")
    for device in (phone, laptop, tablet):
        message = await device.expect_message(mid=sent["mid"])
        assert message["body"] == "to every device"
        await device.ack(sent["mid"])
    assert len(await presence_of(stack, "bob")) == 3


async def test_ready_carries_the_uid_of_the_token(stack: Stack) -> None:
    await stack.start(gateways=1)
    client = await stack.connect(0)
    ready = await client.init(make_token("carol"))
    assert ready["uid"] == "carol"
    assert ready["conn"]
    assert await presence_of(stack, "carol") == {
        ready["conn"]: stack.gateways[0].gateway_id
    }


async def test_offline_messages_are_replayed_until_acknowledged(stack: Stack) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    mids = [(await alice.send_message("dave", {"n": n}))["mid"] for n in range(3)]
    await wait_for_rows_stored(stack.stores[0], rows=len(mids))

    # Logged in without acknowledging: everything comes, in order, and stays stored.
    dave = await stack.connect(1, uid="dave")
    replayed = [await dave.expect("message") for _ in mids]
    assert [m["mid"] for m in replayed] == mids
    assert [m["body"] for m in replayed] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert all(m["from"] == "alice" for m in replayed)
    await dave.close()

    # Again: the unacknowledged replay comes back; this time it is acknowledged.
    dave = await stack.connect(0, uid="dave")
    assert [(await dave.expect("message"))["mid"] for _ in mids] == mids
    await dave.ack(*mids)
    await dave.close()

    async def rows_left() -> bool | None:
        return True if not await store_rows(stack, "dave") else None

    await eventually(rows_left)
    dave = await stack.connect(1, uid="dave")
    await dave.expect_nothing("message", for_s=1.0)


async def store_rows(stack: Stack, uid: str) -> list[str]:
    import asyncpg

    from proto.env import DEFAULT_POSTGRES_DSN

    connection = await asyncpg.connect(DEFAULT_POSTGRES_DSN)
    try:
        rows = await connection.fetch(
            f"SELECT mid FROM {stack.names.undelivered_table} WHERE uid = $1 ORDER BY mid",
            uid,
        )
    finally:
        await connection.close()
    return [row["mid"] for row in rows]


async def test_unacknowledged_message_goes_to_the_store_when_the_connection_closes(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    erin = await stack.connect(1, uid="erin")
    sent = await alice.send_message("erin", "read me later")
    await erin.expect_message(mid=sent["mid"])
    await erin.close()  # without an ack

    erin = await stack.connect(0, uid="erin")
    message = await erin.expect_message(mid=sent["mid"])
    assert message["body"] == "read me later"


async def test_message_stored_during_login_reaches_that_session(stack: Stack) -> None:
    """The login race: the router found no connection, but the user was logging in."""
    await stack.start(gateways=2)
    store = stack.stores[0]
    alice = await stack.connect(0, uid="alice")
    # Hold the offline store so that the message is being stored while frank logs in.
    store.pause()
    try:
        sent = await alice.send_message("frank", "during login")
        frank = await RawClient.open(stack.gateways[1].url)
        stack.clients.append(frank)
        await frank.send_frame({"type": "init", "token": make_token("frank")})
        await frank.expect("ready")
    finally:
        store.resume()
    message = await frank.expect_message(mid=sent["mid"], within_s=10)
    assert message["body"] == "during login"


async def test_message_sent_while_init_is_in_flight_is_delivered_in_that_session(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    for attempt in range(5):
        uid = f"gina{attempt}"
        gina = await RawClient.open(stack.gateways[1].url)
        stack.clients.append(gina)
        init = gina.send_frame({"type": "init", "token": make_token(uid)})
        _, sent = await asyncio.gather(init, alice.send_message(uid, attempt))
        message = await gina.expect_message(mid=sent["mid"], within_s=10)
        assert message["body"] == attempt


async def test_retried_client_id_is_delivered_once(stack: Stack) -> None:
    await stack.start(gateways=2)
    bob = await stack.connect(1, uid="bob")
    alice = await stack.connect(0, uid="alice")
    first = await alice.send_message("bob", "once", client_id="retry-1")
    await alice.close()
    # The client reconnects (to another gateway) and sends the same frame again.
    alice = await stack.connect(1, uid="alice")
    await alice.send_message("bob", "once", client_id="retry-1")
    await alice.send_message("bob", "marker", client_id="retry-2")

    received = []
    while True:
        message = await bob.expect("message")
        await bob.ack(message["mid"])
        if message["body"] == "marker":
            break
        received.append(message)
    assert [m["mid"] for m in received] == [first["mid"]]
    # The same id from another user is another message.
    carol = await stack.connect(0, uid="carol")
    await carol.send_message("bob", "mine", client_id="retry-1")
    assert (await bob.expect("message"))["from"] == "carol"


async def test_closing_removes_presence(stack: Stack) -> None:
    await stack.start(gateways=2)
    one = await stack.connect(0, uid="hank")
    two = await stack.connect(1, uid="hank")
    assert len(await presence_of(stack, "hank")) == 2
    await one.close()

    async def one_left() -> bool | None:
        return True if len(await presence_of(stack, "hank")) == 1 else None

    await eventually(one_left)
    await two.close()

    async def none_left() -> bool | None:
        return True if not await presence_of(stack, "hank") else None

    await eventually(none_left)


async def test_killed_gateway_loses_no_queued_message(stack: Stack) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    ivan = await stack.connect(1, uid="ivan")
    doomed = stack.gateways[1]

    # Messages queued for ivan's gateway while it is frozen, then it dies.
    doomed.process.pause()
    mids = [(await alice.send_message("ivan", n))["mid"] for n in range(20)]
    await doomed.process.kill()

    # ivan reconnects to the other gateway: everything reaches him within the orphan TTL.
    ivan = await stack.connect(0, uid="ivan")
    received = await receive_all(ivan, len(mids), within_s=15)
    assert sorted(m["mid"] for m in received) == sorted(mids)


async def test_killed_gateway_presence_expires(stack: Stack) -> None:
    await stack.start(gateways=2)
    await stack.connect(1, uid="judy")
    assert await presence_of(stack, "judy")
    await stack.gateways[1].process.kill()

    async def expired() -> bool | None:
        return True if not await presence_of(stack, "judy") else None

    await eventually(expired, within_s=15)


async def test_unacknowledged_messages_of_a_killed_gateway_come_back(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    kate = await stack.connect(1, uid="kate")
    sent = await alice.send_message("kate", "pushed, never acked")
    await kate.expect_message(mid=sent["mid"])
    await stack.gateways[1].process.kill()

    kate = await stack.connect(0, uid="kate")
    message = await kate.expect_message(mid=sent["mid"], within_s=15)
    assert message["body"] == "pushed, never acked"


async def test_sends_without_waiting_are_answered_and_delivered_in_order(
    stack: Stack,
) -> None:
    # A burst above the default rate limits' buckets (the connection's and the uid's): the
    # frames are not refused for it, however fast this host sends them.
    stack.settings.update(UNLIMITED_RATE)
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    count = 300  # more than a connection's sends in flight (gateway.connection.SENDS_IN_FLIGHT)
    for n in range(count):
        await alice.send_frame({"type": "send", "id": f"b{n}", "to": "bob", "body": n})
    receipts = [await alice.expect("sent") for _ in range(count)]
    assert [r["id"] for r in receipts] == [f"b{n}" for n in range(count)]
    received = await receive_all(bob, count, within_s=30)
    assert [m["body"] for m in received] == list(range(count))
    assert [m["mid"] for m in received] == [r["mid"] for r in receipts]


def receipt_of(client_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("id") == client_id and frame.get("type") == "sent"


async def test_restarted_router_delivers_every_sent_message(stack: Stack) -> None:
    # 150 sends as fast as the receipts come back: above the default rate limits.
    stack.settings.update(UNLIMITED_RATE)
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    leo = await stack.connect(1, uid="leo")
    router = stack.routers[0]

    async def stream(first: int, count: int) -> list[str]:
        return [
            (await alice.send_message("leo", n))["mid"]
            for n in range(first, first + count)
        ]

    mids = await stream(0, 50)
    await router.kill()
    # Accepted by the broker while no router runs; answered `sent` once one routes them.
    for n in range(50, 100):
        await alice.send_frame({"type": "send", "id": f"k{n}", "to": "leo", "body": n})
    await alice.expect_nothing("sent", for_s=0.5)
    await stack.start_router()
    for n in range(50, 100):
        sent = await alice.expect(receipt_of(f"k{n}"), within_s=30)
        mids.append(sent["mid"])
    mids += await stream(100, 50)

    received = await receive_all(leo, len(mids), within_s=30)
    assert sorted(m["mid"] for m in received) == sorted(mids)


async def test_bad_input_gets_errors_and_the_gateway_keeps_serving(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    mallory = await stack.connect(0)

    cases = [
        ('{"type":"send","id":"x","to":"bob","body":1}', "not_initialized"),
        ("][", "invalid_json"),
        ('{"type":"teleport","id":"t"}', "unknown_type"),
    ]
    for text, code in cases:
        await mallory.send_raw(text)
        assert (await mallory.expect("error"))["code"] == code
    await mallory.send_raw(b"\x89binary")
    assert (await mallory.expect("error"))["code"] == "unsupported_frame"
    await mallory.init(make_token("mallory"))
    for text, code in [
        ('{"type":"send","id":"s1","to":"bob"}', "invalid_field"),
        ('{"type":"send","id":"s2","to":["bob"],"body":1}', "invalid_field"),
        ('{"type":"ack","mids":[1]}', "invalid_field"),
        (f'{{"type":"init","token":"{make_token("mallory")}"}}', "already_initialized"),
    ]:
        await mallory.send_raw(text)
        assert (await mallory.expect("error"))["code"] == code

    # The identity is the token's, whatever a frame claims.
    await mallory.send_raw(
        '{"type":"send","id":"s3","to":"bob","from":"alice","body":"spoof"}'
    )
    assert (await bob.expect("message"))["from"] == "mallory"

    # An oversize frame closes that connection with 1009; the others carry on.
    await mallory.send_raw(
        '{"type":"send","id":"s4","to":"bob","body":"' + "x" * 70_000 + '"}'
    )
    assert await mallory.wait_closed() == 1009
    sent = await alice.send_message("bob", "still here")
    await bob.expect_message(mid=sent["mid"])


@pytest.mark.parametrize(
    ("token", "code", "close_code"),
    [
        (make_token("nina", ttl_s=-10), "token_expired", 4004),
        (
            make_token("nina", secret="another-secret-of-sufficient-length"),
            "invalid_token",
            4003,
        ),
        (make_token(None), "invalid_token", 4003),
        ("header.payload.signature", "invalid_token", 4003),
    ],
    ids=["expired", "wrong-secret", "no-sub", "garbage"],
)
async def test_bad_tokens_are_refused_with_a_close_code(
    stack: Stack, token: str, code: str, close_code: int
) -> None:
    await stack.start_gateway()
    client = await stack.connect(0)
    await client.send_frame({"type": "init", "token": token})
    assert (await client.expect("error"))["code"] == code
    assert await client.wait_closed() == close_code


async def test_connection_without_init_is_closed(stack: Stack) -> None:
    await stack.start_gateway(**{"SWITCHBOARD_INIT_TIMEOUT_S": "0.5"})
    client = await stack.connect(0)
    assert await client.wait_closed(within_s=5) == 4001


async def test_an_init_waiting_for_ready_past_the_init_deadline_is_not_cut(
    stack: Stack,
) -> None:
    await stack.start(gateways=0)
    await stack.start_gateway(**{"SWITCHBOARD_INIT_TIMEOUT_S": "0.5"})
    router = stack.routers[0]
    # A frozen router: the broker confirms the init's conn.opened, no ready comes yet.
    router.pause()
    try:
        alice = await stack.connect(0)
        await alice.send_frame({"type": "init", "token": make_token("alice")})
        # Opened after alice and never initialized: once it is closed, alice's init deadline
        # has passed too.
        silent = await stack.connect(0)
        assert await silent.wait_closed(within_s=5) == 4001
    finally:
        router.resume()
    ready = await alice.expect(lambda f: f.get("type") in ("ready", "error"))
    assert ready["type"] == "ready", ready
    assert alice.close_code is None


async def test_server_pings_keep_a_quiet_client_open(stack: Stack) -> None:
    await stack.start(gateways=0)
    await stack.start_gateway(
        **{"SWITCHBOARD_IDLE_TIMEOUT_S": "1.0", "SWITCHBOARD_PING_INTERVAL_S": "0.3"}
    )
    quiet = await stack.connect(0, uid="quinn")
    # Sends nothing for three idle timeouts; its library answers the gateway's pings.
    await quiet.expect_nothing(lambda _: True, for_s=3.0)
    assert quiet.close_code is None


async def test_silent_connection_is_closed_and_ping_keeps_it_open(stack: Stack) -> None:
    await stack.start(gateways=0)
    await stack.start_gateway(
        **{"SWITCHBOARD_IDLE_TIMEOUT_S": "1.0", "SWITCHBOARD_PING_INTERVAL_S": "30"}
    )
    talker = await stack.connect(0, uid="olga")
    silent = await stack.connect(0, uid="paul")
    for _ in range(6):
        await talker.send_frame({"type": "ping"})
        await talker.expect("pong")
        # The pace of the heartbeat under test, not a synchronisation.
        await asyncio.sleep(0.3)
    assert await silent.wait_closed(within_s=5) == 4002
    assert talker.close_code is None


async def test_send_the_broker_cannot_take_is_unavailable_and_a_retry_is_delivered(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    # No router and no router queue: the mandatory publish comes back, nothing is accepted.
    assert await stack.routers[0].stop() == 0
    connection = await aio_pika.connect(DEFAULT_AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(stack.names.router_queue)

    await alice.send_frame({"type": "send", "id": "r1", "to": "bob", "body": "again"})
    refused = await alice.expect(lambda f: f.get("id") == "r1")
    assert (refused["type"], refused["code"]) == ("error", "unavailable")

    await stack.start_router()  # declares the queue again
    sent = await alice.send_message("bob", "again", client_id="r1")
    message = await bob.expect_message(mid=sent["mid"])
    assert message["body"] == "again"
    await bob.ack(message["mid"])
    await bob.expect_nothing("message", for_s=0.5)
