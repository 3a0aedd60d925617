"""The per-connection rate limits: token buckets of frames and of bytes, and when a flood closes
the connection.

Pure: the caller passes the current time (the loop clock, in seconds); ``ws.py`` feeds it each
frame and performs the answer. Settings: ``SWITCHBOARD_RATE_LIMIT_PER_S`` and
``SWITCHBOARD_RATE_LIMIT_BURST`` (frames), ``SWITCHBOARD_RATE_LIMIT_BYTES_PER_S`` and
``SWITCHBOARD_RATE_LIMIT_BYTES_BURST`` (bytes; a rate of 0 turns it off). The limit per uid
across gateways is counted by the routers (``DeliveryItem.throttle_uid``); the hub keeps what
they said, and the session answers a throttled uid's frames.
"""

from dataclasses import dataclass, field
from enum import Enum, StrEnum

REJECTED_IN_A_ROW_TO_CLOSE = 50
"""Frames refused in a row (none accepted between them) after which the connection is closed."""


class Verdict(Enum):
    """What to do with one frame."""

    ACCEPT = "accept"
    REJECT = "reject"
    """Answer ``rate_limited`` (with the frame's id); the connection stays open."""
    CLOSE = "close"
    """The client keeps flooding: close with ``CloseCode.RATE_LIMITED``."""


class Limit(StrEnum):
    """Which limit refused a frame: the ``limit`` of its log line and of
    ``proto.metrics.RATE_LIMITED_TOTAL``."""

    FRAMES = "frames"
    BYTES = "bytes"
    UID = "uid"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    limit: Limit | None = None
    """The limit that refused the frame; None when it was accepted."""

    @property
    def is_accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT


ACCEPTED = Decision(Verdict.ACCEPT)


@dataclass(slots=True)
class TokenBucket:
    """Tokens added at ``rate_per_s`` up to ``burst``; full at first."""

    rate_per_s: float
    burst: float
    tokens: float = -1.0
    """Tokens left; -1 until the first refill, which finds the bucket full."""
    updated_s: float = 0.0

    def refill(self, now_s: float) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)
        else:
            elapsed_s = max(0.0, now_s - self.updated_s)  # a clock going back adds none
            self.tokens = min(
                float(self.burst), self.tokens + elapsed_s * self.rate_per_s
            )
        self.updated_s = now_s


@dataclass(slots=True)
class ConnectionLimits:
    """The rate limits of one connection: frames, and bytes when ``bytes_per_s`` is not 0.

    Args:
        frames_per_s: frames added per second.
        frames_burst: the most frames the bucket holds (and holds at first).
        bytes_per_s: bytes added per second; 0: bytes are not limited.
        bytes_burst: the most bytes the bucket holds; at least the largest frame.
        rejected_to_close: refused frames in a row that close the connection.
    """

    frames_per_s: float
    frames_burst: int
    bytes_per_s: float = 0.0
    bytes_burst: int = 0
    rejected_to_close: int = REJECTED_IN_A_ROW_TO_CLOSE
    rejected_in_a_row: int = 0
    _frames: TokenBucket | None = field(default=None, init=False)
    _bytes: TokenBucket | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._frames = TokenBucket(self.frames_per_s, self.frames_burst)
        if self.bytes_per_s > 0:
            self._bytes = TokenBucket(self.bytes_per_s, self.bytes_burst)

    @property
    def counts_bytes(self) -> bool:
        """Whether ``on_frame`` needs the frame's size."""
        return self._bytes is not None

    def on_frame(self, now_s: float, size_bytes: int = 0) -> Decision:
        """Take a frame's tokens (one frame, its bytes) when both buckets hold them.

        Returns:
            ``ACCEPT``; ``REJECT`` (nothing taken) with the limit that refused; ``CLOSE`` when
            this is the ``rejected_to_close``-th frame refused in a row.
        """
        frames = self._frames
        assert frames is not None
        frames.refill(now_s)
        if frames.tokens < 1.0:
            return self._refused(Limit.FRAMES)
        if self._bytes is not None:
            self._bytes.refill(now_s)
            if self._bytes.tokens < size_bytes:
                return self._refused(Limit.BYTES)
            self._bytes.tokens -= size_bytes
        frames.tokens -= 1.0
        self.rejected_in_a_row = 0
        return ACCEPTED

    def on_cost(self, now_s: float, frames_more: float) -> Decision:
        """Take ``frames_more`` frames more for a frame ``on_frame`` accepted that costs more
        than one (a ``presence`` frame: ``proto.limits.frame_cost``), or give back what it
        took beyond its cost when ``frames_more`` is negative (an ``ack``:
        ``proto.limits.ACK_FRAME_COST``).

        Returns:
            As ``on_frame``; the frame's first token stays taken when it is refused.
        """
        if frames_more == 0:
            return ACCEPTED
        frames = self._frames
        assert frames is not None
        frames.refill(now_s)
        if frames_more < 0:
            frames.tokens = min(float(frames.burst), frames.tokens - frames_more)
            return ACCEPTED
        if frames.tokens < frames_more:
            return self._refused(Limit.FRAMES)
        frames.tokens -= frames_more
        return ACCEPTED

    def _refused(self, limit: Limit) -> Decision:
        self.rejected_in_a_row += 1
        if self.rejected_in_a_row >= self.rejected_to_close:
            return Decision(Verdict.CLOSE, limit)
        return Decision(Verdict.REJECT, limit)


def utf8_length(text: str | bytes) -> int:
    """The size of a frame's payload in bytes (UTF-8 for text), as the client sent it."""
    if isinstance(text, bytes):
        return len(text)
    # isascii() reads a flag of CPython's string: no pass over the text for ASCII frames.
    return len(text) if text.isascii() else len(text.encode())
