"""The Python client library (clients/python) against a real stack of two gateways."""

import asyncio
import gc
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve

from switchboard_client import Client, ClientClosed, Message, RequestFailed, State
from switchboard_client.policy import (
    refresh_delay_s,
    refresh_retry_delay_s,
    token_expiry_s,
)
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration


def client_for(stack: Stack, uid: str, *gateways: int, **options: Any) -> Client:
    """A client of ``uid`` that tries the given gateways in that order (by default all)."""
    order = gateways or tuple(range(len(stack.gateways)))
    return Client(
        [stack.gateways[i].url for i in order],
        lambda: make_token(uid),  # a fresh token for every connection
        **{
            "backoff_base_s": 0.1,
            "backoff_max_s": 1.0,
            "shuffle_urls": False,
            **options,
        },
    )


async def next_message(stream: object, within_s: float = 10.0) -> Message:
    async with asyncio.timeout(scaled(within_s)):
        return await anext(stream)  # type: ignore[call-overload]


async def stored_mids(stack: Stack, uid: str) -> list[str]:
    """The mids replayed to a new raw connection of ``uid`` (which acknowledges none)."""
    client = await stack.connect(len(stack.gateways) - 1, uid=uid)
    mids = []
    try:
        while True:  # the replay is over when nothing comes for 1 s
            mids.append((await client.expect("message", within_s=1.0))["mid"])
    except TimeoutError:
        pass
    await client.close()
    return mids


async def test_send_receive_both_ways_across_gateways(stack: Stack) -> None:
    await stack.start(gateways=2)
    async with (
        client_for(stack, "alice", 0) as alice,
        client_for(stack, "bob", 1) as bob,
    ):
        assert (alice.uid, alice.state, bob.state) == (
            "alice",
            State.READY,
            State.READY,
        )
        alice_inbox, bob_inbox = alice.messages(), bob.messages()

        mid = await alice.send(to="bob", body={"text": "hi bob"})
        message = await next_message(bob_inbox)
        assert (message.mid, message.sender, message.to) == (mid, "alice", "bob")
        assert message.body == {"text": "hi bob"}

        reply_mid = await bob.send(to="alice", body=["hi", 1.5, None])
        reply = await next_message(alice_inbox)
        assert (reply.mid, reply.sender, reply.body) == (
            reply_mid,
            "bob",
            ["hi", 1.5, None],
        )
        assert mid < reply_mid  # mids sort in send order

    # Both messages were handled, so both were acknowledged: nothing is stored.
    assert await stored_mids(stack, "bob") == []
    assert await stored_mids(stack, "alice") == []


async def test_presence_asks_about_any_number_of_uids(stack: Stack) -> None:
    await stack.start(gateways=2)
    strangers = [f"nobody-{n}" for n in range(250)]
    async with (
        client_for(stack, "alice", 0) as alice,
        client_for(stack, "bob", 1) as bob,
    ):
        assert bob.state == State.READY
        # 251 uids: three frames of at most 100 (``MAX_PRESENCE_UIDS``), one answer.
        assert await alice.presence([*strangers[:180], "bob", *strangers[180:]]) == [
            "bob"
        ]
        assert await alice.presence([]) == []


async def test_messages_sent_while_offline_arrive_at_login(stack: Stack) -> None:
    await stack.start(gateways=2)
    async with client_for(stack, "alice", 0) as alice:
        mids = [await alice.send(to="carol", body=n) for n in range(3)]
    async with client_for(stack, "carol", 1) as carol:
        inbox = carol.messages()
        received = [await next_message(inbox) for _ in mids]
    assert [m.mid for m in received] == mids
    assert [m.body for m in received] == [0, 1, 2]


