"""Bad input a client or a backend may send: each is refused with a documented code, the
service keeps serving, and nothing accepted before is lost.

Frames already covered elsewhere (invalid JSON, binary, unknown types, fields, frames before
init, a second init, bad tokens, rights) live in test_chat.py and test_groups_rooms.py.
"""

import asyncio

import pytest
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from proto import env
from proto.codes import CloseCode, ErrorCode
from tests.support.api import Backend
from tests.support.clients import RawClient
from tests.support.stack import Stack
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration


async def assert_still_serving(stack: Stack, gateway: int = 0) -> None:
    """A fresh pair of clients sends and receives through the gateway."""
    sender = await stack.connect(gateway, uid="fresh-sender")
    receiver = await stack.connect(gateway, uid="fresh-receiver")
    sent = await sender.send_message("fresh-receiver", {"still": "serving"})
    await receiver.expect_message(mid=sent["mid"])


async def test_invalid_utf8_closes_with_1007_and_accepted_messages_arrive(
    stack: Stack,
) -> None:
    await stack.start(gateways=1)
    ann = await stack.connect(0, uid="ann")
    bob = await stack.connect(0, uid="bob")
    sent = await ann.send_message("bob", "before the bad frame")
    # A text frame that is not UTF-8: websockets only sends str as text, so frame it by hand.
    await ann.websocket.send([b"\xff\xfe not utf-8"], text=True)
    assert await ann.wait_closed() == CloseCode.INVALID_PAYLOAD

    await bob.expect_message(mid=sent["mid"], body="before the bad frame")
    await assert_still_serving(stack)


async def test_deep_nesting_and_huge_numbers_are_refused(
    stack: Stack,
) -> None:
    await stack.start(gateways=1)
    ann = await stack.connect(0, uid="ann")
    bob = await stack.connect(0, uid="bob")
    accepted = await ann.send_message("bob", [[["64 levels are fine"]]])

    for depth in (65, 1_000, 30_000):
        nested = "[" * depth + "]" * depth
        await ann.send_raw(
            f'{{"type":"send","id":"n{depth}","to":"bob","body":{nested}}}'
        )
        error = await ann.expect("error")
        assert error["code"] == ErrorCode.INVALID_FIELD
    # Deeper than the frame size limit allows: closed by the WebSocket layer.
    too_big = "[" * 100_000 + "]" * 100_000
    await ann.send_raw(f'{{"type":"send","id":"big","to":"bob","body":{too_big}}}')
    assert await ann.wait_closed() == CloseCode.MESSAGE_TOO_BIG

    # Numbers that standard decoders refuse (proto/rules.py) are refused; the rest pass
    # through byte for byte.
    carol = await stack.connect(0, uid="carol")
    for number in ("1e999999", "9" * 400, "-" + "9" * 400):
        await carol.send_raw(
            f'{{"type":"send","id":"x{len(number)}","to":"bob","body":{number}}}'
        )
        error = await carol.expect(lambda f: f.get("type") in ("sent", "error"))
        assert error["code"] == ErrorCode.INVALID_FIELD, error
    sent = await carol.send_message("bob", 123456789012345678901234567890)
    message = await bob.expect_message(mid=sent["mid"])
    assert message["body"] == 123456789012345678901234567890

    await bob.expect_message(mid=accepted["mid"])
    await assert_still_serving(stack)


async def test_a_flood_is_rate_limited_then_closed(stack: Stack) -> None:
    stack.settings.update({env.RATE_LIMIT_PER_S: "1", env.RATE_LIMIT_BURST: "10"})
    await stack.start(gateways=1)
    ann = await stack.connect(0, uid="ann")  # init takes one token
    bob = await stack.connect(0, uid="bob")
    sent = await ann.send_message("bob", "before the flood")

    for n in range(200):
        await ann.send_frame({"type": "send", "id": f"f{n}", "to": "bob", "body": n})
    limited = await ann.expect(
        lambda f: f.get("type") == "error" and f["code"] == ErrorCode.RATE_LIMITED
    )
    assert limited["id"].startswith("f")
    assert await ann.wait_closed() == CloseCode.RATE_LIMITED

    # Every frame answered sent before the close reaches bob.
    receipts = [f["mid"] for f in ann.received if f.get("type") == "sent"]
    assert sent["mid"] in receipts
    for mid in receipts:
        message = await bob.expect_message(mid=mid)
        await bob.ack(message["mid"])
    await assert_still_serving(stack)


