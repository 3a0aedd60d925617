"""The web chat page with history on (``SWITCHBOARD_HISTORY=on``), in headless Chromium.

The page loads the server's conversation list after login and a conversation's history when it
opens, so a reload or a second browser of the same user shows the same conversations, history
and unread counts; it marks the open conversation read, and the peer's page shows "Seen".
"""

import re

import pytest
from playwright.async_api import Locator, Page, expect

from proto import env
from tests.browser.support import (
    DEVELOPMENT_JWT_SECRET,
    Web,
    log_in,
    open_chat_with,
    screenshot,
    send,
)
from tests.support.stack import Stack
from tests.support.timing import scaled
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration

OLDER_THAN_A_PAGE = 55
"""More messages than the page loads at once (50): the rest come with "Older messages"."""


@pytest.fixture
def stack(stack: Stack) -> Stack:
    stack.settings[env.HISTORY] = "on"
    return stack


async def send_many(web: Web, sender: str, to: str, count: int) -> None:
    """``count`` messages ``"<sender> n"`` from a raw connection of ``sender``."""
    client = await web.stack.connect(
        1, token=make_token(sender, secret=DEVELOPMENT_JWT_SECRET)
    )
    for n in range(count):
        await client.send_message(to, {"text": f"{sender} {n}"})
    await client.close()


async def reload(page: Page) -> None:
    """Reload; the page logs the same user in again (the development token endpoint)."""
    await page.reload()
    await expect(page.locator("#status")).to_have_attribute("data-state", "ready")


def received(page: Page, text: str) -> Locator:
    """The received messages whose text is exactly ``text``."""
    exactly = re.compile(f"^{re.escape(text)}$")
    return page.locator(".message[data-direction=in] .text", has_text=exactly)


async def test_a_reload_shows_the_conversation_and_its_history(web: Web) -> None:
    alice = await log_in(web, "alice", 0)
    await open_chat_with(alice, "bob")
    await send(alice, "Hello Bob, before the reload")
    await send_many(web, "bob", "alice", OLDER_THAN_A_PAGE)
    await expect(received(alice, "bob 54")).to_have_count(1)

    await reload(alice)
    conversation = alice.locator('.conversation-item[data-key="user:bob"]')
    await expect(conversation.locator(".last")).to_have_text("bob 54")
    await conversation.click()
    # The newest page of the history, oldest first; the rest when asked for.
    await expect(alice.locator(".message[data-direction=in]")).to_have_count(50)
    await expect(received(alice, "bob 5")).to_have_count(1)
    await expect(received(alice, "bob 4")).to_have_count(0)
    await alice.click(".older button")
    await expect(alice.locator(".message[data-direction=in]")).to_have_count(
        OLDER_THAN_A_PAGE, timeout=scaled(10_000)
    )
    mine = alice.locator(".message[data-direction=out] .text")
    await expect(mine).to_have_text(["Hello Bob, before the reload"])
    texts = await alice.locator(".message .text").all_text_contents()
    assert texts == [
        "Hello Bob, before the reload",
        *(f"bob {n}" for n in range(OLDER_THAN_A_PAGE)),
    ]
    await expect(alice.locator(".older")).to_be_hidden()
    await screenshot(alice, "chat-history-after-reload.png")


async def test_a_second_browser_shows_the_same_conversations_and_unread_counts(
    web: Web,
) -> None:
    laptop = await log_in(web, "alice", 0)
    await send_many(web, "bob", "alice", 3)
    await send_many(web, "carol", "alice", 2)
    bob_unread = laptop.locator('.conversation-item[data-key="user:bob"] .unread')
    await expect(bob_unread).to_have_text("3")

    phone = await log_in(web, "alice", 1)
    items = phone.locator(".conversation-item")
    # The most recently active first, with the server's unread counts.
    await expect(items).to_have_count(2)
    await expect(items.nth(0)).to_have_attribute("data-key", "user:carol")
    await expect(items.nth(1)).to_have_attribute("data-key", "user:bob")
    await expect(items.nth(0).locator(".unread")).to_have_text("2")
    await expect(items.nth(1).locator(".unread")).to_have_text("3")
    await expect(items.nth(1).locator(".last")).to_have_text("bob 2")

    # Read on the phone: the laptop's count drops too (a receipt from its own uid).
    await phone.click('.conversation-item[data-key="user:bob"]')
    await expect(received(phone, "bob 0")).to_have_count(1)
    await expect(bob_unread).to_have_text("", timeout=scaled(10_000))
    await expect(
        laptop.locator('.conversation-item[data-key="user:carol"] .unread')
    ).to_have_text("2")
    # And a third browser gets the counts after the read from the server.
    third = await log_in(web, "alice", 0)
    await expect(
        third.locator('.conversation-item[data-key="user:bob"] .unread')
    ).to_have_text("")
    await expect(
        third.locator('.conversation-item[data-key="user:carol"] .unread')
    ).to_have_text("2")


async def test_seen_appears_under_the_last_message_the_peer_read(web: Web) -> None:
    alice = await log_in(web, "alice", 0)
    bob = await log_in(web, "bob", 1)
    await open_chat_with(alice, "bob")
    await send(alice, "first question")
    await send(alice, "second question")
    await expect(
        bob.locator('.conversation-item[data-key="user:alice"] .unread')
    ).to_have_text("2")
    seen = alice.locator(".message .seen")
    await expect(seen).to_have_count(0)

    await bob.click('.conversation-item[data-key="user:alice"]')
    await expect(received(bob, "second question")).to_have_count(1)
    await expect(seen).to_have_count(1, timeout=scaled(10_000))
    await expect(seen).to_have_text("Seen")
    last = alice.locator(".message[data-direction=out]").last
    await expect(last.locator(".seen")).to_have_count(1)
    await screenshot(alice, "chat-seen.png")

    # After a reload the page shows it again (kept from the receipt in this browser).
    await reload(alice)
    await alice.click('.conversation-item[data-key="user:bob"]')
    await expect(alice.locator(".message[data-direction=out]")).to_have_count(2)
    await expect(
        alice.locator(".message[data-direction=out]").last.locator(".seen")
    ).to_have_count(1)
