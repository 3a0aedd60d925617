"""The backend HTTP API of a gateway (``POST /api/<command>``), against real RabbitMQ.

The gateway runs as a process; the commands it publishes are answered either by a command
responder in this test (consuming the router's queue, like a router does) or by a real router.
"""

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from proto import env, envelopes
from proto.env import DEFAULT_AMQP_URL
from proto.logs import READY_EVENT
from proto.names import API_KEY_PREFIX, Names
from proto.schemagen import COMMAND_EXAMPLES, REPLIES, REPLY_EXAMPLES
from tests.support.processes import REPO_ROOT, run_until_exit
from tests.support.stack import Gateway, Stack, free_port
from tests.support.timing import scaled

pytestmark = pytest.mark.integration

API_KEY = "test-api-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
OPENAPI = REPO_ROOT / "proto" / "openapi.yaml"


def api_settings(**more: str) -> dict[str, str]:
    return {env.HTTP_PORT: str(free_port()), env.API_KEY: API_KEY, **more}


@dataclass
class Responder:
    """Answers ``api.*`` commands from the router's queue with canned replies, as a router would."""

    channel: AbstractChannel
    replies: dict[str, bytes] = field(default_factory=dict)
    """command -> reply body; a command missing here gets its documented example reply."""
    silent: set[str] = field(default_factory=set)
    """Commands left unanswered (to see the gateway's timeout)."""
    received: list[AbstractIncomingMessage] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_command(self, message: AbstractIncomingMessage) -> None:
        if not (message.routing_key or "").startswith(API_KEY_PREFIX):
            # The gateway's own envelopes (heartbeats), a router's job.
            await message.ack()
            return
        self.received.append(message)
        self._changed.set()
        command = (message.routing_key or "").removeprefix(API_KEY_PREFIX)
        if command not in self.silent and message.reply_to:
            await self.answer(message, self.reply_for(command))
        await message.ack()

    def reply_for(self, command: str) -> bytes:
        if command in self.replies:
            return self.replies[command]
        example = REPLY_EXAMPLES[REPLIES[command]][0]
        return json.dumps(example).encode()

    async def answer(self, message: AbstractIncomingMessage, reply: bytes) -> None:
        assert message.reply_to is not None
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                reply,
                content_type="application/json",
                correlation_id=message.correlation_id,
            ),
            message.reply_to,
        )

    async def next_command(self, within_s: float = 5.0) -> AbstractIncomingMessage:
        """The oldest command not yet taken by this method."""
        async with asyncio.timeout(scaled(within_s)):
            while not self.received:
                self._changed.clear()
                await self._changed.wait()
        return self.received.pop(0)


@asynccontextmanager
async def command_responder(names: Names) -> AsyncIterator[Responder]:
    connection = await aio_pika.connect(DEFAULT_AMQP_URL, timeout=scaled(10))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.router_queue, passive=True)
        responder = Responder(channel)
        await queue.consume(responder.on_command)
        yield responder


@asynccontextmanager
async def http_client(gateway: Gateway) -> AsyncIterator["ApiClient"]:
    timeout = aiohttp.ClientTimeout(total=scaled(15))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield ApiClient(session, f"http://127.0.0.1:{http_port(gateway)}")


def http_port(gateway: Gateway) -> int:
    (ready,) = [e for e in gateway.process.events if e.get("event") == READY_EVENT]
    port: int = ready["http_port"]
    return port