async def test_transient_sends_reach_online_peers_and_are_neither_stored_nor_acked(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    async with (
        client_for(stack, "alice", 0) as alice,
        client_for(stack, "bob", 1) as bob,
    ):
        acked: list[str] = []
        send_acks = bob._send_acks

        async def recording(mids: list[str]) -> None:
            acked.extend(mids)
            await send_acks(mids)

        bob._send_acks = recording  # type: ignore[method-assign]
        inbox = bob.messages()
        typing = await alice.send(to="bob", body={"typing": True}, transient=True)
        message = await next_message(inbox)
        assert (message.mid, message.transient, message.needs_ack) == (
            typing,
            True,
            False,
        )

        durable = await alice.send(to="bob", body="hello")
        assert (await next_message(inbox)).mid == durable

        async def durable_acked() -> bool | None:
            return durable in acked or None

        # The stream acks a message when it is asked for the next one.
        reading = asyncio.ensure_future(anext(inbox))
        assert await eventually(durable_acked)
        reading.cancel()
        assert typing not in acked  # only the durable message was acknowledged

    # Sent while bob is offline: never stored, so a new connection gets only the durable one.
    async with client_for(stack, "alice", 0) as alice:
        await alice.send(to="bob", body={"typing": True}, transient=True)
        sentinel = await alice.send(to="bob", body="later")
    assert await stored_mids(stack, "bob") == [sentinel]


async def test_rejected_send_raises_the_error_code(stack: Stack) -> None:
    await stack.start(gateways=1)
    async with client_for(stack, "alice") as alice:
        with pytest.raises(RequestFailed) as rejected:
            await alice.send(to="x" * 200, body="too long a uid")
        assert rejected.value.code == "invalid_field"
        assert await alice.send(to="bob", body="still connected")


async def test_invalid_token_is_terminal(stack: Stack) -> None:
    await stack.start(gateways=1)
    client = Client(stack.gateways[0].url, make_token("mallory", secret="x" * 40))
    with pytest.raises(ClientClosed) as closed:
        await client.start()
    assert closed.value.close_code == 4003
    assert client.state is State.CLOSED
    assert client.counters.reconnects == 0


class DeadlineClient(Client):
    """A client that records the deadline each connection attempt got (``attempts``), and
    each one that reached its wait for ``ready`` (``deadlines``)."""

    def __init__(self, url: str) -> None:
        super().__init__(
            url,
            "token",
            open_timeout_s=0.05,
            open_timeout_max_s=0.1,
            backoff_base_s=0.01,
            backoff_max_s=0.01,
        )
        self.attempts: list[float] = []
        self.deadlines: list[float] = []

    async def _connection(
        self, url: str, deadline_s: float
    ) -> tuple[int | None, str, bool]:
        self.attempts.append(deadline_s)
        return await super()._connection(url, deadline_s)

    async def _keep_alive(
        self,
        ws: ClientConnection,
        url: str,
        deadline_s: float,
        ready: asyncio.Event,
        pong: asyncio.Event,
    ) -> None:
        self.deadlines.append(deadline_s)
        await super()._keep_alive(ws, url, deadline_s, ready, pong)


async def test_a_gateway_that_never_answers_init_is_left_with_a_longer_deadline_each_time() -> (
    None
):
    ended = 0

    async def silent(websocket: ServerConnection) -> None:
        nonlocal ended
        await websocket.wait_closed()  # reads init, never answers it
        ended += 1

    async with serve(silent, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = DeadlineClient(f"ws://127.0.0.1:{port}/ws")
        with pytest.raises(TimeoutError):
            # Each connection is abandoned once its deadline passes without ready.
            await client.start(ready_timeout_s=scaled(3))
    assert ended >= 3
    assert client.deadlines[:3] == [0.05, 0.1, 0.1]
    assert client.counters.reconnects >= 3


async def test_a_server_that_never_completes_the_handshake_is_left_each_time() -> None:
    accepted = 0
    held: list[asyncio.StreamWriter] = []

    async def mute(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        held.append(writer)  # reads nothing, answers nothing: no handshake

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        client = DeadlineClient(f"ws://127.0.0.1:{port}/ws")
        with pytest.raises(TimeoutError):
            await client.start(ready_timeout_s=scaled(3))
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert accepted >= 3
    assert client.attempts[:3] == [0.05, 0.1, 0.1]
    assert client.deadlines == []  # no handshake completed: no wait for ready began


def test_the_token_exp_is_read_without_verifying_it() -> None:
    assert token_expiry_s(make_token("ann", secret="x" * 40, exp=1_800_000_000)) == (
        1_800_000_000.0
    )
    assert token_expiry_s(make_token("zoë", exp=1.5, name="Zoë ✓")) == 1.5
    for no_exp in ("not a token", "a.%%%.c", make_token("ann", exp="soon")):
        assert token_expiry_s(no_exp) is None


def test_a_token_is_refreshed_ahead_of_exp_or_half_way_when_short_lived() -> None:
    assert refresh_delay_s(600.0, 0.0, 30.0) == 570.0
    assert refresh_delay_s(3.0, 0.0, 1.0) == 2.0
    assert refresh_delay_s(2.0, 0.0, 1.0) == 1.0
    assert refresh_delay_s(1.0, 2.0, 1.0) == 0.0
    assert refresh_retry_delay_s(10.0, 0.0) == 5.0
    assert refresh_retry_delay_s(1.0, 0.0) == 1.0


async def test_the_token_function_refreshes_the_connection_before_exp(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    issued: list[str] = []

    def short_lived_token() -> str:
        issued.append(
            make_token("alice", ttl_s=3)
        )  # 2 to 3 s left: exp is whole seconds
        return issued[-1]

    async with (
        Client(stack.gateways[0].url, short_lived_token, refresh_before_s=1.0) as alice,
        client_for(stack, "bob", 1) as bob,
    ):
        inbox = alice.messages()

        async def refreshed_twice() -> bool | None:
            return alice.counters.refreshes >= 2 or None

        # Past the first token's exp and the second's: the gateway would have closed (4004).
        await eventually(refreshed_twice, within_s=10)
        assert len(issued) >= 3
        assert alice.counters.reconnects == 0
        assert alice.counters.gateways == [stack.gateways[0].url]
        mid = await bob.send(to="alice", body="still the same connection")
        assert (await next_message(inbox)).mid == mid


async def test_going_away_reconnects_at_once_to_the_other_gateway(stack: Stack) -> None:
    await stack.start(gateways=2)
    states: list[State] = []
    async with (
        client_for(stack, "bob", 0, 1, on_state=states.append) as bob,
        client_for(stack, "alice", 1) as alice,
    ):
        inbox = bob.messages()
        # A huge backoff: only the going-away rule can make the reconnect quick.
        bob.backoff_base_s = bob.backoff_max_s = 3600.0
        assert await stack.gateways[0].process.stop() == 0  # closes with 1001
        await asyncio.wait_for(bob.wait_ready(), scaled(5))
        assert bob.gateway_url == stack.gateways[1].url
        assert states == [State.READY, State.RECONNECTING, State.READY]

        mid = await alice.send(to="bob", body="after the move")
        assert (await next_message(inbox)).mid == mid


async def test_killed_gateway_unconfirmed_send_is_resent_once(stack: Stack) -> None:
    await stack.start(gateways=2)
    async with (
        client_for(
            stack, "alice", 0, 1, ping_interval_s=0.5, pong_timeout_s=1.0
        ) as alice,
        client_for(stack, "bob", 1) as bob,
    ):
        inbox = bob.messages()
        # A frozen gateway takes the frame but never answers: no receipt, no pong.
        stack.gateways[0].process.pause()
        sending = asyncio.create_task(alice.send(to="bob", body="during the outage"))
        # Counted when the client gives up on the frozen gateway (its RECONNECTING state may
        # last less than one poll: the other gateway answers at once).
        await eventually(
            lambda: asyncio.sleep(0, alice.counters.reconnects >= 1 or None),
            within_s=5,
        )
        await stack.gateways[0].process.kill()  # SIGKILL while stopped
        mid = await asyncio.wait_for(sending, scaled(10))
        assert alice.gateway_url == stack.gateways[1].url
        assert alice.counters.resent_requests >= 1

        assert (await next_message(inbox)).mid == mid
        sentinel = await alice.send(to="bob", body="sentinel")
        assert (await next_message(inbox)).mid == sentinel  # no second copy in between


async def test_duplicate_replay_is_dropped_and_the_ack_sent_later(stack: Stack) -> None:
    await stack.start(gateways=2)
    async with (
        client_for(stack, "alice", 0) as alice,
        client_for(stack, "bob", 0, 1) as bob,
    ):
        inbox = bob.messages()
        mid = await alice.send(to="bob", body="handled slowly")
        assert (await next_message(inbox)).mid == mid
        # Bob's gateway dies while the handler runs: the unacknowledged delivery goes to the
        # offline store (orphan TTL) and is replayed to bob's new connection: a duplicate.
        await stack.gateways[0].process.kill()
        await eventually(
            lambda: asyncio.sleep(0, bob.counters.duplicates_dropped or None),
            within_s=15,
        )
        # The handler finishes: asking for the next message acknowledges it.
        next_one = asyncio.create_task(next_message(inbox))
        alice_again = client_for(stack, "alice", 1)
        async with alice_again:
            later = await alice_again.send(to="bob", body="next")
        assert (await next_one).mid == later
    assert await stored_mids(stack, "bob") == []


async def test_a_request_its_caller_cancelled_leaves_no_unretrieved_error(
    stack: Stack,
) -> None:
    await stack.start(gateways=1)
    gateway = stack.gateways[0].process
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        client = client_for(stack, "ann")
        await client.start()
        gateway.pause()  # no receipt can come
        try:
            sending = asyncio.create_task(client.send(to="bob", body="never answered"))
            await asyncio.sleep(0)  # lets the request start: it is pending now
            sending.cancel()
            await asyncio.wait([sending])
            await client.close()
        finally:
            gateway.resume()
        # asyncio reports an exception nobody retrieved when its future is freed: free the
        # task, whose cancellation traceback holds the request's frame, then collect.
        del sending
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
