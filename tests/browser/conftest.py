"""Fixtures of the browser tests: Chromium, and the page served against a stack."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.browser.support import CHROMIUM, Web, serve_web
from tests.support.stack import Stack


@pytest.fixture
def chromium() -> Path:
    assert CHROMIUM.exists(), "Chromium is missing: make browser-deps"
    return CHROMIUM


@pytest.fixture
async def web(stack: Stack, chromium: Path) -> AsyncIterator[Web]:
    async with serve_web(stack, chromium) as served:
        yield served