@dataclass
class ApiClient:
    session: aiohttp.ClientSession
    base_url: str

    async def post(
        self,
        command: str,
        body: bytes | Mapping[str, object],
        headers: Mapping[str, str] = AUTH,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(
            f"{self.base_url}/api/{command}", data=payload, headers=headers
        ) as response:
            return response.status, await response.read(), response.headers

    async def error_code(
        self, command: str, body: bytes | Mapping[str, object], status: int, **kw: Any
    ) -> str:
        got, reply, headers = await self.post(command, body, **kw)
        assert got == status, reply
        assert headers["Content-Type"].startswith("application/json")
        code: str = json.loads(reply)["error"]["code"]
        return code


@pytest.fixture
async def gateway(stack: Stack) -> Gateway:
    return await stack.start_gateway(**api_settings())


@pytest.fixture
async def responder(stack: Stack, gateway: Gateway) -> AsyncIterator[Responder]:
    async with command_responder(stack.names) as service:
        yield service


@pytest.fixture
async def api(gateway: Gateway) -> AsyncIterator[ApiClient]:
    async with http_client(gateway) as client:
        yield client


# --- against a real router --------------------------------------------------------------


@pytest.fixture
async def routed(stack: Stack) -> AsyncIterator[ApiClient]:
    """The HTTP API of a gateway in a whole stack: commands are carried out by a router."""
    stack.settings.update(api_settings())
    await stack.start(gateways=1)
    async with http_client(stack.gateways[0]) as client:
        yield client


async def test_commands_are_carried_out_by_the_router(
    stack: Stack, routed: ApiClient
) -> None:
    ann = await stack.connect(uid="ann")
    status, reply, _ = await routed.post("presence", {"uids": ["ann", "bob"]})
    assert (status, json.loads(reply)) == (200, {"online": ["ann"]})
    status, reply, _ = await routed.post(
        "send", {"to": "ann", "body": {"text": "hi"}, "from": "ops"}
    )
    assert status == 200
    mid = json.loads(reply)["mid"]
    message = await ann.expect_message(mid=mid)
    assert message["body"] == {"text": "hi"}
    status, reply, _ = await routed.post("connections", {"uid": "ann"})
    assert status == 200
    assert [c["conn_id"] for c in json.loads(reply)["connections"]] == [ann.conn_id]
    status, reply, _ = await routed.post("group.add", {"group": "g", "uids": ["ann"]})
    assert (status, json.loads(reply)) == (200, {"ok": True})
    status, reply, _ = await routed.post(
        "group.remove", {"group": "g", "uids": ["ann"]}
    )
    assert (status, json.loads(reply)) == (200, {"ok": True})
    status, reply, _ = await routed.post("broadcast", {"body": "all"})
    assert status == 200
    await ann.expect_message(mid=json.loads(reply)["mid"], body="all")
    status, reply, _ = await routed.post("room.count", {"room": "lobby"})
    assert (status, json.loads(reply)) == (200, {"count": 0})
    status, reply, _ = await routed.post("kick", {"uid": "ann"})
    assert (status, json.loads(reply)) == (200, {"kicked": 1})


async def test_a_command_the_router_refuses_is_400(routed: ApiClient) -> None:
    # Valid in shape, so the gateway publishes it; the router refuses a send to nobody.
    status, reply, _ = await routed.post("send", {"body": "to whom?"})
    assert status == 400, reply
    assert json.loads(reply)["error"]["code"] == "invalid_field"


async def test_a_send_to_a_list_of_uids_answers_each_mid(
    stack: Stack, routed: ApiClient
) -> None:
    ann = await stack.connect(uid="ann")
    bob = await stack.connect(uid="bob")

    status, reply, _ = await routed.post(
        "send", {"to": ["ann", "bob"], "body": "hi", "from": "ops", "id": "n-1"}
    )

    assert status == 200, reply
    mids = json.loads(reply)["mids"]
    assert sorted(mids) == ["ann", "bob"]
    for uid, client in (("ann", ann), ("bob", bob)):
        message = await client.expect_message(mid=mids[uid])
        assert (message["to"], message["from"], message["body"]) == (uid, "ops", "hi")
    status, again, _ = await routed.post(
        "send", {"to": ["ann", "bob"], "body": "hi", "from": "ops", "id": "n-1"}
    )
    assert (status, json.loads(again)) == (200, {"mids": mids})
    status, refused, _ = await routed.post(
        "send", {"to": ["ann", "not a uid"], "body": "hi"}
    )
    assert status == 400, refused
    assert json.loads(refused)["error"]["code"] == "invalid_field"


# --- the edge: nothing is published -----------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789abcdef"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": API_KEY},
    ],
)
async def test_without_the_key_the_answer_is_401(
    api: ApiClient, headers: dict[str, str]
) -> None:
    status, reply, response_headers = await api.post(
        "connections", {"uid": "ann"}, headers=headers
    )
    assert status == 401
    assert json.loads(reply)["error"]["code"] == "unauthorized"
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    assert API_KEY.encode() not in reply


async def test_the_key_never_reaches_the_logs(api: ApiClient, gateway: Gateway) -> None:
    await api.post("connections", {"uid": "ann"})
    await api.post("connections", {"uid": "ann"}, headers={"Authorization": "x"})
    await gateway.process.wait_for_event("command_answered", status=401)
    assert API_KEY not in gateway.process.output()


async def test_an_unknown_command_is_404(api: ApiClient) -> None:
    assert await api.error_code("frobnicate", {}, 404) == "unknown_command"
    assert await api.error_code("api.send", {}, 404) == "unknown_command"


