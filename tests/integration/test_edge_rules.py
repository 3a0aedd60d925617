"""The edge rules of proto/rules.py from outside: names and bodies that break them are refused
with ``invalid_field`` (logged and counted) at the gateway and at the router, for clients and
backends alike, while an innocent pair on the same gateways keeps chatting and loses nothing.
"""

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from proto import env, metrics
from proto.codes import CloseCode, ErrorCode
from proto.env import DEFAULT_REDIS_URL
from tests.integration.test_observability import grows, scrape
from tests.support.api import Backend
from tests.support.clients import RawClient
from tests.support.stack import Stack, free_port
from tests.support.timing import scaled
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration

API_KEY = "edge-rules-api-key-0123456789"
BAD_UIDS = ["x\u0000y", "acme:bob", "a b", "room*", "bob\n", "\u0430lice"]
DEEP_BODY = b"[" * 996 + b"]" * 996
LONG_NUMBER = b"1" * 10_000


@dataclass(frozen=True)
class Ports:
    router: int
    gw1: int
    gw2: int
    http: int
    """The first gateway's HTTP API."""


async def start_measured_stack(stack: Stack) -> Ports:
    """A router, a store and two gateways with metrics; the first one serves the HTTP API."""
    ports = Ports(free_port(), free_port(), free_port(), free_port())
    await asyncio.gather(
        stack.start_router(**{env.METRICS_PORT: str(ports.router)}),
        stack.start_store(),
    )
    await stack.start_gateway(
        **{
            env.METRICS_PORT: str(ports.gw1),
            env.HTTP_PORT: str(ports.http),
            env.API_KEY: API_KEY,
        }
    )
    await stack.start_gateway(**{env.METRICS_PORT: str(ports.gw2)})
    return ports


async def http_command(port: int, command: str, body: bytes) -> tuple[int, Any]:
    timeout = aiohttp.ClientTimeout(total=scaled(10))
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(
            f"http://127.0.0.1:{port}/api/{command}",
            data=body,
            headers={
                "Authorization": f"Bearer {API_KEY}",
                "Content-Type": "application/json",
            },
        ) as response,
    ):
        return response.status, await response.json()