async def test_connections_per_uid_are_limited_across_gateways(stack: Stack) -> None:
    stack.settings[env.MAX_CONNECTIONS_PER_UID] = "2"
    await stack.start(gateways=2)
    first = await stack.connect(0, uid="ann")
    await stack.connect(1, uid="ann")

    third = await stack.connect(1)
    await third.send_frame({"type": "init", "token": _token("ann")})
    error = await third.expect("error")
    assert error["code"] == ErrorCode.TOO_MANY_CONNECTIONS
    assert await third.wait_closed() == CloseCode.TOO_MANY_CONNECTIONS
    assert not [f for f in third.received if f.get("type") == "ready"]

    # The refused connection took no place: the two others still get messages, and once
    # one closes, a new connection fits.
    bob = await stack.connect(0, uid="bob")
    sent = await bob.send_message("ann", "to both devices")
    await first.expect_message(mid=sent["mid"])
    await first.close()
    await eventually(lambda: _fits(stack, "ann"), within_s=10)
    await assert_still_serving(stack, gateway=1)


async def _fits(stack: Stack, uid: str) -> bool | None:
    client = await stack.connect(0)
    await client.send_frame({"type": "init", "token": _token(uid)})
    reply = await client.expect(lambda f: f.get("type") in ("ready", "error"))
    if reply["type"] == "ready":
        return True
    await client.wait_closed()
    return None


def _token(uid: str) -> str:
    from tests.support.tokens import make_token

    return make_token(uid)


async def test_a_silent_handshake_is_closed_by_the_open_timeout(stack: Stack) -> None:
    await stack.start(gateways=1)
    gateway = stack.gateways[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        # Nothing sent: websockets' open_timeout (10 s) closes the TCP connection.
        async with asyncio.timeout(scaled(20)):
            assert await reader.read() == b""
    finally:
        writer.close()
    await assert_still_serving(stack)


async def test_origins_outside_the_allowlist_get_403(stack: Stack) -> None:
    allowed = "https://chat.example.com"
    stack.settings[env.ALLOWED_ORIGINS] = f"{allowed},http://localhost:3000"
    await stack.start(gateways=1)
    url = stack.gateways[0].url

    for origin in ("https://evil.example.com", None):
        with pytest.raises(InvalidStatus) as refused:
            await RawClient.open(url, origin=None if origin is None else Origin(origin))
        assert refused.value.response.status_code == 403
    await stack.gateways[0].process.wait_for_event("origin_refused")

    client = await RawClient.open(url, origin=Origin(allowed))
    stack.clients.append(client)
    await client.init(_token("ann"))


async def test_huge_and_malformed_commands_are_refused_never_redelivered(
    stack: Stack, backend: Backend
) -> None:
    stack.settings[env.MAX_COMMAND_BYTES] = "4096"
    await stack.start(gateways=1)
    ann = await stack.connect(0, uid="ann")
    accepted = await backend.call("send", {"to": "ann", "body": "before"})

    huge = {"to": "ann", "body": "x" * 100_000}
    reply = await backend.call("send", huge)
    assert reply["error"]["code"] == ErrorCode.TOO_LARGE
    nested = b'{"to": "ann", "body": ' + b"[" * 3000 + b"]" * 1000 + b"}"
    reply = await backend.call("send", nested)
    assert reply["error"]["code"] in (ErrorCode.TOO_LARGE, ErrorCode.INVALID_FIELD)

    # Without reply_to, it is dead-lettered, not redelivered forever.
    await backend.publish("send", b'{"to": "ann", "body": "' + b"y" * 10_000 + b'"}')
    dead = await backend.channel.get_queue(stack.names.dead_letter_queue, ensure=False)
    message = await eventually(lambda: dead.get(no_ack=True, fail=False))
    assert len(message.body) > 10_000

    await ann.expect_message(mid=accepted["mid"])
    after = await backend.call("send", {"to": "ann", "body": "still serving"})
    await ann.expect_message(mid=after["mid"])
    await assert_still_serving(stack)
