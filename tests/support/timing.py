"""Deadlines for tests: every wait is bounded, and ``SWITCHBOARD_TEST_TIME_FACTOR`` scales them all."""

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
        while (seen := await probe()) is None:
            await asyncio.sleep(
                POLL_INTERVAL_S
            )  # the deadline above is the synchronisation
    return seen