def is_answer_to(client_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("id") == client_id


class Chat:
    """An innocent pair across the two gateways: each message must arrive, promptly."""

    def __init__(self, sender: RawClient, receiver: RawClient, to: str) -> None:
        self.sender = sender
        self.receiver = receiver
        self.to = to
        self.count = 0

    async def exchange(self) -> None:
        self.count += 1
        sent = await self.sender.send_message(self.to, {"n": self.count})
        message = await self.receiver.expect_message(mid=sent["mid"], within_s=5)
        assert message["body"] == {"n": self.count}
        await self.receiver.ack(message["mid"])


async def test_bad_names_are_refused_everywhere_and_the_offline_recipient_loses_nothing(
    stack: Stack, backend: Backend
) -> None:
    stack.settings[env.RATE_LIMIT_PER_S] = "1000"
    stack.settings[env.RATE_LIMIT_BURST] = "1000"
    ports = await start_measured_stack(stack)
    alice = await stack.connect(0, uid="alice")
    mallory = await stack.connect(1, uid="mallory")
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    chat = Chat(ann, ben, "ben")
    before = {port: await scrape(port) for port in (ports.router, ports.gw1, ports.gw2)}

    async def alice_sends() -> list[str]:
        # To carol, who is offline: every one goes to the offline store.
        mids = []
        for n in range(40):
            sent = await alice.send_message("carol", {"n": n}, client_id=f"a{n}")
            mids.append(sent["mid"])
        return mids

    async def mallory_abuses() -> list[dict[str, Any]]:
        errors = []
        for n, uid in enumerate(BAD_UIDS * 3):
            frame = {"type": "send", "id": f"m{n}", "to": uid, "body": n}
            await mallory.send_frame(frame)
            errors.append(await mallory.expect(is_answer_to(f"m{n}")))
        return errors

    alice_mids, errors = await asyncio.gather(alice_sends(), mallory_abuses())
    await chat.exchange()
    assert {(e["type"], e["code"]) for e in errors} == {
        ("error", ErrorCode.INVALID_FIELD)
    }
    assert all("$.to" in e["message"] for e in errors)
    # Every other place a name enters: rooms, groups, presence, client ids, acks.
    frames: list[tuple[dict[str, Any], str]] = [
        ({"type": "join", "id": "j1", "room": "live\u0000"}, "$.room"),
        ({"type": "send", "id": "g1", "group": "team:a", "body": 1}, "$.group"),
        ({"type": "presence", "id": "p1", "uids": ["ok", "a b"]}, "$.uids[1]"),
        ({"type": "send", "id": "bob:c1", "to": "ben", "body": 1}, "$.id"),
        ({"type": "ack", "mids": ["\u0000"]}, "$.mids[0]"),
    ]
    for frame, path in frames:
        await mallory.send_frame(frame)
        error = await mallory.expect("error")
        assert (error["code"], path in error["message"]) == (
            ErrorCode.INVALID_FIELD,
            True,
        ), error
    await stack.gateways[1].process.wait_for_event(
        "frame_rejected", code=ErrorCode.INVALID_FIELD
    )
    await grows(
        ports.gw2,
        metrics.ERRORS_TOTAL,
        before[ports.gw2],
        by=len(errors) + 5,
        code=ErrorCode.INVALID_FIELD,
    )

    # A token whose sub breaks the rule is refused at init.
    for uid in ("x\u0000y", "acme:bob"):
        intruder = await stack.connect(0)
        await intruder.send_frame({"type": "init", "token": make_token(uid)})
        error = await intruder.expect("error")
        assert error["code"] == ErrorCode.INVALID_TOKEN
        assert await intruder.wait_closed() == CloseCode.INVALID_TOKEN

    # Backends: over AMQP (the router refuses, the offline store a group command) and over
    # HTTP (the gateway refuses).
    commands: list[tuple[str, dict[str, Any], str]] = [
        ("send", {"to": "x\u0000y", "body": 1}, "$.to"),
        ("send", {"to": "carol", "from": "sys:tem", "body": 1}, "$.from"),
        ("group.add", {"group": "team", "uids": ["ok", "n\u0000"]}, "$.uids[1]"),
        ("kick", {"uid": "bob\n"}, "$.uid"),
    ]
    for command, body, path in commands:
        reply = await backend.call(command, body)
        assert reply["error"]["code"] == ErrorCode.INVALID_FIELD
        assert path in reply["error"]["message"]
        status, answer = await http_command(
            ports.http, command, json.dumps(body).encode()
        )
        assert (status, answer["error"]["code"]) == (400, ErrorCode.INVALID_FIELD)
        assert path in answer["error"]["message"]
    await stack.routers[0].wait_for_event("command_rejected", code="invalid_field")
    await stack.stores[0].wait_for_event(
        "command_rejected", code="invalid_field", routing_key="api.group.add"
    )
    await grows(
        ports.router,
        metrics.ERRORS_TOTAL,
        before[ports.router],
        by=3,
        code=ErrorCode.INVALID_FIELD,
    )
    await grows(  # the HTTP commands
        ports.gw1,
        metrics.ERRORS_TOTAL,
        before[ports.gw1],
        by=4,
        code=ErrorCode.INVALID_FIELD,
    )
    await chat.exchange()

    # carol logs in: all 40 of alice's messages wait for her, none went to the dead letters.
    carol = await stack.connect(1, uid="carol")
    received = [await carol.expect_message(within_s=15) for _ in alice_mids]
    assert sorted(m["mid"] for m in received) == sorted(alice_mids)
    await chat.exchange()
    for router in stack.routers:
        assert router.is_running


async def test_a_user_called_system_and_a_backend_send_never_share_an_id(
    stack: Stack, backend: Backend
) -> None:
    await stack.start(gateways=2)
    system = await stack.connect(0, uid="system")
    bob = await stack.connect(1, uid="bob")

    # The same id from the user "system" and from a backend (whose default from is "system").
    by_user = await system.send_message("bob", "from the user", client_id="x1")
    by_backend = await backend.call("send", {"to": "bob", "id": "x1", "body": "api"})
    assert by_backend["mid"] != by_user["mid"]
    first = await bob.expect_message(mid=by_user["mid"])
    second = await bob.expect_message(mid=by_backend["mid"])
    assert (first["body"], second["body"]) == ("from the user", "api")

    # Each one's retry is still recognised in its own keyspace.
    again = await backend.call("send", {"to": "bob", "id": "x1", "body": "api"})
    assert again["mid"] == by_backend["mid"]
    await bob.ack(first["mid"], second["mid"])
    await bob.expect_nothing("message", for_s=0.5)


async def test_dedup_keys_per_uid_stay_bounded(stack: Stack) -> None:
    stack.settings[env.RATE_LIMIT_PER_S] = "1000"
    stack.settings[env.RATE_LIMIT_BURST] = "1000"
    await stack.start(gateways=2)
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    mids = [
        (await ann.send_message("ben", n, client_id=f"c{n}"))["mid"] for n in range(60)
    ]
    for mid in mids:
        await ben.expect_message(mid=mid)
    await ben.ack(*mids)
    # A retry of the first is still dropped.
    await ann.send_message("ben", 0, client_id="c0")
    await ben.expect_nothing("message", for_s=0.5)

    client = redis.Redis.from_url(DEFAULT_REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{stack.namespace}:dedup:*")]
    finally:
        await client.aclose()
    # One hash per uid and window, however many ids (one key per id before).
    assert 1 <= len(keys) <= 2, keys


async def test_bodies_decoders_refuse_are_refused_for_clients_and_backends(
    stack: Stack, backend: Backend
) -> None:
    ports = await start_measured_stack(stack)
    ann = await stack.connect(0, uid="ann")
    ben = await stack.connect(1, uid="ben")
    mallory = await stack.connect(0, uid="mallory")
    chat = Chat(ann, ben, "ben")
    await chat.exchange()
    before = {port: await scrape(port) for port in (ports.router, ports.gw1)}

    bodies = [LONG_NUMBER, DEEP_BODY, b'{"n":[1,-1E+999]}']
    for n, body in enumerate(bodies):
        frame = b'{"type":"send","id":"b%d","to":"ben","body":%s}' % (n, body)
        await mallory.send_raw(frame.decode())
        error = await mallory.expect("error")
        assert error["code"] == ErrorCode.INVALID_FIELD, error
        assert "$.body" in error["message"]
        await chat.exchange()

        command = b'{"to":"ben","body":%s}' % body
        reply = await backend.call("send", command)
        assert reply["error"]["code"] == ErrorCode.INVALID_FIELD, reply
        assert "$.body" in reply["error"]["message"]
        broadcast = await backend.call("broadcast", b'{"body":%s}' % body)
        assert broadcast["error"]["code"] == ErrorCode.INVALID_FIELD
        status, answer = await http_command(ports.http, "send", command)
        assert (status, answer["error"]["code"]) == (400, ErrorCode.INVALID_FIELD)
        await chat.exchange()

    # Refused without a reply_to: dead-lettered once, never delivered.
    await backend.publish("send", b'{"to":"ben","body":%s}' % DEEP_BODY)
    await stack.routers[0].wait_for_event("command_rejected", replied=False)
    await chat.exchange()
    await ben.expect_nothing("message", for_s=0.5)
    await grows(
        ports.router,
        metrics.ERRORS_TOTAL,
        before[ports.router],
        by=2 * len(bodies) + 1,
        code=ErrorCode.INVALID_FIELD,
    )
    await grows(
        ports.gw1,
        metrics.ERRORS_TOTAL,
        before[ports.gw1],
        by=2 * len(bodies),
        code=ErrorCode.INVALID_FIELD,
    )
    for process in stack.processes:
        assert process.is_running, process.name
