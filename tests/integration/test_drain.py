"""Draining a gateway under load (SIGTERM) loses no message that got its ``sent`` receipt.

Users on two gateways send 1:1 messages to users on the other one; one gateway gets SIGTERM in
the middle of the stream. Its clients are closed with 1001, reconnect to the other gateway and go
on (retrying an unanswered frame with the same id). Afterwards every mid that a sender got back
in a ``sent`` reaches its recipient: live, replayed from the offline store, or both.

A frame retried after the reconnect gets a ``sent`` of its own, but when its first copy was
accepted before the drain, the router drops the retry and delivers the first copy's mid (README,
"send"): those are checked by sender and body instead of by mid.
"""

import asyncio
from dataclasses import dataclass, field

import pytest

from tests.support.clients import RawClient
from tests.support.stack import Gateway, Stack
from tests.support.timing import eventually

pytestmark = pytest.mark.integration

USERS = 6
MESSAGES_PER_USER = 30
DRAIN_AFTER = 40
"""SIGTERM goes out once this many messages (of USERS * MESSAGES_PER_USER) were sent."""
GOING_AWAY = 1001


@dataclass
class User:
    uid: str
    peer: str
    client: RawClient
    clients: list[RawClient] = field(default_factory=list)
    sent_mids: list[str] = field(default_factory=list)
    """Mids of the frames answered on their first attempt."""
    retried_texts: list[str] = field(default_factory=list)
    """Bodies of the frames that had to be sent again after the reconnect."""
    close_codes: list[int | None] = field(default_factory=list)

    def received(self) -> list[dict[str, object]]:
        return [
            frame
            for client in self.clients
            for frame in client.received
            if frame.get("type") == "message"
        ]

    def missing_from(self, sender: "User") -> set[str]:
        """What ``sender`` got ``sent`` for and this user has not received (mids, texts)."""
        received = self.received()
        mids = {frame["mid"] for frame in received}
        texts = {
            frame["body"]["text"]  # type: ignore[index]
            for frame in received
            if frame["from"] == sender.uid
        }
        return (set(sender.sent_mids) - mids) | (set(sender.retried_texts) - texts)


async def reconnect(stack: Stack, user: User, survivor: Gateway) -> None:
    user.close_codes.append(await user.client.wait_closed())
    user.client = await stack.connect(survivor, uid=user.uid)
    user.clients.append(user.client)


async def send_until_sent(
    stack: Stack, user: User, survivor: Gateway, client_id: str, text: str
) -> None:
    """Send one message, reconnecting and retrying with the same id until it is ``sent``."""
    frame = {"type": "send", "id": client_id, "to": user.peer, "body": {"text": text}}
    is_retry = False
    while True:
        client = user.client
        try:
            await client.send_frame(frame)
            reply = await client.expect(
                lambda f: (
                    f.get("id") == client_id and f.get("type") in ("sent", "error")
                ),
                within_s=10,
            )
        except Exception:
            if client.websocket.close_code is None:
                raise
            await reconnect(stack, user, survivor)
            is_retry = True
            continue
        if reply["type"] == "sent":
            if is_retry:
                user.retried_texts.append(text)
            else:
                user.sent_mids.append(str(reply["mid"]))
            return
        is_retry = True
        assert reply["code"] in ("unavailable", "internal_error"), reply


async def test_draining_a_gateway_under_load_loses_no_sent_message(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    draining, survivor = stack.gateways
    uids = [f"user{index}" for index in range(USERS)]
    users = []
    for index, uid in enumerate(uids):
        # Even users on the gateway that drains, odd ones on the other: every message crosses.
        gateway = draining if index % 2 == 0 else survivor
        client = await stack.connect(gateway, uid=uid)
        users.append(User(uid, uids[(index + 1) % USERS], client, [client]))
    sent_count = 0
    enough_sent = asyncio.Event()

    async def run_sender(user: User) -> None:
        nonlocal sent_count
        for number in range(MESSAGES_PER_USER):
            await send_until_sent(
                stack, user, survivor, f"{user.uid}-{number}", f"{number}"
            )
            sent_count += 1
            if sent_count >= DRAIN_AFTER:
                enough_sent.set()

    async with asyncio.TaskGroup() as senders:
        for user in users:
            senders.create_task(run_sender(user))
        await enough_sent.wait()
        draining.process.process.terminate()  # SIGTERM, mid-stream
    assert await draining.process.wait_exit() == 0
    await draining.process.wait_for_event("shutdown_started")

    # Every user of the drained gateway is back, on the survivor (the sender loop reconnected
    # those that were still sending; one that had finished reconnects now).
    for user in users[::2]:
        if user.client.websocket.close_code is not None:
            await reconnect(stack, user, survivor)
        assert user.close_codes, user.uid
        assert set(user.close_codes) == {GOING_AWAY}, user.close_codes
    sent_total = sum(len(user.sent_mids) + len(user.retried_texts) for user in users)
    assert sent_total == USERS * MESSAGES_PER_USER

    by_uid = {user.uid: user for user in users}
    for sender in users:
        recipient = by_uid[sender.peer]

        async def missing_mids(
            sender: User = sender, recipient: User = recipient
        ) -> bool | None:
            return True if not recipient.missing_from(sender) else None

        try:
            await eventually(missing_mids, within_s=20)
        except TimeoutError:
            missing = recipient.missing_from(sender)
            raise AssertionError(
                f"{len(missing)} sent messages from {sender.uid} never reached "
                f"{recipient.uid}: {sorted(missing)}"
            ) from None
