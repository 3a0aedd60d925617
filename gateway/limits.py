"""The per-connection frame rate limit: a token bucket, and when a flood closes the connection.

Pure: the caller passes the current time (the loop clock, in seconds); ``ws.py`` feeds it each
frame and performs the answer. Settings: ``SWITCHBOARD_RATE_LIMIT_PER_S`` (the refill rate) and
``SWITCHBOARD_RATE_LIMIT_BURST`` (the bucket's size).
"""

from dataclasses import dataclass
from enum import Enum

REJECTED_IN_A_ROW_TO_CLOSE = 50
"""Frames refused in a row (none accepted between them) after which the connection is closed."""


class Verdict(Enum):
    """What to do with one frame."""

    ACCEPT = "accept"
    REJECT = "reject"
    """Answer ``rate_limited`` (with the frame's id); the connection stays open."""
    CLOSE = "close"
    """The client keeps flooding: close with ``CloseCode.RATE_LIMITED``."""


@dataclass(slots=True)
class FrameBucket:
    """A token bucket of frames for one connection.

    Args:
        rate_per_s: tokens added per second.
        burst: the most tokens the bucket holds (and holds at first).
        rejected_to_close: refused frames in a row that close the connection.
    """

    rate_per_s: float
    burst: int
    rejected_to_close: int = REJECTED_IN_A_ROW_TO_CLOSE
    tokens: float = -1.0
    """Tokens left; -1 until the first frame, which finds the bucket full."""
    updated_s: float = 0.0
    rejected_in_a_row: int = 0

    def on_frame(self, now_s: float) -> Verdict:
        """Take one token for a frame received at ``now_s``.

        Returns:
            ``ACCEPT`` when a token was there, ``REJECT`` when not, ``CLOSE`` when this is
            the ``rejected_to_close``-th frame in a row without a token.
        """
        if self.tokens < 0:
            self.tokens = float(self.burst)
        else:
            elapsed_s = max(0.0, now_s - self.updated_s)
            self.tokens = min(
                float(self.burst), self.tokens + elapsed_s * self.rate_per_s
            )
        self.updated_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.rejected_in_a_row = 0
            return Verdict.ACCEPT
        self.rejected_in_a_row += 1
        if self.rejected_in_a_row >= self.rejected_to_close:
            return Verdict.CLOSE
        return Verdict.REJECT
