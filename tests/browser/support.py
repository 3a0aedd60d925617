"""What the browser tests share: the page's server, logging in, sending, finding messages.

The page is served like ``make run`` serves it (``scripts/run_stack.py --web-only``) against a
stack whose gateways use the development JWT secret. Screenshots go to test-artifacts/.
Chromium comes from Debian (``make browser-deps``); Playwright never downloads one.
"""

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import (
    Browser,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from proto import env
from tests.support.processes import REPO_ROOT
from tests.support.stack import Stack, free_port
from tests.support.timing import scaled

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


@asynccontextmanager
async def serve_web(stack: Stack, chromium: Path) -> AsyncIterator[Web]:
    """Start the stack (two gateways) and the page's server; yield them with a browser."""
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
