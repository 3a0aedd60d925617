"""The web chat page in headless Chromium (Playwright), served like ``make run`` serves it.

Each test starts a stack whose gateways use the development JWT secret, and the page's server
(``scripts/run_stack.py --web-only``) with its development token endpoint (tests/browser/
support.py, conftest.py). Screenshots go to test-artifacts/.
"""

import asyncio
import json
import urllib.error
import urllib.request

import asyncpg
import pytest
from playwright.async_api import expect

from proto.env import DEFAULT_POSTGRES_DSN
from tests.browser.support import (
    PHONE,
    Web,
    log_in,
    open_chat_with,
    received,
    screenshot,
    send,
    start_web_server,
    stop_web_server,
)
from tests.support.stack import Stack
from tests.support.timing import scaled

pytestmark = pytest.mark.integration


async def test_two_users_on_two_gateways_chat_both_ways(web: Web) -> None:
    alice = await log_in(web, "alice", 0)
    bob = await log_in(web, "bob", 1, viewport=PHONE)

    await open_chat_with(alice, "bob")
    await send(alice, "Hello Bob, this is Alice on gateway 1")
    unread = bob.locator('.conversation-item[data-key="user:alice"] .unread')
    await expect(unread).to_have_text("1")
    await bob.click('.conversation-item[data-key="user:alice"]')
    await expect(received(bob, "Hello Bob")).to_have_count(1)
    await expect(unread).to_have_text("")

    await send(bob, "Hi Alice! Bob here, on gateway 2")
    await expect(received(alice, "Bob here")).to_have_count(1)
    await send(alice, "Messages cross gateways both ways")
    await expect(received(bob, "cross gateways")).to_have_count(1)
    await screenshot(alice, "chat-desktop.png")
    await screenshot(bob, "chat-phone.png")


async def test_typing_shows_on_the_peers_page_and_is_never_stored(web: Web) -> None:
    alice = await log_in(web, "alice", 0)
    bob = await log_in(web, "bob", 1)
    await open_chat_with(alice, "bob")
    await open_chat_with(bob, "alice")

    await bob.type("#text", "I am writ")  # keystrokes, as a person types
    await expect(alice.locator("#typing")).to_have_text("bob is typing…")
    await send(bob, "I am writing back")
    await expect(received(alice, "writing back")).to_have_count(1)
    await expect(alice.locator("#typing")).to_have_text("")
    # Typing pings are transient: only the message is kept, and the pings are no entries.
    await expect(alice.locator(".message")).to_have_count(1)
    assert await rows_stored_for(web.stack, "alice") == 0


async def test_message_to_a_closed_window_shows_up_at_login(web: Web) -> None:
    alice = await log_in(web, "alice", 0)
    await open_chat_with(alice, "carol")
    await send(alice, "Carol, read this when you are back")

    carol = await log_in(web, "carol", 1)
    item = carol.locator('.conversation-item[data-key="user:alice"]')
    await expect(item.locator(".unread")).to_have_text("1")
    await item.click()
    await expect(received(carol, "when you are back")).to_have_count(1)
    await screenshot(carol, "chat-offline-replay.png")


async def rows_stored_for(stack: Stack, uid: str) -> int:
    connection = await asyncpg.connect(DEFAULT_POSTGRES_DSN, timeout=10)
    try:
        count: int = await connection.fetchval(
            f"SELECT count(*) FROM {stack.names.undelivered_table} WHERE uid = $1", uid
        )
        return count
    finally:
        await connection.close()


async def test_killed_gateway_page_reconnects_and_gets_the_message_once(
    web: Web,
) -> None:
    bob = await log_in(web, "bob", 0)
    alice = await log_in(web, "alice", 1)
    await open_chat_with(bob, "alice")
    await open_chat_with(alice, "bob")

    store = web.stack.stores[0]
    await web.stack.gateways[0].process.kill()
    # Sent at once: the router still counts bob on the dead gateway, so the message also
    # waits in that gateway's queue, reaches the offline store, and is replayed to bob.
    await send(alice, "sent during the outage")

    status = bob.locator("#status")
    await expect(status).to_have_attribute(
        "data-gateway", web.stack.gateways[1].url, timeout=scaled(10_000)
    )
    await expect(status).to_have_attribute("data-state", "ready")
    assert "reconnecting" in await bob.evaluate("window.shownStates")
    await expect(received(bob, "during the outage")).to_have_count(1)

    await store.wait_for_event("undelivered_stored", within_s=15)
    async with asyncio.timeout(scaled(15)):
        while await rows_stored_for(web.stack, "bob"):  # noqa: ASYNC110  # polling PostgreSQL
            await asyncio.sleep(0.1)
    # The stored copy was replayed to the page and acknowledged: still shown once.
    await expect(received(bob, "during the outage")).to_have_count(1)
    await send(bob, "got it once")
    await expect(received(alice, "got it once")).to_have_count(1)
    await screenshot(bob, "chat-after-failover.png")


def post_json(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


async def test_token_endpoint_refuses_a_real_secret() -> None:
    process, url = await start_web_server(["ws://127.0.0.1:1/ws"], "a-real-secret-" * 4)
    try:
        status, body = await asyncio.to_thread(
            post_json, url + "dev/token", {"uid": "eve"}
        )
        assert (status, body) == (403, {"error": "not_development_secret"})
        config = await asyncio.to_thread(get_json, url + "config.json")
        assert config["gateways"] == ["ws://127.0.0.1:1/ws"]
    finally:
        await stop_web_server(process)
