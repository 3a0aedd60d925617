"""Deadlines for tests: every wait is bounded; ``SWITCHBOARD_TEST_TIME_FACTOR`` scales them."""

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

TIME_FACTOR = float(os.environ.get("SWITCHBOARD_TEST_TIME_FACTOR", "1"))
POLL_INTERVAL_S = 0.02


def scaled(seconds: float) -> float:
    return seconds * TIME_FACTOR


async def eventually(
    probe: Callable[[], Awaitable[T | None]], within_s: float = 5.0
) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``within_s``."""
    async with asyncio.timeout(scaled(within_s)):
        # Polling what a test cannot subscribe to; the deadline above synchronises.
        while (seen := await probe()) is None:  # noqa: ASYNC110
            await asyncio.sleep(POLL_INTERVAL_S)
    return seen