async def test_only_post_is_allowed(api: ApiClient) -> None:
    async with api.session.get(f"{api.base_url}/api/presence", headers=AUTH) as got:
        assert got.status == 405
        assert got.headers["Allow"] == "POST"
        assert (await got.json())["error"]["code"] == "method_not_allowed"


async def test_bad_bodies_are_400_and_never_published(
    api: ApiClient, responder: Responder
) -> None:
    assert await api.error_code("presence", b"{not json", 400) == "invalid_json"
    assert await api.error_code("presence", b"\xff\xfe", 400) == "invalid_json"
    status, reply, _ = await api.post("presence", {"uids": ["ann", 7]})
    assert status == 400
    error = json.loads(reply)["error"]
    assert error["code"] == "invalid_field"
    assert "$.uids[1]" in error["message"]
    assert await api.error_code("send", {"to": "ann"}, 400) == "invalid_field"
    assert await api.error_code("kick", b"[]", 400) == "invalid_field"
    # The first command the responder sees is the first valid one: nothing before it was sent.
    status, _, _ = await api.post("room.count", {"room": "lobby"})
    assert status == 200
    first = await responder.next_command()
    assert first.routing_key == "api.room.count"


async def test_a_body_over_the_limit_is_413(stack: Stack) -> None:
    gateway = await stack.start_gateway(**api_settings(**{env.MAX_FRAME_BYTES: "1024"}))
    async with http_client(gateway) as api:
        body = {"uids": ["u" * 100] * 10}
        assert await api.error_code("presence", body, 413) == "too_large"

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"uids": ['
            for _ in range(20):
                yield b'"' + b"u" * 100 + b'",'
            yield b'"u"]}'

        # Without Content-Length (chunked), the limit holds as the body is read.
        async with api.session.post(
            f"{api.base_url}/api/presence", data=chunks(), headers=AUTH
        ) as response:
            assert response.status == 413


# --- commands and replies ---------------------------------------------------------------


async def test_a_command_is_published_as_the_amqp_command_and_its_reply_passed_through(
    stack: Stack, api: ApiClient, responder: Responder
) -> None:
    body = b'{ "to": "ann",  "body": {"text": "hi", "n": 1.50}, "id": "c-1" }'
    responder.replies["send"] = b'{"mid": "018bcfe568000000abcdef0123",  "extra": 1}'
    status, reply, headers = await api.post("send", body)
    assert status == 200
    assert reply == b'{"mid": "018bcfe568000000abcdef0123",  "extra": 1}'
    assert headers["Content-Type"].startswith("application/json")
    command = await responder.next_command()
    assert command.routing_key == "api.send"
    assert command.exchange == stack.names.inbound_exchange
    assert command.body == body
    assert command.content_type == "application/json"
    assert command.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert command.reply_to
    assert command.correlation_id


async def test_every_command_gets_its_reply(
    api: ApiClient, responder: Responder
) -> None:
    for command in envelopes.COMMANDS:
        for example in COMMAND_EXAMPLES[command]:
            status, reply, _ = await api.post(command, json.dumps(example).encode())
            assert status == 200, (command, reply)
            assert reply == responder.reply_for(command)
            assert (await responder.next_command()).routing_key == f"api.{command}"


async def test_concurrent_commands_get_their_own_replies(
    api: ApiClient, responder: Responder
) -> None:
    # The responder answers each presence query with the uids it was asked about.
    async def echo(message: AbstractIncomingMessage) -> None:
        asked = json.loads(message.body)["uids"]
        await responder.answer(message, json.dumps({"online": asked}).encode())

    responder.silent.add("presence")
    requests = [api.post("presence", {"uids": [f"u{i}"]}) for i in range(20)]
    answered = asyncio.gather(*requests)
    await answer_all(responder, echo, len(requests))
    results = await answered
    for index, (status, reply, _) in enumerate(results):
        assert status == 200
        assert json.loads(reply) == {"online": [f"u{index}"]}


async def answer_all(
    responder: Responder,
    echo: Callable[[AbstractIncomingMessage], Awaitable[None]],
    count: int,
) -> None:
    for _ in range(count):
        message = await responder.next_command()
        await echo(message)


async def test_an_error_reply_is_400_byte_for_byte(
    api: ApiClient, responder: Responder
) -> None:
    refusal = b'{"error":{"code":"not_member","message":"ann is not in team"}}'
    responder.replies["send"] = refusal
    status, reply, _ = await api.post("send", {"group": "team", "body": 1})
    assert status == 400
    assert reply == refusal


async def test_no_reply_in_time_is_504_and_a_late_reply_is_dropped(
    stack: Stack,
) -> None:
    gateway = await stack.start_gateway(
        **api_settings(**{env.COMMAND_TIMEOUT_S: "0.3"})
    )
    async with command_responder(stack.names) as responder, http_client(gateway) as api:
        responder.silent.add("kick")
        assert await api.error_code("kick", {"uid": "ann"}, 504) == "unavailable"
        late = await responder.next_command()
        await responder.answer(late, b'{"kicked": 1}')
        await gateway.process.wait_for_event("command_reply_dropped")
        # The API goes on serving.
        status, reply, _ = await api.post("room.count", {"room": "r"})
        assert (status, json.loads(reply)) == (200, {"count": 42})


async def test_a_command_the_broker_cannot_route_is_503(stack: Stack) -> None:
    gateway = await stack.start_gateway(**api_settings())
    connection = await aio_pika.connect(DEFAULT_AMQP_URL, timeout=scaled(10))
    async with connection, http_client(gateway) as api:
        channel = await connection.channel()
        # Without the router's queue, api.* matches no binding: the mandatory publish returns.
        await channel.queue_delete(stack.names.router_queue)
        assert await api.error_code("presence", {"uids": []}, 503) == "unavailable"
        await gateway.process.wait_for_event("command_publish_failed")


async def test_on_sigterm_a_command_in_flight_still_gets_its_reply(
    stack: Stack,
) -> None:
    gateway = await stack.start_gateway(**api_settings())
    async with command_responder(stack.names) as responder, http_client(gateway) as api:
        responder.silent.add("kick")
        request = asyncio.create_task(api.post("kick", {"uid": "ann"}))
        in_flight = await responder.next_command()
        gateway.process.process.send_signal(signal.SIGTERM)
        await gateway.process.wait_for_event("shutdown_started")
        await responder.answer(in_flight, b'{"kicked": 1}')
        status, reply, _ = await request
        assert (status, reply) == (200, b'{"kicked": 1}')
        assert await gateway.process.wait_exit() == 0


# --- settings and startup ---------------------------------------------------------------


async def test_an_http_port_without_an_api_key_is_a_settings_error(
    stack: Stack,
) -> None:
    code, _, stderr = await run_until_exit(
        "gateway", stack.env(**{env.HTTP_PORT: str(free_port()), env.API_KEY: ""})
    )
    assert code == 2
    assert env.API_KEY in stderr


async def test_the_api_uses_its_own_amqp_url(stack: Stack) -> None:
    unreachable = "amqp://api:hunter2-secret@127.0.0.1:1/"
    code, _, stderr = await run_until_exit(
        "gateway", stack.env(**api_settings(**{env.API_AMQP_URL: unreachable}))
    )
    assert code == 1
    assert "127.0.0.1:1" in stderr
    assert "hunter2-secret" not in stderr


async def test_without_an_http_port_there_is_no_http_api(stack: Stack) -> None:
    gateway = await stack.start_gateway()
    (ready,) = [e for e in gateway.process.events if e.get("event") == READY_EVENT]
    assert ready["http_port"] is None


# --- the OpenAPI document against the running server ----------------------------------------


async def test_schemathesis_finds_the_server_true_to_its_document(
    api: ApiClient, responder: Responder, tmp_path: Path
) -> None:
    """Every operation, with the responder's documented example replies."""
    await run_schemathesis(api.base_url, tmp_path)


async def test_schemathesis_finds_the_router_replies_true_to_the_document(
    routed: ApiClient, tmp_path: Path
) -> None:
    """Every operation, with the real router's replies and refusals."""
    await run_schemathesis(routed.base_url, tmp_path)


async def run_schemathesis(base_url: str, report_dir: Path) -> None:
    """Run ``schemathesis run`` with every check, a bounded number of cases and a fixed seed."""
    schemathesis = Path(sys.executable).parent / "schemathesis"
    process = await asyncio.create_subprocess_exec(
        str(schemathesis),
        "run",
        str(OPENAPI),
        "--url",
        base_url,
        "--header",
        f"Authorization: Bearer {API_KEY}",
        "--checks",
        "all",
        "--max-examples",
        "25",
        "--seed",
        "20240601",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report-dir",
        str(report_dir),
        "--no-color",
        cwd=report_dir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(scaled(90)):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode(errors="replace")
