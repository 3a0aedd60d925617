"""One RabbitMQ user per role, as ``python -m proto.definitions`` defines them, on a real broker.

Each test imports the generated definitions into a vhost of its own (with passwords set, as an
operator would after the import), runs the services with their own role's credentials, and
checks that what a role does works and that what it must not do is refused by the broker.
The vhost and the users are deleted afterwards.
"""

import asyncio
import base64
import hashlib
import json
import os
import secrets
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import aio_pika
import aiohttp
import aiormq
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel

from proto import definitions, env
from proto.definitions import BACKEND, GATEWAY, MONITOR, ROLES, ROUTER, STORE
from proto.names import KEY_HANDOVER, KEY_REPLAY, KEY_SEND, Names, api_key
from tests.support.processes import run_until_exit
from tests.support.stack import Stack, free_port
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration

API_KEY = "test-api-key-0123456789abcdef"


def password_hash(password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()


@dataclass
class Users:
    """The role users of one namespace on a vhost of their own."""

    names: Names
    vhost: str
    passwords: dict[str, str]

    def url(self, role: str) -> str:
        user = definitions.user_name(self.names, role)
        vhost = quote(self.vhost, safe="")
        return f"amqp://{user}:{self.passwords[role]}@127.0.0.1:5672/{vhost}"


@pytest.fixture
async def users(stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[Users]:
    """The role users; parametrized (indirectly) with whether history is on."""
    history: bool = getattr(request, "param", False)
    names = stack.names
    vhost = f"{names.namespace}-vhost"
    passwords = {role: secrets.token_hex(16) for role in ROLES}
    document = definitions.definitions(names, vhost, "quorum", history)
    for user in document["users"]:
        role = user["name"].removeprefix(f"{names.namespace}-")
        user["password_hash"] = password_hash(passwords[role])
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(document, file)
    os.chmod(file.name, 0o644)  # the broker's node reads it, as its own user
    try:
        await rabbitmqctl("import_definitions", file.name)
    finally:
        os.unlink(file.name)
    found = Users(names, vhost, passwords)

    async def monitor_connects() -> bool | None:
        # The import runs on after rabbitmqctl returns.
        try:
            connection = await aio_pika.connect(found.url(MONITOR), timeout=2)
        except Exception:
            return None
        await connection.close()
        return True

    problems: list[str] = []
    try:
        await eventually(monitor_connects, within_s=20)
        stack.settings.update(
            {
                env.QUEUE_TYPE: "quorum",
                env.API_AMQP_URL: found.url(BACKEND),
                env.HISTORY: "on" if history else "off",
            }
        )
        yield found
    finally:
        # The services stop before their vhost goes (the stack's own teardown finds them
        # stopped).
        problems = await stack.close()
        await rabbitmqctl("delete_vhost", vhost)
        for role in ROLES:
            await rabbitmqctl("delete_user", definitions.user_name(names, role))
    assert not problems, f"{problems}\n{stack.output()}"


async def start_stack(stack: Stack, users: Users) -> int:
    """A router, an offline store and two gateways, each with its own role's user; the first
    gateway serves the HTTP API with the backend's user."""
    await asyncio.gather(
        stack.start_router(**{env.AMQP_URL: users.url(ROUTER)}),
        stack.start_store(**{env.AMQP_URL: users.url(STORE)}),
    )
    gateway = {env.AMQP_URL: users.url(GATEWAY)}
    http_port = free_port()
    await stack.start_gateway(
        **gateway, **{env.HTTP_PORT: str(http_port), env.API_KEY: API_KEY}
    )
    await stack.start_gateway(**gateway)
    return http_port


async def refused(
    url: str, action: Callable[[AbstractChannel], Awaitable[object]]
) -> None:
    """``action`` on a fresh channel of ``url``'s user is refused by the broker (403)."""
    connection = await aio_pika.connect(url, timeout=scaled(5))
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            async with asyncio.timeout(scaled(5)):
                await action(channel)
    finally:
        await connection.close()


async def allowed(
    url: str, action: Callable[[AbstractChannel], Awaitable[object]]
) -> None:
    connection = await aio_pika.connect(url, timeout=scaled(5))
    try:
        async with asyncio.timeout(scaled(5)):
            await action(await connection.channel())
    finally:
        await connection.close()


def publish(
    exchange: str, routing_key: str
) -> Callable[[AbstractChannel], Awaitable[object]]:
    async def act(channel: AbstractChannel) -> object:
        target = (
            await channel.get_exchange(exchange, ensure=False)
            if exchange
            else channel.default_exchange
        )
        return await target.publish(aio_pika.Message(b"{}"), routing_key)

    return act


def declare_queue(name: str) -> Callable[[AbstractChannel], Awaitable[object]]:
    async def act(channel: AbstractChannel) -> object:
        return await channel.declare_queue(name, durable=True)

    return act


def bind_own_queue(
    queue: str, exchange: str, routing_key: str
) -> Callable[[AbstractChannel], Awaitable[object]]:
    """Bind a queue the user may declare to ``exchange``: reading what goes through it."""

    async def act(channel: AbstractChannel) -> object:
        declared = await channel.declare_queue(queue, auto_delete=True)
        return await declared.bind(exchange, routing_key)

    return act


def consume(name: str) -> Callable[[AbstractChannel], Awaitable[object]]:
    async def act(channel: AbstractChannel) -> object:
        queue = await channel.declare_queue(name, passive=True)
        return await queue.get(fail=False)

    return act


@pytest.mark.parametrize(
    "users", [False, True], indirect=True, ids=["history-off", "history-on"]
)
async def test_each_role_does_its_part_of_a_chat_with_its_own_user(
    stack: Stack, users: Users
) -> None:
    port = await start_stack(stack, users)
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    # Gateway -> router -> the other gateway's queue.
    sent = await alice.send_message("bob", {"text": "hi"})
    message = await bob.expect_message(mid=sent["mid"])
    await bob.ack(message["mid"])
    # Router -> offline store; the store replays to the next login (deliveries exchange).
    later = await alice.send_message("carol", {"text": "later"})
    await eventually(lambda: _stored(stack, "carol", later["mid"]), within_s=10)
    carol = await stack.connect(1, uid="carol")
    await carol.expect_message(mid=later["mid"])
    # A backend command through the HTTP API, answered by the router (the default exchange).
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/api/send",
            json={"to": "bob", "body": {"text": "from the backend"}},
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        mid = (await response.json())["mid"]
    await bob.expect_message(mid=mid)


async def _stored(stack: Stack, uid: str, mid: str) -> bool | None:
    """The offline store holds ``mid`` for ``uid``: in its inbox with history on (routers hand
    every message to the stores), else with the undelivered rows."""
    if stack.settings[env.HISTORY] == "off":
        return True if mid in await stack.stored_mids(uid) else None
    pg = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=scaled(10))
    try:
        found = await pg.fetchval(
            f"SELECT count(*) FROM {stack.names.inbox_table} WHERE uid = $1 AND mid = $2",
            uid,
            mid,
        )
    finally:
        await pg.close()
    return True if found else None


async def test_a_gateways_user_is_refused_all_but_its_own_part(
    stack: Stack, users: Users
) -> None:
    """Another gateway's queue is not among the refusals: every gateway shares one user, and
    its queues one pattern (docs/operations.md, "RabbitMQ users and permissions")."""
    names, url = users.names, users.url(GATEWAY)
    await stack.start_gateway(**{env.AMQP_URL: url})
    await refused(url, publish(names.inbound_exchange, api_key("send")))
    await refused(url, publish(names.inbound_exchange, KEY_REPLAY))
    await refused(url, publish(names.inbound_exchange, "store.saved"))
    await refused(url, publish(names.deliveries_exchange, stack.gateway_ids[0]))
    await refused(url, publish(names.undeliverable_exchange, ""))
    await refused(url, publish(names.events_exchange, "user.online"))
    await refused(url, publish("", names.router_queue))
    await refused(url, declare_queue(names.router_queue))
    await refused(url, declare_queue(f"{names.namespace}.other"))
    await refused(url, consume(names.router_queue))
    await refused(url, consume(names.offline_queue))
    # Listening in: every frame of every gateway, the backends' events.
    own = names.gateway_queue("listener")
    await refused(url, bind_own_queue(own, names.inbound_exchange, "#"))
    await refused(url, bind_own_queue(own, names.events_exchange, "#"))
    # Its own part: frames to the routers, the handover to the offline store.
    await allowed(url, publish(names.inbound_exchange, KEY_SEND))
    await allowed(url, publish(names.inbound_exchange, KEY_HANDOVER))


async def test_a_gateway_that_may_not_declare_what_is_missing_exits_2_with_one_line(
    stack: Stack, users: Users
) -> None:
    # As after an upgrade that adds a shared queue, before its definitions were imported.
    names = users.names
    connection = await aio_pika.connect(users.url(ROUTER), timeout=scaled(5))
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(names.router_queue)
    code, stdout, stderr = await run_until_exit(
        "gateway", stack.env(**{env.AMQP_URL: users.url(GATEWAY)})
    )
    assert code == 2, stderr
    (line,) = stderr.strip().splitlines()
    assert env.AMQP_URL in line
    assert "ACCESS_REFUSED" in line
    assert "k8s/rabbitmq/definitions.json" in line
    assert users.passwords[GATEWAY] not in stdout + stderr
    assert "service_ready" not in stdout


async def test_backends_and_the_monitor_are_refused_the_services_part(
    stack: Stack, users: Users
) -> None:
    names = users.names
    backend, monitor = users.url(BACKEND), users.url(MONITOR)
    await refused(backend, publish(names.inbound_exchange, KEY_SEND))
    await refused(backend, publish(names.deliveries_exchange, "gw"))
    await refused(backend, consume(names.router_queue))
    await refused(backend, declare_queue(names.gateway_queue("gw")))
    await allowed(backend, publish(names.inbound_exchange, api_key("online")))
    await allowed(backend, declare_queue(f"{names.namespace}.backend.events"))
    await allowed(
        monitor,
        lambda channel: channel.declare_queue(names.router_queue, passive=True),
    )
    await refused(monitor, publish(names.inbound_exchange, api_key("send")))
    await refused(monitor, consume(names.router_queue))
