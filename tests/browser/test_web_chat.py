"""The web chat page in headless Chromium (Playwright), served like ``make run`` serves it.

Each test starts a stack whose gateways use the development JWT secret, and the page's server
(``scripts/run_stack.py --web-only``) with its development token endpoint. Screenshots go to
test-artifacts/. Chromium comes from Debian (``make browser-deps``); Playwright never downloads one.
"""

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import (
    Browser,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from proto import env
from proto.env import DEFAULT_POSTGRES_DSN
from tests.support.processes import REPO_ROOT
from tests.support.stack import Stack, free_port
from tests.support.timing import scaled

pytestmark = pytest.mark.integration

DEVELOPMENT_JWT_SECRET = "switchboard-development-secret-not-for-production"
"""The Makefile's development secret: the only one the page's token endpoint signs with."""
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
DESKTOP = ViewportSize(width=1000, height=640)
PHONE = ViewportSize(width=390, height=740)
# Records every connection state the page shows, however briefly.
RECORD_STATES = """
window.shownStates = [];
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  new MutationObserver(() => window.shownStates.push(status.dataset.state))
    .observe(status, { attributes: true, attributeFilter: ["data-state"] });
});
"""


@dataclass
class Web:
    stack: Stack
    url: str
    browser: Browser


async def start_web_server(
    gateway_urls: list[str], secret: str
) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "scripts/run_stack.py",
        "--web-only",
        "--web-port",
        str(port),
        *(arg for url in gateway_urls for arg in ("--gateway-url", url)),
        cwd=REPO_ROOT,
        env={**os.environ, env.JWT_SECRET: secret},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    async with asyncio.timeout(scaled(10)):
        line = await process.stdout.readline()
    assert b"web chat page on" in line, line
    return process, f"http://127.0.0.1:{port}/"


async def stop_web_server(process: asyncio.subprocess.Process) -> None:
    process.terminate()
    async with asyncio.timeout(scaled(10)):
        await process.wait()
    assert process.returncode == 0


@pytest.fixture
def chromium() -> Path:
    assert CHROMIUM.exists(), "Chromium is missing: make browser-deps"
    return CHROMIUM


@pytest.fixture
async def web(stack: Stack, chromium: Path) -> AsyncIterator[Web]:
    stack.settings[env.JWT_SECRET] = DEVELOPMENT_JWT_SECRET
    stack.settings[env.DEVELOPMENT] = "on"  # the gateways accept the public secret
    await stack.start(gateways=2)
    process, url = await start_web_server(
        [g.url for g in stack.gateways], DEVELOPMENT_JWT_SECRET
    )
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
            )
            try:
                yield Web(stack, url, browser)
            finally:
                await browser.close()
    finally:
        await stop_web_server(process)


async def log_in(
    web: Web, uid: str, gateway: int, viewport: ViewportSize = DESKTOP
) -> Page:
    context = await web.browser.new_context(viewport=viewport)
    page = await context.new_page()
    await page.add_init_script(RECORD_STATES)
    await page.goto(f"{web.url}?gw={gateway}")
    await page.fill("#uid", uid)
    await page.click("#login-form button[type=submit]")
    status = page.locator("#status")
    await expect(status).to_have_attribute("data-state", "ready")
    await expect(status).to_have_attribute(
        "data-gateway", web.stack.gateways[gateway].url
    )
    return page


async def open_chat_with(page: Page, uid: str) -> None:
    await page.select_option("#new-kind", "user")
    await page.fill("#new-id", uid)
    await page.click("#new-conversation button[type=submit]")
    await expect(page.locator("#conversation-title")).to_have_text(uid)


async def send(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")
    mine = page.locator(".message[data-direction=out]", has_text=text)
    await expect(mine).to_have_attribute("data-state", "sent", timeout=scaled(10_000))


def received(page: Page, text: str) -> Locator:
    return page.locator(".message[data-direction=in] .text", has_text=text)


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name))


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
